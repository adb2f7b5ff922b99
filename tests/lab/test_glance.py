"""The glance (issue 13): a run whose files and sysctls already are as wanted asks the node
nothing for them, and whatever changed on the node since the last run is still found and
repaired.

Real ansible-playbook runs (node_info, then the node_files and sysctl action plugins and
modules), in a scratch network namespace with a local connection: the sysctl is the
namespace's own net.ipv4.ip_forward, the files and the index live in a temporary directory.
Never the lab's namespaces or the root one. Needs root and ip.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab.lab_runs import netns_playbook

REPO = Path(__file__).resolve().parents[2]


def glance_play(tasks, result, node_ip="127.0.0.1"):
    """A play (a str.format template in {tmp}): node_info takes the run's glance, its files
    in {tmp}; then `tasks` (YAML text, indented as tasks); then result.json in {tmp} holds
    `result`, a Jinja expression of what they registered."""
    return ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            "    - podnet.network.node_info:\n"
            "        node_ip: %s\n"
            "        state_file: {tmp}/node.json\n"
            "        services_state_file: {tmp}/allocations.json\n"
            "        proxy_state_dir: {tmp}\n"
            "        glance_file: {tmp}/glance.json\n" % node_ip
            + tasks
            + "    - ansible.builtin.copy:\n"
            "        content: \"{{{{ %s | to_json }}}}\"\n"
            "        dest: {tmp}/result.json\n"
            "        mode: \"0644\"\n" % result)


PLAY = glance_play("""\
    - podnet.network.node_files:
        dest: {tmp}/files
        files:
          conf/a.conf: "a = 1\\n"
          run.sh: "#!/bin/sh\\n"
        modes:
          run.sh: "0755"
        absent: [old.conf]
        glance_file: {tmp}/glance.json
      register: files
    - podnet.network.sysctl:
        sysctls:
          net.ipv4.ip_forward: 1
        path: {tmp}/90-podnet.conf
        glance_file: {tmp}/glance.json
      register: sysctls
""", "{{'files': files, 'sysctls': sysctls}}")

pytestmark = pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("ip")), reason="needs root and ip")


@pytest.fixture
def scratch():
    netns = "podnet-scratch-glance-files-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, capture_output=True,
                   timeout=30)
    yield netns
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)


def in_netns(netns, *argv):
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def play(netns, tmp_path, name, text):
    """The result.json one play (`text`, written as `name`) leaves, run in the namespace."""
    path = tmp_path / name
    path.write_text(text)
    netns_playbook(netns, path)
    return json.loads((tmp_path / "result.json").read_text())


def run(netns, tmp_path):
    """{"files": node_files' result, "sysctls": sysctl's} from one play in the namespace."""
    return play(netns, tmp_path, "play.yml", PLAY.format(tmp=tmp_path))


def outcome(result):
    """{kind: (changed, glanced)}: glanced when the node was not asked."""
    return {kind: (result[kind]["changed"], result[kind].get("glanced", False))
            for kind in ("files", "sysctls")}


def test_a_second_run_asks_nothing_and_drift_is_still_repaired(scratch, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "old.conf").write_text("from an earlier version\n")

    first = run(scratch, tmp_path)
    assert outcome(first) == {"files": (True, False), "sysctls": (True, False)}
    assert sorted(first["files"]["written"]) == ["conf/a.conf", "run.sh"]
    assert first["files"]["removed"] == ["old.conf"]
    index = json.loads((tmp_path / "glance.json").read_text())
    assert index["files"] == sorted([str(files / "conf/a.conf"), str(files / "old.conf"),
                                     str(files / "run.sh"), str(tmp_path / "90-podnet.conf")])
    assert index["sysctls"] == ["net.ipv4.ip_forward"]

    # Nothing changed on the node: neither task goes there.
    assert outcome(run(scratch, tmp_path)) == {"files": (False, True), "sysctls": (False, True)}

    # Each kind of drift since the last run is seen in the snapshot and repaired by the module.
    (files / "conf/a.conf").write_text("a = 2\n")
    in_netns(scratch, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    again = run(scratch, tmp_path)
    assert outcome(again) == {"files": (True, False), "sysctls": (True, False)}
    assert again["files"]["written"] == ["conf/a.conf"]
    assert again["sysctls"]["set"] == ["net.ipv4.ip_forward = 1"]
    assert (files / "conf/a.conf").read_text() == "a = 1\n"
    assert in_netns(scratch, "cat", "/proc/sys/net/ipv4/ip_forward") == "1"

    os.chmod(files / "run.sh", 0o644)
    (files / "old.conf").write_text("back again\n")
    (tmp_path / "90-podnet.conf").unlink()
    again = run(scratch, tmp_path)
    assert outcome(again) == {"files": (True, False), "sysctls": (True, False)}
    assert again["files"]["written"] == ["run.sh"] and again["files"]["removed"] == ["old.conf"]
    assert os.stat(files / "run.sh").st_mode & 0o7777 == 0o755 and not (files / "old.conf").exists()
    assert again["sysctls"]["file_changed"] and (tmp_path / "90-podnet.conf").exists()

    assert outcome(run(scratch, tmp_path)) == {"files": (False, True), "sysctls": (False, True)}


KERNEL_PLAY = glance_play("""\
    - podnet.network.routes:
        routes:
          - {{dest: 10.244.2.0/24, gateway: 10.244.2.0, dev: podnet.1, onlink: true}}
        vxlan:
          device: podnet.1
          local: 10.9.0.1
          address: 10.244.1.0
          mac: "0a:58:0a:f4:01:00"
          mtu: {mtu}
          peers:
            - {{node_ip: 10.9.0.2, vtep_ip: 10.244.2.0, vtep_mac: "0a:58:0a:f4:02:00"}}
        glance_file: {tmp}/glance.json
      register: routes
    - podnet.network.firewall:
        cluster_cidr: 10.244.0.0/16
        service_cidr: 10.96.0.0/12
        state_file: {tmp}/firewall.json
        glance_file: {tmp}/glance.json
      register: firewall
""", "{{'routes': routes, 'firewall': firewall}}", node_ip="10.9.0.1")


def settle_run(netns, tmp_path, mtu=1450):
    """{kind: (changed, glanced)} of the routes and firewall tasks of one play."""
    result = play(netns, tmp_path, "kernel.yml", KERNEL_PLAY.format(tmp=tmp_path, mtu=mtu))
    return {kind: (result[kind]["changed"], result[kind].get("glanced", False))
            for kind in ("routes", "firewall")}


@pytest.mark.skipif(not (shutil.which("nft") and shutil.which("bridge")), reason="needs nft and bridge")
def test_routes_and_the_firewall_are_asked_only_when_the_kernel_moved_or_the_task_changed(scratch, tmp_path):
    in_netns(scratch, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "far")
    in_netns(scratch, "ip", "addr", "add", "10.9.0.1/24", "dev", "uplink")
    in_netns(scratch, "ip", "link", "set", "uplink", "up")
    in_netns(scratch, "ip", "link", "set", "far", "up")
    # A firewall of the node's own whose forward chain drops: podnet adds its accept chain and jump.
    (tmp_path / "mine.nft").write_text("table ip mine {\n chain forward {\n"
                                       "  type filter hook forward priority 0; policy drop;\n }\n}\n")
    in_netns(scratch, "nft", "-f", str(tmp_path / "mine.nft"))

    assert settle_run(scratch, tmp_path) == {"routes": (True, False), "firewall": (True, False)}
    assert settle_run(scratch, tmp_path) == {"routes": (False, True), "firewall": (False, True)}

    # What each module owns, moved by hand: seen at the next run's glance, and put back.
    in_netns(scratch, "bridge", "fdb", "del", "0a:58:0a:f4:02:00", "dev", "podnet.1", "dst", "10.9.0.2")
    assert settle_run(scratch, tmp_path)["routes"] == (True, False)
    assert "10.9.0.2" in in_netns(scratch, "bridge", "fdb", "show", "dev", "podnet.1")
    in_netns(scratch, "ip", "route", "del", "10.244.2.0/24")
    in_netns(scratch, "nft", "flush", "chain", "ip", "mine", "forward")  # podnet's jump gone
    assert settle_run(scratch, tmp_path) == {"routes": (True, False), "firewall": (True, False)}
    assert "10.244.2.0/24" in in_netns(scratch, "ip", "route", "show", "proto", "158")
    assert "jump" in in_netns(scratch, "nft", "list", "chain", "ip", "mine", "forward")
    assert settle_run(scratch, tmp_path) == {"routes": (False, True), "firewall": (False, True)}

    # Another task (a new MTU) is asked, whatever the kernel holds.
    assert settle_run(scratch, tmp_path, mtu=1400)["routes"] == (True, False)
    assert '"mtu":1400' in in_netns(scratch, "ip", "-j", "link", "show", "dev", "podnet.1")
    assert settle_run(scratch, tmp_path, mtu=1400) == {"routes": (False, True), "firewall": (False, True)}


PROXY_PLAY = glance_play("""\
    - podnet.network.proxy_nftables:
        model: "{{{{ lookup('file', '{tmp}/model.json') }}}}"
        node: node1
        state_dir: {tmp}/state
        path: {tmp}/state/podnet-services.nft
        verify_live: {verify_live}
        glance_file: {tmp}/glance.json
      register: proxy
""", "proxy")


def proxy_run(netns, tmp_path, model, verify_live=False):
    """(changed, glanced, verified) of the Service NAT task of one play."""
    from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact

    (tmp_path / "model.json").write_text(compact(model))
    result = play(netns, tmp_path, "proxy.yml",
                  PROXY_PLAY.format(tmp=tmp_path, verify_live=str(verify_live).lower()))
    return result["changed"], result.get("glanced", False), result.get("verified")


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_the_service_nat_is_asked_only_when_its_table_moved_or_the_model_changed(scratch, tmp_path):
    from tests.unit.test_proxy_iptables import changed_model, service, sport, web_endpoints

    model = changed_model()
    assert proxy_run(scratch, tmp_path, model)[:2] == (True, False)
    applied = in_netns(scratch, "nft", "-s", "list", "table", "ip", "podnet-services")
    assert proxy_run(scratch, tmp_path, model) == (False, True, "glance")
    # `nft flush table` keeps the generation set, the chains and every element; each chain's
    # rule count (the kernel's rule dump) shows it, at node_info and at the module's glance.
    in_netns(scratch, "nft", "flush", "table", "ip", "podnet-services")
    assert proxy_run(scratch, tmp_path, model)[:2] == (True, False)
    assert in_netns(scratch, "nft", "-s", "list", "table", "ip", "podnet-services") == applied
    assert proxy_run(scratch, tmp_path, model) == (False, True, "glance")
    # A chain added by hand, the table deleted, the boot file edited: each is seen and repaired.
    in_netns(scratch, "nft", "add", "chain", "ip", "podnet-services", "mine")
    assert proxy_run(scratch, tmp_path, model)[:2] == (True, False)
    assert "mine" not in in_netns(scratch, "nft", "list", "chains")
    in_netns(scratch, "nft", "delete", "table", "ip", "podnet-services")
    assert proxy_run(scratch, tmp_path, model)[:2] == (True, False)
    with open(tmp_path / "state/podnet-services.nft", "a") as handle:
        handle.write("# edited\n")
    assert proxy_run(scratch, tmp_path, model)[:2] == (True, False)
    assert proxy_run(scratch, tmp_path, model) == (False, True, "glance")
    # verify_live always asks; another model is asked.
    assert proxy_run(scratch, tmp_path, model, verify_live=True) == (False, False, "listing")
    web = service("web", "10.96.0.20", [sport("http", "TCP", 80, web_endpoints(8080, last="10.244.3.6"),
                                             target_port=8080)])
    assert proxy_run(scratch, tmp_path, changed_model(web=web))[:2] == (True, False)
    assert proxy_run(scratch, tmp_path, changed_model(web=web)) == (False, True, "glance")


POLICY_PLAY = glance_play("""\
    - podnet.network.nftables:
        table: podnet-policy
        content: "{{{{ lookup('file', '{tmp}/policy.nft') }}}}"
        state_dir: {tmp}/state
        path: {tmp}/state/podnet-policy.nft
        glance_file: {tmp}/glance.json
      register: policy
""", "policy")


def policy_run(netns, tmp_path):
    """(changed, glanced, actions) of the NetworkPolicy table's task of one play."""
    result = play(netns, tmp_path, "policy.yml", POLICY_PLAY.format(tmp=tmp_path))
    return result["changed"], result.get("glanced", False), result.get("actions")


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_a_flushed_policy_table_or_chain_is_repaired(scratch, tmp_path):
    from tests.lab.test_nft_glance_update import TABLE, content, policies

    (tmp_path / "policy.nft").write_text(content(*policies(5)))
    assert policy_run(scratch, tmp_path)[:2] == (True, False)
    applied = in_netns(scratch, "nft", "-s", "list", "table", "ip", TABLE)
    assert policy_run(scratch, tmp_path)[:2] == (False, True)
    for damage in (["flush", "table", "ip", TABLE], ["flush", "chain", "ip", TABLE, "pod_ingress"]):
        in_netns(scratch, "nft", *damage)
        assert policy_run(scratch, tmp_path) == (True, False, ["replace table ip %s" % TABLE]), damage
        assert in_netns(scratch, "nft", "-s", "list", "table", "ip", TABLE) == applied, damage
        assert policy_run(scratch, tmp_path)[:2] == (False, True), damage
    # A record of chain names only (an older podnet's) cannot vouch for the rules: the table
    # is loaded once more, and the record learns the counts.
    record_file = tmp_path / "state" / ("nft-ip-%s.json" % TABLE)
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps(dict(record, chains=sorted(record["chains"]))))
    assert policy_run(scratch, tmp_path) == (True, False, ["replace table ip %s" % TABLE])
    assert json.loads(record_file.read_text())["chains"] == record["chains"]
    assert policy_run(scratch, tmp_path)[:2] == (False, True)

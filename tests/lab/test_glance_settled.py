"""The glance's settled states (issue 13) in a whole lab, through real site.yml runs.

A settling module (routes, firewall, pods, dns, proxy_nftables, nftables) is not asked when
node_info's snapshot still finds the live state its last run left. These tests show the
other half, the one that keeps the glance honest:

- the moved rule: once a glanced task changed a node in a run, no later settled task on
  that node is vouched for in that run (`podnet_node_moved`); it asks the node;
- a test pod's server killed, or its netns removed, between two runs: the next run asks
  the node and the pod serves again, at once, to its node and to another pod beside it
  (their neighbour entries for its address flushed: see _unanswered);
- a node's dnsmasq killed between two runs: the next run starts it again and names resolve.

Each result is read from the podnet_results callback (tests/lab/callback_plugins): per node
and task, changed, and `glanced` when the run's glance answered without asking the node.

The lab is a private one (prefix podnet-gs-, from a copy of inventory/lab), built, converged
and destroyed by this module, whatever lab PODNET_LAB_INVENTORY names: never someone else's
lab, never the root namespace. Processes are killed only by the PIDs the lab's own nodes
recorded or run. About 4 minutes on two busy cores. Needs root and the lab's packages (ip,
nft, dnsmasq, the CNI plugins, curl).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lab import podnet_lab
from lab.probe import decode_all
from tests.lab.lab_runs import REPO, task_results

PREFIX = "podnet-gs-"
# The modules whose action plugins vouch for a settled state (plugin_utils/glanced.SettledAction).
SETTLED = tuple("podnet.network." + name
                for name in ("routes", "firewall", "pods", "dns", "proxy_nftables", "nftables"))
VICTIM = "node2"
DNS_CONF_DIR = "/etc/podnet/dns/"
# The lab's cluster DNS address: the tenth of its service CIDR (no podnet_dns_ip there).
DNS_IP = "10.96.0.10"
PODS_STATE_DIR = "/var/lib/podnet/pods"

pytestmark = pytest.mark.skipif(
    not (os.geteuid() == 0 and all(shutil.which(tool) for tool in ("ip", "nft", "curl"))
         and os.path.exists("/usr/sbin/dnsmasq") and os.path.exists("/usr/lib/cni/bridge")),
    reason="needs root, ip, nft, curl, dnsmasq and the CNI plugins")


class Lab:
    """The private lab: its inventory, commands in its nodes, and site.yml runs on it."""

    def __init__(self, inventory, results_file):
        self.inventory = inventory
        self.results_file = results_file
        self.topology = podnet_lab.load_topology(inventory)

    def cli(self, *args, timeout=120):
        done = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "--inventory",
                               str(self.inventory), *args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def node(self, node, *argv, check=True, timeout=30):
        """A command in the node (its netns and mount namespace); the finished process."""
        done = subprocess.run(podnet_lab.node_exec_argv(node, self.inventory) + list(argv),
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0 or not check, (argv, done.stdout, done.stderr)
        return done

    def site(self, *extra):
        """The task results of one site.yml run (which must succeed)."""
        run, results = task_results(self.results_file, "-i", str(self.inventory / "hosts.yml"), "site.yml",
                                    *extra, timeout=600)
        assert run.returncode == 0, run.stdout[-4000:]
        return results

    def pods(self, node):
        """{namespace/name: record} of the pods the node recorded (pods/state.py)."""
        listing = self.node(node, "sh", "-c", "cat %s/*.json" % PODS_STATE_DIR).stdout
        return {"%s/%s" % (record["namespace"], record["name"]): record for record in decode_all(listing)}

    def netns_inode(self, node, netns):
        """The inode of a netns named in the node's own /run/netns (a pod's)."""
        return int(self.node(node, "stat", "-L", "-c", "%i", "/run/netns/" + netns).stdout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("glance-settled")
    inventory = tmp / "inventory"
    shutil.copytree(REPO / "inventory" / "lab", inventory)
    lab_vars = inventory / "group_vars" / "all" / "lab.yml"
    data = yaml.safe_load(lab_vars.read_text())
    data["podnet_lab"]["prefix"] = PREFIX
    lab_vars.write_text(yaml.safe_dump(data))
    lab = Lab(inventory, tmp / "results.jsonl")
    assert lab.topology.prefix == PREFIX and VICTIM in lab.topology.nodes
    try:
        lab.cli("create")
        # The first run converges; its early records may not survive its later tasks (the
        # moved rule's very reason), so a second run settles every state.
        lab.site()
        lab.site()
        yield lab
    finally:
        lab.cli("destroy")


def outcomes(results, actions):
    """{(host, action, task): (changed, glanced)} of the results of these actions that ran."""
    return {(r["host"], r["action"], r["task"]): (r["changed"], r["glanced"])
            for r in results if r["action"] in actions and not r["skipped"]}


def of_host(found, host):
    return {key: value for key, value in found.items() if key[0] == host}


def test_once_a_glanced_task_moved_a_node_its_later_settled_tasks_ask_it(lab):
    """A sysctl podnet owns reset on one node: the sysctl task (node preparation, before any
    settled task) changes that node, and no settled state is vouched for on it for the rest
    of the run, though no settled module's fingerprint covers that sysctl. The other nodes
    did not move: the same tasks are glanced there."""
    lab.node(VICTIM, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    results = lab.site()
    sysctl = outcomes(results, ("podnet.network.sysctl",))
    assert {host: value for (host, _, _), value in sysctl.items()} == {
        node: (node == VICTIM, node != VICTIM) for node in lab.topology.nodes}
    assert lab.node(VICTIM, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    settled = outcomes(results, SETTLED)
    moved = of_host(settled, VICTIM)
    assert {action for _, action, _ in moved} == set(SETTLED)
    # Asked, and nothing to do: the node only moved under a sysctl.
    assert set(moved.values()) == {(False, False)}, moved
    for node in set(lab.topology.nodes) - {VICTIM}:
        assert set(of_host(settled, node).values()) == {(False, True)}, node

    # The next run starts with a fresh snapshot and trusts the node again (node_info resets it).
    assert set(outcomes(lab.site(), SETTLED).values()) == {(False, True)}


def _alive(pid):
    """Running: neither gone nor a zombie."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _kill(pid):
    """SIGKILL `pid` and wait (at most 5 s) until it no longer runs."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "pid %d did not die" % pid
        time.sleep(0.05)


def _argv(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [arg.decode() for arg in handle.read().split(b"\0") if arg]
    except FileNotFoundError:
        return []


def _http(lab, node, pod, inside=False, netns=None):
    """The echo server's answer to GET http://<pod ip>:<first TCP port>/ from its node (or,
    `inside`, from the pod's own netns; or from the netns `netns` on that node), or None."""
    port = next(p["containerPort"] for p in pod["ports"] if p.get("protocol", "TCP") == "TCP")
    netns = pod["netns"] if inside else netns
    where = ("ip", "netns", "exec", netns) if netns else ()
    done = lab.node(node, *where, "curl", "-s", "--max-time", "2", "http://%s:%s/" % (pod["ip"], port),
                    check=False)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def _unanswered(lab, node, pod, via=None):
    """None when the pod answers within 5 s, from its node or (`via`) from another pod's netns
    on it; else why not, with the neighbour entry for its address there. A pod re-created
    with its former IP has a new MAC, and the bridge plugin announces nothing: an entry left
    REACHABLE with the old MAC (up to ~45 s) would send the node's packets, every packet
    routed to the pod through it, and the other pods' to nobody. The pods module flushes
    them (pods/netns.forget_neighbour)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (_http(lab, node, pod, netns=via) or {}).get("pod") == pod["name"]:
            return None
        time.sleep(0.5)
    link = lab.node(node, "ip", "netns", "exec", pod["netns"], "ip", "-j", "link", "show", "eth0").stdout
    mac = json.loads(link)[0]["address"]
    here = ("ip", "-n", via) if via else ("ip",)
    neighbour = json.loads(lab.node(node, *here, "-j", "neigh", "show", pod["ip"]).stdout or "[]")
    return "pod %s (%s, MAC %s) does not answer %s; the neighbour entry there: %s" % (
        pod["name"], pod["ip"], mac, "pod netns %s" % via if via else "its node", neighbour)


def _serving(lab, node):
    """The node's pods that serve TCP, by namespace/name: [(key, record)]."""
    return sorted((key, record) for key, record in lab.pods(node).items()
                  if any(p.get("protocol", "TCP") == "TCP" for p in record["ports"]))


# Each case its own pod, and the DNS test another.
@pytest.mark.parametrize("drift, which", [("server killed", 0), ("netns removed", 1)])
def test_a_pod_whose_server_or_netns_went_is_asked_for_and_serves_again(lab, drift, which):
    key, pod = _serving(lab, VICTIM)[which]
    # Another pod on the node asks it too: its neighbour entry for the pod is then REACHABLE
    # with the MAC the pod has now, as the node's is.
    beside = next(record["netns"] for other, record in sorted(lab.pods(VICTIM).items()) if other != key)
    assert (_http(lab, VICTIM, pod) or {}).get("pod") == pod["name"]
    assert (_http(lab, VICTIM, pod, netns=beside) or {}).get("pod") == pod["name"]
    pid = pod["pid"]
    # The PID the node recorded, checked to be that pod's server in that pod's netns.
    assert pod["echo_server"] in _argv(pid) and pod["name"] in _argv(pid), _argv(pid)
    assert os.stat("/proc/%d/ns/net" % pid).st_ino == lab.netns_inode(VICTIM, pod["netns"])

    if drift == "server killed":
        _kill(pid)
        assert _http(lab, VICTIM, pod) is None
    else:
        # The name goes; the netns lives on while its server holds it, so the pod may still
        # answer: only the record's netns is missing.
        lab.node(VICTIM, "ip", "netns", "del", pod["netns"])

    pods = outcomes(lab.site("--tags", "test_pods"), ("podnet.network.pods",))
    assert {host: value for (host, _, _), value in pods.items()} == {
        node: (node == VICTIM, node != VICTIM) for node in lab.topology.nodes}

    again = lab.pods(VICTIM)[key]
    assert again["ip"] == pod["ip"] and again["pid"] != pid
    assert os.stat("/proc/%d/ns/net" % again["pid"]).st_ino == lab.netns_inode(VICTIM, pod["netns"])
    assert (_http(lab, VICTIM, again, inside=True) or {}).get("pod") == pod["name"]
    # At once, before anything else: a neighbour entry ages in seconds.
    unanswered = [why for why in (_unanswered(lab, VICTIM, again), _unanswered(lab, VICTIM, again, beside))
                  if why]
    assert not _alive(pid), "the pod's former server %d still runs: %s" % (pid, _argv(pid))
    settled = outcomes(lab.site("--tags", "test_pods"), ("podnet.network.pods",))
    assert set(settled.values()) == {(False, True)}
    assert not unanswered, unanswered


def _dnsmasq_pids(lab, node):
    """The PIDs of podnet's dnsmasq processes in the node's netns: argv[0] dnsmasq with a
    configuration file of podnet's (dns/live.py finds them the same way)."""
    netns = os.stat(podnet_lab.netns_path(lab.topology.ns(node))).st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat("/proc/%s/ns/net" % entry).st_ino != netns:
                continue
        except OSError:
            continue
        argv = _argv(int(entry))
        if argv and os.path.basename(argv[0]) == "dnsmasq" and any(
                arg.startswith("--conf-file=" + DNS_CONF_DIR) for arg in argv[1:]) and _alive(int(entry)):
            pids.append(int(entry))
    return sorted(pids)


def _resolve(lab, node, pod, name):
    """The addresses `name` resolves to in the pod (its resolv.conf names the cluster DNS)."""
    done = lab.node(node, "timeout", "5", "ip", "netns", "exec", pod["netns"], "getent", "ahostsv4", name,
                    check=False)
    return sorted({line.split()[0] for line in done.stdout.splitlines()}) if done.returncode == 0 else []


def test_a_node_whose_dnsmasq_died_is_asked_for_and_resolves_again(lab):
    _, pod = _serving(lab, VICTIM)[-1]  # not one the pod tests re-created
    name = "kube-dns.kube-system.svc.cluster.local."
    assert _resolve(lab, VICTIM, pod, name) == [DNS_IP]
    pids = _dnsmasq_pids(lab, VICTIM)
    assert pids, "no podnet dnsmasq on %s" % VICTIM
    for pid in pids:
        _kill(pid)
    assert _resolve(lab, VICTIM, pod, name) == []

    dns = outcomes(lab.site("--tags", "dns"), ("podnet.network.dns",))
    assert {host: value for (host, _, _), value in dns.items()} == {
        node: (node == VICTIM, node != VICTIM) for node in lab.topology.nodes}
    assert _resolve(lab, VICTIM, pod, name) == [DNS_IP]
    started = _dnsmasq_pids(lab, VICTIM)
    assert started and not set(started) & set(pids)
    assert set(outcomes(lab.site("--tags", "dns"), ("podnet.network.dns",)).values()) == {(False, True)}

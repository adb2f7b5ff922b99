"""What only real machines show (molecule scenario `nodes`, after the shared suites).

The lab's nodes here are Debian 12 and Debian 13 machines: their own root filesystem,
systemd as PID 1, apt pointed only at the lab's mirror, reached over SSH as `admin` with
sudo. The shared suites (linked beside this file) already ran against them; these tests
state what a homelab has and the fast lab cannot: the packages came from the roles, the
plays become root themselves, and a real reboot under systemd brings the network back.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from lab import machines, probe
from lab.podnet_lab import DEFAULT_INVENTORY, load_topology, mirror_url
from tests.lab.lab_runs import ansible_playbook
from tests.lab.netns_backend import get_lab_host

REPO = pathlib.Path(__file__).resolve().parents[3]

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
REBOOTED = "node3"  # Debian 13: the newer systemd, nft and Python

pytestmark = pytest.mark.skipif(not TOPOLOGY.machines, reason="the lab's nodes are not machines")


def release(node):
    return dict(TOPOLOGY.machines)[node]


@pytest.mark.parametrize("node", NODES)
def test_node_is_a_debian_machine_booted_by_systemd(node):
    h = get_lab_host(node)
    codename = h.run(". /etc/os-release; echo $VERSION_CODENAME").stdout.strip()
    assert codename == release(node)
    assert h.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert h.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
    # A node never holds the host's consoles or devices.
    assert not h.run("systemctl list-units --no-legend 'getty@*' 'serial-getty@*'").stdout.strip()
    assert sorted(h.run("ls /dev").stdout.split()) == sorted(set(h.run("ls /dev").stdout.split()) & {
        "console", "core", "fd", "full", "hugepages", "initctl", "log", "mqueue", "null", "ptmx", "pts",
        "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"})


@pytest.mark.parametrize("node", NODES)
def test_apt_reads_only_the_lab_mirror(node):
    """So every package podnet has on a node came through a role's apt task."""
    h = get_lab_host(node)
    sources = h.run("cat /etc/apt/sources.list; cat /etc/apt/sources.list.d/* 2>/dev/null; true").stdout
    assert [line for line in sources.splitlines() if line.strip() and not line.startswith("#")] == [
        f"deb [trusted=yes] {mirror_url(TOPOLOGY)}/{release(node)} ./"]


@pytest.mark.parametrize("node", NODES)
def test_every_package_a_role_declares_is_installed(node):
    h = get_lab_host(node)
    for package in machines.role_packages():
        assert h.package(package).is_installed, f"{package} (a role's *_packages) is not on {node}"
    assert h.exists("dnsmasq"), "the DNS role must bring dnsmasq itself (dnsmasq-base)"


def test_image_has_nothing_of_podnets():
    """The base image is a fresh minimal server: what podnet needs must come from the roles."""
    image = machines.image(release(NODES[0]))
    listing = subprocess.run(["tar", "-tf", str(image)], capture_output=True, text=True, check=True).stdout
    for path in ("./usr/sbin/nft", "./usr/sbin/dnsmasq", "./usr/lib/cni/bridge", "./usr/sbin/conntrack"):
        assert path not in listing.splitlines(), f"{path} is in the base image"


def test_plays_become_root_whatever_the_inventory_says_of_become(tmp_path):
    """The admin has sudo; the plays say `become: true` where they need root. An inventory
    that also sets ansible_become: true changes nothing."""
    inventory = tmp_path / "inventory"
    shutil.copytree(DEFAULT_INVENTORY, inventory, symlinks=False)
    group_vars = inventory / "group_vars" / "all" / "become.yml"
    group_vars.write_text(yaml.safe_dump({"ansible_become": True}))
    run = ansible_playbook("-i", str(inventory / "hosts.yml"), "site.yml", "--tags", "dns")
    assert run.returncode == 0, run.stdout[-3000:]
    recap = [line for line in run.stdout.splitlines() if line.startswith("node")]
    assert recap and all("changed=0" in line and "failed=0" in line for line in recap), recap


def report(line):
    """Print a measured line; make test collects them (PODNET_LAB_REPORT)."""
    print(line)
    if os.environ.get("PODNET_LAB_REPORT"):
        with open(os.environ["PODNET_LAB_REPORT"], "a") as out:
            out.write(line)


def reachable(rebooted_pods, other):
    """Every pod of the rebooted node answers a pod on another node, keeping its source."""
    client = probe.Source(other["node"], other)
    for pod in rebooted_pods:
        port = probe.first_tcp_port(pod)
        answer = probe.http(client, pod["ip"], port, timeout=1) if port else None
        if not answer or answer["client"] != other["ip"]:
            return False
    return True


# Another runtime's container on podnet's network (containerd or podman given podnet's conflist):
# a CNI ADD of the conflist's bridge plugin with a container ID and netns that are not podnet's.
FOREIGN_ID = "f0e1" * 16
FOREIGN_CNI = """ip netns add podnet-test-foreign 2>/dev/null
CNI_COMMAND={command} CNI_CONTAINERID={id} CNI_NETNS={netns} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \\
  /usr/lib/cni/bridge <<'CONF'
{conf}
CONF
"""


def foreign_cni(h, command, netns="/run/netns/podnet-test-foreign"):
    conflist = json.loads(h.file("/etc/cni/net.d/10-podnet.conflist").content_string)
    conf = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=conflist["cniVersion"])
    return h.run(FOREIGN_CNI.format(command=command, id=FOREIGN_ID, netns=netns, conf=json.dumps(conf)))


def test_a_real_reboot_brings_the_network_back_under_systemd():
    pods = probe.pods(NODES)
    rebooted = [p for p in pods if p["node"] == REBOOTED and probe.first_tcp_port(p)]
    other = next(p for p in pods if p["node"] != REBOOTED and p["namespace"] == "default")
    assert rebooted and reachable(rebooted, other)
    added = foreign_cni(get_lab_host(REBOOTED), "ADD")
    assert added.rc == 0, added.stderr
    foreign_ip = json.loads(added.stdout)["ips"][0]["address"].split("/")[0]
    lease = f"/var/lib/cni/networks/podnet/{foreign_ip}"
    old_init = get_lab_host(REBOOTED).run("stat -L -c %i /proc/1/ns/pid").stdout
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "reboot", REBOOTED],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180)
    assert result.returncode == 0, result.stdout
    booted = time.monotonic() - start
    while not reachable(rebooted, other):
        assert time.monotonic() - start < 60, "pods on the rebooted node unreachable 60 s after the reboot"
        time.sleep(0.2)
    reachable_after = time.monotonic() - start
    h = get_lab_host(REBOOTED)
    assert h.run("stat -L -c %i /proc/1/ns/pid").stdout != old_init, "a new PID 1"
    unit = h.run("systemctl show -p Result -p ActiveState podnet-restore.service").stdout.split()
    assert "Result=success" in unit and "ActiveState=active" in unit, unit
    assert "podnet-restore: done" in h.run("journalctl -b -o cat -u podnet-restore.service").stdout
    # The other runtime's lease outlived the boot restore, and no pod of podnet's got its address.
    try:
        assert h.run(f"head -n1 {lease}").stdout.strip() == FOREIGN_ID
        assert foreign_ip not in [p["ip"] for p in probe.pods([REBOOTED])]
    finally:
        foreign_cni(h, "DEL", netns="")
        h.run("ip netns del podnet-test-foreign 2>/dev/null; true")
    assert not h.file(lease).exists, "the foreign lease is released by its own DEL"
    report(f"reboot {REBOOTED} (Debian {release(REBOOTED)}): systemd up {booted:.1f} s, "
           f"pods reachable {reachable_after:.1f} s after the plug was pulled\n")


# What prepare.yml gave each machine before podnet came (lab/firewall_presets.py).
FIREWALLS = {"node1": "docker", "node2": "nftables", "node3": "ufw"}


@pytest.mark.parametrize("node", NODES)
def test_the_machines_own_firewall_still_drops_what_it_does_not_know(node):
    """Every suite here ran through the node's own firewall: it is still in force, its
    drop policies untouched, and podnet only added its accept chains beside it."""
    h = get_lab_host(node)
    preset = FIREWALLS[node]
    if preset == "nftables":
        ruleset = h.run("nft list table inet filter").stdout
        assert "hook forward priority filter; policy drop;" in ruleset
        assert "hook input priority filter; policy drop;" in ruleset
        assert "jump podnet_accept_forward" in ruleset, ruleset
        assert h.run("systemctl is-enabled nftables").stdout.strip() == "enabled"
    else:
        rules = h.run("iptables -w -S").stdout.splitlines()
        assert "-P FORWARD DROP" in rules, rules
        if preset == "docker":
            assert rules.index("-A FORWARD -j DOCKER-USER") < rules.index(
                "-A FORWARD -j DOCKER-ISOLATION-STAGE-1")
            assert "-A DOCKER-USER -j PODNET-FORWARD" in rules, rules
        else:
            assert "-P INPUT DROP" in rules, rules
            assert "Status: active" in h.run("ufw status").stdout
            assert h.run("systemctl is-enabled ufw").stdout.strip() == "enabled"
            assert "-A FORWARD -j PODNET-FORWARD" in rules, rules


# A neighbour's everyday move, what it takes, and the check that it is back (podnet-heal.service
# puts it back from the node's own files, no Ansible). Timed on the node itself.
NEIGHBOURS = [
    ("node2", "systemctl restart nftables",  # its nftables.conf starts with flush ruleset
     "nft list tables | grep -c podnet | grep -qx {tables} && "
     "nft list chain inet filter forward | grep -q 'jump podnet_accept_forward'"),
    ("node3", "ufw reload",  # ufw rebuilds its chains; PODNET-FORWARD's jump must come back
     "iptables -w -C FORWARD -j PODNET-FORWARD"),
    ("node1", "ip route flush proto 158",  # a routing daemon's cleanup: podnet's routes gone
     "test $(ip route show proto 158 | wc -l) -eq {routes}"),
    # The DNS killed: the test runs in the machine's own PID namespace, so these are its processes.
    ("node1", "pkill -9 -x dnsmasq",
     "test $(pgrep -c -x dnsmasq) -ge {dnsmasq}"),
]


@pytest.mark.parametrize("node, event, healed", NEIGHBOURS, ids=[e for _n, e, _c in NEIGHBOURS])
def test_a_neighbours_move_is_healed_within_seconds_without_ansible(node, event, healed):
    h = get_lab_host(node)
    counts = {"tables": h.run("nft list tables | grep -c podnet").stdout.strip(),
              "routes": h.run("ip route show proto 158 | wc -l").stdout.strip(),
              "dnsmasq": h.run("pgrep -c -x dnsmasq || true").stdout.strip() or "0"}
    check = healed.format(**counts)
    assert h.run(check).rc == 0, f"{node}: not in place before the event: {check}"
    timed = h.run(
        f"{event} >/dev/null 2>&1; start=$(date +%s%N); "
        f"for i in $(seq 300); do sh -c \"{check}\" >/dev/null 2>&1 && break; sleep 0.1; done; "
        f"echo $(( ($(date +%s%N) - start) / 1000000 )) $i")
    millis, rounds = (int(x) for x in timed.stdout.split())
    assert rounds < 300, f"{node}: `{event}` not healed within 30 s"
    report(f"heal on {node} (Debian {release(node)}): `{event}` put back in {millis / 1000:.1f} s\n")



# systemd-networkd manages node3's uplink (prepare.yml). When it configures a link it removes
# every route on it that no .network file configured (ManageForeignRoutes=, on by default),
# podnet's podCIDR routes among them; podnet's drop-in turns that off. A move runs on the node
# while the kernel's route events are recorded: it prints the milliseconds until networkd has
# configured the link again and podnet's routes are all there (after networkd deleted some,
# when `drops`), then the podCIDRs whose podnet route the kernel reported deleted.
NETWORKD = "node3"
NETWORKD_DROPIN = "/etc/systemd/networkd.conf.d/podnet.conf"
NETWORKD_MOVES = ("networkctl reload", "networkctl reconfigure eth0", "systemctl restart systemd-networkd")
NETWORKD_WATCH = r"""events=/run/podnet-test-route-events
ip monitor route >$events 2>&1 </dev/null & monitor=$!
sleep 0.3
start=$(date +%s%N)
{move} >/dev/null 2>&1
for i in $(seq 300); do
  ( [ {drops} = no ] || grep -Eq '^Deleted .* proto (158|podnet)( |$)' $events ) &&
    [ "$(ip route show proto 158 | wc -l)" -eq {routes} ] &&
    networkctl list --no-legend eth0 | grep -qw configured && break
  sleep 0.1
done
echo $(( ($(date +%s%N) - start) / 1000000 )) $i
sleep 2
kill $monitor
grep -E '^Deleted .* proto (158|podnet)( |$)' $events | cut -d' ' -f2
rm -f $events
"""


def podnet_routes(h):
    return sorted(line.split()[0] for line in h.run("ip route show proto 158").stdout.splitlines())


def networkd_move(h, move, drops):
    """(seconds until networkd configured the link again and podnet's routes were all there, or
    None after 30 s; the podCIDRs whose podnet route the kernel reported deleted)"""
    routes = podnet_routes(h)
    assert routes, f"{NETWORKD}: no podnet route to watch"
    done = h.run(NETWORKD_WATCH.format(move=move, drops="yes" if drops else "no", routes=len(routes)))
    timing, *deleted = done.stdout.splitlines()
    millis, rounds = (int(x) for x in timing.split())
    return (millis / 1000 if rounds < 300 else None), sorted(deleted)


def pods_across_nodes_reachable(node):
    """Every pod on `node` answers a pod on each other node, keeping its source: both ways
    between the nodes' podCIDRs go through the routes under test."""
    pods = probe.pods(NODES)
    here = [p for p in pods if p["node"] == node and probe.first_tcp_port(p)]
    others = {p["node"]: p for p in pods if p["node"] != node and p["namespace"] == "default"}
    return here and len(others) == len(NODES) - 1 and all(reachable(here, o) for o in others.values())


@pytest.mark.parametrize("move", NETWORKD_MOVES)
def test_networkd_reapplied_keeps_podnets_routes(move):
    h = get_lab_host(NETWORKD)
    assert "ManageForeignRoutes=no" in h.file(NETWORKD_DROPIN).content_string
    assert h.run("systemctl is-enabled systemd-networkd").stdout.strip() == "enabled"
    assert "configured" in h.run("networkctl list --no-legend eth0").stdout, "networkd manages the uplink"
    seconds, deleted = networkd_move(h, move, drops=False)
    assert deleted == [], f"`{move}` deleted podnet's routes to {deleted} despite {NETWORKD_DROPIN}"
    assert seconds is not None, f"`{move}`: link not configured again, or podnet's routes not there, in 30 s"
    assert pods_across_nodes_reachable(NETWORKD)
    report(f"networkd on {NETWORKD} (Debian {release(NETWORKD)}), podnet's drop-in in place: `{move}` "
           f"kept podnet's routes (the kernel reported none deleted)\n")


def test_without_podnets_dropin_networkd_deletes_the_routes_and_heal_puts_them_back():
    """The hazard is real: networkd started without the drop-in deletes podnet's routes when it
    configures the uplink (at its start, and at each reconfigure), and podnet-heal puts them
    back from the node's files. Then the drop-in goes back, and networkd keeps them again."""
    h = get_lab_host(NETWORKD)
    routes = podnet_routes(h)
    assert h.run(f"mv {NETWORKD_DROPIN} {NETWORKD_DROPIN}.away").rc == 0
    healed = {}
    try:
        for move in ("systemctl restart systemd-networkd", "networkctl reconfigure eth0"):
            seconds, deleted = networkd_move(h, move, drops=True)
            assert deleted == routes, f"`{move}` without the drop-in deleted {deleted}; podnet's: {routes}"
            assert seconds is not None, f"`{move}`: podnet's routes not back within 30 s"
            healed[move] = seconds
    finally:
        # As found: the drop-in in place, and read by a networkd started since.
        restored = h.run(f"mv {NETWORKD_DROPIN}.away {NETWORKD_DROPIN} && systemctl restart systemd-networkd")
    assert restored.rc == 0, restored.stderr
    seconds, deleted = networkd_move(h, "networkctl reconfigure eth0", drops=False)
    assert deleted == [] and seconds is not None, f"with the drop-in back, networkd deleted {deleted}"
    assert podnet_routes(h) == routes
    assert pods_across_nodes_reachable(NETWORKD)
    for move, seconds in healed.items():
        report(f"networkd on {NETWORKD} (Debian {release(NETWORKD)}) without podnet's drop-in: `{move}` "
               f"deleted podnet's {len(routes)} routes; podnet-heal put them back {seconds:.1f} s after it\n")

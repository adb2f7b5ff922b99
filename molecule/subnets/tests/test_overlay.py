"""Nodes on two subnets, proven with real packets (molecule scenario `subnets`).

node1-3 share 192.168.56.0/24; node4 sits on 192.168.57.0/24 behind the lab's router, which
routes between the node subnets and knows nothing of podCIDRs. So node1-3 route each other's
pods directly and reach node4's over podnet's VXLAN device, and the pods' MTU leaves room
for VXLAN's 50 bytes.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from lab import podnet_lab, probe
from lab.podnet_lab import load_topology, node_exec_argv
from tests.lab.lab_runs import ansible_playbook
from tests.lab.netns_backend import get_lab_host

REPO = pathlib.Path(__file__).resolve().parents[3]
TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
NODE_IP = TOPOLOGY.nodes
FAR = "node4"            # the node behind the router
NEAR = ("node1", "node2", "node3")
DEVICE = "podnet.1"
VXLAN_OVERHEAD = 50
POD_NETWORK_PLAYS = ("playbooks/plan.yml", "playbooks/pod_network.yml", "playbooks/test_pods.yml")


def host(node):
    return get_lab_host(node)


def pod_cidr(node):
    return json.loads(host(node).file("/etc/podnet/node.json").content_string)["pod_cidr"]


def routes(node):
    return {r["dst"]: r for r in json.loads(host(node).run("ip -j route show proto 158").stdout)}


def fdb(node):
    out = host(node).run("bridge fdb show dev %s" % DEVICE).stdout
    return sorted(line.split()[0] + " " + line.split()[2] for line in out.splitlines() if " dst " in line)


def target_pod(node):
    """A pod on `node` no policy of the lab isolates (the truth table's pods)."""
    return next(p for p in probe.pods([node]) if p["namespace"] != "default")


def client_pod():
    return next(p for p in probe.pods(["node1"]) if p["name"] == "client")


def underlay_mtu(node):
    return int(host(node).run("cat /sys/class/net/eth0/mtu").stdout)


def check_reach_far_pods(settle=0):
    """The client pod on node1 reaches a pod on every node, keeping its own address.

    `settle`: seconds to keep asking after a run that made pods anew on their old IPs (a new
    MTU is a new CNI config): a node's neighbour entry for the old pod's MAC lingers until
    the kernel probes it again, which is the kernel's pace, not podnet's.
    """
    client = client_pod()
    deadline = time.monotonic() + settle
    while True:
        failures = []
        for node in NODES:
            pod = target_pod(node)
            answer = probe.http(probe.Source("node1", client), pod["ip"], probe.first_tcp_port(pod))
            if answer is None or answer["client"] != client["ip"]:
                failures.append("client -> %s on %s: %s" % (pod["ip"], node, answer))
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not failures, failures


# --- the roads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("node", NEAR)
def test_near_peers_are_direct_routes_and_node4_goes_over_vxlan(node):
    got = routes(node)
    for other in NEAR:
        if other != node:
            route = got[pod_cidr(other)]
            assert route["gateway"] == NODE_IP[other] and route["dev"] == "eth0", route
    far = got[pod_cidr(FAR)]
    vtep = pod_cidr(FAR).split("/")[0]
    assert (far["gateway"], far["dev"], "onlink" in far.get("flags", [])) == (vtep, DEVICE, True), far
    mac = "0a:58:" + ":".join("%02x" % int(o) for o in vtep.split("."))
    assert fdb(node) == ["%s %s" % (mac, NODE_IP[FAR])]


def test_node4_reaches_every_peer_over_vxlan_with_one_entry_each():
    got = routes(FAR)
    assert {dst: r["dev"] for dst, r in got.items()} == {pod_cidr(n): DEVICE for n in NEAR}
    assert sorted(line.split()[-1] for line in fdb(FAR)) == sorted(NODE_IP[n] for n in NEAR)
    neigh = host(FAR).run("ip neigh show dev %s nud permanent" % DEVICE).stdout.split("\n")
    vteps = sorted(pod_cidr(n).split("/")[0] for n in NEAR)
    assert sorted(line.split()[0] for line in neigh if line) == vteps


@pytest.mark.parametrize("node", NODES)
def test_vxlan_device_layout_and_offload(node):
    link = json.loads(host(node).run("ip -j -d link show %s" % DEVICE).stdout)[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["learning"]) == (1, 8472, NODE_IP[node], False)
    assert link["mtu"] == underlay_mtu(node) - VXLAN_OVERHEAD
    assert "tx-checksum-ip-generic: off" in host(node).run("ethtool -k %s" % DEVICE).stdout


@pytest.mark.parametrize("node", NODES)
def test_pods_get_the_underlay_mtu_less_vxlan_overhead(node):
    conflist = json.loads(host(node).file("/etc/cni/net.d/10-podnet.conflist").content_string)
    assert conflist["plugins"][0]["mtu"] == underlay_mtu(node) - VXLAN_OVERHEAD
    pod = target_pod(node)
    mtu = subprocess.run(node_exec_argv(node) + ["ip", "netns", "exec", pod["netns"], "cat",
                                                 "/sys/class/net/eth0/mtu"], capture_output=True, text=True)
    assert int(mtu.stdout) == underlay_mtu(node) - VXLAN_OVERHEAD


def test_pods_reach_pods_across_the_overlay_keeping_their_address():
    check_reach_far_pods()


def test_vxlan_passes_a_node_firewall_that_drops_input_from_its_peers_only():
    """ufw's INPUT policy DROP on node4 and node1 (lab/firewall_presets.py): the node play
    lets podnet's VXLAN port in from the VXLAN peers only, and pods reach each other again."""
    from lab import firewall_presets
    presets = {node: podnet_lab.load_topology().ns(node) for node in ("node1", FAR)}
    try:
        for netns in presets.values():
            firewall_presets.apply(netns, "ufw")
        run = ansible_playbook("playbooks/plan.yml", "playbooks/node.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        rules = host(FAR).run("iptables -w -S PODNET-INPUT").stdout
        vxlan = sorted(line.split()[3] for line in rules.splitlines() if "--dport 8472" in line)
        assert vxlan == sorted("%s/32" % NODE_IP[n] for n in NEAR), rules
        near = host("node1").run("iptables -w -S PODNET-INPUT").stdout
        assert [line for line in near.splitlines() if "--dport 8472" in line] == [
            '-A PODNET-INPUT -s %s/32 -p udp -m udp --dport 8472 -m comment --comment '
            '"podnet: cluster traffic" -j ACCEPT' % NODE_IP[FAR]], near
        check_reach_far_pods(settle=10)
    finally:
        for netns in presets.values():
            firewall_presets.clear(netns, "ufw")
        run = ansible_playbook("playbooks/plan.yml", "playbooks/node.yml")
        assert run.returncode == 0, run.stdout[-3000:]


# --- MTU --------------------------------------------------------------------------------------

def test_the_largest_df_ping_crosses_to_node4_and_one_byte_more_fails_at_the_source():
    client, far = client_pod(), target_pod(FAR)
    largest = underlay_mtu("node1") - VXLAN_OVERHEAD - 28  # IPv4 20 + ICMP 8
    source = probe.Source("node1", client)
    fits = source.run(["ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(largest), far["ip"]])
    assert fits.returncode == 0, fits.stdout + fits.stderr
    too_big = source.run(["ping", "-M", "do", "-c", "1", "-W", "2", "-s", str(largest + 1), far["ip"]])
    assert too_big.returncode != 0
    assert "message too long" in (too_big.stdout + too_big.stderr), too_big.stdout + too_big.stderr


def test_a_bulk_tcp_transfer_across_vxlan_arrives_whole():
    client, far = client_pod(), target_pod(FAR)
    size = 20 * 1000 * 1000
    listener = subprocess.Popen(
        node_exec_argv(FAR) + ["ip", "netns", "exec", far["netns"], "timeout", "60", "socat", "-u",
                               "TCP-LISTEN:5009,reuseaddr", "SYSTEM:wc -c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sent = None
        for _ in range(50):  # until the listener listens
            sent = probe.Source("node1", client).run(
                ["sh", "-c", "head -c %d /dev/zero | socat -u - TCP:%s:5009" % (size, far["ip"])], timeout=60)
            if sent.returncode == 0:
                break
        assert sent.returncode == 0, sent.stderr
        out, err = listener.communicate(timeout=60)
    finally:
        listener.kill()
        listener.wait()
    assert int(out.strip()) == size, (out, err)


# --- plan-time refusal --------------------------------------------------------------------------

def test_overlay_none_fails_in_the_plan_naming_the_unreachable_peer():
    run = ansible_playbook("playbooks/plan.yml", "-e", "podnet_overlay=none")
    assert run.returncode != 0
    assert "podnet_overlay is none" in run.stdout and FAR in run.stdout, run.stdout[-3000:]


# --- reboot -------------------------------------------------------------------------------------

def test_the_boot_restore_brings_the_vxlan_device_back():
    before = (routes(FAR), fdb(FAR))
    result = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "reboot", FAR],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "VXLAN device" in result.stdout
    assert (routes(FAR), fdb(FAR)) == before
    assert "tx-checksum-ip-generic: off" in host(FAR).run("ethtool -k %s" % DEVICE).stdout
    check_reach_far_pods()


# --- moving node4 between the segments ---------------------------------------------------------

def move(node, ip, bridge, prefixlen, gateway):
    """Re-cable a lab node onto another segment and renumber it, as moving a machine would."""
    ns = TOPOLOGY.ns(node)
    port = TOPOLOGY.switch_port(node)
    for argv in (["ip", "-n", TOPOLOGY.ns("switch"), "link", "set", port, "master", bridge],
                 ["ip", "-n", ns, "addr", "flush", "dev", "eth0", "scope", "global"],
                 ["ip", "-n", ns, "addr", "add", "%s/%d" % (ip, prefixlen), "dev", "eth0"],
                 ["ip", "-n", ns, "route", "replace", "default", "via", gateway]):
        subprocess.run(argv, check=True, capture_output=True)


def test_node4_moved_onto_the_first_segment_goes_direct_leaving_nothing_stale_and_back(tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(podnet_lab.DEFAULT_INVENTORY, inventory, symlinks=False)
    (inventory / "host_vars").mkdir()
    moved_ip = "192.168.56.14"
    (inventory / "host_vars" / (FAR + ".yml")).write_text("node_ip: %s\n" % moved_ip)
    bridge, prefixlen, gateway = TOPOLOGY.attachment(FAR)
    move(FAR, moved_ip, "br0", TOPOLOGY.node_prefixlen, TOPOLOGY.router_ip)
    try:
        run = ansible_playbook("-i", str(inventory / "hosts.yml"), *POD_NETWORK_PLAYS,
                               "-e", "podnet_services_file=%s" % (inventory / "services.yml"))
        assert run.returncode == 0, run.stdout[-3000:]
        for node in NODES:
            live = routes(node).values()
            assert all(r["dev"] == "eth0" and "onlink" not in r.get("flags", []) for r in live), live
            assert not host(node).run("ip link show %s" % DEVICE).succeeded, "%s kept %s" % (node, DEVICE)
            assert "0a:58:" not in host(node).run("ip neigh show").stdout, "stale VXLAN neighbour: " + node
        assert routes("node1")[pod_cidr(FAR)]["gateway"] == moved_ip
        conflist = json.loads(host(FAR).file("/etc/cni/net.d/10-podnet.conflist").content_string)
        assert conflist["plugins"][0]["mtu"] == underlay_mtu(FAR)
        check_reach_far_pods(settle=60)
    finally:
        move(FAR, NODE_IP[FAR], bridge, prefixlen, gateway)
    run = ansible_playbook(*POD_NETWORK_PLAYS)
    assert run.returncode == 0, run.stdout[-3000:]
    assert routes("node1")[pod_cidr(FAR)]["dev"] == DEVICE
    assert fdb(FAR) and len(fdb(FAR)) == len(NEAR)
    check_reach_far_pods(settle=60)

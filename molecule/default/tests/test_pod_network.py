"""The pod network, proven with real packets in the lab (molecule verify).

Each row of a table is one packet's road: from where, to where, who must
answer and which source address the answering pod must see. The same table
runs again after one node's simulated reboot.
"""

import ipaddress
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from lab import podnet_lab, probe
from lab.podnet_lab import load_topology
from tests.lab.lab_runs import ansible_playbook, inventory_args
from tests.lab.netns_backend import get_lab_host

REPO = pathlib.Path(__file__).resolve().parents[3]

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
NODE_IP = TOPOLOGY.nodes
REBOOTED = "node2"
ROUTE_PROTO = "158"


def lab(*args):
    return subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)


def pods_by_name():
    """Pods of the default namespace by name, the others (the policy truth table's x/a, y/a,
    ...) by namespace/name: names repeat across namespaces."""
    return {p["name"] if p["namespace"] == "default" else "%s/%s" % (p["namespace"], p["name"]): p
            for p in probe.pods(NODES)}


def host(node):
    return get_lab_host(node)


def direct(node, other):
    """Whether two nodes share an L2 segment (the lab's segments are /24s): else VXLAN."""
    return (ipaddress.ip_network(NODE_IP[node] + "/24", strict=False)
            == ipaddress.ip_network(NODE_IP[other] + "/24", strict=False))


def pod_cidr(node):
    return json.loads(host(node).file("/etc/podnet/node.json").content_string)["pod_cidr"]


def expectations(pods):
    """(description, source, target ip, port, expected pod or None, expected client ip)."""
    client = pods["client"]
    rows = []
    for name in ("web-0", "web-1", "frontend-2"):
        web = pods[name]
        where = "same node" if web["node"] == client["node"] else "across nodes"
        rows.append(("pod to pod, %s (%s)" % (where, name), probe.Source(client["node"], client),
                     web["ip"], web["ports"][0]["containerPort"], name, client["ip"]))
    # A pod on every other node (a subnet away, over VXLAN, in the two-subnet lab), except
    # the db, which the lab's NetworkPolicy isolates.
    for node in NODES:
        pod = next((p for _key, p in sorted(pods.items()) if p["node"] == node and p["name"] != "db"
                    and p["node"] != client["node"] and probe.first_tcp_port(p)), None)
        if pod is not None:
            rows.append(("pod to a pod on %s (%s)" % (node, pod["name"]),
                         probe.Source(client["node"], client), pod["ip"], probe.first_tcp_port(pod),
                         pod["name"], client["ip"]))
    for node in NODES:
        web = next(p for p in pods.values() if p["name"].startswith("web-") and p["node"] != node)
        # A node's own packet leaves by the route to the pod: straight on the LAN with the node
        # IP, or through podnet's VXLAN device with the node's VTEP address (its podCIDR's
        # network address), as flannel's do.
        seen = NODE_IP[node] if direct(node, web["node"]) else pod_cidr(node).split("/")[0]
        rows.append(("node %s to a remote pod %s" % (node, web["name"]), probe.Source(node),
                     web["ip"], 8080, web["name"], seen))
    for pod in pods.values():
        rows.append(("pod %s to the internet host" % pod["name"], probe.Source(pod["node"], pod),
                     probe.INTERNET_IP, 80, "internet", NODE_IP[pod["node"]]))
    return rows


def check_matrix():
    pods = pods_by_name()
    assert {"web-0", "web-1", "frontend-2", "client"} <= set(pods), pods
    failures = []
    for description, source, ip, port, expected_pod, expected_client in expectations(pods):
        answer = probe.http(source, ip, port)
        if answer is None:
            # Asked once more, longer: the labs share two CPUs, and a road that is shut stays shut.
            time.sleep(1)
            answer = probe.http(source, ip, port, timeout=6)
        if answer is None:
            failures.append("%s: no answer from %s:%s" % (description, ip, port))
        elif answer["pod"] != expected_pod or answer["client"] != expected_client:
            failures.append("%s: answered by %s seeing %s, expected %s seeing %s" % (
                description, answer["pod"], answer["client"], expected_pod, expected_client))
    for pod in pods.values():
        for node in NODES:
            if not probe.ping(probe.Source(pod["node"], pod), NODE_IP[node]):
                failures.append("pod %s cannot ping node %s" % (pod["name"], node))
    assert not failures, "\n".join(failures)


# --- node preparation -------------------------------------------------------

@pytest.mark.parametrize("node", NODES)
def test_node_forwards_and_persists_sysctls(node):
    h = host(node)
    assert h.run("cat /proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert h.run("cat /proc/sys/net/bridge/bridge-nf-call-iptables").stdout.strip() == "1"
    persisted = h.file("/etc/sysctl.d/90-podnet.conf")
    assert persisted.contains("^net.ipv4.ip_forward = 1$")
    assert persisted.contains("^net.bridge.bridge-nf-call-iptables = 1$")
    assert h.file("/etc/modules-load.d/podnet.conf").contains("^br_netfilter$")


@pytest.mark.parametrize("node", NODES)
def test_node_has_its_own_pod_cidr_and_conflist(node):
    h = host(node)
    state = json.loads(h.file("/etc/podnet/node.json").content_string)
    conflist = json.loads(h.file("/etc/cni/net.d/10-podnet.conflist").content_string)
    bridge = conflist["plugins"][0]
    assert conflist["cniVersion"] == "1.0.0"
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == state["pod_cidr"]
    assert bridge["ipMasq"] is False
    assert h.run("ip -4 -o addr show cbr0").stdout.split()[3].startswith(
        state["pod_cidr"].rsplit(".", 1)[0])


def test_pod_cidrs_are_distinct_across_nodes():
    cidrs = [json.loads(host(n).file("/etc/podnet/node.json").content_string)["pod_cidr"] for n in NODES]
    assert len(set(cidrs)) == len(NODES), cidrs


@pytest.mark.parametrize("node", NODES)
def test_routes_to_every_other_node_pod_cidr(node):
    h = host(node)
    routes = json.loads(h.run("ip -j route show proto %s" % ROUTE_PROTO).stdout)
    got = {(r["dst"], r["gateway"]) for r in routes}
    want = set()
    for other in NODES:
        if other != node:
            cidr = json.loads(host(other).file("/etc/podnet/node.json").content_string)["pod_cidr"]
            # A peer on this node's own segment is routed to directly, one behind the router
            # through podnet's VXLAN device, via its VTEP (its podCIDR's network address).
            want.add((cidr, NODE_IP[other] if direct(node, other) else cidr.split("/")[0]))
    assert got == want


def test_egress_masquerade_is_in_podnets_own_table():
    out = host(NODES[0]).run("nft list table ip podnet").stdout
    assert "masquerade" in out
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16" in out


# --- real packets -------------------------------------------------------------

def test_reachability_matrix():
    check_matrix()


def test_stale_podnet_route_removed_and_foreign_route_kept():
    h = host(NODES[0])
    h.run_test("ip route add 10.244.250.0/24 via %s proto %s" % (NODE_IP[NODES[1]], ROUTE_PROTO))
    h.run_test("ip route add 10.99.0.0/16 via %s proto static" % NODE_IP[NODES[1]])
    try:
        run = ansible_playbook("playbooks/plan.yml", "playbooks/pod_network.yml")
        assert run.returncode == 0, run.stdout[-3000:]
        routes = h.run("ip route show").stdout
        assert "10.244.250.0/24" not in routes, "a stale podnet route must be removed"
        assert "10.99.0.0/16" in routes, "a foreign route must be kept"
    finally:
        h.run("ip route del 10.99.0.0/16")


def test_reachability_after_a_node_reboot():
    before = pods_by_name()
    netns_before = host(REBOOTED).run("stat -L -c %i /proc/self/ns/net").stdout
    result = lab("reboot", REBOOTED)
    assert result.returncode == 0, result.stdout
    h = host(REBOOTED)
    assert h.run("stat -L -c %i /proc/self/ns/net").stdout != netns_before, "the node netns was recreated"
    assert h.run("cat /proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    after = pods_by_name()
    for name, pod in before.items():
        assert after[name]["ip"] == pod["ip"], "%s came back with another IP" % name
    # Only leases of live pods remain on the rebooted node.
    leases = h.run("ls /var/lib/cni/networks/podnet").stdout.split()
    ips = sorted(p["ip"] for p in after.values() if p["node"] == REBOOTED)
    assert sorted(x for x in leases if x[0].isdigit()) == ips
    check_matrix()



def node_state():
    """What a failed run must leave alone: podCIDR records, routes, NAT, conflists, Services."""
    state = {}
    for node in NODES:
        h = host(node)
        state[node] = (h.file("/etc/podnet/node.json").content_string,
                       h.file("/etc/cni/net.d/10-podnet.conflist").content_string,
                       h.run("ip route show proto %s" % ROUTE_PROTO).stdout,
                       h.run("nft -s list table ip podnet").stdout,
                       # Learned affinity elements and their countdowns, Debian 13's chain
                       # counters: traffic and time, not a change (lab/probe.py).
                       probe.stable_nft(h.run("nft -s list table ip podnet-services").stdout),
                       probe.stable_iptables(h.run("iptables-save").stdout),
                       h.file("/etc/podnet/services/allocations.json").content_string)
    return state


def test_overlapping_pod_cidr_fails_in_the_plan_and_changes_nothing(tmp_path):
    inventory = tmp_path / "inventory"
    # The inventory of the lab under test (PODNET_LAB_INVENTORY picks the machine lab),
    # its links followed so the copy stands alone.
    subprocess.run(["cp", "-rL", str(podnet_lab.DEFAULT_INVENTORY), str(inventory)], check=True)
    (inventory / "host_vars").mkdir()
    taken = json.loads(host(NODES[0]).file("/etc/podnet/node.json").content_string)["pod_cidr"]
    (inventory / "host_vars" / ("%s.yml" % NODES[1])).write_text("pod_cidr: %s\n" % taken)
    before = node_state()
    run = ansible_playbook("-i", str(inventory), "site.yml")
    assert run.returncode != 0
    # node1 holds the slice already (persisted), so the inventory cannot give it away.
    assert ("node %s: persisted podCIDR %s overlaps node %s's podCIDR %s (inventory)"
            % (NODES[0], taken, NODES[1], taken)) in run.stdout
    assert node_state() == before


def test_check_mode_on_a_converged_cluster_reports_no_change():
    run = ansible_playbook("site.yml", "--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:]
    recap = [line for line in run.stdout.splitlines() if line.startswith("node")]
    assert recap and all("changed=0" in line and "failed=0" in line for line in recap), recap


def test_routes_module_agrees_under_pypi_pyroute2():
    """The lab runs Debian's pyroute2 0.7; the same module under the venv's PyPI
    pyroute2 0.9 must read the node's routes identically (check mode: no change)."""
    if TOPOLOGY.machines:
        pytest.skip("a machine has its own Python and packages: the controller's venv is not on it")
    routes = json.loads(host(NODES[0]).file("/etc/podnet/routes.json").content_string)
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
    run = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ansible"), *inventory_args(), NODES[0], "--check",
         "-m", "podnet.network.routes",
         "-a", json.dumps({"routes": routes["routes"], "protocol": routes["protocol"],
                           "vxlan": routes.get("vxlan")}),
         "-e", "ansible_python_interpreter=%s" % sys.executable],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout[-3000:]
    import pyroute2
    import yaml
    assert not pyroute2.__version__.startswith("0.7"), "this test must run the PyPI pyroute2"
    # The result after "=>" is JSON or YAML, by callback_result_format; YAML reads both.
    result = yaml.safe_load(run.stdout[run.stdout.index(NODES[0] + " | "):].split(" => ", 1)[1])
    assert result["changed"] is False
    assert sorted(r["dest"] for r in result["routes"]) == sorted(r["dest"] for r in routes["routes"])

"""Nodes that already run a firewall (issue 11): Docker's FORWARD DROP + DOCKER-USER, a
hardened nftables `inet filter`, ufw's chains. Per preset, with real packets: the preset
drops cluster traffic before podnet's firewall role runs, everything passes after it, a
foreign rule's counter is untouched, a second run changes nothing, and when the firewall
goes away podnet takes back exactly what it added.

Converge the lab first (site.yml); the test leaves every node without a preset.
"""

import re

import pytest

from lab import firewall_presets, probe
from lab.podnet_lab import load_topology
from tests.lab.lab_runs import ansible_playbook

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
PLAYS = ("playbooks/plan.yml", "playbooks/node.yml", "--tags", "firewall")
DNS_IP = "10.96.0.10"
# The web Service's NodePort (inventory/lab/services.yml); externalTrafficPolicy: Local, so
# asked on node1, which runs web-0.
NODE_PORT = 31380

# One A question for web.default.svc.cluster.local, from inside a pod: rcode, answer count
# and the last answer's address (the Service's ClusterIP).
_DNS = r"""
import socket, struct, sys
q = struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in "web.default.svc.cluster.local".split(".")) + b"\0"
q += struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(q, (sys.argv[1], 53))
m = s.recv(4096)
# The first answer follows the question: a 2-byte name pointer, type, class, TTL, length, address.
print(m[3] & 15, struct.unpack("!H", m[6:8])[0], socket.inet_ntoa(m[len(q) + 12:len(q) + 16]))
"""


def netns(node):
    return TOPOLOGY.ns(node)


def foreign_rules(node):
    """The ruleset without podnet's tables, chains and jumps (counters aside: the probes'
    own packets move them; the foreign ping rule's counter is checked on its own)."""
    text = probe.Source(node).run(["nft", "-s", "list", "ruleset"]).stdout
    keep, skip_until = [], None
    for line in text.splitlines():
        if skip_until is not None:
            if line == skip_until:
                skip_until = None
            continue
        block = re.match(r"^(\t*)(table|chain) (\S+ )?(\S+) \{$", line)
        if block and block.group(4).lower().startswith("podnet"):
            skip_until = block.group(1) + "}"
            continue
        if "podnet" not in line.lower() and line:
            keep.append(line)
    return keep


def reachable(pods):
    """What a cluster with a working network answers: (description, answered?)."""
    by_name = {p["name"]: p for p in pods if p["namespace"] == "default"}
    client, web1, frontend2 = by_name["client"], by_name["web-1"], by_name["frontend-2"]
    src = probe.Source(client["node"], client)
    dns = src.run(["python3", "-c", _DNS, DNS_IP], timeout=15)
    answer = dns.stdout.split() if dns.returncode == 0 else []
    return {
        "pod to pod across nodes": probe.http(src, web1["ip"], 8080) is not None,
        "pod to pod on node3": probe.http(src, frontend2["ip"], 8081) is not None,
        "node1 to a pod on node2": probe.http(probe.Source("node1"), web1["ip"], 8080) is not None,
        "pod to the internet": probe.http(src, probe.INTERNET_IP, 80) is not None,
        "client to a NodePort on node1": probe.http(probe.Source("client"), TOPOLOGY.nodes["node1"],
                                                    NODE_PORT) is not None,
        "pod asks the cluster DNS": answer[:1] == ["0"] and answer[1:2] != ["0"],
        "pod to the web ClusterIP": len(answer) == 3 and probe.http(src, answer[2], 80) is not None,
    }


def ping_node1():
    assert probe.ping(probe.Source("client"), TOPOLOGY.nodes["node1"])


@pytest.fixture(scope="module")
def pods():
    return probe.pods(NODES)


@pytest.mark.parametrize("preset", sorted(firewall_presets.PRESETS))
def test_cluster_traffic_passes_the_nodes_own_firewall(preset, pods):
    for node in NODES:
        firewall_presets.apply(netns(node), preset)
    try:
        # The preset bites: without podnet's chains (the preset replaced the table),
        # pods on other nodes are unreachable.
        assert not reachable(pods)["pod to pod across nodes"]
        ping_node1()
        counter = firewall_presets.foreign_counter(netns("node1"), preset)
        foreign = {node: foreign_rules(node) for node in NODES}
        assert counter > 0

        run = ansible_playbook(*PLAYS)
        assert run.returncode == 0, run.stdout[-3000:]
        assert re.search(r"drops by policy; podnet accepts cluster\s+traffic", run.stdout), run.stdout[-3000:]

        assert reachable(pods) == dict.fromkeys(reachable(pods), True)
        # podnet's run left every foreign rule as it was, its counter included.
        assert firewall_presets.foreign_counter(netns("node1"), preset) == counter
        assert {node: foreign_rules(node) for node in NODES} == foreign

        again = ansible_playbook(*PLAYS)
        assert again.returncode == 0, again.stdout[-3000:]
        unchanged = [node for node in NODES if re.search(r"%s\s*:.*changed=0" % node, again.stdout)]
        assert unchanged == NODES, again.stdout[-3000:]
    finally:
        for node in NODES:
            firewall_presets.clear(netns(node), preset)
    # The firewall is gone: podnet takes back what it added, and there is nothing left to find.
    run = ansible_playbook(*PLAYS)
    assert run.returncode == 0, run.stdout[-3000:]
    for node in NODES:
        ruleset = probe.Source(node).run(["nft", "list", "ruleset"]).stdout
        assert "PODNET-" not in ruleset and "podnet_accept" not in ruleset
        # No table podnet does not own comes back (iptables-nft creates one when asked about it).
        assert "table ip filter" not in ruleset and "table inet filter" not in ruleset

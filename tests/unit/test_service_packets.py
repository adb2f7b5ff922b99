"""The lab's packet table (tests/service_packets.py) against both backends' rendered rules.

The model is built exactly as the services play builds it, from inventory/lab/services.yml
and the inventory's test pods, with made-up pod IPs; the tracers then walk each packet
through the nftables table and the iptables chains rendered for the node that sees it.
"""

import pathlib

import pytest
import yaml
from ansible_collections.podnet.network.plugins.module_utils.explain import iptables_trace, nft_trace
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import expand_pods
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import (
    render_iptables,
    restore_text,
)
from ansible_collections.podnet.network.plugins.module_utils.services.model import load_services
from ansible_collections.podnet.network.plugins.module_utils.services.nft import full_content, render_nftables

from tests import service_packets

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "lab"
NODES = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}


def lab_pods():
    group_vars = yaml.safe_load((LAB / "group_vars" / "all" / "cluster.yml").read_text())
    pods = expand_pods(group_vars["podnet_test_pods"], sorted(NODES))
    for index, pod in enumerate(pods):
        pod["ip"] = f"10.244.{sorted(NODES).index(pod['node'])}.{10 + index}"
    return pods


PODS = lab_pods()
MODEL = load_services((LAB / "services.yml").read_text(), "services.yml", PODS)
PACKETS = service_packets.packets(MODEL, PODS, NODES)


def local_addresses(node):
    return {NODES[node], f"10.244.{sorted(NODES).index(node)}.1"}


def trace_nftables(node, packet):
    text = full_content(render_nftables(MODEL, node))
    return nft_trace.trace(text, packet, local_addresses(node))


def trace_iptables(node, packet):
    ruleset = render_iptables(MODEL, node)
    return iptables_trace.trace(restore_text(ruleset), ruleset["jumps"], packet, local_addresses(node))


def check(packet, result):
    if packet.expected in ("DROP", "REJECT"):
        assert result["verdict"] == packet.expected, result
        return
    assert result["verdict"] == "ACCEPT", result
    if packet.expected == "NONE":
        assert result["endpoints"] == {}, result
        return
    assert set(result["endpoints"]) == set(packet.expected), result
    for endpoint, outcome in result["endpoints"].items():
        assert outcome["share"] == pytest.approx(1 / len(packet.expected), abs=1e-9), result
        if packet.masq is None:
            continue
        if packet.masq == "hairpin":
            want = endpoint.split(":")[0] == packet.saddr
        else:
            want = packet.masq
        assert outcome["masquerade"] is want, (endpoint, result)


@pytest.mark.parametrize("backend", [trace_nftables, trace_iptables], ids=["nftables", "iptables"])
@pytest.mark.parametrize("packet", PACKETS, ids=[p.label for p in PACKETS])
def test_lab_packet(backend, packet):
    sent = {"saddr": packet.saddr, "daddr": packet.daddr, "dport": packet.dport,
            "protocol": packet.protocol, "path": packet.path}
    check(packet, backend(packet.node, sent))


def test_every_semantics_row_is_in_the_table():
    """The table covers each kind of outcome; a row edited away shows here."""
    outcomes = {p.expected if isinstance(p.expected, str) else "endpoints" for p in PACKETS}
    assert outcomes == {"DROP", "REJECT", "NONE", "endpoints"}
    assert {p.masq for p in PACKETS} == {True, False, "hairpin", None}
    assert {p.path for p in PACKETS} == {"prerouting", "output"}

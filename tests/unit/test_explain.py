"""podnet explain's pure core (plugins/module_utils/explain/) on a made-up lab: the node state the
command would gather, made from the renderers' own output, then explained.

The Services packet table (tests/service_packets.py) and the lab's db-access policy are the
expectations: each row's explanation must give the row's verdict, endpoint set and masquerade,
on both backends. The same rows are sent for real in the lab by molecule's test_services.py
and explained live by molecule/default/tests/test_explain_live.py.
"""

import json

import pytest
from ansible_collections.podnet.network.plugins.module_utils.explain import diagram, live_trace, road
from ansible_collections.podnet.network.plugins.module_utils.explain.cluster import (
    GATHER_SCRIPT,
    MARKER,
    SECTIONS,
    Cluster,
    ExplainError,
    Node,
    split_sections,
)
from ansible_collections.podnet.network.plugins.module_utils.pod_network.netconf import render_egress_table
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import render_iptables
from ansible_collections.podnet.network.plugins.module_utils.services.nft import full_content, render_nftables

from tests.unit.test_service_packets import LAB, MODEL, NODES, PACKETS, PODS

CLIENT = {
    "ip": "192.168.56.100",
    "routes": {"10.96.0.0/12": "node1", "198.51.100.0/24": "node1"},
    "gateway": "node1",
}
POLICIES = load_policies([((LAB / "services.yml").read_text(), "services.yml")], PODS)


def save_text(ruleset):
    """iptables-save's shape of a rendered ruleset: built-in chains with the jumps, then podnet's."""
    builtin = {
        "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
        "filter": ("INPUT", "FORWARD", "OUTPUT"),
    }
    lines = []
    for table in ("nat", "filter"):
        lines.append("*%s" % table)
        lines += [":%s ACCEPT [0:0]" % chain for chain in builtin[table]]
        lines += [":%s - [0:0]" % chain for chain in ruleset[table]]
        lines += ["-A %s %s" % (chain, rule) for t, chain, rule in ruleset["jumps"] if t == table]
        lines += ["-A %s %s" % (chain, rule) for chain, rules in ruleset[table].items() for rule in rules]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def node_sections(name, backend):
    index = sorted(NODES).index(name)
    pod_cidr = "10.244.%d.0/24" % index
    addresses = [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": NODES[name], "prefixlen": 24}]},
        {
            "ifname": "cbr0",
            "addr_info": [{"family": "inet", "local": "10.244.%d.1" % index, "prefixlen": 24}],
        },
    ]
    routes = [
        {"dst": "default", "gateway": "192.168.56.1", "dev": "eth0"},
        {"dst": "192.168.56.0/24", "dev": "eth0", "prefsrc": NODES[name]},
        {"dst": pod_cidr, "dev": "cbr0", "prefsrc": "10.244.%d.1" % index},
    ]
    routes += [
        {"dst": "10.244.%d.0/24" % i, "gateway": NODES[other], "dev": "eth0", "protocol": "158"}
        for i, other in enumerate(sorted(NODES))
        if other != name
    ]
    pods = [dict(p, netns="podnet-%s-%s" % (p["namespace"], p["name"])) for p in PODS if p["node"] == name]
    # The host side of each pod's veth: a port of cbr0 whose peer is in the pod's netns.
    links = [{"ifname": "veth-" + p["name"], "master": "cbr0", "link_netnsid": i} for i, p in enumerate(pods)]
    netns = [{"name": p["netns"], "id": i} for i, p in enumerate(pods)]
    sections = {key: "" for key in SECTIONS}
    sections.update(
        addresses=json.dumps(addresses),
        routes=json.dumps(routes),
        links=json.dumps(links),
        netns=json.dumps(netns),
        pods="\n".join(json.dumps(p) for p in pods),
        policy=render_table(POLICIES, name),
        egress=render_egress_table("10.244.0.0/16"),
        node=json.dumps({"pod_cidr": pod_cidr}),
    )
    if backend == "nftables":
        sections["services_nft"] = full_content(render_nftables(MODEL, name))
    else:
        sections["iptables"] = save_text(render_iptables(MODEL, name))
    return sections


def lab(backend):
    nodes = {name: Node(name, node_sections(name, backend), NODES[name]) for name in NODES}
    return Cluster(nodes, MODEL, CLIENT)


CLUSTERS = {backend: lab(backend) for backend in ("nftables", "iptables")}


def row_arguments(packet):
    """FROM and TO of a packet-table row in the command's own words."""
    source, target, protocol, _expected, _masq = packet.row
    kind, _, name = source.partition(":")
    # "client" in the table is the outside client (the lab also has a pod called client).
    return (name if kind in ("pod", "node") else CLIENT["ip"]), target, protocol


@pytest.mark.parametrize("backend", sorted(CLUSTERS))
@pytest.mark.parametrize("packet", PACKETS, ids=[p.label for p in PACKETS])
def test_every_packet_table_row_is_explained_as_the_table_says(backend, packet):
    source, target, protocol = row_arguments(packet)
    result = road.explain(CLUSTERS[backend], source, target, protocol)
    text = road.render_text(result)
    if packet.expected in ("DROP", "REJECT"):
        assert result["verdict"] == packet.expected, text
        return
    if packet.expected == "NONE":
        assert [e["endpoint"] for e in result["endpoints"]] == ["%s:%d" % (packet.daddr, packet.dport)], text
        return
    assert {e["endpoint"] for e in result["endpoints"]} == set(packet.expected), text
    assert result["verdict"] == "ACCEPT", text
    for endpoint in result["endpoints"]:
        assert endpoint["share"] == pytest.approx(1 / len(packet.expected)), text
        if packet.masq is None:
            continue
        want = endpoint["endpoint"].split(":")[0] == packet.saddr if packet.masq == "hairpin" else packet.masq
        assert endpoint["masquerade"] is want, text


def test_the_demo_flow_names_service_endpoint_route_and_reply():
    result = road.explain(CLUSTERS["nftables"], "default/client", "frontend:http")
    text = road.render_text(result)
    assert result["verdict"] == "ACCEPT" and len(result["endpoints"]) == 3, text
    remote = next(e for e in result["endpoints"] if e["node"] == "node2")
    words = "\n".join(hop["words"] for hop in remote["hops"])
    assert "proto podnet" in words and "next hop node2" in words, words
    assert "not masqueraded" in words and "conntrack on node1" in words, words
    assert "numgen drew" in text and "1/3 share" in text, text
    assert "host-side veth veth-client on node1's bridge cbr0" in text, text
    assert "bridge cbr0 -> veth-frontend-1 -> pod default/frontend-1" in words, words
    assert "Service default/frontend port http" in text


@pytest.mark.parametrize("backend", sorted(CLUSTERS))
def test_db_is_denied_by_its_network_policy_and_named(backend):
    result = road.explain(CLUSTERS[backend], "default/client", "db")
    assert result["verdict"] == "DROP", road.render_text(result)
    assert "denied by NetworkPolicy default/db-access" in result["reason"], result["reason"]
    assert "pod default/db is isolated for ingress" in result["reason"]
    assert "no ingress rule admits pod default/client" in result["reason"]
    allowed = road.explain(CLUSTERS[backend], "default/backend-0", "db")
    assert allowed["verdict"] == "ACCEPT", road.render_text(allowed)
    assert "allowed by NetworkPolicy default/db-access" in road.render_text(allowed)


def test_a_node_reaches_its_own_pods_whatever_the_policy():
    assert road.explain(CLUSTERS["nftables"], "node2", "default/db:5432")["verdict"] == "ACCEPT"
    assert road.explain(CLUSTERS["nftables"], "node3", "default/db:5432")["verdict"] == "DROP"


def test_reject_and_drop_name_their_rule():
    rejected = road.explain(CLUSTERS["nftables"], "default/client", "nothing:80")
    assert rejected["verdict"] == "REJECT" and "no endpoints" in road.render_text(rejected)
    rejected = road.explain(CLUSTERS["iptables"], "default/client", "nothing:80")
    assert rejected["verdict"] == "REJECT" and "has no endpoints" in rejected["reason"], rejected["reason"]
    dropped = road.explain(CLUSTERS["nftables"], CLIENT["ip"], "web:http@node3")
    assert "externalTrafficPolicy: Local" in dropped["reason"], dropped["reason"]


@pytest.mark.parametrize(
    "source, target, message",
    [
        ("default/nobody", "frontend:http", "unknown source 'default/nobody'"),
        ("default/client", "nosuch:80", "unknown destination 'nosuch:80': no Service default/nosuch"),
        ("default/client", "frontend:https", "Service default/frontend has no port https"),
        ("default/client", "web:http@node9", "unknown node 'node9'"),
        ("default/client", "web-headless:http", "headless"),
        ("default/client", "10.96.0.1", "an address needs a port"),
    ],
)
def test_bad_input_gets_a_clear_message(source, target, message):
    with pytest.raises(ExplainError, match=message.replace("(", r"\(")):
        road.explain(CLUSTERS["nftables"], source, target)


def test_gather_script_sections_round_trip():
    output = "".join("%s%s\nbody of %s\n" % (MARKER, name, name) for name in SECTIONS)
    sections = split_sections(output)
    assert sections["routes"] == "body of routes\n"
    assert all("echo '%s%s'" % (MARKER, name) in GATHER_SCRIPT for name in SECTIONS)
    with pytest.raises(ExplainError, match="lacks"):
        split_sections(MARKER + "addresses\n")


def test_json_is_serialisable_and_text_names_every_hop():
    result = road.explain(CLUSTERS["iptables"], "default/client", "frontend:http")
    assert json.loads(json.dumps(result))["verdict"] == "ACCEPT"
    text = road.render_text(result)
    assert "KUBE-SVC-" in text and "KUBE-SEP-" in text and "DNAT to" in text, text


def test_diagram_draws_nodes_pods_services_and_the_road():
    cluster = CLUSTERS["nftables"]
    result = road.explain(cluster, "default/client", "frontend:http")
    dot = diagram.cluster_dot(cluster, result)
    for text in (
        "node1  192.168.56.11",
        "podCIDR 10.244.1.0/24",
        "default/frontend-1",
        "bridge cbr0",
        "default/frontend\\n",
        "33%",
        "10.244.2.0/24",
    ):
        assert text in dot, text
    dropped = diagram.cluster_dot(cluster, road.explain(cluster, "default/client", "db"))
    assert "denied by NetworkPolicy" in dropped and "octagon" in dropped


# nft monitor trace's own lines: the source's node (the first packet, then a second one) ...
TRACE = """\
trace id 1f2e3d4c ip podnet-explain-trace trace packet: iif "veth1" ip saddr 10.244.0.17 ip daddr 10.96.0.14 ip protocol tcp tcp sport 40000 tcp dport 80
trace id 1f2e3d4c ip podnet-explain-trace trace rule ip saddr 10.244.0.17 ip daddr 10.96.0.14 tcp dport 80 meta nftrace set 1 (verdict continue)
trace id 1f2e3d4c ip podnet-services nat_prerouting rule jump services (verdict jump services)
trace id 1f2e3d4c ip podnet-services services rule ip daddr . meta l4proto . th dport vmap @service_endpoint_count (verdict goto service_pick_3)
trace id 1f2e3d4c ip podnet-services service_pick_3 rule meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @service_endpoints (verdict accept)
trace id 7a7a7a7a ip podnet-policy forward packet: iif "cbr0" oif "eth0" ip saddr 10.244.0.17 ip daddr 10.244.1.13 ip protocol tcp tcp sport 40000 tcp dport 8081
trace id 7a7a7a7a ip podnet-policy forward policy accept
trace id 1f2e3d4c ip podnet-explain-trace trace packet: iif "veth1" ip saddr 10.244.0.17 ip daddr 10.96.0.14 tcp flags == ack
trace id 1f2e3d4c ip podnet-policy forward rule ct state established,related accept (verdict accept)
"""  # noqa: E501
# ... and the endpoint's node, accepting it, or dropping it as db-access would.
ARRIVES = """\
trace id 2b2b2b2b ip podnet-explain-trace trace packet: iif "eth0" ip saddr 10.244.0.17 ip daddr 10.244.1.13 tcp dport 8081
trace id 2b2b2b2b ip podnet-policy forward packet: iif "eth0" oif "cbr0" ip saddr 10.244.0.17 ip daddr 10.244.1.13 tcp dport 8081
trace id 2b2b2b2b ip podnet-policy forward policy accept
"""  # noqa: E501
DROPPED = """\
trace id 3c3c3c3c ip podnet-explain-trace trace packet: iif "eth0" ip saddr 10.244.0.17 ip daddr 10.244.1.18 tcp dport 5432
trace id 3c3c3c3c ip podnet-policy forward rule ip daddr @ingress_isolated jump pod_ingress (verdict jump pod_ingress)
trace id 3c3c3c3c ip podnet-policy pod_ingress rule counter packets 1 bytes 60 drop comment "ingress to an isolated pod that no policy allows" (verdict drop)
"""  # noqa: E501


def test_a_kernel_trace_is_read_and_compared():
    events = live_trace.parse_trace(TRACE)
    assert len(events) == 7 and events[-1]["table"] == "podnet-policy", events  # the first packet only
    kernel = live_trace.kernel_outcome(events)
    assert kernel["endpoint"] == "10.244.1.13:8081" and kernel["verdict"] == "ACCEPT", kernel
    result = road.explain(CLUSTERS["nftables"], "default/client", "frontend:http")
    assert "10.244.1.13:8081" in {e["endpoint"] for e in result["endpoints"]}
    traces = {"node1": events, "node2": live_trace.parse_trace(ARRIVES), "node3": []}
    assert live_trace.compare(result, traces)["agrees"], live_trace.compare(result, traces)
    silent = live_trace.compare(result, dict(traces, node2=[]))
    assert silent["differences"] == ["the endpoint's node node2 traced nothing"], silent
    rejected = live_trace.compare(road.explain(CLUSTERS["nftables"], "default/client", "nothing:80"), traces)
    assert not rejected["agrees"] and "verdict: explained REJECT, kernel ACCEPT" in rejected["differences"]
    script = live_trace.trace_script(result["packet"], ["curl", "http://10.96.0.14:80/"], "node1",
                                     [e["endpoint"] for e in result["endpoints"]])
    assert "meta nftrace set 1" in script and "nft delete table ip podnet-explain-trace" in script
    assert "ip daddr { 10.244.0.12, 10.244.1.13, 10.244.2.14 }" in script, script


def test_a_drop_on_the_endpoints_node_is_the_kernels_verdict():
    result = road.explain(CLUSTERS["nftables"], "default/client", "db")
    first = TRACE.replace("10.96.0.14", "10.96.0.13").replace("dport 8081", "dport 5432").replace(
        "dport 80", "dport 5432").replace("10.244.1.13", "10.244.1.18").replace("pick_3", "pick_1")
    traces = {"node1": live_trace.parse_trace(first), "node2": live_trace.parse_trace(DROPPED)}
    comparison = live_trace.compare(result, traces)
    assert comparison["agrees"] and comparison["kernel"]["verdict"] == "DROP", comparison
    traces["node2"] = live_trace.parse_trace(ARRIVES.replace("10.244.1.13", "10.244.1.18"))
    assert not live_trace.compare(result, traces)["agrees"]

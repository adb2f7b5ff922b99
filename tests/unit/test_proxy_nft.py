"""The nftables Service proxy: what its table does to packets, and its pure helpers.

The packet tables follow kube-proxy's runPacketFlowTests: for each node, a packet (source,
destination, port, protocol, hook it enters by) and where it must end up. The rendered text
is walked by plugins/module_utils/explain/nft_trace.py, which parses nft syntax and knows nothing of the
renderer or the model.
"""

import copy
import ipaddress
import re

import pytest
from ansible_collections.podnet.network.plugins.module_utils.explain.nft_trace import TracerError, trace
from ansible_collections.podnet.network.plugins.module_utils.services.nft import (
    changes,
    full_content,
    has_changes,
    parse_listing,
    render_nftables,
    shape,
    stale_affinity,
    update_script,
)

NODES = {
    "node1": {"ip": "192.168.56.11", "gateway": "10.244.1.1"},
    "node2": {"ip": "192.168.56.12", "gateway": "10.244.2.1"},
    "node3": {"ip": "192.168.56.13", "gateway": "10.244.3.1"},
}
CLIENT = "192.168.56.100"  # outside the cluster
TABLE = "podnet-services"


def local_addresses(node):
    return {NODES[node]["ip"], NODES[node]["gateway"]}


def endpoint(ip, port, pod=None):
    """An endpoint of pod `ip`, on the node its pod CIDR (10.244.N.0/24) belongs to."""
    return {"ip": ip, "port": port, "node": f"node{ip.split('.')[2]}", "pod": pod or f"default/pod-{ip}"}


def port(name, protocol, number, target, endpoints, node_port=None):
    return {
        "name": name,
        "protocol": protocol,
        "port": number,
        "node_port": node_port,
        "target_port": target,
        "endpoints": sorted(endpoints, key=lambda ep: (ipaddress.ip_address(ep["ip"]), ep["port"])),
    }


def service(name, cluster_ip, ports, kind="ClusterIP", external_ips=(), etp="Cluster", itp="Cluster",
            affinity=None):
    return {
        "namespace": "default",
        "name": name,
        "type": kind,
        "cluster_ip": cluster_ip,
        "external_ips": list(external_ips),
        "external_traffic_policy": etp,
        "internal_traffic_policy": itp,
        "session_affinity_timeout": affinity,
        "ports": ports,
    }


BIG = [f"10.244.{i % 3 + 1}.{100 + i}" for i in range(20)]


def build_model():
    services = [
        # 3 endpoints on 3 nodes, two named ports.
        service("web", "10.96.0.10", [
            port("http", "TCP", 80, "http", [endpoint(f"10.244.{n}.5", 8080) for n in (1, 2, 3)]),
            port("dns", "UDP", 53, "dns", [endpoint(f"10.244.{n}.5", 5353) for n in (1, 2, 3)]),
        ]),
        service("np-cluster", "10.96.0.11", [
            port("", "TCP", 80, 8080, [endpoint(f"10.244.{n}.6", 8080) for n in (1, 2, 3)], node_port=30080),
        ], kind="NodePort"),
        service("np-local", "10.96.0.12", [
            port("", "TCP", 80, 8080, [endpoint(f"10.244.{n}.7", 8080) for n in (1, 2)], node_port=30081),
        ], kind="NodePort", etp="Local"),
        service("ext-local", "10.96.0.13", [
            port("", "TCP", 80, 8080, [endpoint(f"10.244.{n}.8", 8080) for n in (1, 2)]),
        ], external_ips=["198.51.100.10"], etp="Local"),
        service("itp-local", "10.96.0.14", [
            port("", "TCP", 80, 8080, [endpoint("10.244.1.9", 8080), endpoint("10.244.1.10", 8080)]),
        ], itp="Local"),
        service("empty", "10.96.0.15", [port("", "TCP", 80, 8080, [], node_port=30082)],
                kind="NodePort", external_ips=["198.51.100.11"]),
        service("headless", None, [port("", "TCP", 80, 80, [endpoint("10.244.1.11", 80)])]),
        service("sticky", "10.96.0.16", [
            port("", "TCP", 80, 8080, [endpoint(f"10.244.{n}.12", 8080) for n in (1, 2)]),
        ], affinity=10800),
        service("sctp", "10.96.0.17", [
            port("", "SCTP", 9000, 9000, [endpoint(f"10.244.{n}.13", 9000) for n in (2, 3)]),
        ]),
        service("big", "10.96.0.18", [port("", "TCP", 80, 8080, [endpoint(ip, 8080) for ip in BIG])]),
    ]
    return {
        "cluster_cidr": "10.244.0.0/16",
        "service_cidr": "10.96.0.0/12",
        "node_port_range": [30000, 32767],
        "services": sorted(services, key=lambda s: (s["namespace"], s["name"])),
    }


MODEL = build_model()
RULESETS = {node: render_nftables(MODEL, node) for node in NODES}
TEXTS = {node: full_content(RULESETS[node]) for node in NODES}


def find(model, name):
    return next(s for s in model["services"] if s["name"] == name)


def run(node, saddr, daddr, dport, protocol="TCP", path="prerouting", text=None):
    packet = {"saddr": saddr, "daddr": daddr, "protocol": protocol, "dport": dport, "path": path}
    return trace(text or TEXTS[node], packet, local_addresses(node))


def eps(*addresses, port=8080):
    return {f"{a}:{port}" for a in addresses}


WEB = eps("10.244.1.5", "10.244.2.5", "10.244.3.5")
WEB_DNS = eps("10.244.1.5", "10.244.2.5", "10.244.3.5", port=5353)
NP_CLUSTER = eps("10.244.1.6", "10.244.2.6", "10.244.3.6")
NP_LOCAL = eps("10.244.1.7", "10.244.2.7")
EXT_LOCAL = eps("10.244.1.8", "10.244.2.8")
ITP_LOCAL = eps("10.244.1.9", "10.244.1.10")
N1, N2, N3 = (NODES[n]["ip"] for n in ("node1", "node2", "node3"))

# (node, saddr, daddr, dport, protocol, path, expected, masquerade)
# expected: a set of endpoints ("ip:port"), "DROP", "REJECT", or "ACCEPT" (delivered, no DNAT).
# masquerade: a bool for every endpoint alike, or the set of the endpoints that are masqueraded.
PACKETS = [
    # ClusterIP from a pod: every endpoint, no masquerade.
    pytest.param("node1", "10.244.1.3", "10.96.0.10", 80, "TCP", "prerouting", WEB, False,
                 id="pod-clusterip"),
    pytest.param("node2", "10.244.2.3", "10.96.0.10", 53, "UDP", "prerouting", WEB_DNS, False,
                 id="pod-clusterip-udp"),
    pytest.param("node1", "10.244.1.3", "10.96.0.10", 53, "TCP", "prerouting", "ACCEPT", False,
                 id="pod-clusterip-wrong-protocol"),
    # ClusterIP from the node itself, or from outside: masquerade.
    pytest.param("node1", N1, "10.96.0.10", 80, "TCP", "output", WEB, True, id="node-clusterip"),
    pytest.param("node1", CLIENT, "10.96.0.10", 80, "TCP", "prerouting", WEB, True, id="external-clusterip"),
    # Hairpin: the endpoint reaching itself through its Service is masqueraded, only then.
    pytest.param("node1", "10.244.1.5", "10.96.0.10", 80, "TCP", "prerouting", WEB, {"10.244.1.5:8080"},
                 id="hairpin"),
    pytest.param("node3", "10.244.3.5", "10.96.0.10", 53, "UDP", "prerouting", WEB_DNS, {"10.244.3.5:5353"},
                 id="hairpin-udp"),
    # NodePort, externalTrafficPolicy: Cluster: every endpoint, always masqueraded.
    pytest.param("node1", CLIENT, N1, 30080, "TCP", "prerouting", NP_CLUSTER, True, id="nodeport-cluster"),
    pytest.param("node3", CLIENT, N3, 30080, "TCP", "prerouting", NP_CLUSTER, True, id="nodeport-cluster-n3"),
    pytest.param("node2", "10.244.2.3", N2, 30080, "TCP", "prerouting", NP_CLUSTER, True,
                 id="nodeport-cluster-pod"),
    pytest.param("node2", N2, N2, 30080, "TCP", "output", NP_CLUSTER, True, id="nodeport-cluster-node"),
    pytest.param("node1", CLIENT, "10.96.0.11", 80, "TCP", "prerouting", NP_CLUSTER, True,
                 id="nodeport-service-clusterip"),
    pytest.param("node1", "10.244.1.3", N1, 30081 + 100, "TCP", "prerouting", "ACCEPT", False,
                 id="not-a-nodeport"),
    # NodePort, externalTrafficPolicy: Local.
    pytest.param("node1", CLIENT, N1, 30081, "TCP", "prerouting", eps("10.244.1.7"), False,
                 id="nodeport-local-outside-n1"),
    pytest.param("node2", CLIENT, N2, 30081, "TCP", "prerouting", eps("10.244.2.7"), False,
                 id="nodeport-local-outside-n2"),
    pytest.param("node3", CLIENT, N3, 30081, "TCP", "prerouting", "DROP", False,
                 id="nodeport-local-outside-n3"),
    pytest.param("node3", "10.244.3.3", N3, 30081, "TCP", "prerouting", NP_LOCAL, False,
                 id="nodeport-local-pod-n3"),
    pytest.param("node3", N3, N3, 30081, "TCP", "output", NP_LOCAL, True, id="nodeport-local-node-n3"),
    pytest.param("node1", N1, N1, 30081, "TCP", "output", NP_LOCAL, True, id="nodeport-local-node-n1"),
    pytest.param("node3", CLIENT, "10.96.0.12", 80, "TCP", "prerouting", NP_LOCAL, True,
                 id="nodeport-local-clusterip-outside"),
    pytest.param("node1", "10.244.1.7", N1, 30081, "TCP", "prerouting", NP_LOCAL, {"10.244.1.7:8080"},
                 id="nodeport-local-hairpin"),
    pytest.param("node1", N2, N1, 30081, "TCP", "prerouting", eps("10.244.1.7"), False,
                 id="nodeport-local-from-another-node"),
    # NodePorts never answer on 127.0.0.0/8.
    pytest.param("node1", "127.0.0.1", "127.0.0.1", 30081, "TCP", "output", "ACCEPT", False,
                 id="nodeport-local-loopback"),
    pytest.param("node1", "127.0.0.1", "127.0.0.1", 30080, "TCP", "output", "ACCEPT", False,
                 id="nodeport-cluster-loopback"),
    pytest.param("node1", "127.0.0.1", "127.0.0.1", 30082, "TCP", "output", "ACCEPT", False,
                 id="nodeport-empty-loopback"),
    # externalIP, externalTrafficPolicy: Local.
    pytest.param("node1", CLIENT, "198.51.100.10", 80, "TCP", "prerouting", eps("10.244.1.8"), False,
                 id="externalip-local-outside-n1"),
    pytest.param("node3", CLIENT, "198.51.100.10", 80, "TCP", "prerouting", "DROP", False,
                 id="externalip-local-outside-n3"),
    pytest.param("node3", "10.244.3.3", "198.51.100.10", 80, "TCP", "prerouting", EXT_LOCAL, False,
                 id="externalip-local-pod-n3"),
    pytest.param("node3", N3, "198.51.100.10", 80, "TCP", "output", EXT_LOCAL, True,
                 id="externalip-local-node-n3"),
    pytest.param("node3", "10.244.3.3", "10.96.0.13", 80, "TCP", "prerouting", EXT_LOCAL, False,
                 id="externalip-service-clusterip-pod"),
    # internalTrafficPolicy: Local.
    pytest.param("node1", "10.244.1.3", "10.96.0.14", 80, "TCP", "prerouting", ITP_LOCAL, False,
                 id="itp-local-pod-n1"),
    pytest.param("node1", N1, "10.96.0.14", 80, "TCP", "output", ITP_LOCAL, True, id="itp-local-node-n1"),
    pytest.param("node3", "10.244.3.3", "10.96.0.14", 80, "TCP", "prerouting", "DROP", False,
                 id="itp-local-pod-n3"),
    pytest.param("node3", N3, "10.96.0.14", 80, "TCP", "output", "DROP", False, id="itp-local-node-n3"),
    pytest.param("node3", CLIENT, "10.96.0.14", 80, "TCP", "prerouting", "DROP", False,
                 id="itp-local-outside-n3"),
    # No endpoints at all: REJECT, on every address the Service answers on.
    pytest.param("node1", "10.244.1.3", "10.96.0.15", 80, "TCP", "prerouting", "REJECT", False,
                 id="empty-clusterip-pod"),
    pytest.param("node2", N2, "10.96.0.15", 80, "TCP", "output", "REJECT", False, id="empty-clusterip-node"),
    pytest.param("node1", CLIENT, N1, 30082, "TCP", "prerouting", "REJECT", False, id="empty-nodeport"),
    pytest.param("node1", N1, N1, 30082, "TCP", "output", "REJECT", False, id="empty-nodeport-node"),
    pytest.param("node2", CLIENT, "198.51.100.11", 80, "TCP", "prerouting", "REJECT", False,
                 id="empty-externalip"),
    pytest.param("node2", "10.244.2.3", "198.51.100.11", 80, "TCP", "prerouting", "REJECT", False,
                 id="empty-externalip-pod"),
    # Headless: no rules; the pod is reached directly.
    pytest.param("node2", "10.244.2.3", "10.244.1.11", 80, "TCP", "prerouting", "ACCEPT", False,
                 id="headless-pod"),
    pytest.param("node1", CLIENT, "10.244.1.11", 80, "TCP", "prerouting", "ACCEPT", False,
                 id="headless-outside"),
    # sessionAffinity: the first connection is balanced like any other.
    pytest.param("node1", "10.244.1.3", "10.96.0.16", 80, "TCP", "prerouting",
                 eps("10.244.1.12", "10.244.2.12"), False, id="affinity"),
    # SCTP.
    pytest.param("node1", "10.244.1.3", "10.96.0.17", 9000, "SCTP", "prerouting",
                 eps("10.244.2.13", "10.244.3.13", port=9000), False, id="sctp"),
    pytest.param("node1", "10.244.1.3", "10.96.0.17", 9000, "TCP", "prerouting", "ACCEPT", False,
                 id="sctp-port-over-tcp"),
    # More endpoints than the pick chains made in advance.
    pytest.param("node2", "10.244.2.3", "10.96.0.18", 80, "TCP", "prerouting", eps(*BIG), False, id="big"),
]


@pytest.mark.parametrize(("node", "saddr", "daddr", "dport", "protocol", "path", "expected", "masquerade"),
                         PACKETS)
def test_packet_flow(node, saddr, daddr, dport, protocol, path, expected, masquerade):
    result = run(node, saddr, daddr, dport, protocol, path)
    if expected in ("DROP", "REJECT"):
        assert result["verdict"] == expected, result
        return
    assert result["verdict"] == "ACCEPT", result
    if expected == "ACCEPT":
        assert result["endpoints"] == {}, result
        assert result["masquerade"] is masquerade, result
        return
    assert set(result["endpoints"]) == expected, result
    masqueraded = {ep for ep, r in result["endpoints"].items() if r["masquerade"]}
    if isinstance(masquerade, bool):
        assert masqueraded == (expected if masquerade else set()), result
    else:
        assert masqueraded == masquerade, result
    assert result["masquerade"] is bool(masqueraded)
    for ep, r in result["endpoints"].items():
        assert r["share"] == pytest.approx(1 / len(expected), abs=1e-12), (ep, result)


@pytest.mark.parametrize(
    ("node", "saddr", "daddr", "dport", "protocol", "count"),
    [
        ("node1", "10.244.1.3", "10.96.0.10", 80, "TCP", 3),
        ("node1", "10.244.1.3", "10.96.0.16", 80, "TCP", 2),
        ("node3", CLIENT, N3, 30080, "TCP", 3),
        ("node2", "10.244.2.3", "10.96.0.18", 80, "TCP", 20),
        ("node1", CLIENT, "10.96.0.18", 80, "TCP", 20),
    ],
)
def test_equal_shares(node, saddr, daddr, dport, protocol, count):
    result = run(node, saddr, daddr, dport, protocol)
    assert len(result["endpoints"]) == count
    for r in result["endpoints"].values():
        assert abs(r["share"] - 1 / count) <= 1e-12
    assert abs(sum(r["share"] for r in result["endpoints"].values()) - 1) <= 1e-12


def test_big_service_gets_a_pick_chain_beyond_the_premade_ones():
    assert "service_pick_20" in RULESETS["node1"]["pick_chains"]
    assert "service_pick_17" not in RULESETS["node1"]["pick_chains"]
    assert "service_pick_16" in RULESETS["node1"]["pick_chains"]


def test_headless_gets_no_elements():
    for node in NODES:
        # Neither the headless Service's only endpoint nor anything of its own.
        assert not re.search(r"10\.244\.1\.11(?!\d)", TEXTS[node])


def test_affinity_rules_are_rendered_for_the_timeout():
    ruleset = RULESETS["node1"]
    assert ruleset["elements"]["affinity_10800"] == ["10.96.0.16 . tcp . 80"]
    assert "timeout 10800s" in ruleset["skeleton"]
    assert shape(ruleset)["chains"]["affinity_prerouting"] == 2


def test_render_is_deterministic():
    again = render_nftables(build_model(), "node2")
    assert again == render_nftables(build_model(), "node2") == RULESETS["node2"]
    assert full_content(again) == TEXTS["node2"]


# --- the tracer itself ------------------------------------------------------------------------

TINY = """\
table ip t {
\tmap pick {
\t\ttypeof numgen random mod 1 : ip daddr . th dport
\t}
\tmap v {
\t\ttypeof th dport : verdict
\t}
\tchain pre {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tth dport 1 goto g
\t\tth dport 2 jump j
\t\tth dport vmap @v
\t\tmeta l4proto tcp dnat ip to numgen random mod 4 map @pick
\t}
\tchain g {
\t\tmeta mark set meta mark | 0x4000
\t}
\tchain j {
\t\tmeta mark set meta mark | 0x1
\t}
\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x4000 == 0x4000 masquerade
\t}
\tchain fwd {
\t\ttype filter hook forward priority 0; policy accept;
\t\tth dport 3 reject
\t}
}
add element ip t pick { 0 : 10.0.0.1 . 80, 1 : 10.0.0.2 . 80, 2 : 10.0.0.1 . 80, 3 : 10.0.0.3 . 81 }
add element ip t v { 4 : drop, 5 : goto g }
"""


def tiny(dport, protocol="TCP", text=TINY):
    packet = {"saddr": "10.0.1.1", "daddr": "10.0.9.9", "protocol": protocol, "dport": dport,
              "path": "prerouting"}
    return trace(text, packet, {"10.0.1.254"})


def test_tracer_goto_returns_to_the_callers_caller():
    # goto g: g ends, so does pre; no DNAT, and the mark set in g masquerades.
    assert tiny(1) == {"verdict": "ACCEPT", "endpoints": {}, "masquerade": True}


def test_tracer_jump_returns_to_the_caller_and_enumerates_numgen():
    result = tiny(2)
    assert result["endpoints"] == {
        "10.0.0.1:80": {"share": 0.5, "masquerade": False},
        "10.0.0.2:80": {"share": 0.25, "masquerade": False},
        "10.0.0.3:81": {"share": 0.25, "masquerade": False},
    }


def test_tracer_vmap_and_reject():
    assert tiny(4)["verdict"] == "DROP"
    assert tiny(5)["masquerade"] is True
    assert tiny(3, protocol="UDP")["verdict"] == "REJECT"


def test_tracer_map_miss_skips_the_rule():
    text = TINY.replace("mod 4", "mod 5")
    with pytest.raises(TracerError, match="some branches DNAT and others do not"):
        tiny(7, text=text)


ORDER = """\
table ip t {
\tmap coin {
\t\ttypeof numgen random mod 1 : verdict
\t}
\tchain late {
\t\ttype filter hook prerouting priority dstnat + 1; policy accept;
\t\tct status dnat meta mark set meta mark | 0x4000
\t}
\tchain nat {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tth dport 1 numgen random mod 2 vmap @coin
\t\tdnat ip to th dport map @to
\t}
\tchain early {
\t\ttype filter hook prerouting priority -110; policy accept;
\t\taccept
\t}
\tmap to {
\t\ttypeof th dport : ip daddr . th dport
\t}
\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x4000 == 0x4000 masquerade fully-random
\t}
\tchain fwd {
\t\ttype filter hook forward priority 0; policy drop;
\t\tip daddr != 10.0.5.0/24 accept
\t}
}
add element ip t to { 2 : 10.0.0.7 . 8080, 3 : 10.0.5.7 . 8080 }
add element ip t coin { 0 : drop, 1 : accept }
"""


def test_tracer_runs_base_chains_by_priority_and_accept_ends_one_chain_only():
    # early accepts, nat (-100) still DNATs, late (dstnat + 1) then sees ct status dnat.
    assert tiny(2, text=ORDER) == {
        "verdict": "ACCEPT", "endpoints": {"10.0.0.7:8080": {"share": 1.0, "masquerade": True}},
        "masquerade": True,
    }
    # The forward chain's policy drop.
    assert tiny(3, text=ORDER)["verdict"] == "DROP"


def test_tracer_refuses_branches_with_different_verdicts():
    with pytest.raises(TracerError, match="disagree on the verdict"):
        tiny(1, text=ORDER)


def test_tracer_output_path_needs_a_local_source():
    packet = {"saddr": "10.244.1.3", "daddr": "10.96.0.10", "protocol": "TCP", "dport": 80, "path": "output"}
    with pytest.raises(TracerError, match="not a local address"):
        trace(TEXTS["node1"], packet, local_addresses("node1"))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("ip dscp 0x10 accept", "unknown expression"),
        ("counter accept", "unknown expression"),
        ("th dport 80 snat ip to 10.0.0.1", "unknown expression"),
        ("ip daddr . th dport @nowhere accept", "no set or map nowhere"),
        ("ip daddr @cluster_ips accept", "does not fit cluster_ips"),
        ("th dport 80 goto missing", "missing chain missing"),
        ("ip saddr 10.0.0.1/8 accept", "not a addr value"),
        ("th dport > 80 accept", "not supported"),
    ],
)
def test_tracer_refuses_what_it_does_not_understand(rule, message):
    """Even in a chain no packet reaches, and naming the rule."""
    text = TEXTS["node1"] + f"add chain ip {TABLE} unreached\nadd rule ip {TABLE} unreached {rule}\n"
    with pytest.raises(TracerError, match=message) as caught:
        run("node1", "10.244.1.3", "10.96.0.10", 80, text=text)
    assert rule in str(caught.value)


def test_tracer_refuses_unknown_statements():
    with pytest.raises(TracerError, match="unknown statement"):
        text = TEXTS["node1"] + f"flush chain ip {TABLE} services\n"
        run("node1", "10.244.1.3", "10.96.0.10", 80, text=text)


def test_tracer_refuses_disagreeing_branches():
    # An endpoint map missing one index of three: a third of the packets would not be DNATed.
    text = TEXTS["node1"].replace("10.96.0.10 . tcp . 80 . 2 : 10.244.3.5 . 8080, ", "")
    assert text != TEXTS["node1"]
    with pytest.raises(TracerError, match="some branches DNAT and others do not"):
        run("node1", "10.244.1.3", "10.96.0.10", 80, text=text)


# --- pure helpers -----------------------------------------------------------------------------


def live_of(ruleset):
    """The live table as parse_listing would read it, had nft loaded `ruleset`."""
    elements = {name: set(values) for name, values in ruleset["elements"].items()}
    elements["affinity"] = set()
    return {"elements": elements, "chains": dict(shape(ruleset)["chains"])}


def without_first_endpoint(model, name):
    model = copy.deepcopy(model)
    for p in find(model, name)["ports"]:
        p["endpoints"] = p["endpoints"][1:]
    return model


def test_no_changes_when_live_equals_wanted():
    for ruleset in RULESETS.values():
        diff = changes(ruleset, live_of(ruleset))
        assert diff == {"reload": None, "elements": {}, "add_chains": [], "delete_chains": []}
        assert has_changes(diff) is False
        assert update_script(ruleset, diff) == ""


def test_dynamic_affinity_entries_are_not_changes():
    ruleset = RULESETS["node1"]
    live = live_of(ruleset)
    live["elements"]["affinity"] = {"10.244.1.3 . 10.96.0.16 . tcp . 80 : 10.244.1.12 . 8080"}
    assert has_changes(changes(ruleset, live)) is False


def test_one_service_losing_an_endpoint_changes_only_its_elements():
    old = RULESETS["node2"]
    new = render_nftables(without_first_endpoint(MODEL, "np-cluster"), "node2")
    diff = changes(new, live_of(old))
    old_endpoints = [f"10.96.0.11 . tcp . 80 . {i} : 10.244.{i + 1}.6 . 8080" for i in range(3)]
    new_endpoints = [f"10.96.0.11 . tcp . 80 . {i} : 10.244.{i + 2}.6 . 8080" for i in range(2)]
    assert diff == {
        "reload": None,
        "elements": {
            "service_endpoints": (old_endpoints, new_endpoints),
            "service_endpoint_count": (["10.96.0.11 . tcp . 80 : goto service_pick_3"],
                                       ["10.96.0.11 . tcp . 80 : goto service_pick_2"]),
            "nodeport_endpoints": ([f"tcp . 30080 . {i} : 10.244.{i + 1}.6 . 8080" for i in range(3)],
                                   [f"tcp . 30080 . {i} : 10.244.{i + 2}.6 . 8080" for i in range(2)]),
            "nodeport_endpoint_count": (["tcp . 30080 : goto nodeport_pick_3"],
                                        ["tcp . 30080 : goto nodeport_pick_2"]),
        },
        "add_chains": [],
        "delete_chains": [],
    }
    script = update_script(new, diff).splitlines()
    prefix = f"element ip {TABLE}"
    assert script == [
        f"delete {prefix} service_endpoints {{ {', '.join(old_endpoints)} }}",
        f"delete {prefix} service_endpoint_count {{ 10.96.0.11 . tcp . 80 : goto service_pick_3 }}",
        f"delete {prefix} nodeport_endpoints {{ {', '.join(diff['elements']['nodeport_endpoints'][0])} }}",
        f"delete {prefix} nodeport_endpoint_count {{ tcp . 30080 : goto nodeport_pick_3 }}",
        f"add {prefix} service_endpoints {{ {', '.join(new_endpoints)} }}",
        f"add {prefix} service_endpoint_count {{ 10.96.0.11 . tcp . 80 : goto service_pick_2 }}",
        f"add {prefix} nodeport_endpoints {{ {', '.join(diff['elements']['nodeport_endpoints'][1])} }}",
        f"add {prefix} nodeport_endpoint_count {{ tcp . 30080 : goto nodeport_pick_2 }}",
    ]
    # And the new table does what it should.
    result = run("node2", CLIENT, N2, 30080, text=full_content(new))
    assert set(result["endpoints"]) == eps("10.244.2.6", "10.244.3.6")


def test_a_local_endpoint_leaving_changes_hairpin_too():
    new = render_nftables(without_first_endpoint(MODEL, "np-cluster"), "node1")
    diff = changes(new, live_of(RULESETS["node1"]))
    assert diff["elements"]["hairpin"] == (["10.244.1.6 . 10.244.1.6"], [])
    assert set(diff["elements"]) == {
        "service_endpoints", "service_endpoint_count", "nodeport_endpoints", "nodeport_endpoint_count",
        "hairpin",
    }


def test_endpoint_count_beyond_the_premade_chains_adds_and_deletes_its_chain():
    model = copy.deepcopy(MODEL)
    find(model, "big")["ports"][0]["endpoints"].append(endpoint("10.244.3.200", 8080))
    new = render_nftables(model, "node1")
    diff = changes(new, live_of(RULESETS["node1"]))
    assert diff["add_chains"] == ["service_pick_21"]
    assert diff["delete_chains"] == ["service_pick_20"]
    assert diff["reload"] == "a new endpoint count needs pick chains service_pick_21"
    script = update_script(new, diff).splitlines()
    assert script[0] == f"add chain ip {TABLE} service_pick_21"
    assert script[1].startswith(f"add rule ip {TABLE} service_pick_21 ")
    assert script[-1] == f"delete chain ip {TABLE} service_pick_20"


def test_changes_that_need_a_reload():
    ruleset = RULESETS["node1"]
    live = live_of(ruleset)
    live["chains"]["services"] += 1
    assert changes(ruleset, live)["reload"] == "its chains or rules differ from podnet's"
    live = live_of(ruleset)
    del live["elements"]["hairpin"]
    assert changes(ruleset, live)["reload"] == "its sets differ from podnet's"
    live = live_of(ruleset)
    live["chains"]["service_pick_3"] = 2
    assert changes(ruleset, live)["reload"] == "a pick chain was edited"
    live = live_of(ruleset)
    del live["chains"]["nodeport_pick_7"]
    live["elements"]["cluster_ips"].add("10.96.9.9 . tcp . 1")
    diff = changes(ruleset, live)
    # nft 1.0.6 cannot add a pick rule to a loaded table: a missing pick chain means a reload.
    assert diff["reload"] == "a new endpoint count needs pick chains nodeport_pick_7"
    assert diff["add_chains"] == ["nodeport_pick_7"]
    assert diff["elements"] == {"cluster_ips": (["10.96.9.9 . tcp . 1"], [])}
    assert has_changes(diff)


def test_shape():
    got = shape(RULESETS["node1"])
    fixed = {name: count for name, count in got["chains"].items() if "_pick_" not in name}
    assert fixed == {
        "reject_service": 1,
        "filter_prerouting": 2,
        "filter_input": 2,
        "filter_forward": 1,
        "filter_output": 2,
        "nat_prerouting": 1,
        "nat_output": 1,
        "services": 10,
        "affinity_prerouting": 2,
        "affinity_output": 2,
        "nat_postrouting": 2,
    }
    picks = {name: count for name, count in got["chains"].items() if "_pick_" in name}
    assert set(picks.values()) == {1}
    assert len(picks) == 4 * 16 + 1  # 1..16 for each endpoint map, and service_pick_20
    assert "affinity" in got["sets"] and "affinity_10800" in got["sets"]
    assert got["sets"] == sorted(got["sets"])


def test_shape_without_affinity_has_no_affinity_chains():
    model = copy.deepcopy(MODEL)
    model["services"] = [s for s in model["services"] if s["name"] != "sticky"]
    got = shape(render_nftables(model, "node1"))
    assert "affinity_prerouting" not in got["chains"]
    assert "affinity_10800" not in got["sets"]


LISTING = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": TABLE, "handle": 7}},
        {"set": {"family": "ip", "name": "cluster_ips", "table": TABLE, "type": ["ipv4_addr", "inet_proto",
                 "inet_service"], "handle": 1, "elem": [{"concat": ["10.96.0.10", "tcp", 80]}]}},
        {"set": {"family": "ip", "name": "service_ips", "table": TABLE, "type": "ipv4_addr", "handle": 2,
                 "elem": ["10.96.0.10", "198.51.100.10"]}},
        {"set": {"family": "ip", "name": "hairpin", "table": TABLE, "type": ["ipv4_addr", "ipv4_addr"],
                 "handle": 3}},
        {"map": {"family": "ip", "name": "service_endpoint_count", "table": TABLE, "handle": 4,
                 "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict",
                 "elem": [[{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "service_pick_2"}}],
                          [{"concat": ["10.96.0.14", "tcp", 80]}, {"drop": None}]]}},
        {"map": {"family": "ip", "name": "service_endpoints", "table": TABLE, "handle": 5,
                 "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"],
                 "map": "ipv4_addr . inet_service",
                 "elem": [[{"concat": ["10.96.0.10", "tcp", 80, 0]}, {"concat": ["10.244.1.5", 8080]}]]}},
        {"map": {"family": "ip", "name": "affinity", "table": TABLE, "handle": 6, "flags": ["timeout"],
                 "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"],
                 "map": "ipv4_addr . inet_service",
                 "elem": [[{"elem": {"val": {"concat": ["10.244.1.3", "10.96.0.16", "tcp", 80]},
                                     "timeout": 10800, "expires": 10795}},
                           {"concat": ["10.244.1.12", 8080]}]]}},
        {"chain": {"family": "ip", "table": TABLE, "name": "services", "handle": 8}},
        {"chain": {"family": "ip", "table": TABLE, "name": "reject_service", "handle": 9}},
        {"chain": {"family": "ip", "table": TABLE, "name": "nat_output", "handle": 10, "type": "nat",
                   "hook": "output", "prio": -100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": TABLE, "chain": "services", "handle": 11, "expr": []}},
        {"rule": {"family": "ip", "table": TABLE, "chain": "services", "handle": 12, "expr": []}},
        {"rule": {"family": "ip", "table": TABLE, "chain": "nat_output", "handle": 13,
                  "expr": [{"jump": {"target": "services"}}]}},
    ]
}


def test_parse_listing():
    assert parse_listing(LISTING) == {
        "elements": {
            "cluster_ips": {"10.96.0.10 . tcp . 80"},
            "service_ips": {"10.96.0.10", "198.51.100.10"},
            "hairpin": set(),
            "service_endpoint_count": {"10.96.0.10 . tcp . 80 : goto service_pick_2",
                                       "10.96.0.14 . tcp . 80 : drop"},
            "service_endpoints": {"10.96.0.10 . tcp . 80 . 0 : 10.244.1.5 . 8080"},
            "affinity": {"10.244.1.3 . 10.96.0.16 . tcp . 80 : 10.244.1.12 . 8080"},
        },
        "chains": {"services": 2, "reject_service": 0, "nat_output": 1},
    }


def test_parse_listing_of_an_empty_answer():
    assert parse_listing({}) == {"elements": {}, "chains": {}}


def test_stale_affinity():
    ruleset = RULESETS["node1"]
    entries = [
        "10.244.1.3 . 10.96.0.16 . tcp . 80 : 10.244.1.12 . 8080",  # still serves the Service
        "10.244.1.4 . 10.96.0.16 . tcp . 80 : 10.244.3.12 . 8080",  # gone
        f"{CLIENT} . {N1} . tcp . 30080 : 10.244.2.6 . 8080",  # a NodePort's endpoint
        f"{CLIENT} . {N1} . tcp . 30080 : 10.244.1.5 . 8080",  # another Service's endpoint
    ]
    assert stale_affinity(entries, ruleset) == [
        "10.244.1.4 . 10.96.0.16 . tcp . 80",
        f"{CLIENT} . {N1} . tcp . 30080",
    ]
    assert stale_affinity([], ruleset) == []

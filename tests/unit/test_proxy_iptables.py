"""The iptables Service proxy renderer, judged by what packets do (a tracer), not how rules read.

The packet tables below follow kube-proxy's runPacketFlowTests: a small three-node cluster,
one row per (node, source, destination, protocol, path) and the endpoints the connection can
land on, or the filter verdict, and whether it leaves masqueraded.
"""

import base64
import copy
import functools
import hashlib
import json
import re

import pytest
from ansible_collections.podnet.network.plugins.module_utils.explain.iptables_trace import (
    TracerError,
    load_restore,
    trace,
)
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import (
    JUMPS,
    chain_names,
    endpoint_chain_name,
    probability,
    removal_text,
    render_iptables,
    restore_text,
    service_chain_name,
    service_port_name,
)

CLUSTER_CIDR = "10.244.0.0/16"
NODE_IPS = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}
# Each node's own addresses: its LAN address, its pod bridge's gateway, loopback.
LOCAL = {
    node: {ip, "10.244.%s.1" % node[-1], "127.0.0.1"} for node, ip in NODE_IPS.items()
}
OUTSIDE = "192.168.56.100"


def ep(ip, port, node):
    return {"ip": ip, "port": port, "node": node, "pod": None if node is None else "default/pod-" + ip}


def sport(name, protocol, number, endpoints, node_port=None, target_port=None):
    return {
        "name": name,
        "protocol": protocol,
        "port": number,
        "node_port": node_port,
        "target_port": target_port if target_port is not None else number,
        "endpoints": sorted(endpoints, key=lambda e: (e["ip"], e["port"])),
    }


def service(name, cluster_ip, ports, kind="ClusterIP", external_ips=(), etp="Cluster", itp="Cluster",
            affinity=None, namespace="default"):
    return {
        "namespace": namespace,
        "name": name,
        "type": kind,
        "cluster_ip": cluster_ip,
        "external_ips": list(external_ips),
        "external_traffic_policy": etp,
        "internal_traffic_policy": itp,
        "session_affinity_timeout": affinity,
        "ports": ports,
    }


def web_endpoints(port, last="10.244.3.5"):
    return [ep("10.244.1.5", port, "node1"), ep("10.244.2.5", port, "node2"), ep(last, port, "node3")]


def build_model(services):
    return {
        "cluster_cidr": CLUSTER_CIDR,
        "service_cidr": "10.96.0.0/12",
        "node_port_range": [30000, 32767],
        "services": sorted(services, key=lambda s: (s["namespace"], s["name"])),
    }


SERVICES = [
    # ClusterIP, two named ports (TCP + UDP), an endpoint on every node.
    service("web", "10.96.0.20", [
        sport("http", "TCP", 80, web_endpoints(8080), target_port=8080),
        sport("stats", "UDP", 8125, web_endpoints(8125)),
    ]),
    service("np-cluster", "10.96.0.30", [
        sport("http", "TCP", 80, [ep("10.244.1.6", 8080, "node1"), ep("10.244.2.6", 8080, "node2")],
              node_port=30080),
    ], kind="NodePort"),
    # eTP Local (nodePort and externalIP): endpoints on node1 and node2; node3 has none.
    service("np-local", "10.96.0.31", [
        sport("http", "TCP", 80, [ep("10.244.1.7", 8080, "node1"), ep("10.244.2.7", 8080, "node2")],
              node_port=30081),
    ], kind="NodePort", etp="Local", external_ips=["198.51.100.11"]),
    service("ext", "10.96.0.40", [
        sport("", "TCP", 80, [ep("10.244.1.8", 80, "node1"), ep("10.244.3.8", 80, "node3")]),
    ], external_ips=["198.51.100.10"]),
    # iTP Local: endpoints on node1 and node2; node3 has none.
    service("itp-local", "10.96.0.50", [
        sport("http", "TCP", 80, [ep("10.244.1.9", 8080, "node1"), ep("10.244.2.9", 8080, "node2")]),
    ], itp="Local"),
    service("empty", "10.96.0.60", [sport("http", "TCP", 80, [], node_port=30060)],
            kind="NodePort", external_ips=["198.51.100.20"]),
    service("headless", None, [sport("http", "TCP", 80, [ep("10.244.1.10", 80, "node1")])]),
    service("extname", None, [], kind="ExternalName"),
    service("no-ports", "10.96.0.90", []),
    service("sticky", "10.96.0.70", [
        sport("", "TCP", 80, [ep("10.244.1.11", 80, "node1"), ep("10.244.2.11", 80, "node2")]),
    ], affinity=10800),
    service("diameter", "10.96.0.80", [
        sport("diameter", "SCTP", 3868, [ep("10.244.2.12", 3868, "node2"), ep("10.244.3.12", 3868, "node3")]),
    ]),
    # An endpoint outside the cluster's pods (from an Endpoints object): never local.
    service("outside", "10.96.0.100", [sport("", "TCP", 80, [ep("203.0.113.10", 80, None)])], itp="Local",
            namespace="other"),
]
MODEL = build_model(SERVICES)


@functools.cache
def ruleset_for(node):
    return render_iptables(MODEL, node)


def send(node, source, destination, protocol="TCP", path="prerouting"):
    ruleset = ruleset_for(node)
    daddr, dport = destination.rsplit(":", 1)
    packet = {"saddr": source, "daddr": daddr, "protocol": protocol, "dport": int(dport), "path": path}
    return trace(restore_text(ruleset), ruleset["jumps"], packet, LOCAL[node])


WEB_HTTP = {"10.244.1.5:8080", "10.244.2.5:8080", "10.244.3.5:8080"}
WEB_STATS = {"10.244.1.5:8125", "10.244.2.5:8125", "10.244.3.5:8125"}
NP_CLUSTER = {"10.244.1.6:8080", "10.244.2.6:8080"}
NP_LOCAL = {"10.244.1.7:8080", "10.244.2.7:8080"}
EXT = {"10.244.1.8:80", "10.244.3.8:80"}
STICKY = {"10.244.1.11:80", "10.244.2.11:80"}
DIAMETER = {"10.244.2.12:3868", "10.244.3.12:3868"}
NOTHING = set()  # accepted, not DNATed

# (node, source, destination, protocol, path, expected endpoints | "DROP" | "REJECT", masquerade)
# masquerade: a bool for every endpoint, or the set of endpoints that are masqueraded.
P = pytest.param
PACKETS = [
    # ClusterIP
    P("node1", "10.244.1.3", "10.96.0.20:80", "TCP", "prerouting", WEB_HTTP, False, id="pod-to-clusterip"),
    P("node2", "10.244.2.3", "10.96.0.20:80", "TCP", "prerouting", WEB_HTTP, False,
      id="pod-node2-to-clusterip"),
    P("node1", "10.244.1.3", "10.96.0.20:8125", "UDP", "prerouting", WEB_STATS, False,
      id="pod-to-clusterip-udp"),
    P("node1", "10.244.1.3", "10.96.0.20:80", "UDP", "prerouting", NOTHING, False,
      id="clusterip-wrong-protocol"),
    P("node1", "10.244.1.3", "10.96.0.20:81", "TCP", "prerouting", NOTHING, False, id="clusterip-wrong-port"),
    P("node1", "192.168.56.11", "10.96.0.20:80", "TCP", "output", WEB_HTTP, True, id="node-to-clusterip"),
    P("node1", OUTSIDE, "10.96.0.20:80", "TCP", "prerouting", WEB_HTTP, True, id="outside-to-clusterip"),
    P("node1", "10.244.1.5", "10.96.0.20:80", "TCP", "prerouting", WEB_HTTP, {"10.244.1.5:8080"},
      id="hairpin-clusterip"),
    P("node3", "10.244.3.5", "10.96.0.20:8125", "UDP", "prerouting", WEB_STATS, {"10.244.3.5:8125"},
      id="hairpin-clusterip-udp"),
    # NodePort, eTP Cluster
    P("node1", OUTSIDE, "192.168.56.11:30080", "TCP", "prerouting", NP_CLUSTER, True,
      id="outside-to-nodeport"),
    P("node3", OUTSIDE, "192.168.56.13:30080", "TCP", "prerouting", NP_CLUSTER, True,
      id="outside-to-nodeport-no-local-endpoint"),
    P("node1", "10.244.1.3", "192.168.56.11:30080", "TCP", "prerouting", NP_CLUSTER, True,
      id="pod-to-nodeport"),
    P("node2", "192.168.56.12", "192.168.56.12:30080", "TCP", "output", NP_CLUSTER, True,
      id="node-to-own-nodeport"),
    P("node1", "10.244.1.6", "192.168.56.11:30080", "TCP", "prerouting", NP_CLUSTER, True,
      id="hairpin-nodeport"),
    P("node1", "127.0.0.1", "127.0.0.1:30080", "TCP", "output", NOTHING, False, id="nodeport-on-localhost"),
    P("node1", OUTSIDE, "192.168.56.12:30080", "TCP", "prerouting", NOTHING, False,
      id="nodeport-of-another-node-is-not-ours"),
    P("node1", OUTSIDE, "192.168.56.11:30081", "UDP", "prerouting", NOTHING, False,
      id="nodeport-wrong-protocol"),
    P("node1", "10.244.1.3", "10.96.0.30:80", "TCP", "prerouting", NP_CLUSTER, False,
      id="pod-to-nodeport-service-clusterip"),
    # NodePort, eTP Local
    P("node1", OUTSIDE, "192.168.56.11:30081", "TCP", "prerouting", {"10.244.1.7:8080"}, False,
      id="outside-to-local-nodeport"),
    P("node2", OUTSIDE, "192.168.56.12:30081", "TCP", "prerouting", {"10.244.2.7:8080"}, False,
      id="outside-to-local-nodeport-node2"),
    P("node3", OUTSIDE, "192.168.56.13:30081", "TCP", "prerouting", "DROP", False,
      id="outside-to-local-nodeport-no-local-endpoint"),
    P("node3", "10.244.3.3", "192.168.56.13:30081", "TCP", "prerouting", NP_LOCAL, False,
      id="pod-to-local-nodeport-short-circuits"),
    P("node1", "10.244.1.3", "192.168.56.11:30081", "TCP", "prerouting", NP_LOCAL, False,
      id="pod-to-local-nodeport-all-endpoints"),
    P("node3", "192.168.56.13", "192.168.56.13:30081", "TCP", "output", NP_LOCAL, True,
      id="node-to-own-local-nodeport"),
    P("node1", "192.168.56.11", "192.168.56.11:30081", "TCP", "output", NP_LOCAL, True,
      id="node-with-local-endpoint-to-own-local-nodeport"),
    P("node3", "127.0.0.1", "127.0.0.1:30081", "TCP", "output", NOTHING, False,
      id="local-nodeport-on-localhost"),
    P("node3", OUTSIDE, "10.96.0.31:80", "TCP", "prerouting", NP_LOCAL, True,
      id="etp-local-does-not-touch-clusterip"),
    P("node1", OUTSIDE, "198.51.100.11:80", "TCP", "prerouting", {"10.244.1.7:8080"}, False,
      id="outside-to-local-externalip"),
    P("node3", OUTSIDE, "198.51.100.11:80", "TCP", "prerouting", "DROP", False,
      id="outside-to-local-externalip-no-local-endpoint"),
    P("node3", "10.244.3.3", "198.51.100.11:80", "TCP", "prerouting", NP_LOCAL, False,
      id="pod-to-local-externalip-short-circuits"),
    P("node3", "192.168.56.13", "198.51.100.11:80", "TCP", "output", NP_LOCAL, True,
      id="node-to-local-externalip"),
    # externalIPs (eTP Cluster)
    P("node1", OUTSIDE, "198.51.100.10:80", "TCP", "prerouting", EXT, True, id="outside-to-externalip"),
    P("node2", "10.244.2.3", "198.51.100.10:80", "TCP", "prerouting", EXT, True, id="pod-to-externalip"),
    P("node2", "192.168.56.12", "198.51.100.10:80", "TCP", "output", EXT, True, id="node-to-externalip"),
    P("node1", OUTSIDE, "198.51.100.10:81", "TCP", "prerouting", NOTHING, False,
      id="externalip-wrong-port"),
    # internalTrafficPolicy Local
    P("node1", "10.244.1.3", "10.96.0.50:80", "TCP", "prerouting", {"10.244.1.9:8080"}, False,
      id="itp-local-pod"),
    P("node2", "10.244.2.3", "10.96.0.50:80", "TCP", "prerouting", {"10.244.2.9:8080"}, False,
      id="itp-local-pod-node2"),
    P("node1", OUTSIDE, "10.96.0.50:80", "TCP", "prerouting", {"10.244.1.9:8080"}, True,
      id="itp-local-outside"),
    P("node2", "192.168.56.12", "10.96.0.50:80", "TCP", "output", {"10.244.2.9:8080"}, True,
      id="itp-local-node"),
    P("node3", "10.244.3.3", "10.96.0.50:80", "TCP", "prerouting", "DROP", False,
      id="itp-local-pod-no-local-endpoint"),
    P("node3", "192.168.56.13", "10.96.0.50:80", "TCP", "output", "DROP", False,
      id="itp-local-node-no-local-endpoint"),
    P("node1", "10.244.1.3", "10.96.0.100:80", "TCP", "prerouting", "DROP", False,
      id="itp-local-endpoint-outside-the-cluster-is-never-local"),
    # No endpoints at all: REJECT, on every address of the Service.
    P("node1", "10.244.1.3", "10.96.0.60:80", "TCP", "prerouting", "REJECT", False,
      id="no-endpoints-clusterip"),
    P("node1", "192.168.56.11", "10.96.0.60:80", "TCP", "output", "REJECT", False,
      id="no-endpoints-clusterip-from-node"),
    P("node1", OUTSIDE, "192.168.56.11:30060", "TCP", "prerouting", "REJECT", False,
      id="no-endpoints-nodeport"),
    P("node2", "10.244.2.3", "192.168.56.12:30060", "TCP", "prerouting", "REJECT", False,
      id="no-endpoints-nodeport-from-pod"),
    P("node1", OUTSIDE, "198.51.100.20:80", "TCP", "prerouting", "REJECT", False,
      id="no-endpoints-externalip"),
    # Headless: nothing to translate; traffic to its pods is untouched.
    P("node1", "10.244.1.3", "10.244.1.10:80", "TCP", "prerouting", NOTHING, False, id="headless"),
    # sessionAffinity: ClientIP (no recent state yet: an even pick)
    P("node1", "10.244.1.3", "10.96.0.70:80", "TCP", "prerouting", STICKY, False, id="session-affinity"),
    # SCTP
    P("node1", "10.244.1.3", "10.96.0.80:3868", "SCTP", "prerouting", DIAMETER, False, id="sctp"),
    P("node1", "10.244.1.3", "10.96.0.80:3868", "TCP", "prerouting", NOTHING, False, id="sctp-port-over-tcp"),
]


COLUMNS = ("node", "source", "destination", "protocol", "path", "expected", "masquerade")


@pytest.mark.parametrize(COLUMNS, PACKETS)
def test_packet_flow(node, source, destination, protocol, path, expected, masquerade):
    result = send(node, source, destination, protocol, path)
    if expected in ("DROP", "REJECT"):
        assert result["verdict"] == expected, result
        assert result["endpoints"] == {}
        return
    assert result["verdict"] == "ACCEPT", result
    assert set(result["endpoints"]) == expected, result["chains"]
    if not expected:
        assert result["masquerade"] is masquerade
        return
    for share in (entry["share"] for entry in result["endpoints"].values()):
        assert share == pytest.approx(1 / len(expected), abs=1e-9)
    masqueraded = {name for name, entry in result["endpoints"].items() if entry["masquerade"]}
    if isinstance(masquerade, bool):
        assert masqueraded == (expected if masquerade else set())
    else:
        assert masqueraded == masquerade


def test_first_branch_walks_kube_proxy_chains():
    chains = send("node1", OUTSIDE, "192.168.56.11:30081")["chains"]
    spn = "default/np-local:http"
    assert chains == [
        "nat:PREROUTING",
        "nat:KUBE-SERVICES",
        "nat:KUBE-NODEPORTS",
        "nat:" + service_chain_name("KUBE-EXT-", spn, "tcp"),
        "nat:" + service_chain_name("KUBE-SVL-", spn, "tcp"),
        "nat:" + endpoint_chain_name(spn, "tcp", "10.244.1.7:8080"),
        "filter:FORWARD",
        "filter:KUBE-FORWARD",
        "filter:KUBE-SERVICES",
        "filter:KUBE-EXTERNAL-SERVICES",
        "nat:POSTROUTING",
        "nat:KUBE-POSTROUTING",
    ]


# --- the rules themselves ---------------------------------------------------------------------


def rules_of(ruleset, chain, table="nat"):
    return ruleset[table][chain]


def test_statistic_probabilities_are_one_over_remaining():
    four = build_model([service("four", "10.96.0.20", [
        sport("", "TCP", 80, [ep("10.244.1.%d" % i, 80, "node1") for i in range(2, 6)]),
    ])])
    chain = service_chain_name("KUBE-SVC-", "default/four", "tcp")
    rules = render_iptables(four, "node1")["nat"][chain]
    found = [re.search(r"--probability (\S+)", rule) for rule in rules[1:]]
    printed = [m.group(1) if m else None for m in found]
    assert printed == ["0.2500000000", "0.3333333333", "0.5000000000", None]
    assert [probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333", "0.5000000000"]
    assert probability(7) == "%0.10f" % (1 / 7) == "0.1428571429"
    # Enumerated by the tracer: four equal shares despite the rounding in the text.
    ruleset = render_iptables(four, "node1")
    result = trace(restore_text(ruleset), ruleset["jumps"],
                   {"saddr": "10.244.1.9", "daddr": "10.96.0.20", "protocol": "TCP", "dport": 80,
                    "path": "prerouting"}, LOCAL["node1"])
    assert sorted(e["share"] for e in result["endpoints"].values()) == pytest.approx([0.25] * 4, abs=1e-9)


def test_chain_names_are_kube_proxys():
    # The same names kube-proxy gives (values from its own unit tests).
    assert service_chain_name("KUBE-SVC-", "ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert service_port_name("ns1", "svc1", "p80") == "ns1/svc1:p80"
    assert service_port_name("ns1", "svc1", "") == "ns1/svc1"
    digest = base64.b32encode(hashlib.sha256(b"default/web:httptcp").digest()).decode()[:16]
    assert service_chain_name("KUBE-SVC-", "default/web:http", "tcp") == "KUBE-SVC-" + digest


def test_chain_names_stable_and_well_formed():
    names = chain_names(ruleset_for("node1"))
    assert names == chain_names(render_iptables(copy.deepcopy(MODEL), "node1"))
    assert names["filter"] == ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"]
    assert names["nat"][:4] == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    per_service = names["nat"][4:]
    assert per_service and len(set(per_service)) == len(per_service)
    for name in per_service:
        assert re.fullmatch(r"KUBE-(SVC|SVL|EXT|SEP)-[A-Z2-7]{16}", name), name
        assert len(name) <= 28  # iptables' limit
    # The UDP and TCP ports of one Service get distinct chains; so does each endpoint.
    assert service_chain_name("KUBE-SVC-", "default/web:http", "tcp") in per_service
    assert service_chain_name("KUBE-SVC-", "default/web:stats", "udp") in per_service


def test_web_rules_read_like_kube_proxy():
    ruleset = ruleset_for("node1")
    spn = "default/web:http"
    svc = service_chain_name("KUBE-SVC-", spn, "tcp")
    seps = [endpoint_chain_name(spn, "tcp", e) for e in sorted(WEB_HTTP)]
    assert ('-m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j '
            + svc) in ruleset["nat"]["KUBE-SERVICES"]
    assert ruleset["nat"][svc] == [
        '-m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.20 --dport 80 '
        "! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        '-m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random '
        "--probability 0.3333333333 -j " + seps[0],
        '-m comment --comment "default/web:http -> 10.244.2.5:8080" -m statistic --mode random '
        "--probability 0.5000000000 -j " + seps[1],
        '-m comment --comment "default/web:http -> 10.244.3.5:8080" -j ' + seps[2],
    ]
    assert ruleset["nat"][seps[0]] == [
        '-m comment --comment "default/web:http" -s 10.244.1.5 -j KUBE-MARK-MASQ',
        '-m comment --comment "default/web:http" -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080',
    ]
    assert ruleset["nat"]["KUBE-SERVICES"][-1] == (
        '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS")
    assert ruleset["nat"]["KUBE-MARK-MASQ"] == ["-j MARK --or-mark 0x4000"]
    assert ruleset["nat"]["KUBE-POSTROUTING"] == [
        "-m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-j MARK --xor-mark 0x4000",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]


def test_session_affinity_rules():
    ruleset = ruleset_for("node1")
    spn = "default/sticky"
    svc = service_chain_name("KUBE-SVC-", spn, "tcp")
    sep = endpoint_chain_name(spn, "tcp", "10.244.1.11:80")
    rules = ruleset["nat"][svc]
    assert rules[1] == ('-m comment --comment "default/sticky -> 10.244.1.11:80" -m recent --name %s '
                        "--mask 255.255.255.255 --rsource --rcheck --seconds 10800 --reap -j %s" % (sep, sep))
    assert "-m recent --name %s --mask 255.255.255.255 --rsource --set -m tcp" % sep in ruleset["nat"][sep][1]


def test_itp_local_masquerade_sits_in_the_local_chain():
    spn = "default/itp-local:http"
    svl = service_chain_name("KUBE-SVL-", spn, "tcp")
    node1 = ruleset_for("node1")
    assert ("-j " + svl) in [r for r in node1["nat"]["KUBE-SERVICES"] if "10.96.0.50" in r][0]
    assert node1["nat"][svl][0].endswith("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    assert service_chain_name("KUBE-SVC-", spn, "tcp") not in node1["nat"]  # not externally reachable
    node3 = ruleset_for("node3")
    assert svl not in node3["nat"]
    assert ('-m comment --comment "default/itp-local:http has no local endpoints" -m tcp -p tcp '
            "-d 10.96.0.50 --dport 80 -j DROP") in node3["filter"]["KUBE-SERVICES"]


def test_etp_local_drop_spares_pods_and_the_node():
    rules = ruleset_for("node3")["filter"]["KUBE-EXTERNAL-SERVICES"]
    assert ('-m comment --comment "default/np-local:http has no local endpoints" ! -s 10.244.0.0/16 '
            "-m addrtype ! --src-type LOCAL -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -m tcp -p tcp "
            "--dport 30081 -j DROP") in rules
    assert not [r for r in ruleset_for("node1")["filter"]["KUBE-EXTERNAL-SERVICES"] if "np-local" in r]


def test_headless_externalname_and_portless_services_get_nothing():
    text = restore_text(ruleset_for("node1"))
    for name in ("headless", "extname", "no-ports"):
        assert "default/%s" % name not in text


def test_zero_endpoint_service_has_no_nat_chains():
    ruleset = ruleset_for("node1")
    spn = "default/empty:http"
    for prefix in ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-"):
        assert service_chain_name(prefix, spn, "tcp") not in ruleset["nat"]
    assert not [r for r in ruleset["nat"]["KUBE-SERVICES"] + ruleset["nat"]["KUBE-NODEPORTS"] if spn in r]
    assert ('-m comment --comment "default/empty:http has no endpoints" -m tcp -p tcp -d 10.96.0.60 '
            "--dport 80 -j REJECT") in ruleset["filter"]["KUBE-SERVICES"]
    assert ('-m comment --comment "default/empty:http has no endpoints" -m tcp -p tcp -d 198.51.100.20 '
            "--dport 80 -j REJECT") in ruleset["filter"]["KUBE-EXTERNAL-SERVICES"]


def test_jumps_mirror_kube_proxy():
    jumps = ruleset_for("node1")["jumps"]
    assert jumps == list(JUMPS)
    portals = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    assert ("nat", "PREROUTING", portals) in jumps
    assert ("nat", "OUTPUT", portals) in jumps
    assert ("nat", "POSTROUTING",
            '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING') in jumps
    assert [(t, c, a.rsplit(" ", 1)[1]) for t, c, a in jumps if t == "filter"] == [
        ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES"),
        ("filter", "FORWARD", "KUBE-FORWARD"),
        ("filter", "FORWARD", "KUBE-SERVICES"),
        ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES"),
        ("filter", "OUTPUT", "KUBE-SERVICES"),
    ]


def test_cluster_cidr_argument_overrides_model():
    ruleset = render_iptables(MODEL, "node1", cluster_cidr="10.32.0.0/12")
    text = restore_text(ruleset)
    assert "! -s 10.32.0.0/12 -j KUBE-MARK-MASQ" in text
    assert "10.244.0.0/16" not in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["services"][0]["ports"][0].update(protocol="ICMP"), "protocol"),
        (lambda m: m["services"][0].update(cluster_ip="fd00::1"), "IPv4"),
        (lambda m: m["services"][0]["ports"][0].update(port=0), "port"),
        (lambda m: m.update(cluster_cidr="10.244.0.0/33"), "cluster_cidr"),
    ],
)
def test_bad_model_is_refused(change, message):
    model = build_model([service("web", "10.96.0.20", [sport("http", "TCP", 80, web_endpoints(8080))])])
    change(model)
    with pytest.raises(ValueError, match=message):
        render_iptables(model, "node1")


# --- restore text: whole, incremental, removal -------------------------------------------------


def declared(text):
    return re.findall(r"^:(\S+) - \[0:0\]$", text, re.M)


def deleted(text):
    return re.findall(r"^-X (\S+)$", text, re.M)


def state(text):
    """{table: {chain: [rule text]}} after applying restore text, as the tracer loads it."""
    tables = load_restore(text)
    return {t: {c: [r.text for r in rules] for c, rules in chains.items()} for t, chains in tables.items()}


def test_full_restore_text_layout():
    ruleset = ruleset_for("node1")
    text = restore_text(ruleset)
    assert text.startswith("*filter\n:KUBE-SERVICES - [0:0]\n")
    assert text.endswith("COMMIT\n")
    assert [line for line in text.splitlines() if line.startswith("*")] == ["*filter", "*nat"]
    assert declared(text) == chain_names(ruleset)["filter"] + chain_names(ruleset)["nat"]
    assert deleted(text) == []
    assert "\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n" in text
    # Nothing but podnet's chains is ever declared (declaring a built-in chain flushes it).
    assert all(name.startswith("KUBE-") for name in declared(text))


def test_same_ruleset_changes_nothing():
    ruleset = ruleset_for("node2")
    assert restore_text(ruleset, ruleset) == ""
    assert restore_text(ruleset, copy.deepcopy(ruleset)) == ""
    # The module keeps the previous ruleset as JSON: that must compare equal too.
    assert restore_text(ruleset, json.loads(json.dumps(ruleset))) == ""


def test_deterministic():
    first = restore_text(render_iptables(MODEL, "node1"))
    again = restore_text(render_iptables(json.loads(json.dumps(MODEL)), "node1"))
    assert first == again
    assert restore_text(render_iptables(MODEL, "node3")) == restore_text(render_iptables(MODEL, "node3"))


def changed_model(**replace):
    services = []
    for svc in copy.deepcopy(SERVICES):
        if svc["name"] in replace:
            svc = replace[svc["name"]]
            if svc is None:
                continue
        services.append(svc)
    return build_model(services)


def test_endpoint_change_rewrites_only_that_service():
    new_web = service("web", "10.96.0.20", [
        sport("http", "TCP", 80, web_endpoints(8080, last="10.244.3.6"), target_port=8080),
        sport("stats", "UDP", 8125, web_endpoints(8125)),
    ])
    old = ruleset_for("node1")
    new = render_iptables(changed_model(web=new_web), "node1")
    text = restore_text(new, old)
    spn = "default/web:http"
    assert "*filter" not in text
    assert declared(text) == [
        service_chain_name("KUBE-SVC-", spn, "tcp"),
        endpoint_chain_name(spn, "tcp", "10.244.3.6:8080"),
        endpoint_chain_name(spn, "tcp", "10.244.3.5:8080"),  # flushed, then deleted
    ]
    assert deleted(text) == [endpoint_chain_name(spn, "tcp", "10.244.3.5:8080")]
    # The -X comes after the chain that referred to it was rewritten.
    assert text.index("-X ") > text.rindex("-A ")
    # Applied on top of the old rules, the result is exactly the new rules.
    assert state(restore_text(old) + text) == state(restore_text(new))


def test_removing_a_service_deletes_its_chains():
    old = ruleset_for("node1")
    new = render_iptables(changed_model(**{"np-cluster": None}), "node1")
    text = restore_text(new, old)
    spn = "default/np-cluster:http"
    gone = {
        service_chain_name("KUBE-SVC-", spn, "tcp"),
        service_chain_name("KUBE-EXT-", spn, "tcp"),
        endpoint_chain_name(spn, "tcp", "10.244.1.6:8080"),
        endpoint_chain_name(spn, "tcp", "10.244.2.6:8080"),
    }
    assert set(deleted(text)) == gone
    assert set(declared(text)) == gone | {"KUBE-SERVICES", "KUBE-NODEPORTS"}
    assert "*filter" not in text
    assert state(restore_text(old) + text) == state(restore_text(new))


def test_endpoints_appearing_moves_reject_to_nat():
    old = ruleset_for("node1")
    filled = service("empty", "10.96.0.60", [sport("http", "TCP", 80, [ep("10.244.2.20", 80, "node2")],
                                                   node_port=30060)],
                     kind="NodePort", external_ips=["198.51.100.20"])
    new = render_iptables(changed_model(empty=filled), "node1")
    text = restore_text(new, old)
    assert set(declared(text)) >= {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"}
    assert "KUBE-FORWARD" not in declared(text)
    assert state(restore_text(old) + text) == state(restore_text(new))
    # And back: the service's chains go again.
    back = restore_text(old, new)
    assert len(deleted(back)) == 3  # SVC, EXT, SEP
    assert state(restore_text(old) + text + back) == state(restore_text(old))


def test_removal_text_deletes_everything():
    ruleset = ruleset_for("node3")
    text = removal_text(ruleset)
    names = chain_names(ruleset)
    assert declared(text) == names["filter"] + names["nat"]
    assert deleted(text) == names["filter"] + names["nat"]
    after = state(restore_text(ruleset) + text)
    assert after == {
        "filter": {"INPUT": [], "FORWARD": [], "OUTPUT": []},
        "nat": {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []},
    }
    assert removal_text({"filter": {}, "nat": {}}) == ""


def test_restore_text_refuses_foreign_chains():
    with pytest.raises(ValueError, match="FORWARD"):
        restore_text({"filter": {"FORWARD": ["-j ACCEPT"]}, "nat": {}})
    with pytest.raises(ValueError, match="INPUT"):
        removal_text({"filter": {"INPUT": []}})


# --- the tracer itself ------------------------------------------------------------------------


PACKET = {"saddr": "10.244.1.3", "daddr": "10.96.0.20", "protocol": "TCP", "dport": 80, "path": "prerouting"}


@pytest.mark.parametrize(
    "rule",
    [
        "-m foo --bar 1 -j ACCEPT",                              # unknown match
        "-m tcp -p tcp --sport 80 -j ACCEPT",                    # unknown option
        "-m comment --comment x -j LOG",                         # unknown target
        "-j DNAT --to-destination 10.0.0.1:80 --persistent",     # unknown target option
        "-m tcp --dport 80 -j ACCEPT",                           # -m tcp without -p tcp
        "-p icmp -j ACCEPT",                                     # unknown protocol
        "-j KUBE-NOWHERE",                                       # jump to a missing chain
        "-m recent --name x --rsource -j ACCEPT",                # neither --rcheck nor --set
    ],
)
def test_tracer_raises_on_what_it_does_not_know(rule):
    text = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES %s\nCOMMIT\n" % rule
    jumps = [("nat", "PREROUTING", "-j KUBE-SERVICES")]
    with pytest.raises(TracerError):
        trace(text, jumps, PACKET, LOCAL["node1"])


@pytest.mark.parametrize(
    "text",
    [
        "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",                                   # built-in declared
        "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-X KUBE-B\nCOMMIT\n",  # referenced
        "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\n-X KUBE-A\nCOMMIT\n",           # not empty
        "*nat\n-A KUBE-A -j RETURN\nCOMMIT\n",                                        # missing chain
        "*nat\n:KUBE-A - [0:0]\n",                                                    # no COMMIT
    ],
)
def test_tracer_refuses_what_iptables_restore_refuses(text):
    with pytest.raises(TracerError):
        load_restore(text)


def test_tracer_refuses_nat_targets_on_the_wrong_hook():
    text = "*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j MASQUERADE\nCOMMIT\n"
    with pytest.raises(TracerError, match="MASQUERADE"):
        trace(text, [("nat", "PREROUTING", "-j KUBE-X")], PACKET, LOCAL["node1"])


def test_tracer_without_rules_accepts():
    result = trace("", [], PACKET, LOCAL["node1"])
    assert result == {"verdict": "ACCEPT", "verdicts": {"ACCEPT": 1.0}, "endpoints": {}, "masquerade": False,
                      "chains": ["nat:PREROUTING", "filter:FORWARD", "nat:POSTROUTING"]}

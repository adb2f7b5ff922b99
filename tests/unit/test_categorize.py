"""One categorisation per Service port (services/categorize.py), as rows: a Service spec and
a node in; the endpoints ClusterIP and outside traffic reach, the verdict when there are
none, and what is masqueraded out. Both backends spell exactly this."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.services.categorize import (
    DROP,
    MASQ_EXTERNAL,
    MASQ_EXTERNAL_FROM_NODE,
    MASQ_HAIRPIN,
    MASQ_OUTSIDE_CLUSTER,
    REJECT,
    ServiceModelError,
    categorize,
    check_model,
    proxied,
)

# Endpoints by letter: a on node1, b on node2, c on node2, x with no node (a manual endpoint).
ENDPOINTS = {
    "a": {"ip": "10.244.1.10", "port": 8080, "node": "node1"},
    "b": {"ip": "10.244.2.10", "port": 8080, "node": "node2"},
    "c": {"ip": "10.244.2.11", "port": 8080, "node": "node2"},
    "x": {"ip": "192.168.56.99", "port": 9000, "node": None},
}
OUTSIDE, HAIRPIN = MASQ_OUTSIDE_CLUSTER, MASQ_HAIRPIN
EXTERNAL, EXTERNAL_FROM_NODE = MASQ_EXTERNAL, MASQ_EXTERNAL_FROM_NODE
NODE_PORT = {"node_port": 30080, "type": "NodePort"}


def model(endpoints="ab", node_port=None, protocol="TCP", **spec):
    svc = {"namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
           "external_ips": [], "external_traffic_policy": "Cluster", "internal_traffic_policy": "Cluster",
           "session_affinity_timeout": None}
    svc.update(spec)
    svc.setdefault("ports", [{"name": "http", "protocol": protocol, "port": 80, "node_port": node_port,
                              "endpoints": [ENDPOINTS[e] for e in endpoints]}])
    return {"cluster_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12", "services": [svc]}


def letters(endpoints):
    return "".join(next(k for k, v in ENDPOINTS.items() if v["ip"] == ep.ip) for ep in endpoints)


# (what, model, node) -> (ClusterIP endpoints, outside clients' endpoints (none without a nodePort
# or externalIP), kube-proxy's cluster and local sets, ClusterIP verdict, outside verdict, masquerade).
ROWS = [
    ("ClusterIP, endpoints on two nodes, one here",
     model(), "node1", ("ab", "", "ab", "", None, None, (OUTSIDE, HAIRPIN))),
    ("ClusterIP, no endpoint here: no hairpin here",
     model(), "node3", ("ab", "", "ab", "", None, None, (OUTSIDE,))),
    ("ClusterIP without endpoints: REJECT",
     model(""), "node1", ("", "", "", "", REJECT, None, ())),
    ("a manual endpoint with no node is never local",
     model("x"), "node1", ("x", "", "x", "", None, None, (OUTSIDE,))),
    ("iTP Local, endpoint here: this node's only",
     model(internal_traffic_policy="Local"), "node2", ("b", "", "", "b", None, None, (OUTSIDE, HAIRPIN))),
    ("iTP Local, none here: DROP (there are endpoints elsewhere)",
     model(internal_traffic_policy="Local"), "node3", ("", "", "", "", DROP, None, (OUTSIDE,))),
    ("iTP Local, no endpoint at all: REJECT",
     model("", internal_traffic_policy="Local"), "node3", ("", "", "", "", REJECT, None, ())),
    ("NodePort, eTP Cluster: outside traffic masqueraded",
     model(**NODE_PORT), "node3", ("ab", "ab", "ab", "", None, None, (OUTSIDE, EXTERNAL))),
    ("NodePort, eTP Local, endpoints here: outside clients keep their address",
     model("abc", **NODE_PORT, external_traffic_policy="Local"), "node2",
     ("abc", "bc", "abc", "bc", None, None, (OUTSIDE, EXTERNAL_FROM_NODE, HAIRPIN))),
    ("NodePort, eTP Local, none here: outside clients DROPped, pods still reach every endpoint",
     model(**NODE_PORT, external_traffic_policy="Local"), "node3",
     ("ab", "", "ab", "", None, DROP, (OUTSIDE, EXTERNAL_FROM_NODE))),
    ("NodePort without endpoints: REJECT both ways",
     model("", **NODE_PORT, external_traffic_policy="Local"), "node1",
     ("", "", "", "", REJECT, REJECT, ())),
    ("externalIPs make a ClusterIP Service externally accessible: eTP Local applies",
     model(external_ips=["192.168.56.200"], external_traffic_policy="Local"), "node1",
     ("ab", "a", "ab", "a", None, None, (OUTSIDE, EXTERNAL_FROM_NODE, HAIRPIN))),
    ("eTP Local on a port nobody outside reaches changes nothing",
     model(external_traffic_policy="Local"), "node1", ("ab", "", "ab", "", None, None, (OUTSIDE, HAIRPIN))),
    ("iTP Local and eTP Cluster on a NodePort: both sets in use",
     model(**NODE_PORT, internal_traffic_policy="Local"), "node1",
     ("a", "ab", "ab", "a", None, None, (OUTSIDE, EXTERNAL, HAIRPIN))),
    ("iTP Local and eTP Local on a NodePort, none here",
     model(**NODE_PORT, internal_traffic_policy="Local", external_traffic_policy="Local"), "node3",
     ("", "", "ab", "", DROP, DROP, (OUTSIDE, EXTERNAL_FROM_NODE))),
]


@pytest.mark.parametrize(("what", "spec", "node", "expected"), ROWS, ids=[row[0] for row in ROWS])
def test_categorisation(what, spec, node, expected):
    (port,) = categorize(spec, node)
    internal, external, cluster, local, internal_verdict, external_verdict, masquerade = expected
    assert letters(port.internal_endpoints) == internal
    assert letters(port.external_endpoints) == external
    assert letters(port.cluster_endpoints) == cluster
    assert letters(port.local_endpoints) == local
    assert (port.internal_verdict or (None,))[0] == internal_verdict
    assert (port.external_verdict or (None,))[0] == external_verdict
    assert port.masquerade == masquerade
    assert letters(port.reachable_endpoints) == "".join(sorted(set(cluster + local)))


def test_verdicts_say_why():
    assert categorize(model(""), "node1")[0].internal_verdict == (REJECT, "default/web:http has no endpoints")
    assert categorize(model(internal_traffic_policy="Local"), "node3")[0].internal_verdict == (
        DROP, "default/web:http has no local endpoints")


@pytest.mark.parametrize(("endpoints", "timeout", "expected"), [
    ("ab", 60, 60),
    ("ab", None, None),
    ("", 60, None),  # nothing to stick to
])
def test_affinity(endpoints, timeout, expected):
    (port,) = categorize(model(endpoints, session_affinity_timeout=timeout), "node1")
    assert port.affinity_timeout == expected


@pytest.mark.parametrize(("spec", "expected"), [
    ({"type": "ClusterIP", "cluster_ip": "10.96.0.20", "ports": [{}]}, True),
    ({"type": "NodePort", "cluster_ip": "10.96.0.20", "ports": [{}]}, True),
    ({"type": "ClusterIP", "cluster_ip": None, "ports": [{}]}, False),  # headless
    ({"type": "ClusterIP", "cluster_ip": "None", "ports": [{}]}, False),
    ({"type": "ExternalName", "cluster_ip": None, "ports": [{}]}, False),
    ({"type": "ClusterIP", "cluster_ip": "10.96.0.20", "ports": []}, False),
])
def test_proxied(spec, expected):
    assert proxied(spec) is expected


def test_not_proxied_services_get_no_ports():
    assert categorize(model(cluster_ip=None), "node1") == []
    assert categorize(model(type="ExternalName", cluster_ip=None), "node1") == []


def test_identity_and_protocol_table():
    (port,) = categorize(model(protocol="udp", node_port=30053, external_ips=["192.168.56.200"]), "node1")
    assert (port.name, port.protocol, port.l4, port.port, port.node_port) == (
        "default/web:http", "UDP", "udp", 80, 30053)
    assert port.cluster_ip == "10.96.0.20" and port.external_ips == ("192.168.56.200",)
    unnamed = model()
    unnamed["services"][0]["ports"][0]["name"] = ""
    assert categorize(unnamed, "node1")[0].name == "default/web"


def test_an_endpoint_listed_twice_counts_once():
    spec = model("aab")
    assert letters(categorize(spec, "node1")[0].endpoints) == "ab"


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["services"][0]["ports"][0].update(protocol="ICMP"),
     "default/web:http: protocol 'ICMP' is not one of TCP, UDP, SCTP"),
    (lambda m: m["services"][0].update(cluster_ip="fd00::1"),
     "default/web:http cluster_ip: 'fd00::1' is not an IPv4 address"),
    (lambda m: m["services"][0].update(external_ips=["nope"]),
     "default/web:http external_ips: 'nope' is not an IPv4 address"),
    (lambda m: m["services"][0]["ports"][0].update(port=0), "default/web:http port: 0 is not a port number"),
    (lambda m: m["services"][0]["ports"][0].update(node_port=True),
     "default/web:http node_port: True is not a port number"),
    (lambda m: m["services"][0]["ports"][0]["endpoints"].append({"ip": "10.244.1.300", "port": 1}),
     "default/web:http endpoint: '10.244.1.300' is not an IPv4 address"),
    (lambda m: m["services"][0]["ports"][0]["endpoints"].append({"ip": "10.244.1.30", "port": "80"}),
     "default/web:http endpoint 10.244.1.30: '80' is not a port number"),
    (lambda m: m["services"][0].update(session_affinity_timeout=0),
     "default/web:http: session_affinity_timeout 0 is not a number of seconds"),
    (lambda m: m.update(cluster_cidr="10.244.0.0/33"),
     "cluster_cidr: '10.244.0.0/33' is not an IPv4 network"),
])
def test_check_model(change, message):
    spec = model()
    check_model(spec)
    change(spec)
    with pytest.raises(ServiceModelError) as error:
        check_model(spec)
    assert str(error.value) == message

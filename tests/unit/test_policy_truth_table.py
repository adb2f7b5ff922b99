"""The NetworkPolicy truth tables (tests/policy_cases.py) against the rendered nftables tables.

Each case's manifests go through load_policies with the lab's layout and fake pod IPs, each
node's `table ip podnet-policy` is rendered, and every probe is walked with the pure tracer
through the forward hook of the nodes it crosses: the source's node, then the destination's
when that is another node (pods are routed between nodes, never masqueraded, so the second
node sees the same addresses). A self-probe never leaves its pod: reachable, no node asked.

The expectations come from the cases alone, written by hand from the Kubernetes semantics;
nothing here asks podnet's code what the answer should be. On a mismatch the whole expected
and observed matrices are printed, upstream style.
"""

import ipaddress
import re

import pytest
import yaml
from ansible_collections.podnet.network.plugins.module_utils.explain import policy_trace
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table

from tests.policy_cases import (
    ALL_PODS,
    CASES,
    CLUSTER_CIDR,
    NODE_OF,
    NODES,
    Probe,
    Reachability,
    compare_matrices,
    fake_ips,
    lab_pods,
    node_block,
    pods,
    probes,
    truth_table,
)

IPS = fake_ips()
PODS = lab_pods(IPS)
# Cases whose expectation is "everything allowed": each says why in its name.
ALL_OPEN = {"no-policies", "allow-all-ingress-beside-deny-all", "policy-selecting-no-pod"}


def observed(case):
    """The rendered tables' answer for every probe of `case`, as a verdict function."""
    model = load_policies([(case.objects(IPS), "case.yml")], PODS, cluster_cidr=CLUSTER_CIDR)
    tracers = {node: policy_trace.PolicyTracer(render_table(model, node)) for node in NODES}

    def forwarded(node, probe):
        return tracers[node].verdict("forward", IPS[probe.src], IPS[probe.dst], probe.protocol,
                                     probe.port) == "accept"

    verdicts = {}
    for probe in probes():
        nodes = dict.fromkeys((NODE_OF[probe.src], NODE_OF[probe.dst]))
        verdicts[probe] = probe.is_self or all(forwarded(node, probe) for node in nodes)
    return lambda src, dst, port, protocol: verdicts[Probe(src, dst, port, protocol)]


def report(case, wrong, reachable):
    def word(allowed):
        return "allowed" if allowed else "denied"
    lines = ["%s: %d of %d probes wrong" % (case.name, len(wrong), len(probes()))]
    lines += ["  %s -> %s %s/%d: expected %s, got %s" % (p.src, p.dst, p.protocol, p.port,
                                                        word(case.expect(*p)), word(reachable(*p)))
              for p in wrong[:12]]
    if len(wrong) > 12:
        lines.append("  ...")
    return "\n".join(lines) + "\n\n" + compare_matrices(case.expect, reachable)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_rendered_tables_give_the_truth_table(case):
    reachable = observed(case)
    wrong = [p for p in probes() if case.expect(*p) != reachable(*p)]
    assert not wrong, report(case, wrong, reachable)


# --- the cases themselves ---------------------------------------------------------------

def test_case_names_are_unique_slugs():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in names)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_manifests_are_namespaces_and_namespaced_policies(case):
    documents = list(yaml.safe_load_all(case.objects(IPS)))
    assert [d["metadata"]["name"] for d in documents[:3]] == ["x", "y", "z"]
    assert all(d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] for d in documents[3:])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_case_denies_something_unless_it_says_all_open(case):
    denied = [p for p in probes() if not case.expect(*p)]
    assert bool(denied) != (case.name in ALL_OPEN)
    assert all(case.expect(*p) for p in probes() if p.is_self)


# --- the layout and the Reachability helper ---------------------------------------------

def test_layout_mixes_namespaces_and_nodes():
    assert len(probes()) == 324
    assert pods(ns="x") == ("x/a", "x/b", "x/c")
    assert pods(node="node1") == ("x/a", "y/c", "z/b")
    assert pods(pod=("a", "b"), node="node2") == ("x/b", "y/a")
    for node in NODES:
        assert {p[0] for p in pods(node=node)} == {"x", "y", "z"}
        assert {p[2] for p in pods(node=node)} == {"a", "b", "c"}


def test_fake_ips_put_each_node_in_its_own_24():
    assert len(set(IPS.values())) == 9
    for index, node in enumerate(NODES, start=1):
        assert node_block(IPS, node) == "10.244.%d.0/24" % index
    node2 = ipaddress.ip_network("10.244.2.0/24")
    assert {p["node"] for p in PODS if ipaddress.ip_address(p["ip"]) in node2} == {"node2"}


def test_node_block_refuses_a_layout_it_cannot_describe():
    mixed = dict(IPS, **{"y/c": "10.244.2.99"})
    with pytest.raises(ValueError, match="node2"):
        node_block(mixed, "node2")


def test_reachability_starts_all_allowed():
    r = Reachability()
    assert all(r.expect(*p) for p in probes())


def test_reachability_deny_ingress_keeps_self_and_egress():
    r = Reachability().deny_ingress_to("x/a")
    denied = {p for p in probes() if not r.expect(*p)}
    assert denied == {p for p in probes() if p.dst == "x/a" and p.src != "x/a"}
    assert len(denied) == 8 * 4


def test_reachability_allow_is_per_peer_port_and_protocol():
    r = Reachability().deny_ingress_to("x/a").allow_ingress("x/b", "x/a", ports=(80,), protocols=("TCP",))
    assert r.expect("x/b", "x/a", 80, "TCP")
    assert not r.expect("x/b", "x/a", 81, "TCP")
    assert not r.expect("x/b", "x/a", 80, "UDP")
    assert not r.expect("y/b", "x/a", 80, "TCP")


def test_reachability_needs_both_ingress_and_egress_in_any_order():
    statements = [lambda r: r.deny_egress_from("x/a"), lambda r: r.allow_egress("x/a", "y/c"),
                  lambda r: r.deny_ingress_to("y/b"), lambda r: r.allow_ingress(ALL_PODS, "y/b")]
    forward, backward = Reachability(), Reachability()
    for statement in statements:
        statement(forward)
    for statement in reversed(statements):
        statement(backward)
    assert [forward.expect(*p) for p in probes()] == [backward.expect(*p) for p in probes()]
    assert not forward.expect("x/a", "y/b", 80, "TCP")   # y/b admits it, x/a may not open it
    assert forward.expect("x/a", "y/c", 80, "TCP")
    assert forward.expect("x/b", "y/b", 80, "TCP")
    assert forward.expect("y/b", "x/a", 80, "TCP")      # egress isolation does not stop ingress


def test_reachability_refuses_unknown_pods():
    with pytest.raises(ValueError, match="x/d"):
        Reachability().deny_ingress_to("x/d")
    with pytest.raises(ValueError, match="xa"):
        Reachability().allow_ingress(["xa"], "x/a")


def test_matrices_read_like_upstream():
    r = Reachability().deny_ingress_to("x/b")
    table = truth_table(r.expect, 80, "TCP")
    assert table[0] == "     x/a x/b x/c y/a y/b y/c z/a z/b z/c"
    assert table[1] == "x/a   .   X   .   .   .   .   .   .   . "
    assert table[2] == "x/b   .   .   .   .   .   .   .   .   . "
    text = compare_matrices(r.expect, Reachability().expect)
    assert text.count("expected") == 4 and "UDP/81 expected" in text
    wrong_row = text.splitlines()[2].split("    ")
    assert wrong_row[-1].split() == ["x/a", ".", "X", ".", ".", ".", ".", ".", ".", "."]

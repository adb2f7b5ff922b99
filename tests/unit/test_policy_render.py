"""The NetworkPolicy table: its shape and what it does to packets (in the kernel: tests/lab).

Behaviour is stated as tables of packets (kube-proxy's runPacketFlowTests style): a source,
a destination, a protocol and port, and whether the connection gets through. The rendered
text is walked by plugins/module_utils/explain/policy_trace.py, which parses nft syntax and knows nothing
of the renderer or the model. A packet gets through when the forward hook of the source
pod's node accepts it and, for a destination on another node, so does that node's.
"""

import ipaddress
import json

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    NFTABLES_GENERATION_SET,
    generation_statements,
    scope_errors,
)
from ansible_collections.podnet.network.plugins.module_utils.explain.policy_trace import (
    PolicyTracer,
    TracerError,
)
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table

NODES = ("node1", "node2", "node3")
NODE_IPS = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}
CLIENT = "192.168.56.100"  # outside the cluster
ROUTER = "192.168.56.1"
DNS = "10.96.0.10"  # node-local DNS: an address of every node


def pod(namespace, name, ip, node, ports=(), **labels):
    return {"namespace": namespace, "name": name, "labels": labels, "ip": ip, "node": node,
            "ports": [{"name": n, "containerPort": number, "protocol": proto} for n, number, proto in ports]}


PODS = [
    pod("x", "web-0", "10.244.1.10", "node1", [("http", 8080, "TCP"), ("dns", 53, "UDP")], app="web"),
    pod("x", "client", "10.244.1.11", "node1", app="client"),
    pod("x", "web-1", "10.244.2.10", "node2", [("http", 8081, "TCP")], app="web"),
    pod("y", "client", "10.244.2.11", "node2", app="client"),
    pod("y", "other", "10.244.2.12", "node2", app="other"),
    pod("z", "db", "10.244.3.10", "node3", [("http", 9090, "TCP")], app="db"),
    pod("z", "client", "10.244.3.11", "node3", app="client"),
]
WEB0, XCLIENT, WEB1, YCLIENT, YOTHER, DB, ZCLIENT = (p["ip"] for p in PODS)
NODE_OF = {p["ip"]: p["node"] for p in PODS}
NAMESPACES = """\
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: z, labels: {team: blue}}
"""


def policy(spec, name="p", namespace="x"):
    return ("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            "metadata: {name: %s, namespace: %s}\nspec: %s\n" % (name, namespace, spec))


def model_of(*policies, pods=PODS):
    return load_policies([(NAMESPACES + "".join(policies), "policies.yml")], pods)


def tracers(model):
    return {node: PolicyTracer(render_table(model, node)) for node in NODES}


def reach(tables, source, destination, protocol="TCP", port=80):
    """Does a new connection get through? Judged where it leaves a pod and where it reaches one."""
    hops = [NODE_OF.get(source), NODE_OF.get(destination)]
    port = None if protocol == "ICMP" else port
    verdicts = [tables[node].verdict("forward", source, destination, protocol, port)
                for node in dict.fromkeys(hop for hop in hops if hop)]
    return all(verdict == "accept" for verdict in verdicts)


# --- a truth table of the core cases --------------------------------------------------------------

DENY_ALL_X = policy("{podSelector: {}}", name="deny-all")
WEB = "{matchLabels: {app: web}}"
CASES = {
    "no policy: everything flows": ([], [
        (XCLIENT, WEB0, "TCP", 80, True), (YCLIENT, WEB1, "UDP", 9, True), (CLIENT, DB, "ICMP", None, True),
        (WEB0, CLIENT, "TCP", 443, True),
    ]),
    "deny-all ingress in x": ([DENY_ALL_X], [
        (XCLIENT, WEB0, "TCP", 80, False),      # same node, same namespace
        (XCLIENT, WEB1, "TCP", 80, False),      # across nodes
        (YCLIENT, XCLIENT, "ICMP", None, False),
        (CLIENT, WEB1, "TCP", 80, False),
        (WEB0, YCLIENT, "TCP", 80, True),       # egress is not isolated
        (WEB0, CLIENT, "UDP", 53, True),
        (YCLIENT, DB, "TCP", 80, True),         # other namespaces untouched
    ]),
    "allow from podSelector (own namespace only)": ([policy(
        "{podSelector: %s, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, True), (XCLIENT, WEB1, "UDP", 5000, True),
        (XCLIENT, WEB1, "ICMP", None, True),
        (YCLIENT, WEB0, "TCP", 80, False),      # app=client, but in namespace y
        (WEB1, WEB0, "TCP", 80, False), (CLIENT, WEB0, "TCP", 80, False),
        (WEB0, XCLIENT, "TCP", 80, True),       # x/client itself is not selected
    ]),
    "allow from namespaceSelector": ([policy(
        "{podSelector: %s, ingress: [{from: [{namespaceSelector: {matchLabels: {team: red}}}]}]}" % WEB)], [
        (YCLIENT, WEB0, "TCP", 80, True), (YOTHER, WEB1, "TCP", 80, True),
        (ZCLIENT, WEB0, "TCP", 80, False), (XCLIENT, WEB0, "TCP", 80, False),
    ]),
    "namespaceSelector AND podSelector in one peer": ([policy(
        "{podSelector: %s, ingress: [{from: [{namespaceSelector: {}, "
        "podSelector: {matchLabels: {app: client}}}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, True), (YCLIENT, WEB0, "TCP", 80, True), (ZCLIENT, WEB1, "TCP", 80, True),
        (YOTHER, WEB0, "TCP", 80, False), (DB, WEB0, "TCP", 80, False),
    ]),
    "two peers are OR": ([policy(
        "{podSelector: %s, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}, "
        "{podSelector: {matchLabels: {app: client}}}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, True), (DB, WEB0, "TCP", 80, True), (ZCLIENT, WEB0, "TCP", 80, True),
        (YCLIENT, WEB0, "TCP", 80, False),
    ]),
    "ipBlock with except (pod addresses too)": ([policy(
        "{podSelector: %s, ingress: [{from: [{ipBlock: {cidr: 192.168.56.0/24, except: [192.168.56.0/28]}}, "
        "{ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.12/32]}}]}]}" % WEB)], [
        (CLIENT, WEB0, "TCP", 80, True), (ROUTER, WEB0, "TCP", 80, False),
        ("203.0.113.10", WEB0, "TCP", 80, False),
        (YCLIENT, WEB0, "TCP", 80, True), (YOTHER, WEB0, "TCP", 80, False), (XCLIENT, WEB0, "TCP", 80, False),
    ]),
    "named port resolves on each selected pod": ([policy(
        "{podSelector: %s, ingress: [{ports: [{port: http}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 8080, True), (XCLIENT, WEB0, "TCP", 8081, False),
        (XCLIENT, WEB1, "TCP", 8081, True), (XCLIENT, WEB1, "TCP", 8080, False),
        (XCLIENT, WEB0, "UDP", 8080, False), (XCLIENT, WEB0, "ICMP", None, False),
    ]),
    "numbered ports, endPort and protocol-only": ([policy(
        "{podSelector: %s, ingress: [{ports: [{port: 80}, {port: 8000, endPort: 8010}, {protocol: UDP}]}]}"
        % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, True), (XCLIENT, WEB0, "TCP", 81, False),
        (XCLIENT, WEB0, "TCP", 8000, True), (XCLIENT, WEB0, "TCP", 8010, True),
        (XCLIENT, WEB0, "TCP", 8011, False),
        (XCLIENT, WEB0, "UDP", 1, True), (XCLIENT, WEB0, "UDP", 65535, True),
        (XCLIENT, WEB0, "SCTP", 80, False),
        (XCLIENT, WEB0, "ICMP", None, False),
    ]),
    "egress: DNS anywhere and http to web pods only": ([policy(
        "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{ports: [{port: 53, "
        "protocol: UDP}]}, {to: [{podSelector: %s}], ports: [{port: http}]}]}" % WEB)], [
        (XCLIENT, CLIENT, "UDP", 53, True), (XCLIENT, CLIENT, "TCP", 53, False),
        (XCLIENT, WEB0, "TCP", 8080, True), (XCLIENT, WEB1, "TCP", 8081, True),
        (XCLIENT, WEB1, "TCP", 8080, False),
        (XCLIENT, DB, "TCP", 9090, False),      # db's http is not in the peers
        (XCLIENT, CLIENT, "ICMP", None, False),
        (YCLIENT, DB, "TCP", 9090, True),       # the policy is namespace x's
        (WEB0, XCLIENT, "TCP", 80, True),       # ingress of x/client is not isolated
    ]),
    "egress named port to any destination": ([policy(
        "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], "
        "egress: [{ports: [{port: http}]}]}")], [
        (XCLIENT, DB, "TCP", 9090, True), (XCLIENT, WEB1, "TCP", 8081, True),
        (XCLIENT, DB, "TCP", 8080, False),
        (XCLIENT, CLIENT, "TCP", 8080, False),  # not a pod: never a named port
    ]),
    "union of two policies selecting the same pod": ([
        policy("{podSelector: %s, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], "
               "ports: [{port: 80}]}]}" % WEB, name="a"),
        policy("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: "
               "{matchLabels: {team: red}}}], ports: [{port: 443}]}]}", name="b")], [
        (XCLIENT, WEB0, "TCP", 80, True), (YCLIENT, WEB0, "TCP", 443, True),
        (XCLIENT, WEB0, "TCP", 443, False), (YCLIENT, WEB0, "TCP", 80, False),
    ]),
    "deny-all plus an allow: the allow wins": ([DENY_ALL_X, policy(
        "{podSelector: %s, ingress: [{from: [{podSelector: {}}]}]}" % WEB, name="allow-ns")], [
        (XCLIENT, WEB0, "TCP", 80, True), (WEB0, WEB1, "TCP", 80, True),
        (WEB0, XCLIENT, "TCP", 80, False), (YCLIENT, WEB0, "TCP", 80, False),
    ]),
    "ingress and egress isolation on one node": ([
        policy("{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{from: [{podSelector: {}}]}], "
               "egress: [{to: [{podSelector: %s}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, True),       # client's egress to web, web's ingress from x
        (WEB0, XCLIENT, "TCP", 80, False),      # web's egress only to web
        (WEB0, WEB1, "TCP", 80, True),
        (XCLIENT, CLIENT, "TCP", 80, False), (CLIENT, XCLIENT, "TCP", 80, False),
    ]),
    "an allow-all rule": ([policy(
        "{podSelector: {}, policyTypes: [Ingress, Egress], ingress: [{}], egress: [{}]}")], [
        (CLIENT, WEB0, "ICMP", None, True), (WEB0, CLIENT, "SCTP", 9, True),
        (YOTHER, XCLIENT, "UDP", 7, True),
    ]),
    "selectors that match no pod allow nothing": ([policy(
        "{podSelector: %s, ingress: [{from: [{podSelector: {matchLabels: {app: none}}}]}, "
        "{ports: [{port: metrics}]}]}" % WEB)], [
        (XCLIENT, WEB0, "TCP", 80, False), (XCLIENT, WEB0, "TCP", 9100, False),
    ]),
}


@pytest.mark.parametrize("case", CASES)
def test_truth_table(case):
    policies, rows = CASES[case]
    tables = tracers(model_of(*policies))
    wrong = [(source, destination, protocol, port, expected) for source, destination, protocol, port, expected
             in rows if reach(tables, source, destination, protocol, port) != expected]
    assert wrong == [], case


def test_input_hook_is_egress():
    """A pod reaching its own node (node-local DNS) is subject to its egress policy; ingress has no say."""
    tables = tracers(model_of(policy(
        "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: %s/32}}], "
        "ports: [{port: 53, protocol: UDP}]}]}" % DNS)))
    assert tables["node1"].verdict("input", XCLIENT, DNS, "UDP", 53) == "accept"
    assert tables["node1"].verdict("input", XCLIENT, DNS, "TCP", 53) == "drop"
    assert tables["node1"].verdict("input", XCLIENT, NODE_IPS["node1"], "TCP", 22) == "drop"
    assert tables["node2"].verdict("input", YCLIENT, DNS, "TCP", 53) == "accept"  # namespace y
    deny_in = tracers(model_of(DENY_ALL_X))
    assert deny_in["node1"].verdict("input", XCLIENT, NODE_IPS["node1"], "TCP", 22) == "accept"


def test_node_traffic_to_its_pods_is_not_filtered():
    """The node's own connections leave by the output hook, which the table leaves alone; replies
    of allowed connections pass on conntrack (`ct state established,related accept` comes first)."""
    text = render_table(model_of(DENY_ALL_X), "node1")
    assert "hook output" not in text
    for chain in ("forward", "input"):
        body = text.split("\tchain %s {\n" % chain)[1].split("\n")
        assert body[1].strip() == "ct state established,related accept"


# --- structure ------------------------------------------------------------------------------------

def address(node, index):
    """The index-th pod address of node N (1-3): 10.244.(16N).2 on, as many as a test needs."""
    return str(ipaddress.IPv4Address("10.244.0.0") + (node << 12) + index + 2)


def many_pods(count):
    """`count` pods in namespace x over three nodes, every third one app=web."""
    return [pod("x", "p%d" % i, address(i % 3 + 1, i // 3), "node%d" % (i % 3 + 1),
                [("http", 8080, "TCP")], app="web" if i % 3 == 0 else "client") for i in range(count)]


TWO_RULES = policy("{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], "
                   "ports: [{port: 80}, {port: http}]}, {from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]}")


def chain_rules(text, chain):
    body = text.split("\tchain %s {\n" % chain)[1].split("\n\t}")[0]
    return [line.strip() for line in body.split("\n") if not line.strip().startswith("type ")]


def test_rules_grow_with_policy_rules_not_pods():
    small = render_table(model_of(TWO_RULES, pods=many_pods(6)), "node1")
    large = render_table(model_of(TWO_RULES, pods=many_pods(600)), "node1")
    assert chain_rules(small, "pod_ingress") == chain_rules(large, "pod_ingress")
    tails = [rule.split(" accept ")[-1] for rule in chain_rules(large, "pod_ingress")]
    assert tails == ['comment "x/p ingress[0]"', 'comment "x/p ingress[0]"', 'comment "x/p ingress[1]"',
                     'counter drop comment "ingress to an isolated pod that no policy allows"']
    assert len(large) > 5 * len(small)  # the pods are elements


def test_isolation_sets_hold_only_local_pods():
    model = model_of(DENY_ALL_X, policy("{podSelector: {}, policyTypes: [Egress]}", name="no-egress",
                                        namespace="y"))
    for node in NODES:
        table = PolicyTracer(render_table(model, node))
        local = {p["ip"] for p in PODS if p["node"] == node}
        isolated_in = {p["ip"] for p in PODS if p["namespace"] == "x"} & local
        isolated_out = {p["ip"] for p in PODS if p["namespace"] == "y"} & local
        for address in (p["ip"] for p in PODS):
            assert table.verdict("forward", CLIENT, address, "TCP", 80) == (
                "drop" if address in isolated_in else "accept"), (node, address)
            assert table.verdict("forward", address, CLIENT, "TCP", 80) == (
                "drop" if address in isolated_out else "accept"), (node, address)
    node3 = render_table(model, "node3")
    assert "_pods {" not in node3  # neither selects a pod there


def test_a_policys_sets_are_named_after_it_whatever_other_policies_come_or_go():
    spec = "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}"
    first, second = policy(spec, name="a"), policy(spec, name="b")
    both = render_table(model_of(first, second), "node1")
    alone = render_table(model_of(second), "node1")
    assert "set p_x_b_ingress0_ports {" in both and "set p_x_b_ingress0_ports {" in alone
    assert alone.count("\tset ") == both.count("\tset ") - 2  # p_x_a's pods and ports
    # A name nft would read otherwise (a dot), or too long for a set name: a digest.
    dotted = render_table(model_of(policy("{podSelector: {}}", name="web.v1")), "node1")
    long_name = render_table(model_of(policy("{podSelector: {}}", name="n" * 240)), "node1")
    assert [len(line.split()[1]) for text in (dotted, long_name) for line in text.splitlines()
            if line.endswith("_pods {")] == [len("p_") + 16 + len("_pods")] * 2


def test_node_without_isolated_pods_gets_a_small_table():
    text = render_table(model_of(), "node1")
    assert text.startswith("table ip podnet-policy {\n\tset ingress_isolated {\n\t\ttypeof ip daddr\n\t}\n")
    assert chain_rules(text, "pod_ingress") == [
        'counter drop comment "ingress to an isolated pod that no policy allows"']
    assert PolicyTracer(text).verdict("forward", CLIENT, WEB0, "TCP", 80) == "accept"


def test_the_tracer_reads_past_the_nftables_module_s_generation_set():
    """The live table (`nft list table`) and the boot script both carry the module's own
    generation set (its glance); it is no policy's and changes no verdict."""
    model = model_of(TWO_RULES, pods=many_pods(9))
    text = render_table(model, "node1")
    listed = text.replace("table ip podnet-policy {\n",
                          "table ip podnet-policy {\n\tset podnet_generation {\n\t\ttypeof meta mark\n"
                          "\t\telements = { 305419896 }\n\t}\n", 1)
    boot = text + generation_statements("ip", "podnet-policy", NFTABLES_GENERATION_SET, 305419896)
    for probe in (("forward", CLIENT, WEB0, "TCP", 80), ("forward", WEB0, CLIENT, "UDP", 53)):
        assert PolicyTracer(listed).verdict(*probe) == PolicyTracer(boot).verdict(*probe) \
            == PolicyTracer(text).verdict(*probe)


def test_deterministic():
    model = model_of(TWO_RULES, DENY_ALL_X.replace("deny-all", "second"), pods=many_pods(90))
    again = json.loads(json.dumps(model_of(TWO_RULES, DENY_ALL_X.replace("deny-all", "second"),
                                           pods=list(reversed(many_pods(90))))))
    for node in NODES:
        assert render_table(model, node) == render_table(again, node)


def test_one_table_only_and_its_name():
    """podnet.network.nftables accepts content that touches no table but its own."""
    model = model_of(TWO_RULES, pods=many_pods(3000))
    text = render_table(model, "node1", table="policy-test")
    assert text.startswith("table ip policy-test {")
    assert "\nadd element ip policy-test " in text  # more elements than one statement takes
    assert scope_errors("ip", "policy-test", text) == []
    assert scope_errors("ip", "podnet-policy", text) != []


def test_large_sets_are_chunked_and_traced():
    model = model_of(TWO_RULES, pods=many_pods(3000))
    text = render_table(model, "node1")
    assert max(line.count(",") for line in text.splitlines()) < 500
    table = PolicyTracer(text)
    last_web = [p for p in many_pods(3000) if p["labels"]["app"] == "web"][-1]["ip"]
    first = address(1, 0)
    assert table.verdict("forward", last_web, first, "TCP", 80) == "accept"
    assert table.verdict("forward", address(2, 0), first, "TCP", 80) == "accept"  # the 10.0.0.0/8 rule
    assert table.verdict("forward", CLIENT, first, "TCP", 80) == "drop"


def test_long_names_fit_nft_comments():
    long_name = ".".join(["a" * 60] * 4)
    text = render_table(model_of(policy("{podSelector: {}}", name=long_name),
                                 policy("{podSelector: {}, ingress: [{}]}", name=long_name + "b")), "node1")
    comments = [line.split('comment "')[1][:-1] for line in text.splitlines() if 'comment "' in line]
    assert max(len(c) for c in comments) == 128
    PolicyTracer(text)  # refuses comments nft would


def test_tracer_refuses_what_it_does_not_know():
    good = render_table(model_of(TWO_RULES), "node1")
    for bad in (good.replace("ip saddr @p_x_p_ingress0_peers", "ip saddr != @p_x_p_ingress0_peers"),
                good.replace("jump pod_ingress", "jump nowhere"),
                good.replace("@p_x_p_ingress0_ports", "@p_x_p_pods"),
                good.replace("flags interval", "flags timeout", 1),
                good.replace("10.0.0.0/8", "10.0.0.0/8, 10.1.0.0/16"),
                good.replace("table ip", "table inet")):
        with pytest.raises(TracerError):
            PolicyTracer(bad)

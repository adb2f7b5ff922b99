"""NetworkPolicy truth tables, written by hand the way the Kubernetes e2e suite writes them.

Upstream's test/e2e/network/netpol runs three namespaces (x, y, z) of three pods (a, b, c),
applies some NetworkPolicies, and probes every pod pair on every port and protocol against a
"Reachability" matrix that starts all-allowed and is then told which peers each policy isolates
and allows. The cases here do the same over the lab's fixed layout, and state their
expectations from the NetworkPolicy v1 semantics alone, never from podnet's own code: they are
the independent check of plugins/module_utils/policy/ (model.py, render.py).

tests/unit/test_policy_truth_table.py runs every case through the rendered nftables tables with
the pure tracer (fake IPs, `fake_ips()`); the lab's live test sends the same probes as real
packets between real pods (real IPs, passed to `lab_pods(ips)` and `Case.objects(ips)`).

The semantics the expectations encode (NetworkPolicy v1):
- A pod is isolated for ingress (egress) once any policy selecting it has Ingress (Egress) in
  its policyTypes; an isolated pod accepts (opens) only what at least one rule of those
  policies allows: policies and rules are a union, never an order.
- A connection needs both ends: the destination's ingress AND the source's egress.
- A section whose type is not in policyTypes is ignored. Without policyTypes, a policy is
  Ingress, plus Egress if it has a non-empty egress section.
- Within a rule, peers are ORed and ANDed with ports; within a peer, namespaceSelector and
  podSelector are ANDed; a podSelector alone means the policy's own namespace; an empty or
  missing `from`/`to`/`ports` matches everything.
- A port entry defaults to TCP; a named port matches the container port of that name AND
  protocol on the destination pod; no port means every port of that protocol.
- ipBlock matches pod addresses too (podnet does not masquerade pod-to-pod traffic).

Self-probes: a pod talking to its own IP never leaves its network namespace, so no node rule
sees it and policy cannot stop it. The probes still include the 9 self-pairs (upstream does),
`Probe.is_self` marks them and every expectation says allowed for them.

Only the first packet of a new connection is probed: under egress isolation a pod still
answers connections others open to it (replies are established traffic), so "egress denied"
here always means "the pod cannot open the connection".
"""

import ipaddress
import json
import os
import textwrap
from collections import namedtuple

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
CLUSTER_CIDR = "10.244.0.0/16"

# Every node holds one pod of each namespace and one pod of each name, so every case mixes
# same-node and cross-node pairs.
NODE_OF = {
    "x/a": "node1", "x/b": "node2", "x/c": "node3",
    "y/a": "node2", "y/b": "node3", "y/c": "node1",
    "z/a": "node3", "z/b": "node1", "z/c": "node2",
}
# A lab that places some truth-table pods elsewhere says where, and the expectations follow
# (the two-subnet lab puts x/c and z/c on node4, across the overlay: molecule/subnets).
NODE_OF.update(json.loads(os.environ.get("PODNET_POLICY_PLACEMENT") or "{}"))
NODES = tuple(sorted(set(NODE_OF.values())))


def other_nodes(*nodes):
    """Every node of the layout but these."""
    return tuple(node for node in NODES if node not in nodes)

ALL_PODS = tuple("%s/%s" % (ns, name) for ns in NAMESPACES for name in POD_NAMES)

CONTAINER_PORTS = [
    {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
    {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
    {"name": "serve-81-tcp", "containerPort": 81, "protocol": "TCP"},
    {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
]


class Probe(namedtuple("Probe", "src dst port protocol")):
    """One new connection: from pod `src` to pod `dst` ("x/a" names) on port/protocol."""

    @property
    def is_self(self):
        """A pod to its own IP: stays in the pod, no policy applies (see the module docstring)."""
        return self.src == self.dst


def probes():
    """All 324 probes of a case: every pod pair (self-pairs included) x ports x protocols."""
    return [Probe(src, dst, port, protocol)
            for src in ALL_PODS for dst in ALL_PODS for port in PORTS for protocol in PROTOCOLS]


def pods(ns=None, pod=None, node=None):
    """The pod names ("x/a") in namespaces `ns`, with names `pod`, on nodes `node` (each a name or
    a tuple of names; None: any)."""
    def wanted(value, choice):
        return choice is None or value == choice or (not isinstance(choice, str) and value in choice)
    return tuple(p for p in ALL_PODS
                 if wanted(p.split("/")[0], ns) and wanted(p.split("/")[1], pod) and wanted(NODE_OF[p], node))


# --- the layout as podnet and Kubernetes see it ---------------------------------------

def fake_ips():
    """Deterministic pod IPs for the pure test: node N's pods in 10.244.N.0/24, from .10 up."""
    ips = {}
    for index, node in enumerate(NODES, start=1):
        for host, name in enumerate(p for p in ALL_PODS if NODE_OF[p] == node):
            ips[name] = "10.244.%d.%d" % (index, 10 + host)
    return ips


def lab_pods(ips=None):
    """podnet's pod dicts for the layout; `ips` maps "x/a" -> address (default: `fake_ips()`)."""
    ips = ips or fake_ips()
    result = []
    for name in ALL_PODS:
        namespace, pod = name.split("/")
        result.append({"namespace": namespace, "name": pod, "labels": {"pod": pod},
                       "ports": [dict(p) for p in CONTAINER_PORTS], "ip": ips[name], "node": NODE_OF[name]})
    return result


def namespaces_yaml():
    """The three Namespace objects; Kubernetes' kubernetes.io/metadata.name label is added by
    podnet itself, as the API server does."""
    return "".join("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    ns: %s\n"
                   % (ns, ns) for ns in NAMESPACES)


def node_block(ips, node):
    """The /24 that holds `node`'s pods, for ipBlock cases; refuses a layout where it would also
    hold another node's pod (the expectations are written per node)."""
    block = ipaddress.ip_network("%s/24" % ips[pods(node=node)[0]], strict=False)
    inside = {p for p in ALL_PODS if ipaddress.ip_address(ips[p]) in block}
    if inside != set(pods(node=node)) or not block.subnet_of(ipaddress.ip_network(CLUSTER_CIDR)):
        raise ValueError("pods of %s are not alone in %s inside %s: %s" % (node, block, CLUSTER_CIDR, ips))
    return str(block)


# --- the expectation ------------------------------------------------------------------

def _names(value):
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in NODE_OF]
    if unknown:
        raise ValueError("no such pod: %s" % ", ".join(unknown))
    return names


class Reachability:
    """Expected connectivity, stated like upstream's Reachability: all allowed, then per policy
    the pods it isolates and the peers it allows.

    Kept as Kubernetes defines it, not as a matrix edited in order: a direction allows a probe
    if its pod is not isolated in that direction or some statement allowed the probe, and a
    probe is reachable if both the destination's ingress and the source's egress allow it. So
    the order of statements cannot change the outcome, as the order of policies cannot.
    Methods return self, to chain.
    """

    def __init__(self):
        self.isolated = {"ingress": set(), "egress": set()}
        self.allowed = {"ingress": set(), "egress": set()}

    def deny_ingress_to(self, *dsts):
        self.isolated["ingress"].update(_names(dsts))
        return self

    def deny_egress_from(self, *srcs):
        self.isolated["egress"].update(_names(srcs))
        return self

    def allow_ingress(self, from_, to, ports=PORTS, protocols=PROTOCOLS):
        """`to`'s ingress accepts connections from `from_` (pod names) on ports x protocols."""
        return self._allow("ingress", from_, to, ports, protocols)

    def allow_egress(self, from_, to, ports=PORTS, protocols=PROTOCOLS):
        """`from_`'s egress may open connections to `to` (pod names) on ports x protocols."""
        return self._allow("egress", from_, to, ports, protocols)

    def _allow(self, direction, from_, to, ports, protocols):
        self.allowed[direction].update(Probe(s, d, port, protocol) for s in _names(from_) for d in _names(to)
                                       for port in ports for protocol in protocols)
        return self

    def expect(self, src, dst, port, protocol):
        probe = Probe(src, dst, port, protocol)
        if probe.is_self:
            return True
        ingress = dst not in self.isolated["ingress"] or probe in self.allowed["ingress"]
        egress = src not in self.isolated["egress"] or probe in self.allowed["egress"]
        return ingress and egress


class Case:
    """One scenario: NetworkPolicy manifests and the Reachability they must produce.

    `policies` is YAML text, or a function of the pod IPs returning it (ipBlock cases).
    `pure_only`: the lab cannot run it (says why).
    """

    def __init__(self, name, policies, reachability, pure_only=None):
        self.name = name
        self.policies = policies
        self.reachability = reachability
        self.pure_only = pure_only

    def objects(self, ips):
        """The whole file for this case: Namespaces, then the policies."""
        text = self.policies(ips) if callable(self.policies) else self.policies
        return namespaces_yaml() + textwrap.dedent(text)

    def expect(self, src, dst, port, protocol):
        return self.reachability.expect(src, dst, port, protocol)

    def __repr__(self):
        return "Case(%s)" % self.name


# --- reporting ------------------------------------------------------------------------

def truth_table(verdict, port, protocol):
    """Upstream's matrix for one port/protocol: rows = sources, columns = destinations,
    `.` reachable, `X` not. `verdict(src, dst, port, protocol)` -> bool."""
    lines = ["     " + " ".join(ALL_PODS)]
    for src in ALL_PODS:
        lines.append(src + "  " + " ".join(" %s " % ("." if verdict(src, dst, port, protocol) else "X")
                                           for dst in ALL_PODS))
    return lines


def compare_matrices(expected, observed):
    """Expected, observed and their difference side by side, one block per port/protocol; in
    the third matrix `X` marks a probe that went wrong. Both arguments are verdict functions."""
    def agree(src, dst, port, protocol):
        return expected(src, dst, port, protocol) == observed(src, dst, port, protocol)
    blocks = []
    for protocol in PROTOCOLS:
        for port in PORTS:
            columns = [truth_table(f, port, protocol) for f in (expected, observed, agree)]
            width = len(columns[0][0])
            head = "%s/%d" % (protocol, port)
            titles = [head + " expected", "observed", "wrong (X)"]
            lines = ["    ".join(t.ljust(width) for t in titles).rstrip()]
            lines += ["    ".join(row).rstrip() for row in zip(*columns, strict=True)]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- the cases ------------------------------------------------------------------------
# Names follow upstream's test names where one exists (quoted in the comment above the case).

X, Y, Z = pods(ns="x"), pods(ns="y"), pods(ns="z")


def _ingress_from_y_a_32(ips):
    return """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-from-y-a-address
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - ipBlock:
                    cidr: %s/32
        """ % ips["y/a"]


def _ingress_from_cluster_except_node2(ips):
    return """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-from-cluster-except-node2
          namespace: x
        spec:
          podSelector: {}
          ingress:
            - from:
                - ipBlock:
                    cidr: %s
                    except: [%s]
        """ % (CLUSTER_CIDR, node_block(ips, "node2"))


def _egress_to_cluster_except_node3(ips):
    return """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: egress-to-cluster-except-node3
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          egress:
            - to:
                - ipBlock:
                    cidr: %s
                    except: [%s]
        """ % (CLUSTER_CIDR, node_block(ips, "node3"))


def _egress_to_z_b_32(ips):
    return """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: egress-to-z-b-address
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          egress:
            - to:
                - ipBlock:
                    cidr: %s/32
        """ % ips["z/b"]


CASES = [
    # Nothing selects anything: the network is flat.
    Case("no-policies", "", Reachability()),

    # "should support a 'default-deny-ingress' policy"
    Case("deny-all-ingress-in-x", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: default-deny-ingress
          namespace: x
        spec:
          podSelector: {}
        """, Reachability().deny_ingress_to(*X)),

    # "should support a 'default-deny-all' policy"
    Case("deny-all-ingress-and-egress-in-x", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: default-deny-all
          namespace: x
        spec:
          podSelector: {}
          policyTypes: [Ingress, Egress]
        """, Reachability().deny_ingress_to(*X).deny_egress_from(*X)),

    # "should support allow-all policy": beside a deny-all, the union allows everything.
    Case("allow-all-ingress-beside-deny-all", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: default-deny-ingress
          namespace: x
        spec:
          podSelector: {}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-all-ingress
          namespace: x
        spec:
          podSelector: {}
          ingress:
            - {}
        """, Reachability().deny_ingress_to(*X).allow_ingress(ALL_PODS, X)),

    # "should enforce policy to allow traffic from pods within server namespace based on
    # PodSelector": pod: b means x/b only, not y/b or z/b.
    Case("ingress-from-pod-b-same-namespace", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-pod-b
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
        """, Reachability().deny_ingress_to("x/a").allow_ingress("x/b", "x/a")),

    # A podSelector peer means the policy's namespace, whichever that is (here y).
    Case("ingress-in-y-from-pod-a-same-namespace", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-y-from-pod-a
          namespace: y
        spec:
          podSelector: {}
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: a}
        """, Reachability().deny_ingress_to(*Y).allow_ingress("y/a", Y)),

    # A podSelector {} peer: every pod of the policy's namespace, no other.
    Case("ingress-from-all-pods-same-namespace", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-namespace
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - podSelector: {}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(X, "x/a")),

    # "should enforce policy based on NamespaceSelector with MatchExpressions"
    Case("ingress-from-namespace-in-y", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-y
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchExpressions:
                      - {key: ns, operator: In, values: [y]}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(Y, "x/a")),

    # The label the API server puts on every Namespace.
    Case("ingress-from-namespace-by-metadata-name", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-z
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {kubernetes.io/metadata.name: z}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(Z, "x/a")),

    # "should enforce policy based on PodSelector and NamespaceSelector": one peer, both
    # selectors: pods c of namespace y, that is y/c alone.
    Case("ingress-from-namespace-and-pod-in-one-peer", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-y-c
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {ns: y}
                  podSelector:
                    matchLabels: {pod: c}
        """, Reachability().deny_ingress_to("x/a").allow_ingress("y/c", "x/a")),

    # "should enforce policy based on PodSelector or NamespaceSelector": two peers: all of y,
    # and pods c of the policy's own namespace (x/c).
    Case("ingress-from-namespace-or-pod-two-peers", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-y-or-pod-c
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {ns: y}
                - podSelector:
                    matchLabels: {pod: c}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(Y + ("x/c",), "x/a")),

    # "should enforce policy based on NamespaceSelector with MatchExpressions" (NotIn)
    Case("ingress-from-namespaces-notin-x", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-other-namespaces
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchExpressions:
                      - {key: ns, operator: NotIn, values: [x]}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(Y + Z, "x/a")),

    # "should enforce policy based on PodSelector with MatchExpressions", across all namespaces
    # (namespaceSelector {}): pods that have a `pod` label (all) and are not c.
    Case("ingress-from-pods-exists-in-all-namespaces", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-labelled-pods
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector: {}
                  podSelector:
                    matchExpressions:
                      - {key: pod, operator: Exists}
                      - {key: pod, operator: NotIn, values: [c]}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(pods(pod=("a", "b")), "x/a")),

    # DoesNotExist both ways: no pod lacks `pod` (the first policy selects nothing), every pod
    # lacks `app` (the second selects all of x); no namespace lacks `ns` (the first rule allows
    # nothing), so only the second rule's x/b gets in.
    Case("selectors-with-doesnotexist", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: selects-no-pod
          namespace: x
        spec:
          podSelector:
            matchExpressions:
              - {key: pod, operator: DoesNotExist}
          policyTypes: [Ingress, Egress]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: selects-all-of-x
          namespace: x
        spec:
          podSelector:
            matchExpressions:
              - {key: app, operator: DoesNotExist}
          ingress:
            - from:
                - namespaceSelector:
                    matchExpressions:
                      - {key: ns, operator: DoesNotExist}
            - from:
                - podSelector:
                    matchExpressions:
                      - {key: team, operator: DoesNotExist}
                      - {key: pod, operator: In, values: [b]}
        """, Reachability().deny_ingress_to(*X).allow_ingress("x/b", X)),

    # matchLabels and matchExpressions of one selector are ANDed: the first peer is z only,
    # the second (ns y and ns not y) matches no namespace.
    Case("matchlabels-and-matchexpressions-anded", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-z
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {ns: z}
                    matchExpressions:
                      - {key: ns, operator: In, values: [y, z]}
                - namespaceSelector:
                    matchLabels: {ns: y}
                    matchExpressions:
                      - {key: ns, operator: NotIn, values: [y]}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(Z, "x/a")),

    # "should enforce policy based on Ports": no `from` is everyone; no protocol is TCP.
    Case("ingress-on-port-81-tcp-from-anyone", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-81
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - port: 81
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress(ALL_PODS, "x/a", ports=(81,), protocols=("TCP",))),

    # "should allow ingress access on one named port"
    Case("ingress-on-named-port-serve-80-tcp", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-serve-80-tcp
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - port: serve-80-tcp
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress(ALL_PODS, "x/a", ports=(80,), protocols=("TCP",))),

    Case("ingress-on-named-port-serve-81-udp", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-serve-81-udp
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - {port: serve-81-udp, protocol: UDP}
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress(ALL_PODS, "x/a", ports=(81,), protocols=("UDP",))),

    # A named port is looked up with its protocol: TCP (the default) has no port named
    # serve-81-udp, so this rule allows nothing and x/a is simply isolated.
    Case("named-port-needs-matching-protocol", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-serve-81-udp-as-tcp
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - port: serve-81-udp
        """, Reachability().deny_ingress_to("x/a")),

    # endPort (upstream's [Feature:NetworkPolicyEndPort] tests): TCP 80 to 81, not UDP.
    Case("ingress-endport-tcp-80-to-81", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-tcp-80-81
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - {protocol: TCP, port: 80, endPort: 81}
        """, Reachability().deny_ingress_to("x/a").allow_ingress(ALL_PODS, "x/a", protocols=("TCP",))),

    # "should not allow access by TCP when a policy specifies only UDP"
    Case("ingress-udp-80-only", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-udp-80
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - {protocol: UDP, port: 80}
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress(ALL_PODS, "x/a", ports=(80,), protocols=("UDP",))),

    # "should enforce ingress policy allowing any port traffic to a server on a specific
    # protocol": a protocol without a port is every port of it.
    Case("ingress-any-port-on-udp", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-udp
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - protocol: UDP
        """, Reachability().deny_ingress_to("x/a").allow_ingress(ALL_PODS, "x/a", protocols=("UDP",))),

    # Two port entries, each with its own protocol, for one peer.
    Case("ingress-on-two-port-entries", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-from-pod-b-on-two-ports
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
              ports:
                - {protocol: UDP, port: 80}
                - {protocol: TCP, port: 81}
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress("x/b", "x/a", ports=(80,), protocols=("UDP",))
        .allow_ingress("x/b", "x/a", ports=(81,), protocols=("TCP",))),

    # ipBlock with a single pod's address (y/a, on another node).
    Case("ingress-from-ipblock-y-a", _ingress_from_y_a_32,
         Reachability().deny_ingress_to("x/a").allow_ingress("y/a", "x/a")),

    # ipBlock with except: the cluster CIDR without node2's podCIDR; x/b (on node2) loses its
    # own neighbours y/a and z/c, x/a and x/c lose everything on node2.
    Case("ingress-from-ipblock-except-node2", _ingress_from_cluster_except_node2,
         Reachability().deny_ingress_to(*X).allow_ingress(pods(node=other_nodes("node2")), X)),

    # "should deny egress from all pods in a namespace": x opens nothing, but is reached.
    Case("deny-all-egress-in-x", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: default-deny-egress
          namespace: x
        spec:
          podSelector: {}
          policyTypes: [Egress]
        """, Reachability().deny_egress_from(*X)),

    # "should enforce egress policy allowing traffic to a server in a different namespace
    # based on PodSelector and NamespaceSelector" (here: the namespace, TCP 80).
    Case("egress-from-x-a-to-namespace-y-tcp-80", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-to-y-on-tcp-80
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          egress:
            - to:
                - namespaceSelector:
                    matchLabels: {ns: y}
              ports:
                - {protocol: TCP, port: 80}
        """, Reachability().deny_egress_from("x/a").allow_egress("x/a", Y, ports=(80,), protocols=("TCP",))),

    # "should allow egress access on one named port" (resolved on the destination pod).
    Case("egress-to-named-port-serve-81-tcp", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-to-serve-81-tcp
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          egress:
            - ports:
                - port: serve-81-tcp
        """, Reachability().deny_egress_from("x/a")
        .allow_egress("x/a", ALL_PODS, ports=(81,), protocols=("TCP",))),

    # "should allow egress access to server in CIDR block": z/b, on x/a's own node.
    Case("egress-to-ipblock-z-b", _egress_to_z_b_32,
         Reachability().deny_egress_from("x/a").allow_egress("x/a", "z/b")),

    # "should enforce except clause while egress access to server in CIDR block"
    Case("egress-to-ipblock-except-node3", _egress_to_cluster_except_node3,
         Reachability().deny_egress_from("x/a").allow_egress("x/a", pods(node=other_nodes("node3")))),

    # "should work with Ingress, Egress specified together"
    Case("ingress-and-egress-in-one-policy", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-both-ways
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Ingress, Egress]
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
          egress:
            - to:
                - namespaceSelector:
                    matchLabels: {ns: z}
        """, Reachability().deny_ingress_to("x/a").deny_egress_from("x/a")
        .allow_ingress("x/b", "x/a").allow_egress("x/a", Z)),

    # "should support denying of egress traffic on the client side (even if the server
    # explicitly allows this traffic)": y/b admits all of x, but x/a may only open to y/c.
    Case("egress-denied-even-if-server-allows", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-to-y-c-only
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          egress:
            - to:
                - namespaceSelector:
                    matchLabels: {ns: y}
                  podSelector:
                    matchLabels: {pod: c}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: y-b-from-x
          namespace: y
        spec:
          podSelector:
            matchLabels: {pod: b}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {ns: x}
        """, Reachability().deny_egress_from("x/a").allow_egress("x/a", "y/c")
        .deny_ingress_to("y/b").allow_ingress(X, "y/b")),

    # Defaulting: no policyTypes and an egress section: Ingress AND Egress, so x/a (no ingress
    # rules) admits nobody and opens only to y.
    Case("policytypes-default-with-egress-section", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-egress-to-y
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          egress:
            - to:
                - namespaceSelector:
                    matchLabels: {ns: y}
        """, Reachability().deny_ingress_to("x/a").deny_egress_from("x/a").allow_egress("x/a", Y)),

    # Defaulting: `egress: []` is no egress section: Ingress only, egress untouched.
    Case("policytypes-default-with-empty-egress", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-empty-egress
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          egress: []
        """, Reachability().deny_ingress_to("x/a")),

    # "should enforce multiple, stacked policies with overlapping podSelectors": the union, each
    # rule with its own ports (x/b gets TCP 80 to x/a only, y gets UDP 81 to all of x).
    Case("union-of-two-policies", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-from-pod-b-on-tcp-80
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
              ports:
                - {protocol: TCP, port: 80}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-from-y-on-udp-81
          namespace: x
        spec:
          podSelector: {}
          ingress:
            - from:
                - namespaceSelector:
                    matchLabels: {ns: y}
              ports:
                - {protocol: UDP, port: 81}
        """, Reachability().deny_ingress_to(*X)
        .allow_ingress("x/b", "x/a", ports=(80,), protocols=("TCP",))
        .allow_ingress(Y, X, ports=(81,), protocols=("UDP",))),

    # Two rules of one policy: peers and ports pair up inside a rule, never across rules.
    Case("two-rules-keep-their-own-ports", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-two-rules
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
              ports:
                - {protocol: TCP, port: 80}
            - from:
                - namespaceSelector:
                    matchLabels: {ns: y}
              ports:
                - {protocol: UDP, port: 81}
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress("x/b", "x/a", ports=(80,), protocols=("TCP",))
        .allow_ingress(Y, "x/a", ports=(81,), protocols=("UDP",))),

    # Empty lists match everything: `from: []` is every source, `ports: []` every port.
    Case("empty-from-and-ports-lists-match-all", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-empty-lists
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - from: []
              ports:
                - {protocol: UDP, port: 81}
            - from:
                - podSelector:
                    matchLabels: {pod: b}
              ports: []
        """, Reachability().deny_ingress_to("x/a")
        .allow_ingress(ALL_PODS, "x/a", ports=(81,), protocols=("UDP",)).allow_ingress("x/b", "x/a")),

    # A policy that selects no pod isolates nothing, whatever its types.
    Case("policy-selecting-no-pod", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: selects-pod-d
          namespace: y
        spec:
          podSelector:
            matchLabels: {pod: d}
          policyTypes: [Ingress, Egress]
        """, Reachability()),

    # policyTypes [Egress]: the ingress section is ignored, x/a's ingress stays open.
    Case("egress-only-policy-ignores-ingress-section", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-egress-to-pod-c
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
          egress:
            - to:
                - podSelector:
                    matchLabels: {pod: c}
        """, Reachability().deny_egress_from("x/a").allow_egress("x/a", "x/c")),

    # ... and, ignored, it allows nothing either once another policy isolates x/a's ingress
    # (policyTypes says which of the policy's rules apply: "If you want to write an egress-only
    # policy, you must explicitly specify policyTypes [Egress]").
    Case("ignored-ingress-section-allows-nothing", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-egress-to-pod-c
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Egress]
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
          egress:
            - to:
                - podSelector:
                    matchLabels: {pod: c}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-deny-ingress
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
        """, Reachability().deny_ingress_to("x/a").deny_egress_from("x/a").allow_egress("x/a", "x/c")),

    # policyTypes [Ingress]: the egress section is ignored, x/a still opens anything.
    Case("ingress-only-policy-ignores-egress-section", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: x-a-ingress-from-pod-b
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          policyTypes: [Ingress]
          ingress:
            - from:
                - podSelector:
                    matchLabels: {pod: b}
          egress:
            - to:
                - podSelector:
                    matchLabels: {pod: c}
        """, Reachability().deny_ingress_to("x/a").allow_ingress("x/b", "x/a")),

    # "should not allow access by TCP when a policy specifies only SCTP"
    Case("ingress-sctp-only", """\
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: allow-x-a-on-sctp-80
          namespace: x
        spec:
          podSelector:
            matchLabels: {pod: a}
          ingress:
            - ports:
                - {protocol: SCTP, port: 80}
        """, Reachability().deny_ingress_to("x/a"),
         pure_only="the lab's kernel has no SCTP; the rule must still not let TCP or UDP in"),
]

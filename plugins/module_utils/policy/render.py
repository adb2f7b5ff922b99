"""NetworkPolicy: the policy model to one node's nftables table (docs/network-policy.md).

Pure logic, no I/O: policy/model.py builds the model on the controller, render_table
writes each node's table from it.

The table is built so that its size grows with the number of policy rules, never with pods
x pods: a rule is one nft rule (two when it mixes numbered and named ports) whose operands
are named sets (selected pods, peer ranges, ports), in two chains (`pod_ingress`,
`pod_egress`) that the `forward` and `input` base chains enter for isolated local pods only.
"""

import hashlib
import re

from ansible_collections.podnet.network.plugins.module_utils.common.protocols import PROTOCOLS
from ansible_collections.podnet.network.plugins.module_utils.policy.model import DIRECTIONS, address_key

DEFAULT_TABLE = "podnet-policy"
# nft refuses a rule comment longer than this.
COMMENT_MAX = 128
# Elements per statement: nft refuses very large ones ("No buffer space available").
ELEMENTS_PER_STATEMENT = 500
INGRESS_CHAIN, EGRESS_CHAIN = "pod_ingress", "pod_egress"
PORTS_KEY = "meta l4proto . th dport"
NAMED_KEY = "ip daddr . meta l4proto . th dport"
# A namespace or name that can stand in a set name as it is (a DNS label: no '.', no '_').
SET_NAME_PART = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


# --- rendering ------------------------------------------------------------------------

def _element(text):
    """An address as nft lists it: a /32 is the bare address."""
    return text[:-3] if text.endswith("/32") else text


def _comment(policy, rule_name):
    text = "%s/%s %s" % (policy["namespace"], policy["name"], rule_name)
    return text if len(text) <= COMMENT_MAX else text[:COMMENT_MAX - 3] + "..."


class _Table:
    """Sets and rules of one node's table, in the order they are added."""

    def __init__(self):
        self.sets = {}  # name -> (typeof, interval, elements)
        self.rules = {INGRESS_CHAIN: [], EGRESS_CHAIN: []}

    def add_set(self, name, typeof, elements, interval=False):
        self.sets[name] = (typeof, interval, list(elements))
        return "@" + name


def policy_prefix(policy):
    """The prefix of a policy's sets: `p_NAMESPACE_NAME`, its own whatever other policies come
    or go, so an update of the table touches only the sets of the policies that changed ('_'
    is in neither a namespace nor a name, so no two policies share one). A name nft would read
    otherwise ('.') or one too long for a set name (nft: 255) gets a digest instead."""
    namespace, name = policy["namespace"], policy["name"]
    if SET_NAME_PART.fullmatch(namespace) and SET_NAME_PART.fullmatch(name) and len(namespace + name) <= 200:
        return "p_%s_%s" % (namespace, name)
    return "p_%s" % hashlib.sha256(("%s/%s" % (namespace, name)).encode("utf-8")).hexdigest()[:16]


def _rule_lines(table, prefix, direction, number, policy, local):
    """The nft rules of policy rule `number`: one, or two when it has numbered and named ports."""
    pods_set = "@%s_pods" % prefix
    rule, prefix = policy[direction][number], "%s_%s%d" % (prefix, direction, number)
    own, other = ("daddr", "saddr") if direction == "ingress" else ("saddr", "daddr")
    verdict = "accept" if direction == "ingress" else "return"
    head = "ip %s %s" % (own, pods_set)
    if rule["peers"] is not None:
        peers = table.add_set(prefix + "_peers", "ip " + other, (_element(p) for p in rule["peers"]), True)
        head += " ip %s %s" % (other, peers)
    tail = '%s comment "%s"' % (verdict, _comment(policy, rule["name"]))
    ports = rule["ports"]
    if ports is None:
        return ["%s %s" % (head, tail)]
    lines = []
    if ports["ranges"]:
        elements = ("%s . %s" % (PROTOCOLS[proto], first if first == last else "%d-%d" % (first, last))
                    for proto, first, last in ports["ranges"])
        lines.append("%s %s %s %s" % (head, PORTS_KEY, table.add_set(prefix + "_ports", PORTS_KEY, elements,
                                                                     True), tail))
    if ports["named_ports"]:
        # Ingress: the selected pod receives; only this node's are ever looked up here.
        named = [entry for entry in ports["named"] if direction == "egress" or entry[0] in local]
        elements = ("%s . %s . %d" % (ip, PROTOCOLS[proto], port) for ip, proto, port in named)
        lines.append("%s %s %s %s" % (head, NAMED_KEY, table.add_set(prefix + "_named", NAMED_KEY, elements),
                                      tail))
    return lines


def _build(model, node):
    table, isolated = _Table(), {"ingress": set(), "egress": set()}
    for policy in model["policies"]:
        local = [pod["ip"] for pod in policy["pods"] if pod["node"] == node]
        directions = [d for d, (_peer_field, t) in DIRECTIONS.items() if t in policy["policy_types"]]
        if not local or not directions:
            continue  # it selects no pod here: another node enforces it
        prefix = policy_prefix(policy)
        table.add_set(prefix + "_pods", "ip daddr", local)
        for direction in directions:
            isolated[direction].update(local)
            chain = INGRESS_CHAIN if direction == "ingress" else EGRESS_CHAIN
            for number in range(len(policy[direction])):
                table.rules[chain] += _rule_lines(table, prefix, direction, number, policy, set(local))
    for direction in ("ingress", "egress"):
        table.sets[direction + "_isolated"] = ("ip daddr", False,
                                               sorted(isolated[direction], key=address_key))
    return table


def _set_lines(name, typeof, interval, elements):
    lines = ["\tset %s {" % name, "\t\ttypeof %s" % typeof]
    if interval:
        lines.append("\t\tflags interval")
    if elements:
        lines.append("\t\telements = { %s }" % ", ".join(elements[:ELEMENTS_PER_STATEMENT]))
    return lines + ["\t}"]


def render_table(model, node, table=DEFAULT_TABLE):
    """The nft text of `table ip <table>` that enforces the policies for the pods on `node`.

    Only the node's own pods are isolated here: it judges their egress and the ingress to
    them, so a packet between two nodes is judged by both. Re-rendering the same model
    gives the same bytes.
    """
    built = _build(model, node)
    lines = ["table ip %s {" % table]
    for name in ("ingress_isolated", "egress_isolated"):
        lines += _set_lines(name, *built.sets[name])
    for name, (typeof, interval, elements) in built.sets.items():
        if not name.endswith("_isolated"):
            lines += _set_lines(name, typeof, interval, elements)
    established = "ct state established,related accept"
    # Egress first: a packet between two local pods leaves one (egress) and reaches the other (ingress).
    to_egress = "ip saddr @egress_isolated jump %s" % EGRESS_CHAIN
    to_ingress = "ip daddr @ingress_isolated jump %s" % INGRESS_CHAIN
    chains = [
        # Forward sees pod-to-pod traffic on the bridge (br_netfilter) and between nodes, after
        # Service DNAT (prerouting) and before masquerade (postrouting): real endpoints, real sources.
        ("forward", "type filter hook forward priority filter; policy accept;", [established, to_egress,
                                                                                 to_ingress]),
        # Input: a pod talking to its node's own addresses (node-local DNS, say) is egress too.
        ("input", "type filter hook input priority filter; policy accept;", [established, to_egress]),
        (EGRESS_CHAIN, None, built.rules[EGRESS_CHAIN] + [
            'counter drop comment "egress of an isolated pod that no policy allows"']),
        (INGRESS_CHAIN, None, built.rules[INGRESS_CHAIN] + [
            'counter drop comment "ingress to an isolated pod that no policy allows"']),
    ]
    for name, hook, rules in chains:
        lines.append("\tchain %s {" % name)
        lines += ["\t\t" + hook] if hook else []
        lines += ["\t\t" + rule for rule in rules]
        lines.append("\t}")
    lines.append("}")
    for name, (_typeof, _interval, elements) in built.sets.items():
        for start in range(ELEMENTS_PER_STATEMENT, len(elements), ELEMENTS_PER_STATEMENT):
            chunk = elements[start:start + ELEMENTS_PER_STATEMENT]
            lines.append("add element ip %s %s { %s }" % (table, name, ", ".join(chunk)))
    return "\n".join(lines) + "\n"

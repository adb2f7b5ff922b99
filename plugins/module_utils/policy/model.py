"""NetworkPolicy: from Kubernetes manifests to the policy model (docs/network-policy.md).

Pure logic, no I/O; runs on the Ansible controller:

    services.yml (+ policies.yml) + pods  --load_policies-->  policy model  --policy/render.py-->  nft text

The files are the services file (its NetworkPolicy and Namespace documents; services/model.py
reads the rest) and optionally a policies file beside it, in the same manifest format, read
by common/manifests.py. The policy model is resolved far enough that rendering needs no
YAML and no selector: per policy, the addresses of the pods it selects (with their node),
and per rule the peer address ranges and the port match, named ports already turned into
numbers.
"""

import hashlib
import ipaddress
import json
import re

from ansible_collections.podnet.network.plugins.module_utils.common import manifests
from ansible_collections.podnet.network.plugins.module_utils.common.manifests import (
    check_fields,
    choice,
    typed,
)

POLICY_TYPES = ("Ingress", "Egress")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# The API server puts this label on every namespace, so any namespace can be selected by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
SPEC_FIELDS = ("podSelector", "policyTypes", "ingress", "egress")
SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
EXPRESSION_FIELDS = ("key", "operator", "values")
PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")
IP_BLOCK_FIELDS = ("cidr", "except")
PORT_FIELDS = ("protocol", "port", "endPort")
# direction -> (the rule's peer list, Kubernetes' policyType).
DIRECTIONS = {"ingress": ("from", "Ingress"), "egress": ("to", "Egress")}

_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_NAME_MAX = 63

ALL_PORTS = (0, 65535)


class PolicySpecError(manifests.ManifestError):
    """A NetworkPolicy or Namespace podnet cannot enforce; the message says file, object and field.

    A ManifestError, which services.model calls ServiceSpecError: the filter plugin and the
    role catch that one class for both readers."""


# --- field checks ---------------------------------------------------------------------

def _label_key(where, path, key):
    """A label key as Kubernetes checks it: [DNS-1123 subdomain prefix "/"] name."""
    meaning = ("a label key: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63 "
               "characters, alphanumerics, '-', '_' or '.', starting and ending alphanumeric")
    if not isinstance(key, str) or not key:
        raise where.error(path, "%r is not %s", key, meaning)
    prefix, slash, name = key.rpartition("/")
    pattern, longest, _meaning = manifests.NAME_RULES["a DNS-1123 subdomain"]
    if slash and (not prefix or len(prefix) > longest or not pattern.match(prefix)):
        raise where.error(path, "%r is not %s (the prefix %r is not)", key, meaning, prefix)
    if len(name) > LABEL_NAME_MAX or not _LABEL_NAME.match(name):
        raise where.error(path, "%r is not %s", key, meaning)
    return key


def _label_value(where, path, value):
    if not isinstance(value, str) or len(value) > LABEL_NAME_MAX or value and not _LABEL_NAME.match(value):
        raise where.error(path, "%r is not a label value (a string of at most 63 characters, alphanumerics, "
                                "'-', '_' or '.', starting and ending alphanumeric; may be empty)", value)
    return value


def _labels(where, path, labels):
    labels = typed(where, path, labels, dict)
    for key, value in labels.items():
        _label_key(where, "%s[%r]" % (path, key), key)
        _label_value(where, "%s[%r]" % (path, key), value)
    return dict(sorted(labels.items()))


# --- LabelSelector --------------------------------------------------------------------

def _selector(where, path, value):
    """{"match_labels": {..}, "expressions": [[key, operator, [values]]]}; {} selects everything."""
    selector = typed(where, path, value, dict)
    check_fields(where, path, selector, SELECTOR_FIELDS)
    expressions = []
    for i, expression in enumerate(typed(where, path + ".matchExpressions", selector.get("matchExpressions"),
                                         list)):
        here = "%s.matchExpressions[%d]" % (path, i)
        expression = typed(where, here, expression, dict)
        check_fields(where, here, expression, EXPRESSION_FIELDS)
        key = _label_key(where, here + ".key", expression.get("key"))
        operator = expression.get("operator")
        if operator is None:
            raise where.error(here + ".operator", "is required: one of %s", "|".join(OPERATORS))
        operator = choice(where, here + ".operator", operator, OPERATORS, None)
        values = typed(where, here + ".values", expression.get("values"), list)
        if operator in ("In", "NotIn") and not values:
            raise where.error(here + ".values", "must be non-empty when operator is %s", operator)
        if operator in ("Exists", "DoesNotExist") and values:
            raise where.error(here + ".values", "must be empty when operator is %s", operator)
        values = [_label_value(where, "%s.values[%d]" % (here, j), v) for j, v in enumerate(values)]
        expressions.append([key, operator, sorted(set(values))])
    return {"match_labels": _labels(where, path + ".matchLabels", selector.get("matchLabels")),
            "expressions": expressions}


def selects(selector, labels):
    """Does a parsed LabelSelector match these labels? As in Kubernetes, NotIn matches a missing key."""
    if any(labels.get(key) != value for key, value in selector["match_labels"].items()):
        return False
    for key, operator, values in selector["expressions"]:
        present = key in labels
        if operator == "In" and not (present and labels[key] in values) \
                or operator == "NotIn" and present and labels[key] in values \
                or operator == "Exists" and not present \
                or operator == "DoesNotExist" and present:
            return False
    return True


# --- peers and ports ------------------------------------------------------------------

def _network(where, path, value):
    try:
        if isinstance(value, str) and "/" in value:
            return ipaddress.ip_network(value, strict=False)
    except ValueError:
        pass
    raise where.error(path, "%r is not a CIDR such as 10.0.0.0/8", value)


def _ip_block(where, path, value):
    block = typed(where, path, value, dict)
    check_fields(where, path, block, IP_BLOCK_FIELDS)
    if block.get("cidr") is None:
        raise where.error(path + ".cidr", "is required")
    cidr = _network(where, path + ".cidr", block["cidr"])
    excepts = []
    for i, value in enumerate(typed(where, path + ".except", block.get("except"), list)):
        here = "%s.except[%d]" % (path, i)
        net = _network(where, here, value)
        # As Kubernetes: each except must be a strict part of the cidr.
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:
            raise where.error(here, "%s must be a strict subset of cidr %s", net, cidr)
        excepts.append(str(net))
    # Text, as the rest of a read policy is: the plan hands it on as JSON (see read_policies).
    return {"cidr": str(cidr), "except": excepts}


def _peer(where, path, value):
    peer = typed(where, path, value, dict)
    check_fields(where, path, peer, PEER_FIELDS)
    given = [field for field in PEER_FIELDS if peer.get(field) is not None]
    if not given:
        raise where.error(path, "a peer needs podSelector, namespaceSelector (or both), or ipBlock")
    if "ipBlock" in given and len(given) > 1:
        raise where.error(path, "ipBlock may not be combined with %s in one peer: make them two peers",
                          " or ".join(f for f in given if f != "ipBlock"))
    if "ipBlock" in given:
        return {"ip_block": _ip_block(where, path + ".ipBlock", peer["ipBlock"])}
    return {field: None if peer.get(key) is None else _selector(where, "%s.%s" % (path, key), peer[key])
            for field, key in (("pod_selector", "podSelector"), ("namespace_selector", "namespaceSelector"))}


def _port(where, path, value):
    """(protocol, first, last, name): a range of numbers, or a name to resolve per pod."""
    port = typed(where, path, value, dict)
    check_fields(where, path, port, PORT_FIELDS)
    protocol = choice(where, path + ".protocol", port.get("protocol"), manifests.PROTOCOLS, "TCP")
    number, name, end = port.get("port"), None, port.get("endPort")
    if number is None:
        if end is not None:
            raise where.error(path + ".endPort", "requires port (the first port of the range)")
        return protocol, ALL_PORTS[0], ALL_PORTS[1], None
    if isinstance(number, str):
        if number.isdigit():
            raise where.error(path + ".port", "%r is a string: write a port number without quotes", number)
        name = manifests.check_name(where, path + ".port", number, "an IANA service name")
        if end is not None:
            raise where.error(path + ".endPort", "may only be set with a numbered port, not the named "
                                                 "port %r", name)
        return protocol, None, None, name
    number = manifests.integer(where, path + ".port", number, 1, 65535)
    if end is None:
        return protocol, number, number, None
    end = manifests.integer(where, path + ".endPort", end, 1, 65535)
    if end < number:
        raise where.error(path + ".endPort", "%d must not be less than port %d", end, number)
    return protocol, number, end, None


def _rule(where, path, value, peer_field):
    rule = typed(where, path, value, dict)
    check_fields(where, path, rule, (peer_field, "ports"))
    peer_path = "%s.%s" % (path, peer_field)
    peers = [_peer(where, "%s[%d]" % (peer_path, i), peer)
             for i, peer in enumerate(typed(where, peer_path, rule.get(peer_field), list))]
    ports = [_port(where, "%s.ports[%d]" % (path, i), port)
             for i, port in enumerate(typed(where, path + ".ports", rule.get("ports"), list))]
    return {"peers": peers, "ports": ports}


# --- objects --------------------------------------------------------------------------

def _policy_types(where, spec):
    """Kubernetes' defaulting: unset means Ingress, plus Egress when the policy has egress rules."""
    types = typed(where, "spec.policyTypes", spec.get("policyTypes"), list)
    if len(types) > 2:
        raise where.error("spec.policyTypes", "may hold at most two entries (Ingress, Egress), got %r", types)
    for i, value in enumerate(types):
        if value is None:
            raise where.error("spec.policyTypes[%d]" % i, "must be one of Ingress|Egress, got None")
        choice(where, "spec.policyTypes[%d]" % i, value, POLICY_TYPES, None)
    if not types:
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return [t for t in POLICY_TYPES if t in types]


def _parse_policy(where, obj):
    namespace, name, _labels = manifests.metadata(where, obj, "a DNS-1123 subdomain")
    spec = typed(where, "spec", obj.get("spec"), dict)
    check_fields(where, "spec", spec, SPEC_FIELDS)
    if spec.get("podSelector") is None:
        raise where.error("spec.podSelector", "is required ({} selects every pod in namespace %s)", namespace)
    policy = {"where": where.state(), "namespace": namespace, "name": name,
              "pod_selector": _selector(where, "spec.podSelector", spec["podSelector"])}
    # Both sections are checked; one whose type is not in policyTypes is then ignored, as in Kubernetes.
    for direction, (peer_field, _type) in DIRECTIONS.items():
        policy[direction] = [_rule(where, "spec.%s[%d]" % (direction, i), rule, peer_field)
                             for i, rule in enumerate(typed(where, "spec." + direction, spec.get(direction),
                                                            list))]
    policy["policy_types"] = _policy_types(where, spec)
    return policy


def _parse_namespace(where, obj):
    meta = typed(where, "metadata", obj.get("metadata"), dict)
    name = manifests.object_name(where, obj, meta, "a DNS-1123 label")
    where.what = "Namespace %s" % name
    manifests.check_object_fields(where, obj)
    labels = _labels(where, "metadata.labels", meta.get("labels"))
    return name, labels


def _read(sources):
    """(policies in file order, {namespace: labels}) from every source; duplicates are errors.

    A source is (text, filename) or (text, filename, only): `only` names a file that holds nothing
    but policies ("the policies file"), where a Service is refused rather than skipped."""
    policies, namespaces, seen = [], {}, {}
    for source in sources:
        text, filename, only = (tuple(source) + (None,))[:3]
        for where, kind, obj in manifests.objects(text, filename, "policy", PolicySpecError, only=only):
            if kind == "NetworkPolicy":
                policy = _parse_policy(where, obj)
                key = (kind, policy["namespace"], policy["name"])
            else:
                name, labels = _parse_namespace(where, obj)
                key = (kind, name)
            if key in seen:
                raise where.error("metadata.name", "duplicate %s: the first is %s", where.what, seen[key])
            seen[key] = "%s: %s" % (filename, where.doc)
            if kind == "NetworkPolicy":
                policies.append(policy)
            else:
                namespaces[name] = labels
    return policies, namespaces


# --- resolution -----------------------------------------------------------------------

def _pods(pods):
    """podnet's pods, normalised: namespace defaulted, labels and ports never None, the address parsed."""
    result = []
    for pod in pods or []:
        namespace, ip = pod.get("namespace") or manifests.DEFAULT_NAMESPACE, pod.get("ip") or None
        try:
            address = ipaddress.IPv4Address(ip) if ip else None
        except ValueError:
            raise PolicySpecError("pod %s/%s: ip %r is not an IPv4 address"
                                  % (namespace, pod.get("name"), ip)) from None
        result.append({"namespace": namespace, "name": pod["name"], "labels": dict(pod.get("labels") or {}),
                       "ports": list(pod.get("ports") or []), "ip": ip, "node": pod.get("node"),
                       "address": address})
    return result


def _pod_name(pod):
    return "%s/%s" % (pod["namespace"], pod["name"])


def address_key(address):
    return int(ipaddress.ip_address(address))


def _named_port(pod, name, protocol):
    return next((p["containerPort"] for p in pod["ports"]
                 if p.get("name") == name and (p.get("protocol") or "TCP") == protocol), None)


def _peer_pods(peer, policy, pods, namespaces):
    """The pods a selector peer chooses: podSelector alone stays in the policy's namespace."""
    chosen = []
    for pod in pods:
        if peer["namespace_selector"] is None:
            if pod["namespace"] != policy["namespace"]:
                continue
        elif not selects(peer["namespace_selector"], namespaces[pod["namespace"]]):
            continue
        if peer["pod_selector"] is None or selects(peer["pod_selector"], pod["labels"]):
            chosen.append(pod)
    return chosen


def _block_ranges(block):
    """An ipBlock as [(first, last)] address numbers: the cidr minus every except. IPv6 never matches here."""
    cidr = ipaddress.ip_network(block["cidr"])
    if cidr.version != 4:
        return []
    ranges = [(int(cidr.network_address), int(cidr.broadcast_address))]
    for excluded in map(ipaddress.ip_network, block["except"]):
        low, high = int(excluded.network_address), int(excluded.broadcast_address)
        # What is left of each range below and above the excluded one.
        parts = [((first, min(last, low - 1)), (max(first, high + 1), last)) for first, last in ranges]
        ranges = [part for pair in parts for part in pair if part[0] <= part[1]]
    return ranges


def _cidrs(ranges):
    """Address ranges merged and written as CIDRs: an nft interval set refuses overlapping elements."""
    merged = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    cidrs = []
    for first, last in merged:
        if first == last:  # most of them: a pod
            cidrs.append("%s/32" % ipaddress.IPv4Address(first))
        else:
            cidrs += [str(net) for net in ipaddress.summarize_address_range(ipaddress.IPv4Address(first),
                                                                            ipaddress.IPv4Address(last))]
    return cidrs


def _resolve_peers(rule, policy, pods, namespaces):
    """(CIDRs or None for "every address", the pods the selectors chose, the ipBlocks as written)."""
    if not rule["peers"]:
        return None, [], []
    ranges, chosen, blocks = [], {}, []
    for peer in rule["peers"]:
        if "ip_block" in peer:
            block = peer["ip_block"]
            ranges += _block_ranges(block)
            blocks.append(" except ".join([str(block["cidr"])] + [str(net) for net in block["except"]]))
            continue
        for pod in _peer_pods(peer, policy, pods, namespaces):
            chosen[_pod_name(pod)] = pod
            if pod["address"]:
                ranges.append((int(pod["address"]), int(pod["address"])))
    return _cidrs(ranges), sorted(chosen), blocks


def _merge_ranges(ranges):
    """[[protocol, first, last]] with overlapping or adjacent ranges of a protocol merged."""
    merged = []
    for protocol, first, last in sorted(ranges):
        if merged and merged[-1][0] == protocol and first <= merged[-1][2] + 1:
            merged[-1][2] = max(merged[-1][2], last)
        else:
            merged.append([protocol, first, last])
    return merged


def _resolve_ports(rule, direction, selected, pods, peers):
    """None (every port, every protocol) or {"ranges", "named_ports", "named"}.

    A named port is looked up on the pod receiving the traffic: for ingress the selected pod,
    for egress the destination, which must be a known pod inside the rule's peers."""
    if not rule["ports"]:
        return None
    ranges = [[protocol, first, last] for protocol, first, last, name in rule["ports"] if name is None]
    wanted = sorted({(protocol, name) for protocol, _first, _last, name in rule["ports"] if name is not None})
    if direction == "ingress" or not wanted:
        targets = selected if wanted else []
    else:
        networks = None if peers is None else [ipaddress.IPv4Network(p) for p in peers]
        targets = [pod for pod in pods if pod["address"] and (
            networks is None or any(pod["address"] in net for net in networks))]
    named = set()
    for protocol, name in wanted:
        for pod in targets:
            number = _named_port(pod, name, protocol)
            if number is not None and pod["ip"]:
                named.add((pod["ip"], protocol, number))
    return {"ranges": _merge_ranges(ranges),
            "named_ports": ["%s/%s" % (protocol, name) for protocol, name in wanted],
            "named": [list(entry) for entry in sorted(named, key=lambda e: (address_key(e[0]), e[1], e[2]))]}


def _policy_model(policy, pods, namespaces):
    selected = [pod for pod in pods if pod["namespace"] == policy["namespace"]
                and selects(policy["pod_selector"], pod["labels"])]
    running = sorted((pod for pod in selected if pod["ip"]), key=lambda pod: address_key(pod["ip"]))
    model = {"namespace": policy["namespace"], "name": policy["name"],
             "source": "%s: %s" % tuple(policy["where"][:2]),
             "policy_types": policy["policy_types"],
             "pods": [{"pod": _pod_name(pod), "ip": pod["ip"], "node": pod["node"]} for pod in running],
             "pending_pods": sorted(_pod_name(pod) for pod in selected if not pod["ip"])}
    for direction, (_peer_field, policy_type) in DIRECTIONS.items():
        rules = []
        for index, rule in enumerate(policy[direction] if policy_type in policy["policy_types"] else []):
            peers, peer_pods, peer_blocks = _resolve_peers(rule, policy, pods, namespaces)
            rules.append({"name": "%s[%d]" % (direction, index), "peers": peers, "peer_pods": peer_pods,
                          "peer_blocks": peer_blocks,
                          "ports": _resolve_ports(rule, direction, selected, pods, peers)})
        model[direction] = rules
    return model


def _cluster(cluster_cidr):
    try:
        return ipaddress.IPv4Network(cluster_cidr, strict=False)
    except (TypeError, ValueError):
        raise PolicySpecError("cluster_cidr: %r is not an IPv4 network such as 10.244.0.0/16"
                              % (cluster_cidr,)) from None


def read_policies(sources):
    """The NetworkPolicies and Namespaces of `sources`, parsed and checked, before any pod is
    known: {"policies": [...], "namespaces": {name: labels}}. JSON-safe (addresses as text,
    positions as Where.state()), so the plan checks them once and hands them on as text
    (the filter policies_checked) for the policy play to resolve (resolve_policies).

    `sources` is [(text, filename)] or [(text, filename, only)]; see _read."""
    policies, declared = _read(sources)
    return {"policies": policies, "namespaces": declared}


def resolve_policies(read, pods, cluster_cidr="10.244.0.0/16"):
    """The policy model of `read` (read_policies' result) against `pods`: podnet's pods
    ({namespace, name, labels, ports, ip, node}); one with ip None is selected (describe()
    names it) but has no address to enforce yet. Raises PolicySpecError."""
    fields, resolve = policy_resolver(read, pods, cluster_cidr)
    return dict(fields, policies=[resolve(policy) for policy in read["policies"]])


def policy_resolver(read, pods, cluster_cidr="10.244.0.0/16"):
    """(the policy model's fields but its policies, a function from one policy of `read` to
    its model): resolve_policies a policy at a time, for a caller that keeps each one's
    model (by policy_digest, under the same resolution_context) and resolves only the
    policies that changed."""
    cluster = _cluster(cluster_cidr)
    pods = _pods(pods)
    declared = read["namespaces"]
    namespaces = {}
    for name in sorted(set(declared) | {pod["namespace"] for pod in pods}):
        namespaces[name] = dict(sorted(dict(declared.get(name, {}), **{NAMESPACE_NAME_LABEL: name}).items()))
    return ({"cluster_cidr": str(cluster), "namespaces": namespaces},
            lambda policy: _policy_model(policy, pods, namespaces))


def policy_digest(policy):
    """A read policy's digest (its position included: the model names it)."""
    text = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolution_context(read, pods, cluster_cidr):
    """The digest of what resolving any one policy of `read` depends on besides the policy:
    the pods, the declared Namespaces and the cluster CIDR."""
    return hashlib.sha256(json.dumps([read["namespaces"], pods or [], str(cluster_cidr)], sort_keys=True,
                                     separators=(",", ":")).encode("utf-8")).hexdigest()


def load_policies(sources, pods, cluster_cidr="10.244.0.0/16"):
    """Parse, validate and resolve the NetworkPolicies of `sources`; return the policy model.

    `sources` is [(text, filename)]: the services file and optionally a policies file. `pods`
    as resolve_policies takes them. Raises PolicySpecError.
    """
    _cluster(cluster_cidr)  # a bad cluster CIDR is named before the files are read
    return resolve_policies(read_policies(sources), pods, cluster_cidr)


# --- description ----------------------------------------------------------------------

def _describe_ports(ports):
    if ports is None:
        return "any port"
    parts = ["%s/%s" % (proto, first if first == last else "%d-%d" % (first, last))
             for proto, first, last in ports["ranges"]]
    return ", ".join(parts + ports["named_ports"])


def _describe_peers(rule, word):
    if rule["peers"] is None:
        return "%s anywhere" % word
    if not rule["peer_pods"] and not rule["peer_blocks"]:
        return "%s nothing (no pod matches)" % word
    return "%s %s" % (word, ", ".join(rule["peer_pods"] + rule["peer_blocks"]))


def describe(model):
    """One line per policy, for diffs and demos: what it isolates and what it lets through."""
    lines = []
    for policy in model["policies"]:
        pods = [pod["pod"] for pod in policy["pods"]] + ["%s (no IP yet)" % p for p in policy["pending_pods"]]
        parts = []
        for direction, (_peer_field, policy_type) in DIRECTIONS.items():
            if policy_type not in policy["policy_types"]:
                continue
            word = "from" if direction == "ingress" else "to"
            rules = ["%s %s on %s" % (rule["name"], _describe_peers(rule, word),
                                      _describe_ports(rule["ports"])) for rule in policy[direction]]
            parts.append("isolates %s of %s; %s" % (direction, ", ".join(pods) or "no pod",
                                                    "; ".join(rules) or "allows none"))
        lines.append("%s/%s: %s" % (policy["namespace"], policy["name"], "; ".join(parts)))
    return lines

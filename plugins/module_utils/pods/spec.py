"""Test pods: from the inventory's declaration to concrete pods on nodes.

Pure logic, no I/O. The inventory declares pods the way a Deployment does
(a name, labels, ports and optionally replicas); Services later select them
by label. Here they become concrete pods, each pinned to one node:

    {"name": "web", "replicas": 3, ...}  ->  web-0 on nodes[0], web-1 on nodes[1], ...
"""

import difflib
import hashlib
import json
import re

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MAX = 63
PROTOCOLS = ("TCP", "UDP")
DEFAULT_NAMESPACE = "default"
# What a declared test pod may say. A pod spec is not a Kubernetes Pod: `image:` has nothing to
# run, and a misspelt `lables:` would leave the pod unselected; both are refused, not trimmed.
POD_FIELDS = ("name", "namespace", "labels", "ports", "replicas", "node")
PORT_FIELDS = ("name", "containerPort", "protocol")


class PodSpecError(ValueError):
    """A pod declaration the inventory should not contain."""


def _where(index, pod):
    name = pod.get("name") if isinstance(pod, dict) else None
    return "pods[%d]%s" % (index, " (%s)" % name if name else "")


def _check_dns_label(where, field, value):
    if not isinstance(value, str) or not value:
        raise PodSpecError("%s: %s is required and must be a non-empty string" % (where, field))
    if len(value) > DNS1123_LABEL_MAX or not DNS1123_LABEL.match(value):
        raise PodSpecError(
            "%s: %s %r is not a DNS-1123 label (lower-case alphanumerics and '-', "
            "starting and ending alphanumeric, at most %d characters)"
            % (where, field, value, DNS1123_LABEL_MAX))


def _check_fields(where, mapping, allowed):
    for field in mapping:
        if field not in allowed:
            lower = {name.lower(): name for name in allowed}
            close = difflib.get_close_matches(str(field).lower(), list(lower), 1, 0.6)
            hint = "did you mean %s?" % lower[close[0]] if close else "a test pod has %s" % ", ".join(allowed)
            raise PodSpecError("%s: %s: unknown field (%s)" % (where, field, hint))


def _check_labels(where, labels):
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()):
        raise PodSpecError("%s: labels must be a map of strings to strings, got %r" % (where, labels))
    return dict(sorted(labels.items()))


def _check_ports(where, ports):
    if ports is None:
        return []
    if not isinstance(ports, list):
        raise PodSpecError("%s: ports must be a list, got %r" % (where, ports))
    result = []
    names = set()
    seen = set()
    for i, port in enumerate(ports):
        here = "%s: ports[%d]" % (where, i)
        if not isinstance(port, dict):
            raise PodSpecError("%s must be a map with containerPort, got %r" % (here, port))
        _check_fields(here, port, PORT_FIELDS)
        number = port.get("containerPort")
        # bool is an int in Python; `containerPort: true` is a typo, not port 1.
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise PodSpecError("%s: containerPort must be an integer 1-65535, got %r"
                               % (here, port.get("containerPort")))
        protocol = port.get("protocol", "TCP")
        if not isinstance(protocol, str) or protocol.upper() not in PROTOCOLS:
            raise PodSpecError("%s: protocol must be one of %s, got %r"
                               % (here, "|".join(PROTOCOLS), protocol))
        protocol = protocol.upper()
        entry = {"containerPort": number, "protocol": protocol}
        name = port.get("name")
        if name is not None:
            _check_dns_label(here, "name", name)
            if name in names:
                raise PodSpecError("%s: duplicate port name %r" % (here, name))
            names.add(name)
            entry["name"] = name
        if (number, protocol) in seen:
            raise PodSpecError("%s: duplicate port %d/%s" % (here, number, protocol))
        seen.add((number, protocol))
        result.append(entry)
    return result


def _check_common(index, pod):
    """Validate the fields a declared pod and a concrete pod share; return them normalised."""
    where = _where(index, pod)
    if not isinstance(pod, dict):
        raise PodSpecError("%s: a pod must be a map, got %r" % (where, pod))
    _check_dns_label(where, "name", pod.get("name"))
    namespace = pod.get("namespace", DEFAULT_NAMESPACE)
    _check_dns_label(where, "namespace", namespace)
    return {
        "name": pod["name"],
        "namespace": namespace,
        "labels": _check_labels(where, pod.get("labels")),
        "ports": _check_ports(where, pod.get("ports")),
    }


def _check_unique(concrete):
    """Names must be unique per namespace, and `<namespace>-<name>` (the netns and
    container ID suffix) unique per cluster: ns `a-b`/pod `c` and ns `a`/pod `b-c` collide."""
    by_key = {}
    by_flat = {}
    for index, pod in concrete:
        key = (pod["namespace"], pod["name"])
        if key in by_key:
            raise PodSpecError("%s: duplicate pod name %r in namespace %r (also from pods[%d])"
                               % (_where(index, pod), pod["name"], pod["namespace"], by_key[key]))
        by_key[key] = index
        flat = pod_id(pod)
        if flat in by_flat:
            other = by_flat[flat]
            raise PodSpecError(
                "%s: pod %s/%s and pod %s/%s would share the netns name suffix %r"
                % (_where(index, pod), pod["namespace"], pod["name"],
                   other["namespace"], other["name"], flat))
        by_flat[flat] = pod


def expand_pods(pods, nodes):
    """Turn the inventory's pod declarations into concrete pods, one per replica.

    `nodes` is the sorted list of node names. Replica i of a pod with `replicas`
    lands on nodes[i % len(nodes)] (or on `node` when given); a pod without
    replicas is a single pod and must name its `node`.
    Returns [{name, namespace, node, labels, ports}] in declaration order.
    """
    if pods is None:
        return []
    if not isinstance(pods, list):
        raise PodSpecError("pods must be a list, got %r" % (pods,))
    nodes = list(nodes or [])
    concrete = []
    for index, pod in enumerate(pods):
        if isinstance(pod, dict):
            _check_fields(_where(index, pod), pod, POD_FIELDS)
        base = _check_common(index, pod)
        where = _where(index, pod)
        node = pod.get("node")
        if node is not None and node not in nodes:
            raise PodSpecError("%s: node %r is not one of the cluster's nodes (%s)"
                               % (where, node, ", ".join(nodes) or "none"))
        replicas = pod.get("replicas")
        if replicas is None:
            if node is None:
                raise PodSpecError("%s: node is required for a pod without replicas" % where)
            concrete.append((index, dict(base, node=node)))
            continue
        if isinstance(replicas, str) and replicas.isdigit():
            replicas = int(replicas)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise PodSpecError("%s: replicas must be a non-negative integer, got %r"
                               % (where, pod.get("replicas")))
        if replicas and node is None and not nodes:
            raise PodSpecError("%s: there are no nodes to place replicas on" % where)
        for i in range(replicas):
            name = "%s-%d" % (base["name"], i)
            _check_dns_label(where, "replica name", name)
            concrete.append((index, dict(base, name=name, node=node or nodes[i % len(nodes)],
                                         labels=dict(base["labels"]),
                                         ports=[dict(p) for p in base["ports"]])))
    _check_unique(concrete)
    return [pod for _index, pod in concrete]


def check_concrete_pods(pods):
    """Validate pods as expand_pods returns them (the podnet_pods module's input);
    return them normalised. `node` is kept when present but not required."""
    if pods is None:
        return []
    if not isinstance(pods, list):
        raise PodSpecError("pods must be a list, got %r" % (pods,))
    concrete = []
    for index, pod in enumerate(pods):
        base = _check_common(index, pod)
        if "replicas" in pod:
            raise PodSpecError("%s: replicas is not allowed here; pass pods through expand_pods first"
                               % _where(index, pod))
        if pod.get("node") is not None:
            base["node"] = pod["node"]
        concrete.append((index, base))
    _check_unique(concrete)
    return [pod for _index, pod in concrete]


def pod_key(pod):
    return "%s/%s" % (pod["namespace"], pod["name"])


def pod_id(pod):
    return "%s-%s" % (pod["namespace"], pod["name"])


def container_id(pod):
    # The prefix marks podnet's own leases (cni_exec.PODNET_CONTAINER_PREFIX): only those
    # are ever released, never another runtime's.
    return "podnet-" + pod_id(pod)


def netns_name(pod, prefix="podnet-"):
    return prefix + pod_id(pod)


def spec_hash(pod, network=""):
    """Digest of what, when it changes, means the pod must be re-created.

    Labels and port names are left out on purpose: as in Kubernetes, they
    change which Services select the pod and how, not the running pod. So is
    the protocol, since the echo server answers on TCP and UDP for every port.
    `network` is a digest of the CNI config, so a new podCIDR re-addresses the pods.
    """
    doc = {
        "name": pod["name"],
        "namespace": pod.get("namespace", DEFAULT_NAMESPACE),
        "ports": sorted({int(p["containerPort"]) for p in pod.get("ports") or []}),
        "network": network or "",
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def describe(pod, ip=None, no_ip="<none>"):
    """One line per pod for diff mode: `ns/name ip app=web,tier=front`."""
    labels = ",".join("%s=%s" % kv for kv in sorted((pod.get("labels") or {}).items()))
    return "%s %s %s" % (pod_key(pod), ip or no_ip, labels or "-")

"""The pod plan: what this node's test pods need, decided from what was read, without I/O.

The pods module reads the node (recorded states, each pod's health, its live
resolv.conf), asks `plan_pods` what to do and carries it out, so the decision is
tested as a table (tests/unit/test_pod_plan.py) and the module only executes it.
"""

from .resolv import render_resolv_conf
from .spec import container_id, netns_name, pod_key, spec_hash


def desired_spec(pod, network_digest, netns_prefix, dns=None):
    """The full spec of one declared pod: its netns, container ID, spec hash and, when
    podnet writes resolv.conf, the text the kubelet would write."""
    spec = dict(pod, netns=netns_name(pod, netns_prefix), container_id=container_id(pod),
                spec_hash=spec_hash(pod, network_digest))
    if dns:
        # Not part of spec_hash: a new resolv.conf is rewritten, the pod is not re-created.
        spec["resolv_conf"] = render_resolv_conf(dns[0], pod["namespace"], dns[1])
        spec["netns_etc_dir"] = dns[2]
    return spec


def plan_pods(desired, states, health, network_digest, netns_prefix, dns=None, live_resolv=None):
    """Decide per declared pod: ok, update (labels, port names or resolv.conf only) or
    create; and which recorded pods go.

    desired: the concrete pods (check_concrete_pods output), in order.
    states: the recorded pods, keyed namespace/name.
    health: {key: (healthy, reason)} of the recorded pods, as pod_health reads the node.
    network_digest: conflist_digest of the CNI conflist, None when it is not readable yet.
    dns: (dns_ip, cluster_domain, netns_etc_dir) when podnet writes resolv.conf.
    live_resolv: {key: text or None} of the recorded pods' resolv.conf on the node.

    Returns (actions, removals): actions are (action, key, spec, state or None, reason)
    in declaration order; removals are (key, state) of recorded pods no longer declared.
    """
    live_resolv = live_resolv or {}
    actions = []
    for pod in desired:
        key = pod_key(pod)
        spec = desired_spec(pod, network_digest, netns_prefix, dns)
        state = states.get(key)
        if state is None:
            actions.append(("create", key, spec, None, "not recorded"))
            continue
        if network_digest is None:
            reason = "CNI conflist not readable yet"
        elif state.get("spec_hash") != spec["spec_hash"]:
            reason = "spec or network config changed"
        elif state.get("netns") != spec["netns"] or state.get("container_id") != spec["container_id"]:
            reason = "netns name changed"
        else:
            healthy, reason = health.get(key, (False, "health unknown"))
            if healthy:
                same = state.get("labels") == spec["labels"] and state.get("ports") == spec["ports"]
                if dns and (state.get("resolv_conf") != spec["resolv_conf"]
                            or live_resolv.get(key) != spec["resolv_conf"]):
                    same = False
                actions.append(("ok" if same else "update", key, spec, state, "running"))
                continue
        actions.append(("create", key, spec, state, reason))
    wanted = {pod_key(p) for p in desired}
    removals = [(key, state) for key, state in states.items() if key not in wanted]
    return actions, removals

#!/usr/bin/python
"""Ansible module: run this node's podnet test pods."""

DOCUMENTATION = r"""
---
module: pods
short_description: Reconcile the test pods of one node (netns + CNI + echo server)
description:
  - Each test pod is a network namespace wired by the node's CNI conflist (the real
    plugins, called by hand in chain order as a container runtime would) with a
    podnet-echo server inside answering on TCP and UDP on every declared port.
  - A pod whose recorded spec, netns and server are all intact is left alone. Any
    other declared pod is (re)created, asking host-local for its previous IP.
    Recorded pods no longer declared are torn down (server stopped, CNI DEL, netns
    deleted, state removed).
  - Label or port-name changes only rewrite the pod's state (reported as updated);
    they do not restart the pod.
  - Must run in the node's own mount namespace. Under C(ip netns exec) the new pod
    netns mounts would vanish with that command's private mount namespace.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of what it decides from (the pods' records, their netns and servers, the
    conflist, their resolv.conf) and the pods it returns.
options:
  pods:
    description:
      - Concrete pods, as podnet_pods.expand_pods returns them (name, namespace,
        labels, ports; node optional). Give only this node's, or all of them plus I(node).
    type: list
    elements: dict
    required: true
  node:
    description: When set, only pods whose C(node) equals it are kept from I(pods).
    type: str
  conflist:
    description: The node's CNI conflist.
    type: path
    default: /etc/cni/net.d/10-podnet.conflist
  cni_bin_dir:
    description: Where the CNI plugins live (CNI_PATH); Debian puts them in /usr/lib/cni.
    type: path
    default: /usr/lib/cni
  state_dir:
    description: One JSON state file (and server log) per pod.
    type: path
    default: /var/lib/podnet/pods
  echo_server:
    description: The podnet-echo script run in every pod.
    type: path
    default: /usr/local/lib/podnet/podnet-echo.py
  netns_prefix:
    description: Pod netns names are C(<prefix><namespace>-<name>).
    type: str
    default: podnet-
  dns_ip:
    description:
      - The cluster DNS address. When set, every pod gets a resolv.conf as the kubelet writes
        one (nameserver, search C(<namespace>.svc.<domain> svc.<domain> <domain>), ndots:5),
        checked on every run and rewritten in place when it differs (the pod keeps running).
      - Unset, pods' resolv.conf files are left as they are.
    type: str
  cluster_domain:
    description: The cluster DNS domain of the search path.
    type: str
    default: cluster.local
  netns_etc_dir:
    description: Where C(ip netns exec) finds per-netns files (C(<dir>/<netns>/resolv.conf)).
    type: path
    default: /etc/netns
attributes:
  check_mode:
    support: full
    description: Reports the pods it would create, replace and remove, and changes nothing.
  diff_mode:
    support: full
    description: Shows the pods before and after, one line each.
extends_documentation_fragment:
  - podnet.network.glance
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Run this node's test pods
  podnet.network.pods:
    pods: "{{ podnet_concrete_pods }}"  # expand_pods() output for the whole cluster
    node: "{{ inventory_hostname }}"
  register: podnet_pods_result

- name: Use another CNI config and state directory
  podnet.network.pods:
    pods:
      - {name: web-0, namespace: default, labels: {app: web}, ports: [{containerPort: 8080}]}
    conflist: /tmp/podnet/10-podnet.conflist
    state_dir: /tmp/podnet/pods
"""

RETURN = r"""
created:
  description: Pods (namespace/name) created or re-created.
  returned: always
  type: list
  elements: str
  sample: [default/web-0]
updated:
  description: Pods whose labels, port names or resolv.conf were rewritten in place.
  returned: always
  type: list
  elements: str
removed:
  description: Recorded pods torn down because they are no longer declared.
  returned: always
  type: list
  elements: str
pods:
  description: This node's pods after the run, keyed namespace/name. ip is null for a
    pod only planned in check mode.
  returned: always
  type: dict
  sample:
    default/web-0:
      name: web-0
      namespace: default
      labels: {app: web}
      ports: [{containerPort: 8080, protocol: TCP, name: http}]
      ip: 10.244.1.2
      netns: podnet-default-web-0
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import node_lock
from ansible_collections.podnet.network.plugins.module_utils.pods.cni_exec import (
    conflist_digest,
    load_conflist,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.errors import PodError
from ansible_collections.podnet.network.plugins.module_utils.pods.lifecycle import (
    pod_health,
    recreate_pod,
    teardown_pod,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.plan import plan_pods
from ansible_collections.podnet.network.plugins.module_utils.pods.resolv import (
    read_resolv_conf,
    write_resolv_conf,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import (
    PodSpecError,
    check_concrete_pods,
    describe,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.state import read_states, write_state


def summary(spec, ip):
    out = {k: spec[k] for k in ("name", "namespace", "labels", "ports", "netns")}
    out["ip"] = ip
    if spec.get("node") is not None:
        out["node"] = spec["node"]
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pods=dict(type="list", elements="dict", required=True),
            node=dict(type="str"),
            conflist=dict(type="path", default="/etc/cni/net.d/10-podnet.conflist"),
            cni_bin_dir=dict(type="path", default="/usr/lib/cni"),
            state_dir=dict(type="path", default="/var/lib/podnet/pods"),
            echo_server=dict(type="path", default="/usr/local/lib/podnet/podnet-echo.py"),
            netns_prefix=dict(type="str", default="podnet-"),
            dns_ip=dict(type="str"),
            cluster_domain=dict(type="str", default="cluster.local"),
            netns_etc_dir=dict(type="path", default="/etc/netns"),
            glance_inputs=dict(type="str"),
            glance_file=dict(type="path", default=glance.INDEX),
        ),
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.pods")
    p = module.params
    # `ip` lives in /usr/sbin or /sbin, which a non-login PATH may lack.
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])

    try:
        pods = p["pods"]
        if p["node"] is not None:
            pods = [pod for pod in pods if isinstance(pod, dict) and pod.get("node") == p["node"]]
        desired = check_concrete_pods(pods)
    except PodSpecError as e:
        module.fail_json(msg="podnet_pods: invalid pods: %s" % e)

    conflist = None
    network_digest = None
    if os.path.exists(p["conflist"]) or (desired and not module.check_mode):
        try:
            conflist = load_conflist(p["conflist"])
        except PodError as e:
            module.fail_json(msg=str(e))
        network_digest = conflist_digest(conflist)
    elif desired:
        module.warn("CNI conflist %s does not exist yet; every pod is planned for (re)creation"
                    % p["conflist"])

    try:
        states = read_states(p["state_dir"])
    except PodError as e:
        module.fail_json(msg=str(e))
    dns = (p["dns_ip"], p["cluster_domain"].rstrip("."), p["netns_etc_dir"]) if p["dns_ip"] else None
    # Read the node once; the plan decides from what was read.
    health = {key: pod_health(state) if state.get("netns") else (False, "no netns recorded")
              for key, state in states.items()}
    live_resolv = ({key: read_resolv_conf(state["netns"], dns[2]) for key, state in states.items()
                    if state.get("netns")} if dns else {})
    actions, removals = plan_pods(desired, states, health, network_digest, p["netns_prefix"], dns,
                                  live_resolv)

    created, updated, removed = [], [], []
    results = {}
    try:
        if not module.check_mode:
            needs_server = any(a[0] == "create" and a[2]["ports"] for a in actions)
            if needs_server and not os.path.isfile(p["echo_server"]):
                module.fail_json(msg="echo server %s does not exist on this node" % p["echo_server"])
            # Removals first: their addresses go back to host-local before new pods ask.
            for key, state in removals:
                teardown_pod(state, p["cni_bin_dir"], p["state_dir"])
                removed.append(key)
        else:
            removed = [key for key, _state in removals]
        for action, key, spec, state, _reason in actions:
            ip = state.get("ip") if state else None
            if action == "update":
                if not module.check_mode:
                    new_state = dict(state, labels=spec["labels"], ports=spec["ports"])
                    if dns:
                        new_state.update(resolv_conf=spec["resolv_conf"], netns_etc_dir=dns[2])
                        write_resolv_conf(spec["netns"], spec["resolv_conf"], dns[2])
                    write_state(p["state_dir"], new_state)
                updated.append(key)
            elif action == "create":
                if not module.check_mode:
                    # Always through a teardown: CNI DEL is idempotent, and a lease or netns
                    # from a run that died before writing state would make ADD fail.
                    new = recreate_pod(spec, conflist, p["state_dir"], state, p["cni_bin_dir"],
                                       p["echo_server"])
                    ip = new["ip"]
                created.append(key)
            results[key] = summary(spec, ip)
    except (PodError, OSError) as e:
        module.fail_json(msg="podnet_pods: %s" % e, created=created, updated=updated, removed=removed,
                         changed=bool(created or updated or removed))

    if not module.check_mode:
        glance.settle(module, "pods", {"state_dir": p["state_dir"], "conflist": p["conflist"],
                                       "netns_etc_dir": dns[2] if dns else None},
                      p["glance_inputs"], p["glance_file"], replay={"pods": results})
    result = dict(changed=bool(created or updated or removed), created=created, updated=updated,
                  removed=removed, pods=results)
    if module._diff:
        before = sorted(describe(s, s.get("ip")) for s in states.values())
        after = sorted(describe(r, r["ip"], "<new>") for r in results.values())
        result["diff"] = dict(before="\n".join(before) + "\n" if before else "",
                              after="\n".join(after) + "\n" if after else "",
                              before_header="%s (pods)" % p["state_dir"],
                              after_header="%s (pods)" % p["state_dir"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()

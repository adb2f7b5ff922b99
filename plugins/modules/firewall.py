#!/usr/bin/python
"""Ansible module: let cluster traffic pass the node's own firewall, and take it back."""

DOCUMENTATION = r"""
---
module: firewall
short_description: Let cluster traffic pass a node's own firewall (Docker, ufw, nftables)
description:
  - Finds every base chain on the forward or input hook, in any IPv4 table (C(ip), C(inet)) not
    podnet's own, whose policy is drop (Docker's FORWARD, ufw's INPUT and FORWARD, a hardened
    C(inet filter)), and makes cluster traffic pass it the way kube-proxy and flannel do.
  - For an iptables filter table, a podnet-owned chain (C(PODNET-FORWARD), C(PODNET-INPUT))
    jumped from C(DOCKER-USER) when Docker's chain exists, else from the top of C(FORWARD) or
    C(INPUT); written with iptables, so iptables-nft keeps reading the table.
  - For a native nftables base chain, a podnet-owned regular chain (C(podnet_accept_forward),
    C(podnet_accept_input)) in that chain's table, jumped from its top. An accept in another
    table cannot override a drop policy, so podnet's rules must live in the dropping table.
  - Forward accepts everything from or to O(cluster_cidr); input accepts everything from
    O(cluster_cidr) or to O(service_cidr). Every addition is recorded in O(state_file), and
    recorded additions no longer needed (the firewall went away) are taken back; with
    O(state=absent) all are.
  - In check mode nothing changes; the plan uses it to report what it found.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of the chains and rules it read and left.
options:
  cluster_cidr:
    description: The cluster CIDR (every pod's address). Required when O(state=present).
    type: str
  service_cidr:
    description: The Service range. Required when O(state=present).
    type: str
  state:
    description: Whether podnet's accept rules should be in place.
    type: str
    default: present
    choices: [present, absent]
  state_file:
    description: The record of the chains and jumps podnet added.
    type: path
    default: /var/lib/podnet/firewall.json
  vxlan_peers:
    description: The node IPs of the peers that reach this node over VXLAN; where input is
      dropped, their VXLAN packets (UDP to O(vxlan_port)) pass, from them only.
    type: list
    elements: str
    default: []
  vxlan_port:
    description: podnet's VXLAN UDP port.
    type: int
    default: 8472
requirements:
  - nft (nftables); iptables (iptables-nft) where an iptables filter table drops
extends_documentation_fragment:
  - podnet.network.glance
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Let cluster traffic pass Docker's FORWARD DROP, ufw or nftables
  podnet.network.firewall:
    cluster_cidr: 10.244.0.0/16
    service_cidr: 10.96.0.0/12

- name: Take podnet's accept rules back
  podnet.network.firewall:
    state: absent
"""

RETURN = r"""
findings:
  description: The dropping base chains found, and where podnet's chain is jumped from.
  returned: always
  type: list
  elements: dict
report:
  description: The findings as sentences, for the plan's output.
  returned: always
  type: list
  elements: str
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["write iptables chains PODNET-FORWARD", "insert iptables jump DOCKER-USER -> PODNET-FORWARD"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.firewall.apply import (
    FirewallError,
    ensure,
    remove,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "cluster_cidr": {"type": "str"},
            "service_cidr": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_file": {"type": "path", "default": "/var/lib/podnet/firewall.json"},
            "vxlan_peers": {"type": "list", "elements": "str", "default": []},
            "vxlan_port": {"type": "int", "default": 8472},
            "glance_inputs": {"type": "str"},
            "glance_file": {"type": "path", "default": glance.INDEX},
        },
        required_if=[("state", "present", ("cluster_cidr", "service_cidr"))],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params["state"] == "absent":
            result = {"findings": [], "report": [], **remove(params["state_file"], check=module.check_mode)}
        else:
            result = ensure(params["cluster_cidr"], params["service_cidr"], params["state_file"],
                            check=module.check_mode, vxlan_peers=params["vxlan_peers"],
                            vxlan_port=params["vxlan_port"])
    except (FirewallError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    if not module.check_mode:
        glance.settle(module, "firewall", {"state_file": params["state_file"]}, params["glance_inputs"],
                      params["glance_file"])
    module.exit_json(changed=bool(result["actions"]), **result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
"""Ansible module: reconcile the routes podnet owns to the other nodes' podCIDRs."""

DOCUMENTATION = r"""
---
module: routes
short_description: Reconcile a node's routes to the other nodes' podCIDRs
description:
  - Makes the IPv4 routes of one routing table that carry podnet's route protocol number equal
    to O(routes). It adds the missing ones, replaces those whose gateway differs, deletes the
    owned routes that are no longer listed.
  - Ownership is decided by the protocol number alone. Routes with any other protocol
    (kernel, static, boot, dhcp, a routing daemon) are never changed.
  - If a foreign route already holds a desired destination (same table, same prefix, metric
    0) the module fails before changing anything and names that route.
  - If the kernel refuses one change (for example a gateway that is not on a connected
    network) the changes already made in this run are undone before failing.
options:
  routes:
    description:
      - The routes this node must hold, one per other node's podCIDR. May be empty, which
        removes every route podnet owns in O(table).
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Destination IPv4 network with host bits zero, for example V(10.244.2.0/24).
        type: str
        required: true
      gateway:
        description: Next hop IPv4 address, normally the other node's address.
        type: str
        required: true
  protocol:
    description:
      - Route protocol number (rtm_protocol) that marks the routes podnet owns. 158 is not
        assigned in C(/etc/iproute2/rt_protos).
    type: int
    default: 158
  table:
    description: Routing table to reconcile. 254 is C(main).
    type: int
    default: 254
requirements:
  - pyroute2 (0.7 or later)
notes:
  - Supports check mode and diff mode. The diff lists the owned routes, sorted, one per line.
  - IPv4 only.
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Route the other nodes' podCIDRs through their node addresses
  podnet.network.routes:
    routes:
      - dest: 10.244.2.0/24
        gateway: 192.168.56.12
      - dest: 10.244.3.0/24
        gateway: 192.168.56.13

- name: Remove every route podnet owns in the main table
  podnet.network.routes:
    routes: []
"""

RETURN = r"""
added:
  description: Routes added, like C(ip route) prints them.
  returned: always
  type: list
  elements: str
  sample: ["10.244.2.0/24 via 192.168.56.12 proto 158"]
replaced:
  description: Owned routes rewritten because their gateway (or shape) differed; the new route.
  returned: always
  type: list
  elements: str
  sample: ["10.244.3.0/24 via 192.168.56.13 proto 158"]
removed:
  description: Owned routes deleted because their destination is no longer listed.
  returned: always
  type: list
  elements: str
  sample: ["10.244.9.0/24 via 192.168.56.19 proto 158"]
routes:
  description: The owned routes after the run (predicted in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"dest": "10.244.2.0/24", "gateway": "192.168.56.12"}]
"""

import ipaddress
import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import node_lock
from ansible_collections.podnet.network.plugins.module_utils.pod_network.routes import (
    Route,
    RouteError,
    final_routes,
    parse_routes,
    plan_routes,
    render_routes,
    route_line,
    sort_routes,
)

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    PYROUTE2_IMPORT_ERROR = None
except ImportError:
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()

    class NetlinkError(Exception):
        pass


def read_table(ipr, table):
    """Every IPv4 route of `table` as a Route, with the device name for messages."""
    # pyroute2 0.9 returns generators where 0.7 returned lists.
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in list(ipr.get_links())}
    routes = []
    for msg in list(ipr.get_routes(family=socket.AF_INET)):
        # Tables above 255 only fit in RTA_TABLE; the header field then reads 252 (compat).
        msg_table = msg.get_attr("RTA_TABLE") or msg["table"]
        if msg_table != table:
            continue
        dst = msg.get_attr("RTA_DST") or "0.0.0.0"
        routes.append(
            Route(
                dest=ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}", strict=False),
                gateway=_address(msg.get_attr("RTA_GATEWAY")),
                proto=msg["proto"],
                table=msg_table,
                priority=msg.get_attr("RTA_PRIORITY") or 0,
                dev=names.get(msg.get_attr("RTA_OIF")),
                kind=msg["type"],
                multipath=msg.get_attr("RTA_MULTIPATH") is not None,
            )
        )
    return routes


def _address(value):
    return ipaddress.IPv4Address(value) if value else None


def _route_args(route):
    args = {"dst": str(route.dest), "proto": route.proto, "table": route.table, "type": route.kind}
    if route.gateway is not None and not route.multipath:
        args["gateway"] = str(route.gateway)
    if route.priority:
        args["priority"] = route.priority
    return args


def apply_plan(ipr, plan):
    """Apply the plan; on a kernel refusal undo what this run did, then raise RouteError."""
    undo = []
    steps = (
        [("del", old, ("add", old)) for old in plan.delete]
        + [("replace", new, ("replace", old)) for old, new in plan.replace]
        + [("add", new, ("del", new)) for new in plan.add]
    )
    for command, route, inverse in steps:
        try:
            ipr.route(command, **_route_args(route))
        except NetlinkError as exc:
            hint = ""
            if exc.code == 101:
                hint = " (the gateway is not on a network this node is connected to)"
            failed = f"route {command} {route_line(route)}: {exc.args[-1] if exc.args else exc}{hint}"
            leftovers = _undo(ipr, undo)
            if leftovers:
                raise RouteError(
                    f"{failed}; rolling back this run's changes also failed: {'; '.join(leftovers)}"
                ) from None
            raise RouteError(f"{failed}; this run's earlier changes were rolled back") from None
        undo.append(inverse)


def _undo(ipr, undo):
    leftovers = []
    for command, route in reversed(undo):
        try:
            ipr.route(command, **_route_args(route))
        except NetlinkError as exc:
            leftovers.append(f"route {command} {route_line(route)}: {exc}")
    return leftovers


def _as_dicts(routes):
    return [{"dest": str(r.dest), "gateway": str(r.gateway) if r.gateway else None} for r in routes]


def run_module():
    module = AnsibleModule(
        argument_spec={
            "routes": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "dest": {"type": "str", "required": True},
                    "gateway": {"type": "str", "required": True},
                },
            },
            "protocol": {"type": "int", "default": 158},
            "table": {"type": "int", "default": 254},
        },
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.routes")
    if PYROUTE2_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=PYROUTE2_IMPORT_ERROR)

    protocol = module.params["protocol"]
    table = module.params["table"]
    try:
        desired = parse_routes(module.params["routes"], protocol=protocol, table=table)
    except RouteError as exc:
        module.fail_json(msg=str(exc))

    with IPRoute() as ipr:
        live = read_table(ipr, table)
        owned = [r for r in live if r.proto == protocol]
        foreign = [r for r in live if r.proto != protocol]
        try:
            plan = plan_routes(desired, owned, foreign)
        except RouteError as exc:
            module.fail_json(msg=str(exc), table=table)

        result = {
            "changed": plan.changed,
            "added": [route_line(r) for r in plan.add],
            "replaced": [route_line(new) for _old, new in plan.replace],
            "removed": [route_line(r) for r in plan.delete],
        }
        after = final_routes(plan, owned)
        if plan.changed and not module.check_mode:
            try:
                apply_plan(ipr, plan)
            except RouteError as exc:
                module.fail_json(msg=str(exc), table=table)
            after = [r for r in read_table(ipr, table) if r.proto == protocol]

    result["routes"] = _as_dicts(sort_routes(after))
    if module._diff:
        header = f"owned routes (proto {protocol}, table {table})"
        result["diff"] = {
            "before": render_routes(owned),
            "after": render_routes(after),
            "before_header": header,
            "after_header": header,
        }
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()

#!/usr/bin/python
"""Ansible module: reconcile the routes podnet owns to the other nodes' podCIDRs, and the
VXLAN device that carries the ones no direct route can reach."""

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
    network) the route changes already made in this run are undone before failing.
  - With O(vxlan) peers, also makes podnet's VXLAN device (flannel's layout, C(podnet.1),
    VNI 1, UDP port 8472, no learning) hold exactly one permanent FDB entry and one permanent
    neighbour entry per peer and the node's VTEP address, with the tx checksum offload off
    (C(ethtool)). Without peers the device is deleted. The device is created before the
    routes through it and deleted after them.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of the routes and the device it left.
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
      dev:
        description: Output device, for a route through the VXLAN device.
        type: str
      onlink:
        description: The next hop is on the link of O(routes[].dev) whatever its address (the peer's VTEP).
        type: bool
        default: false
  vxlan:
    description:
      - podnet's VXLAN device. Without O(vxlan.peers) (or without this option) the device
        O(vxlan.device) is deleted if it exists.
    type: dict
    suboptions:
      device:
        description:
          - The device's name. Everything on it is podnet's; a device of this name that is not a
            VXLAN device makes the module fail.
        type: str
        default: podnet.1
      vni:
        description: VXLAN network identifier.
        type: int
        default: 1
      port:
        description: UDP destination port (8472 is the Linux and flannel default).
        type: int
        default: 8472
      local:
        description: This node's IP, the outer source address.
        type: str
      address:
        description: This node's VTEP address (its podCIDR's network address), set as a /32 on the device.
        type: str
      mac:
        description: This node's VTEP MAC address.
        type: str
      mtu:
        description: The device's MTU, the underlay's less 50.
        type: int
      peers:
        description: The nodes reached over VXLAN.
        type: list
        elements: dict
        default: []
        suboptions:
          node_ip:
            description: The peer's node IP (outer destination, FDB C(dst)).
            type: str
            required: true
          vtep_ip:
            description: The peer's VTEP address (neighbour entry, next hop of its podCIDR route).
            type: str
            required: true
          vtep_mac:
            description: The peer's VTEP MAC address.
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
  - ethtool, to turn the VXLAN device's tx checksum offload off (without it the module warns)
notes:
  - Supports check mode and diff mode. The diff lists the owned routes, sorted, one per line,
    then what the VXLAN device holds.
  - IPv4 only.
extends_documentation_fragment:
  - podnet.network.glance
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

- name: A peer on another subnet, over VXLAN
  podnet.network.routes:
    routes:
      - dest: 10.244.3.0/24
        gateway: 10.244.3.0
        dev: podnet.1
        onlink: true
    vxlan:
      local: 192.168.56.11
      address: 10.244.0.0
      mac: "0a:58:0a:f4:00:00"
      mtu: 1450
      peers:
        - node_ip: 192.168.57.14
          vtep_ip: 10.244.3.0
          vtep_mac: "0a:58:0a:f4:03:00"

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
vxlan:
  description: What was done to the VXLAN device, one line per change.
  returned: always
  type: list
  elements: str
  sample: ["fdb add 0a:58:0a:f4:03:00 dst 192.168.57.14", "neigh add 10.244.3.0 lladdr 0a:58:0a:f4:03:00"]
routes:
  description: The owned routes after the run (predicted in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{"dest": "10.244.2.0/24", "gateway": "192.168.56.12"}]
"""

import ipaddress
import re
import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.podnet.network.plugins.module_utils.common import glance
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
from ansible_collections.podnet.network.plugins.module_utils.pod_network.vxlan import (
    Device,
    Overlay,
    VxlanError,
    describe_plan,
    parse_overlay,
    plan_vxlan,
    render_overlay,
)

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    PYROUTE2_IMPORT_ERROR = None
except ImportError:
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()

    class NetlinkError(Exception):
        pass


RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 2
# The offload that corrupts VXLAN on some kernels and NICs (flannel#1279, kubernetes#88986).
TX_CHECKSUM_FEATURE = "tx-checksum-ip-generic"


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
                onlink=bool(msg["flags"] & RTNH_F_ONLINK),
            )
        )
    return routes


def _address(value):
    return ipaddress.IPv4Address(value) if value else None


def _route_args(ipr, route):
    args = {"dst": str(route.dest), "proto": route.proto, "table": route.table, "type": route.kind}
    if route.gateway is not None and not route.multipath:
        args["gateway"] = str(route.gateway)
    if route.priority:
        args["priority"] = route.priority
    if route.onlink and route.dev:
        found = ipr.link_lookup(ifname=route.dev)
        if not found:
            raise NetlinkError(19, f"no device {route.dev}")
        args["oif"] = found[0]
        args["flags"] = RTNH_F_ONLINK
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
            ipr.route(command, **_route_args(ipr, route))
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
            ipr.route(command, **_route_args(ipr, route))
        except NetlinkError as exc:
            leftovers.append(f"route {command} {route_line(route)}: {exc}")
    return leftovers


def _as_dicts(routes):
    out = []
    for r in routes:
        item = {"dest": str(r.dest), "gateway": str(r.gateway) if r.gateway else None}
        if r.onlink:
            item.update(dev=r.dev, onlink=True)
        out.append(item)
    return out


# ---------------------------------------------------------------- the VXLAN device


def read_overlay(module, ipr, name):
    """(Overlay as the kernel holds it, the link kind or None when there is no such device)."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return Overlay(device=None, tx_checksum=None), None
    index = found[0]
    link = list(ipr.get_links(index))[0]
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    if kind != "vxlan" or data is None:
        return Overlay(device=Device(name, 0, 0, "", "", 0)), kind or "unknown"
    device = Device(
        name=name,
        vni=data.get_attr("IFLA_VXLAN_ID"),
        port=data.get_attr("IFLA_VXLAN_PORT"),
        local=data.get_attr("IFLA_VXLAN_LOCAL") or "",
        mac=(link.get_attr("IFLA_ADDRESS") or "").lower(),
        mtu=link.get_attr("IFLA_MTU"),
        learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
    )
    addresses = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                 for a in list(ipr.get_addr(family=socket.AF_INET, index=index))}
    fdb = set()
    for entry in list(ipr.fdb("dump", ifindex=index)):
        if entry["ifindex"] == index and entry.get_attr("NDA_DST"):
            fdb.add((entry.get_attr("NDA_LLADDR").lower(), entry.get_attr("NDA_DST")))
    neighbours = set()
    for entry in list(ipr.get_neighbours(family=socket.AF_INET, ifindex=index)):
        if entry["ifindex"] == index and entry["state"] & NUD_PERMANENT and entry.get_attr("NDA_LLADDR"):
            neighbours.add((entry.get_attr("NDA_DST"), entry.get_attr("NDA_LLADDR").lower()))
    return Overlay(device=device, addresses=frozenset(addresses), fdb=frozenset(fdb),
                   neighbours=frozenset(neighbours), tx_checksum=read_tx_checksum(module, name)), kind


def read_tx_checksum(module, name):
    """Whether the device's tx checksum offload is on; None without ethtool."""
    ethtool = module.get_bin_path("ethtool")
    if not ethtool:
        return None
    rc, out, _err = module.run_command([ethtool, "-k", name])
    match = re.search(rf"^{TX_CHECKSUM_FEATURE}: (on|off)", out, re.M) if rc == 0 else None
    return None if match is None else match.group(1) == "on"


def apply_vxlan_before(module, ipr, plan, desired):
    """Everything that must exist before routes point at the device."""
    name = desired.device.name if desired.device else None
    if plan.delete_device and plan.create_device:
        ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    if plan.create_device:
        dev = desired.device
        ipr.link("add", ifname=dev.name, kind="vxlan", vxlan_id=dev.vni, vxlan_port=dev.port,
                 vxlan_local=dev.local, vxlan_learning=int(dev.learning), address=dev.mac, mtu=dev.mtu)
    if desired.device is None:
        return
    index = ipr.link_lookup(ifname=name)[0]
    if plan.set_link:
        ipr.link("set", index=index, **{"address" if k == "mac" else k: v for k, v in plan.set_link.items()})
    ipr.link("set", index=index, state="up")
    for cidr in plan.address_add:
        address, prefixlen = cidr.split("/")
        ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen))
    for mac, dst in plan.fdb_add:
        ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)
    for ip, mac in plan.neigh_add:
        ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT)
    if plan.tx_checksum_off:
        ethtool = module.get_bin_path("ethtool")
        if not ethtool:
            module.warn(f"ethtool is not installed: {name}'s tx checksum offload stays on")
        else:
            module.run_command([ethtool, "-K", name, TX_CHECKSUM_FEATURE, "off"], check_rc=True)


def apply_vxlan_after(ipr, plan, desired, live):
    """What goes once no route needs it any more."""
    if desired.device is None:
        if plan.delete_device:
            ipr.link("del", index=ipr.link_lookup(ifname=live.device.name)[0])
        return
    index = ipr.link_lookup(ifname=desired.device.name)[0]
    for ip, mac in plan.neigh_del:
        ipr.neigh("del", ifindex=index, dst=ip, lladdr=mac)
    for mac, dst in plan.fdb_del:
        ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst, flags=NTF_SELF)
    for cidr in plan.address_del:
        address, prefixlen = cidr.split("/")
        ipr.addr("del", index=index, address=address, prefixlen=int(prefixlen))


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
                    "dev": {"type": "str"},
                    "onlink": {"type": "bool", "default": False},
                },
            },
            "vxlan": {
                "type": "dict",
                "options": {
                    "device": {"type": "str", "default": "podnet.1"},
                    "vni": {"type": "int", "default": 1},
                    "port": {"type": "int", "default": 8472},
                    "local": {"type": "str"},
                    "address": {"type": "str"},
                    "mac": {"type": "str"},
                    "mtu": {"type": "int"},
                    "peers": {
                        "type": "list",
                        "elements": "dict",
                        "default": [],
                        "options": {
                            "node_ip": {"type": "str", "required": True},
                            "vtep_ip": {"type": "str", "required": True},
                            "vtep_mac": {"type": "str", "required": True},
                        },
                    },
                },
            },
            "protocol": {"type": "int", "default": 158},
            "table": {"type": "int", "default": 254},
            "glance_inputs": {"type": "str"},
            "glance_file": {"type": "path", "default": glance.INDEX},
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
        want_vxlan = parse_overlay(module.params["vxlan"] or {"device": "podnet.1"})
    except (RouteError, VxlanError) as exc:
        module.fail_json(msg=str(exc))
    device_name = (module.params["vxlan"] or {}).get("device") or "podnet.1"

    with IPRoute() as ipr:
        live_vxlan, kind = read_overlay(module, ipr, device_name)
        live = read_table(ipr, table)
        owned = [r for r in live if r.proto == protocol]
        foreign = [r for r in live if r.proto != protocol]
        try:
            vxlan_plan = plan_vxlan(want_vxlan, live_vxlan, kind)
            plan = plan_routes(desired, owned, foreign)
        except (RouteError, VxlanError) as exc:
            module.fail_json(msg=str(exc), table=table)

        result = {
            "changed": plan.changed or vxlan_plan.changed,
            "added": [route_line(r) for r in plan.add],
            "replaced": [route_line(new) for _old, new in plan.replace],
            "removed": [route_line(r) for r in plan.delete],
            "vxlan": describe_plan(vxlan_plan, want_vxlan, live_vxlan),
        }
        after = final_routes(plan, owned)
        after_vxlan = want_vxlan
        if result["changed"] and not module.check_mode:
            try:
                apply_vxlan_before(module, ipr, vxlan_plan, want_vxlan)
                # Making the device anew took its routes along: plan against what is left.
                live = read_table(ipr, table)
                plan = plan_routes(desired, [r for r in live if r.proto == protocol],
                                   [r for r in live if r.proto != protocol])
                apply_plan(ipr, plan)
                apply_vxlan_after(ipr, vxlan_plan, want_vxlan, live_vxlan)
            except (RouteError, VxlanError) as exc:
                module.fail_json(msg=str(exc), table=table)
            except NetlinkError as exc:
                module.fail_json(msg=f"{device_name}: {exc}", table=table)
            after = [r for r in read_table(ipr, table) if r.proto == protocol]
            after_vxlan, _kind = read_overlay(module, ipr, device_name)

    if not module.check_mode:
        glance.settle(module, "routes", {"table": table, "protocol": protocol, "device": device_name},
                      module.params["glance_inputs"], module.params["glance_file"])
    result["routes"] = _as_dicts(sort_routes(after))
    if module._diff:
        header = f"owned routes (proto {protocol}, table {table}) and {device_name}"
        result["diff"] = {
            "before": render_routes(owned) + render_overlay(live_vxlan),
            "after": render_routes(after) + render_overlay(after_vxlan),
            "before_header": header,
            "after_header": header,
        }
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()

"""Pure core of podnet's VXLAN device: what it should hold, and what to change.

The device, its address, its FDB and neighbour entries are podnet's by the device's name
(``podnet.1`` by default, see overlay.py for the layout): everything on it is podnet's, so
an entry no peer needs any more is stale and goes. A device of that name that is not a
VXLAN device is someone else's, and podnet refuses to touch it.

No I/O here: the module reads the kernel and passes plain values in.
"""

# Annotations stay text: `X | None` must not be evaluated on a node's Python older than 3.10.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


class VxlanError(ValueError):
    """The overlay is malformed, or its device name is taken by something not podnet's."""


@dataclass(frozen=True)
class Device:
    name: str
    vni: int
    port: int
    local: str
    mac: str
    mtu: int
    learning: bool = False

    def line(self) -> str:
        return "%s vxlan id %d dstport %d local %s %slearning address %s mtu %d" % (
            self.name, self.vni, self.port, self.local, "" if self.learning else "no", self.mac, self.mtu)


@dataclass(frozen=True)
class Overlay:
    """What one node's device holds: None for no device at all."""
    device: Device | None
    addresses: frozenset = frozenset()   # "a.b.c.d/len"
    fdb: frozenset = frozenset()         # (mac, node ip)
    neighbours: frozenset = frozenset()  # (vtep ip, mac)
    # The tx checksum offload (None: unknown, e.g. no ethtool; desired: always False).
    tx_checksum: bool | None = False


@dataclass
class VxlanPlan:
    delete_device: bool = False     # no VXLAN peer left, or a device that must be made anew
    create_device: bool = False
    set_link: dict = field(default_factory=dict)   # mac, mtu to change in place
    address_add: list = field(default_factory=list)
    address_del: list = field(default_factory=list)
    fdb_add: list = field(default_factory=list)
    fdb_del: list = field(default_factory=list)
    neigh_add: list = field(default_factory=list)
    neigh_del: list = field(default_factory=list)
    tx_checksum_off: bool = False

    @property
    def changed(self) -> bool:
        return any((self.delete_device, self.create_device, self.set_link, self.address_add,
                    self.address_del, self.fdb_add, self.fdb_del, self.neigh_add, self.neigh_del,
                    self.tx_checksum_off))


def _mac(value, where):
    text = str(value).strip().lower()
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise VxlanError("%s: %r is not a MAC address" % (where, value))
    return text


def _ip(value, where):
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise VxlanError("%s: %r is not an IPv4 address" % (where, value)) from None


def parse_overlay(raw) -> Overlay:
    """Validate the module's ``vxlan`` argument. No peers: no device."""
    where = "vxlan"
    if not isinstance(raw, dict):
        raise VxlanError("%s: expected a mapping" % where)
    name = str(raw.get("device") or "")
    if not name or len(name) > 15 or "/" in name or " " in name:
        raise VxlanError("%s.device: %r is not an interface name (1 to 15 characters)" % (where, name))
    peers = raw.get("peers") or []
    if not peers:
        return Overlay(device=None, tx_checksum=None)
    for key in ("vni", "port", "mtu"):
        if not isinstance(raw.get(key), int):
            raise VxlanError("%s.%s: missing or not a number" % (where, key))
    if not 0 < raw["vni"] < 2 ** 24:
        raise VxlanError("%s.vni: %d is outside 1-16777215" % (where, raw["vni"]))
    if not 0 < raw["port"] < 65536:
        raise VxlanError("%s.port: %d is not a UDP port" % (where, raw["port"]))
    if not 68 <= raw["mtu"] <= 65535:
        raise VxlanError("%s.mtu: %d is outside 68-65535" % (where, raw["mtu"]))
    device = Device(name=name, vni=raw["vni"], port=raw["port"],
                    local=_ip(raw.get("local"), where + ".local"),
                    mac=_mac(raw.get("mac"), where + ".mac"), mtu=raw["mtu"])
    address = _ip(raw.get("address"), where + ".address") + "/32"
    fdb, neighbours, seen = set(), set(), {}
    for index, peer in enumerate(peers):
        at = "%s.peers[%d]" % (where, index)
        if not isinstance(peer, dict):
            raise VxlanError("%s: expected a mapping with node_ip, vtep_ip, vtep_mac" % at)
        mac = _mac(peer.get("vtep_mac"), at + ".vtep_mac")
        vtep = _ip(peer.get("vtep_ip"), at + ".vtep_ip")
        node_ip = _ip(peer.get("node_ip"), at + ".node_ip")
        for key in (mac, vtep):
            if key in seen:
                raise VxlanError("%s: %s is already used by %s" % (at, key, seen[key]))
            seen[key] = at
        fdb.add((mac, node_ip))
        neighbours.add((vtep, mac))
    return Overlay(device=device, addresses=frozenset({address}), fdb=frozenset(fdb),
                   neighbours=frozenset(neighbours), tx_checksum=False)


def plan_vxlan(desired: Overlay, live: Overlay, live_kind: str | None = "vxlan") -> VxlanPlan:
    """Changes that make the live device equal ``desired``.

    ``live_kind`` is the live device's link kind (None when absent). Attributes the kernel
    fixes at creation (VNI, port, local address, learning) make the device anew.
    """
    plan = VxlanPlan()
    if live.device is not None and live_kind != "vxlan":
        raise VxlanError("%s exists and is a %s device, not podnet's VXLAN device: refusing to touch it "
                         "(rename it, or set podnet_routes_vxlan_device)" % (live.device.name, live_kind))
    want, have = desired.device, live.device
    if want is None:
        plan.delete_device = have is not None
        return plan
    fixed = ("vni", "port", "local", "learning")
    if have is not None and any(getattr(have, a) != getattr(want, a) for a in fixed):
        plan.delete_device = True
        have = None
    if have is None:
        plan.create_device = True
        live = Overlay(device=None, tx_checksum=True)
    else:
        plan.set_link = {a: getattr(want, a) for a in ("mac", "mtu") if getattr(have, a) != getattr(want, a)}
    plan.address_add = sorted(desired.addresses - live.addresses)
    plan.address_del = sorted(live.addresses - desired.addresses)
    plan.fdb_add = sorted(desired.fdb - live.fdb)
    plan.fdb_del = sorted(live.fdb - desired.fdb)
    plan.neigh_add = sorted(desired.neighbours - live.neighbours)
    plan.neigh_del = sorted(live.neighbours - desired.neighbours)
    # Unknown (no ethtool) is left alone: the module warns when it makes the device.
    plan.tx_checksum_off = live.tx_checksum is True
    return plan


def render_overlay(overlay: Overlay) -> str:
    """One line per thing the device holds, for diff mode (as ip/bridge would show it)."""
    if overlay.device is None:
        return ""
    name = overlay.device.name
    lines = [overlay.device.line()]
    lines += ["%s inet %s" % (name, a) for a in sorted(overlay.addresses)]
    lines += ["fdb %s dev %s dst %s self permanent" % (mac, name, dst) for mac, dst in sorted(overlay.fdb)]
    lines += ["neigh %s dev %s lladdr %s PERMANENT" % (ip, name, mac)
              for ip, mac in sorted(overlay.neighbours)]
    if overlay.tx_checksum is not None:
        lines.append("%s tx-checksum-ip-generic %s" % (name, "on" if overlay.tx_checksum else "off"))
    return "".join(line + "\n" for line in lines)


def describe_plan(plan: VxlanPlan, desired: Overlay, live: Overlay) -> list:
    """What the plan does, one line per change, for the module's report."""
    name = (desired.device or live.device).name if (desired.device or live.device) else "?"
    lines = []
    if plan.delete_device:
        lines.append("delete %s" % name)
    if plan.create_device:
        lines.append("create %s" % desired.device.line())
    for attr, value in sorted(plan.set_link.items()):
        lines.append("set %s %s %s" % (name, attr, value))
    lines += ["address add %s dev %s" % (a, name) for a in plan.address_add]
    lines += ["address del %s dev %s" % (a, name) for a in plan.address_del]
    lines += ["fdb add %s dst %s" % pair for pair in plan.fdb_add]
    lines += ["fdb del %s dst %s" % pair for pair in plan.fdb_del]
    lines += ["neigh add %s lladdr %s" % pair for pair in plan.neigh_add]
    lines += ["neigh del %s lladdr %s" % pair for pair in plan.neigh_del]
    if plan.tx_checksum_off:
        lines.append("%s tx-checksum-ip-generic off" % name)
    return lines

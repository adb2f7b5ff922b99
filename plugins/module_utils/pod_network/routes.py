"""Pure core of podnet_routes: which podCIDR routes a node should hold, and what to change.

podnet marks the routes it owns with its own route protocol number (``proto``), the way
routing daemons do (bird, zebra). Ownership is decided by that number alone: a route with
any other protocol belongs to someone else and is never changed, only reported when it sits
where podnet needs to put one of its own.

No I/O here: the module reads the kernel and passes plain values in.
"""

# Annotations stay text: `X | None` must not be evaluated on a node's Python older than 3.10.
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

MAIN_TABLE = 254
DEFAULT_PROTOCOL = 158

# rtm_type values worth naming in messages; the rest print as numbers.
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
# The names iproute2 prints (rt_protos), so a foreign route reads as `ip route` shows it.
ROUTE_PROTOCOLS = {2: "kernel", 3: "boot", 4: "static", 9: "ra", 11: "zebra", 12: "bird", 16: "dhcp"}


class RouteError(ValueError):
    """Desired routes are malformed, or cannot be installed without touching a foreign route."""


@dataclass(frozen=True)
class Route:
    dest: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    proto: int
    table: int = MAIN_TABLE
    priority: int = 0
    dev: str | None = None
    kind: int = 1
    multipath: bool = False
    # Next hop "on link" of `dev` whatever its address (routes through the VXLAN device).
    onlink: bool = False

    def line(self) -> str:
        """Render like `ip route`, so a reviewer can paste it into one."""
        parts = [str(self.dest)]
        if self.kind != 1:
            parts.insert(0, ROUTE_TYPES.get(self.kind, f"type {self.kind}"))
        if self.multipath:
            parts.append("nexthop ...")
        elif self.gateway is not None:
            parts += ["via", str(self.gateway)]
        if self.dev:
            parts += ["dev", self.dev]
        if self.onlink:
            parts.append("onlink")
        parts += ["proto", ROUTE_PROTOCOLS.get(self.proto, str(self.proto))]
        if self.priority:
            parts += ["metric", str(self.priority)]
        if self.table != MAIN_TABLE:
            parts += ["table", str(self.table)]
        return " ".join(parts)


@dataclass
class RoutePlan:
    add: list = field(default_factory=list)
    # (live route, desired route) pairs: same destination, different next hop or shape.
    replace: list = field(default_factory=list)
    delete: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.add or self.replace or self.delete)


def _sort_key(route: Route):
    return (int(route.dest.network_address), route.dest.prefixlen, route.priority)


def sort_routes(routes) -> list:
    return sorted(routes, key=_sort_key)


def parse_routes(raw, protocol: int = DEFAULT_PROTOCOL, table: int = MAIN_TABLE) -> list:
    """Validate the module's `routes` argument; every error names the list index and field."""
    if not 0 < protocol < 256:
        raise RouteError(f"protocol must be between 1 and 255, got {protocol}")
    if not 0 < table < 2**32:
        raise RouteError(f"table must be between 1 and 4294967295, got {table}")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise RouteError("routes must be a list of {dest, gateway[, dev, onlink]} mappings")
    routes = []
    seen = {}
    for index, item in enumerate(raw):
        where = f"routes[{index}]"
        if not isinstance(item, dict):
            raise RouteError(f"{where}: expected a mapping with dest and gateway, got {item!r}")
        unknown = sorted(set(item) - {"dest", "gateway", "dev", "onlink"})
        if unknown:
            raise RouteError(
                f"{where}: unknown field(s) {', '.join(unknown)} (expected dest, gateway, dev, onlink)")
        for name in ("dest", "gateway"):
            if item.get(name) in (None, ""):
                raise RouteError(f"{where}.{name}: missing")
        try:
            dest = ipaddress.IPv4Network(str(item["dest"]).strip(), strict=True)
        except ValueError as exc:
            # The strict parse mentions "host bits set" itself when that is the fault.
            raise RouteError(f"{where}.dest: {item['dest']!r} is not an IPv4 network ({exc})") from None
        try:
            gateway = ipaddress.IPv4Address(str(item["gateway"]).strip())
        except ValueError:
            raise RouteError(f"{where}.gateway: {item['gateway']!r} is not an IPv4 address") from None
        if dest in seen:
            raise RouteError(f"{where}.dest: {dest} is already listed at routes[{seen[dest]}]")
        seen[dest] = index
        dev = item.get("dev") or None
        onlink = bool(item.get("onlink"))
        if onlink and not dev:
            raise RouteError(f"{where}.onlink: an onlink route needs its dev")
        routes.append(Route(dest=dest, gateway=gateway, proto=protocol, table=table, dev=dev, onlink=onlink))
    return sort_routes(routes)


def _matches(live: Route, want: Route) -> bool:
    return (
        live.gateway == want.gateway
        and live.kind == want.kind
        and not live.multipath
        and live.priority == want.priority
        and live.onlink == want.onlink
        # A desired route without dev leaves the device to the kernel (the one toward the gateway).
        and (want.dev is None or live.dev == want.dev)
    )


def find_conflicts(desired, live_foreign) -> list:
    """Foreign routes that occupy a desired destination, as messages.

    The kernel keys an IPv4 route by table, destination, tos and metric: a foreign route
    with the same destination and metric 0 would be overwritten by `route replace` or make
    `route add` fail, so podnet refuses rather than take it over.
    """
    by_key = {(r.table, r.dest): r for r in desired}
    messages = []
    for foreign in sort_routes(live_foreign):
        want = by_key.get((foreign.table, foreign.dest))
        if want is None or foreign.priority != 0:
            continue
        messages.append(f"{want.dest} is held by `{foreign.line()}` (proto {foreign.proto})")
    return messages


def plan_routes(desired, live_owned, live_foreign) -> RoutePlan:
    """Changes that make the owned routes equal `desired`; raises RouteError on a conflict.

    `live_owned`: routes in the target table carrying podnet's protocol; `live_foreign`: the
    other routes of that table. Foreign routes never appear in the plan.
    """
    conflicts = find_conflicts(desired, live_foreign)
    if conflicts:
        owner = desired[0].proto if desired else "?"
        raise RouteError(
            f"refusing to change any route: a desired destination is held by a route podnet does not "
            f"own (proto other than {owner}): " + "; ".join(conflicts)
        )
    plan = RoutePlan()
    owned_by_dest = {}
    for route in sort_routes(live_owned):
        owned_by_dest.setdefault(route.dest, []).append(route)
    wanted = {route.dest: route for route in desired}

    for dest, routes in owned_by_dest.items():
        want = wanted.get(dest)
        if want is None:
            plan.delete.extend(routes)
            continue
        # Several owned routes to one dest differ only by metric: keep (or rewrite) the
        # metric-0 one, which is the one `replace` addresses, and drop the rest.
        primary = next((r for r in routes if r.priority == want.priority), None)
        plan.delete.extend(r for r in routes if r is not primary)
        if primary is None:
            plan.add.append(want)
        elif not _matches(primary, want):
            plan.replace.append((primary, want))

    plan.add.extend(route for dest, route in wanted.items() if dest not in owned_by_dest)
    plan.add = sort_routes(plan.add)
    plan.replace.sort(key=lambda pair: _sort_key(pair[1]))
    plan.delete = sort_routes(plan.delete)
    return plan


def final_routes(plan: RoutePlan, live_owned) -> list:
    """Owned routes once the plan is applied."""
    gone = {id(r) for r in plan.delete} | {id(old) for old, _new in plan.replace}
    kept = [r for r in live_owned if id(r) not in gone]
    return sort_routes(kept + [new for _old, new in plan.replace] + list(plan.add))


def render_routes(routes) -> str:
    """One line per route, sorted, for diff mode."""
    lines = [route_line(r) for r in sort_routes(routes)]
    return "".join(line + "\n" for line in lines)


def route_line(route: Route) -> str:
    """Like Route.line() but without the device the kernel picked for a direct route (desired
    direct routes carry none); an onlink route's device is part of what podnet asked for."""
    return route.line() if route.onlink else dataclasses.replace(route, dev=None).line()

"""Pure core of the nftables Service proxy: a services model in, one nftables table out.

The table is built for scale (see FIELD-NOTES: the kernel's cost is per chain, not per
element). It has a fixed set of chains whatever the number of Services, and every Service,
port and endpoint is an element of a set or map:

- `service_endpoints` maps `address . protocol . port . index` to a Service port's endpoints,
  numbered 0..n-1; `service_endpoint_count` sends each Service port to the chain that draws
  `numgen random mod n` for its n, and that one `dnat ... map` rule serves every Service with
  n endpoints. So there is a chain per endpoint *count* (a handful), not per Service or
  endpoint; exact keys also load ~8x faster than `numgen` ranges in an interval map, whose
  ranges the kernel expands into many entries each;
- the masquerade decisions, the no-endpoint REJECT/DROP verdicts, NodePorts, the
  externalTrafficPolicy: Local variants and hairpin are sets and maps beside it.

A change to one Service is then a change of a few elements, which the module applies as
`add element` / `delete element` in one transaction instead of reloading the table.

What goes where is decided once for both backends, as kube-proxy decides it, by
services/categorize.py (docs/services.md has the table); this file only spells each
decision as elements. Masquerade is decided before DNAT and carried to postrouting in mark
bit 0x4000, as kube-proxy's KUBE-MARK-MASQ.

No I/O here: the module lists the live table, passes it in, and runs nft.
"""

import bisect

from ansible_collections.podnet.network.plugins.module_utils.common.protocols import PROTOCOLS
from ansible_collections.podnet.network.plugins.module_utils.services.categorize import (
    DROP,
    MASQ_EXTERNAL,
    MASQ_HAIRPIN,
    MASQ_OUTSIDE_CLUSTER,
    REJECT,
    categorize,
    checked_cluster_cidr,
)

DEFAULT_TABLE = "podnet-services"
FAMILY = "ip"
# Pick chains for 1..PICK_CHAINS endpoints always exist, so a Service gaining or losing an
# endpoint only changes elements. A larger count gets its chain when first needed, through a
# full reload: nft 1.0.6 refuses to add a `dnat ... map @m` rule to a loaded table whose map
# data is `ip daddr . th dport` ("conflicting protocols specified: tcp vs. th").
PICK_CHAINS = 16
MASQ_MARK = 0x4000
L4 = "{ %s }" % ", ".join(PROTOCOLS.values())
# nft refuses very large `add element` statements ("No buffer space available").
ELEMENTS_PER_STATEMENT = 2000
REJECT_CHAIN = "reject_service"

KEY = "ip daddr . meta l4proto . th dport"
NODEPORT_KEY = "meta l4proto . th dport"
# The endpoint index in a map key. typeof needs an expression of the key's type; the
# modulus that draws the index is in each pick chain's rule.
INDEX = "numgen random mod 1"
ENDPOINT = "ip daddr . th dport"

GENERATION_SET = "generation"
# name -> (kind, typeof, flags). Order is the order in the table.
SETS = {
    # ClusterIP ports: traffic from outside the cluster CIDR is masqueraded.
    "cluster_ips": ("set", KEY, ()),
    # Every Service address (ClusterIPs, externalIPs): tells NodePort traffic apart.
    "service_ips": ("set", "ip daddr", ()),
    # ClusterIP (internal policy) and externalIP (all endpoints) ports -> endpoint.
    "service_endpoints": ("map", f"{KEY} . {INDEX} : {ENDPOINT}", ()),
    "service_endpoint_count": ("map", f"{KEY} : verdict", ()),
    "nodeport_endpoints": ("map", f"{NODEPORT_KEY} . {INDEX} : {ENDPOINT}", ()),
    "nodeport_endpoint_count": ("map", f"{NODEPORT_KEY} : verdict", ()),
    # externalTrafficPolicy: Cluster on external destinations: always masquerade.
    "external_ips_masq": ("set", KEY, ()),
    "nodeports_masq": ("set", NODEPORT_KEY, ()),
    # externalTrafficPolicy: Local: from outside, this node's endpoints only ...
    "external_ips_local": ("set", KEY, ()),
    "nodeports_local": ("set", NODEPORT_KEY, ()),
    "external_local_endpoints": ("map", f"{KEY} . {INDEX} : {ENDPOINT}", ()),
    "external_local_endpoint_count": ("map", f"{KEY} : verdict", ()),
    "nodeport_local_endpoints": ("map", f"{NODEPORT_KEY} . {INDEX} : {ENDPOINT}", ()),
    "nodeport_local_endpoint_count": ("map", f"{NODEPORT_KEY} : verdict", ()),
    # ... and none here: outside traffic is dropped (pods and the node still get through).
    "no_local_endpoints": ("set", KEY, ()),
    "no_local_nodeports": ("set", NODEPORT_KEY, ()),
    # No endpoints at all: REJECT; internalTrafficPolicy: Local with none here: DROP.
    "no_endpoints": ("map", f"{KEY} : verdict", ()),
    "no_endpoint_nodeports": ("map", f"{NODEPORT_KEY} : verdict", ()),
    # An endpoint reaching itself through its Service: saddr . daddr after DNAT.
    "hairpin": ("set", "ip saddr . ip daddr", ()),
    # One number: the generation of the last apply (from the digest of its inputs). Listing
    # this one small set costs milliseconds where the whole table costs seconds at 10,000
    # Services: it tells the module the live table is the one it recorded (see sync.kernel_matches).
    GENERATION_SET: ("set", "meta mark", ()),
}
AFFINITY_MAP = "affinity"
# Endpoint map -> (its key, the count map whose verdicts lead to its pick chains).
PICKS = {
    "service_endpoints": (KEY, "service_endpoint_count"),
    "nodeport_endpoints": (NODEPORT_KEY, "nodeport_endpoint_count"),
    "external_local_endpoints": (KEY, "external_local_endpoint_count"),
    "nodeport_local_endpoints": (NODEPORT_KEY, "nodeport_local_endpoint_count"),
}


def affinity_sets(timeout):
    """Per affinity timeout: the Service addresses and NodePorts that use it.

    A rule's `update ... timeout` is a constant, so each distinct timeout gets a rule.
    """
    return f"affinity_{timeout}", f"affinity_nodeports_{timeout}"


class NftProxyError(ValueError):
    """A services model the renderer cannot turn into rules."""


def pick_chain(endpoint_map, count):
    return f"{endpoint_map.removesuffix('_endpoints')}_pick_{count}"


def pick_rule(endpoint_map, count):
    key = PICKS[endpoint_map][0]
    return f"meta l4proto {L4} dnat ip to {key} . numgen random mod {count} map @{endpoint_map}"


def _balance(elements, endpoint_map, key, endpoints):
    """Number the endpoints 0..n-1 under `key` and send `key` to the pick chain for n."""
    for index, ep in enumerate(endpoints):
        elements[endpoint_map].add(f"{key} . {index} : {ep.ip} . {ep.port}")
    elements[PICKS[endpoint_map][1]].add(f"{key} : goto {pick_chain(endpoint_map, len(endpoints))}")


# The sets an external destination (an externalIP port, or a NodePort) is entered in:
# (all endpoints, eTP Local marker, local endpoints, no local endpoint, eTP Cluster marker,
# no endpoint at all).
EXTERNAL_IP_SETS = ("service_endpoints", "external_ips_local", "external_local_endpoints",
                    "no_local_endpoints", "external_ips_masq", "no_endpoints")
NODEPORT_SETS = ("nodeport_endpoints", "nodeports_local", "nodeport_local_endpoints",
                 "no_local_nodeports", "nodeports_masq", "no_endpoint_nodeports")
# A verdict of the categorisation, as a no_endpoints map spells it.
VERDICTS = {REJECT: f"goto {REJECT_CHAIN}", DROP: "drop"}


def _external(elements, sets, key, port):
    """An external destination: pods and the node reach every endpoint; from outside,
    eTP Cluster masquerades, eTP Local keeps the client's address for this node's
    endpoints, and drops (in filter_prerouting) when there are none here."""
    every_endpoint, local_marker, local_endpoints, no_local, masq_marker, no_endpoints = sets
    verdict = port.external_verdict
    if verdict and verdict[0] == REJECT:
        elements[no_endpoints].add(f"{key} : {VERDICTS[REJECT]}")
        return
    _balance(elements, every_endpoint, key, port.cluster_endpoints)
    if MASQ_EXTERNAL in port.masquerade:
        elements[masq_marker].add(key)
        return
    elements[local_marker].add(key)  # MASQ_EXTERNAL_FROM_NODE: the node's own traffic only
    if verdict:
        elements[no_local].add(key)
    else:
        _balance(elements, local_endpoints, key, port.local_endpoints)


def _port_elements(elements, affinity, port):
    """The elements that spell one Service port's categorisation."""
    key = f"{port.cluster_ip} . {port.l4} . {port.port}"
    externals = [f"{address} . {port.l4} . {port.port}" for address in port.external_ips]
    nodeport = f"{port.l4} . {port.node_port}" if port.node_port else None
    elements["service_ips"].update([port.cluster_ip, *port.external_ips])
    if MASQ_HAIRPIN in port.masquerade:
        elements["hairpin"].update(f"{ep.ip} . {ep.ip}" for ep in port.hairpin_endpoints)
    if MASQ_OUTSIDE_CLUSTER in port.masquerade:
        elements["cluster_ips"].add(key)
    if port.internal_verdict:
        elements["no_endpoints"].add(f"{key} : {VERDICTS[port.internal_verdict[0]]}")
    else:
        _balance(elements, "service_endpoints", key, port.internal_endpoints)
    for external in externals:
        _external(elements, EXTERNAL_IP_SETS, external, port)
    if nodeport:
        _external(elements, NODEPORT_SETS, nodeport, port)
    if port.affinity_timeout:
        by_address, by_nodeport = affinity.setdefault(int(port.affinity_timeout), (_Tally(), _Tally()))
        by_address.update([key, *externals])
        by_nodeport.update([nodeport] if nodeport else [])


class _Tally(dict):
    """A set that counts: element -> how many times the Service ports added it. Two ports
    may share an element (a pod behind two Services hairpins once; two Services share an
    externalIP), so a Service's change deletes an element only when no other port adds it."""

    __slots__ = ()

    def add(self, value):
        self[value] = self.get(value, 0) + 1

    def update(self, values):
        for value in values:
            self[value] = self.get(value, 0) + 1


def _tally(ports):
    """{set or map: _Tally} of what `ports` (categorized ServicePorts) add, the affinity sets
    of their timeouts included."""
    elements = {name: _Tally() for name in SETS}
    affinity = {}
    for port in ports:
        _port_elements(elements, affinity, port)
    for timeout, (by_address, by_nodeport) in affinity.items():
        address_set, nodeport_set = affinity_sets(timeout)
        elements[address_set] = by_address
        elements[nodeport_set] = by_nodeport
    return elements


def _elements(model, node):
    """({set or map: {element}}, affinity timeouts in use, {set or map: {element: count}} of
    the elements more than one Service port adds)."""
    elements, affinity = {}, []
    tallies = _tally(categorize(model, node))
    for name, tally in tallies.items():
        elements[name] = set(tally)
        if name.startswith("affinity_") and not name.startswith("affinity_nodeports_"):
            affinity.append(int(name[len("affinity_"):]))
    return elements, sorted(affinity), _shared(tallies)


def _shared(tallies):
    return {name: {value: count for value, count in tally.items() if count > 1}
            for name, tally in tallies.items() if any(count > 1 for count in tally.values())}


def _set_declaration(name, kind, typeof, flags):
    lines = [f"\t{kind} {name} {{", f"\t\ttypeof {typeof}"]
    if flags:
        lines.append(f"\t\tflags {','.join(flags)}")
    lines.append("\t}")
    return lines


def _skeleton(table, cluster_cidr, timeouts):
    cidr = checked_cluster_cidr(cluster_cidr)
    mark = f"meta mark set meta mark | {MASQ_MARK:#x}"
    not_loopback = "ip daddr != 127.0.0.0/8"
    nodeport = f"fib daddr type local {not_loopback}"
    outside = f"ip saddr != {cidr} fib saddr type != local"
    lines = [f"table {FAMILY} {table} {{"]
    for name, (kind, typeof, flags) in SETS.items():
        lines += _set_declaration(name, kind, typeof, flags)
    for timeout in timeouts:
        address_set, nodeport_set = affinity_sets(timeout)
        lines += _set_declaration(address_set, "set", KEY, ())
        lines += _set_declaration(nodeport_set, "set", NODEPORT_KEY, ())
    lines += [
        # Filled by the rules below as clients connect: client . Service -> endpoint.
        f"\tmap {AFFINITY_MAP} {{",
        f"\t\ttypeof ip saddr . {KEY} : {ENDPOINT}",
        "\t\tflags timeout",
        "\t}",
    ]

    def chain(name, hook, *rules):
        body = [f"\tchain {name} {{"]
        if hook:
            body.append(f"\t\t{hook}")
        body += [f"\t\t{rule}" for rule in rules]
        body.append("\t}")
        return body

    lines += chain(REJECT_CHAIN, None, "reject")
    # Filter verdicts on the Service's own address, before any DNAT could hide it
    # (kube-proxy's filter-prerouting/input/forward/output chains, priority -110).
    lines += chain(
        "filter_prerouting",
        "type filter hook prerouting priority -110; policy accept;",
        f"ct state new {outside} {KEY} @no_local_endpoints drop",
        f"ct state new {outside} {nodeport} {NODEPORT_KEY} @no_local_nodeports drop",
    )
    no_endpoints = f"ct state new {KEY} vmap @no_endpoints"
    no_endpoint_nodeports = f"ct state new {nodeport} {NODEPORT_KEY} vmap @no_endpoint_nodeports"
    lines += chain("filter_input", "type filter hook input priority -110; policy accept;",
                   no_endpoints, no_endpoint_nodeports)
    lines += chain("filter_forward", "type filter hook forward priority -110; policy accept;", no_endpoints)
    lines += chain("filter_output", "type filter hook output priority -110; policy accept;",
                   no_endpoints, no_endpoint_nodeports)
    lines += chain("nat_prerouting", "type nat hook prerouting priority dstnat; policy accept;",
                   "jump services")
    # nft 1.0.6 refuses the name `dstnat` in an output chain.
    lines += chain("nat_output", "type nat hook output priority -100; policy accept;", "jump services")
    lines += chain(
        "services",
        None,
        # Masquerade decisions first: they read the Service address that DNAT replaces.
        f"{KEY} @cluster_ips ip saddr != {cidr} {mark}",
        f"{KEY} @external_ips_masq {mark}",
        f"{nodeport} {NODEPORT_KEY} @nodeports_masq {mark}",
        f"fib saddr type local {KEY} @external_ips_local {mark}",
        f"fib saddr type local {nodeport} {NODEPORT_KEY} @nodeports_local {mark}",
        f"meta l4proto {L4} dnat ip to ip saddr . {KEY} map @{AFFINITY_MAP}",
        f"{outside} {KEY} vmap @external_local_endpoint_count",
        f"{outside} {nodeport} {NODEPORT_KEY} vmap @nodeport_local_endpoint_count",
        f"{KEY} vmap @service_endpoint_count",
        f"{nodeport} {NODEPORT_KEY} vmap @nodeport_endpoint_count",
    )
    # After DNAT: remember the endpoint a ClientIP-affinity client got, keyed by the
    # address it asked for (the conntrack original tuple), for `timeout` seconds.
    record = []
    for timeout in timeouts:
        address_set, nodeport_set = affinity_sets(timeout)
        original = "ct original ip daddr . meta l4proto . ct original proto-dst"
        update = (f"update @{AFFINITY_MAP} {{ ip saddr . {original} timeout {timeout}s : {ENDPOINT} }}")
        record.append(f"ct state new ct status dnat meta l4proto {L4} {original} @{address_set} {update}")
        record.append(
            f"ct state new ct status dnat meta l4proto {L4} ct original ip daddr != @service_ips "
            f"meta l4proto . ct original proto-dst @{nodeport_set} {update}"
        )
    if record:
        lines += chain("affinity_prerouting",
                       "type filter hook prerouting priority dstnat + 1; policy accept;", *record)
        lines += chain("affinity_output", "type filter hook output priority -99; policy accept;", *record)
    lines += chain(
        "nat_postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        f"meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} meta mark set meta mark ^ {MASQ_MARK:#x} "
        "masquerade fully-random",
        "ct status dnat ip saddr . ip daddr @hairpin masquerade fully-random",
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _pick_chains(elements):
    """{chain: rule}: for every endpoint map, counts 1..PICK_CHAINS and any larger in use."""
    chains = {}
    for endpoint_map, (_key, count_map) in PICKS.items():
        counts = set(range(1, PICK_CHAINS + 1))
        counts.update(int(e.rsplit("_", 1)[1]) for e in elements[count_map])
        for count in sorted(counts):
            chains[pick_chain(endpoint_map, count)] = pick_rule(endpoint_map, count)
    return chains


def render_nftables(model, node, table=DEFAULT_TABLE, generation=None):
    """The table for `node`: {"table", "skeleton", "pick_chains", "elements"}.

    The skeleton (fixed chains and set declarations) depends only on the cluster CIDR and
    the affinity timeouts in use; everything per Service is an element, and the pick
    chains depend only on the endpoint counts in use. `generation` (a 32-bit number, see
    sync.generation) is the one element of the generation set.
    """
    return render_counted(model, node, table, generation)[0]


def render_counted(model, node, table=DEFAULT_TABLE, generation=None):
    """(render_nftables' table, its shared elements): {set or map: {element: count}} of the
    elements more than one Service port adds, which render_update needs to know what a
    Service's change deletes."""
    elements, timeouts, shared = _elements(model, node)
    return _ruleset(table, model["cluster_cidr"], timeouts, elements, generation), shared


def _ruleset(table, cluster_cidr, timeouts, elements, generation):
    if generation is not None:
        elements[GENERATION_SET] = {str(generation)}
    # One order, whoever computed the elements: the boot script lists them in it.
    names = [*SETS, *(name for timeout in timeouts for name in affinity_sets(timeout))]
    return {
        "table": table,
        "skeleton": _skeleton(table, cluster_cidr, timeouts),
        "pick_chains": _pick_chains(elements),
        "elements": {name: elements[name] if isinstance(elements[name], list) else sorted(elements[name])
                     for name in names},
    }


def render_update(ruleset, shared, before, after, model, node, generation=None):
    """(render_counted(model, ...)) computed from the table of another model, rendering only
    the Services that differ: `ruleset` and `shared` are render_counted's for that model (same
    node, table and cluster CIDR), `before` and `after` that model's and `model`'s Services
    that differ (a Service in one only is added or gone). None when the skeleton would change
    (an affinity timeout comes or goes): then render whole.

    Every element's count is the whole render's: the count kept for the old model (1 for an
    element listed once, more in `shared`), less what `before` adds, plus what `after` adds.
    """
    gone, came = _tally(categorize(dict(model, services=before), node)), \
        _tally(categorize(dict(model, services=after), node))
    elements = dict(ruleset["elements"], **{GENERATION_SET: []})
    shared = {name: dict(counts) for name, counts in shared.items()}
    for name in set(gone) | set(came):
        change = dict(came.get(name, {}))
        for value, count in gone.get(name, {}).items():
            change[value] = change.get(value, 0) - count
        change = {value: count for value, count in change.items() if count}
        if not change:
            continue
        if name not in elements:
            return None
        values = list(elements[name])
        counts = shared.setdefault(name, {})
        for value, step in change.items():
            at = bisect.bisect_left(values, value)
            listed = at < len(values) and values[at] == value
            count = (counts.get(value, 1) if listed else 0) + step
            if count < 0:
                return None
            if count and not listed:
                values.insert(at, value)
            elif listed and not count:
                del values[at]
            if count > 1:
                counts[value] = count
            else:
                counts.pop(value, None)
        if not counts:
            del shared[name]
        elements[name] = values
    timeouts = sorted(int(name[len("affinity_"):]) for name in elements
                      if name.startswith("affinity_") and not name.startswith("affinity_nodeports_"))
    if any(not elements[affinity_sets(timeout)[0]] for timeout in timeouts):
        return None  # a timeout no longer used: its sets leave the skeleton
    return _ruleset(ruleset["table"], model["cluster_cidr"], timeouts, elements, generation), shared


def _element_statements(verb, table, name, values):
    values = list(values)
    for start in range(0, len(values), ELEMENTS_PER_STATEMENT):
        chunk = values[start:start + ELEMENTS_PER_STATEMENT]
        yield f"{verb} element {FAMILY} {table} {name} {{ " + ", ".join(chunk) + " }"


def _add_chain(table, name, rule):
    return [f"add chain {FAMILY} {table} {name}", f"add rule {FAMILY} {table} {name} {rule}"]


def full_content(ruleset):
    """The table, its pick chains and all its elements: the content of a full (re)load."""
    table = ruleset["table"]
    lines = [ruleset["skeleton"].rstrip("\n")]
    for name, rule in ruleset["pick_chains"].items():
        lines += _add_chain(table, name, rule)
    for name, values in ruleset["elements"].items():
        lines += _element_statements("add", table, name, values)
    return "\n".join(lines) + "\n"


def shape(ruleset):
    """{"chains": {chain: rule count}, "sets": [names]}: what a listing must show.

    Comparing this with the live table catches a rule added or deleted by hand (or a
    chain or set gone) without reading nft's rule syntax back.
    """
    chains, sets, current = {}, [], None
    for line in ruleset["skeleton"].splitlines():
        words = line.split()
        if line.startswith("\tchain "):
            current = words[1]
            chains[current] = 0
        elif line.startswith(("\tset ", "\tmap ")):
            sets.append(words[1])
        elif line.startswith("\t\t") and current and not words[0] == "type":
            chains[current] += 1
        elif line == "\t}":
            current = None
    chains.update({name: 1 for name in ruleset["pick_chains"]})
    return {"chains": chains, "sets": sorted(sets)}


def changes(ruleset, live):
    """What differs between the ruleset and the live table, as parsed by `parse_listing`.

    {"reload": why the table must be loaded whole, or None,
     "elements": {set: (to_delete, to_add)}, "add_chains": [...], "delete_chains": [...]}
    """
    wanted_shape = shape(ruleset)
    fixed = {name: count for name, count in wanted_shape["chains"].items() if "_pick_" not in name}
    live_fixed = {name: count for name, count in live["chains"].items() if "_pick_" not in name}
    reload = None
    if live_fixed != fixed:
        reload = "its chains or rules differ from podnet's"
    elif sorted(live["elements"]) != wanted_shape["sets"]:
        reload = "its sets differ from podnet's"
    elif any(count != 1 for name, count in live["chains"].items() if "_pick_" in name):
        reload = "a pick chain was edited"
    live_picks = {name for name in live["chains"] if "_pick_" in name}
    add_chains = sorted(set(ruleset["pick_chains"]) - live_picks)
    if reload is None and add_chains:
        reload = f"a new endpoint count needs pick chains {', '.join(add_chains)}"
    element_changes = {}
    for name, wanted in ruleset["elements"].items():
        have = live["elements"].get(name, ())
        # A set a delta left alone is the record's own list (see render_update): no set built.
        if have is wanted or (isinstance(have, list) and have == wanted):
            continue
        have, wanted = set(have), set(wanted)
        if have != wanted:
            element_changes[name] = (sorted(have - wanted), sorted(wanted - have))
    return {
        "reload": reload,
        "elements": element_changes,
        "add_chains": add_chains,
        "delete_chains": sorted(live_picks - set(ruleset["pick_chains"])),
    }


def has_changes(diff):
    return bool(diff["reload"] or diff["elements"] or diff["add_chains"] or diff["delete_chains"])


def update_script(ruleset, diff):
    """One transaction that turns the live table into the wanted one, element by element.

    New pick chains come first (new verdicts jump to them), deletes before adds (an
    endpoint index changes hands when a Service loses an endpoint), and unused pick
    chains go last, once no verdict refers to them.
    """
    table = ruleset["table"]
    lines = []
    for name in diff["add_chains"]:
        lines += _add_chain(table, name, ruleset["pick_chains"][name])
    for name, (to_delete, _to_add) in diff["elements"].items():
        lines += _element_statements("delete", table, name, to_delete)
    for name, (_to_delete, to_add) in diff["elements"].items():
        lines += _element_statements("add", table, name, to_add)
    for name in diff["delete_chains"]:
        lines.append(f"delete chain {FAMILY} {table} {name}")
    return "\n".join(lines) + ("\n" if lines else "")


# --- reading nft's JSON listing back into the element strings rendered above ---

def _json_value(value):
    if isinstance(value, dict):
        if "concat" in value:
            return " . ".join(_json_value(part) for part in value["concat"])
        if "range" in value:
            low, high = value["range"]
            return f"{_json_value(low)}-{_json_value(high)}"
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "elem" in value:
            return _json_value(value["elem"]["val"])
        if "goto" in value:
            return f"goto {value['goto']['target']}"
        if "jump" in value:
            return f"jump {value['jump']['target']}"
        for verdict in ("drop", "accept", "return", "continue"):
            if verdict in value:
                return verdict
        raise NftProxyError(f"unexpected value in nft's listing: {value!r}")
    return str(value)


def _json_element(element):
    if isinstance(element, list):
        key, data = element
        return f"{_json_value(key)} : {_json_value(data)}"
    return _json_value(element)


def parse_listing(listing):
    """{"elements": {set or map: {element}}, "chains": {name: rule count}} from `nft -j list table`."""
    elements, chains = {}, {}
    for item in listing.get("nftables", []):
        for kind in ("set", "map"):
            if kind in item:
                obj = item[kind]
                elements[obj["name"]] = {_json_element(e) for e in obj.get("elem", [])}
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], 0)
        if "rule" in item:
            chains[item["rule"]["chain"]] = chains.get(item["rule"]["chain"], 0) + 1
    return {"elements": elements, "chains": chains}


def stale_affinity(entries, ruleset):
    """Affinity entries (strings `client . key : endpoint`) whose endpoint no longer serves
    that Service port here; the module deletes them so clients move on at once."""
    if not entries:
        return []
    serving = {}
    for name in ("service_endpoints", "nodeport_endpoints"):
        for element in ruleset["elements"].get(name, ()):
            key_and_share, endpoint = element.split(" : ")
            key = key_and_share.rsplit(" . ", 1)[0]
            serving.setdefault(key, set()).add(endpoint)
    stale = []
    for entry in sorted(entries):
        key_part, endpoint = entry.split(" : ")
        parts = key_part.split(" . ")  # client, address, protocol, port
        address_key = " . ".join(parts[1:])
        nodeport_key = " . ".join(parts[2:])
        if endpoint not in serving.get(address_key, set()) | serving.get(nodeport_key, set()):
            stale.append(key_part)
    return stale

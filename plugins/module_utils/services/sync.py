"""The proxy modules' decisions about the live kernel state, as pure functions.

Both proxy modules keep a record of what they last applied. What they then send is a
decision between that record, the live state and the wanted ruleset:

- nftables: element deltas in one transaction, or the table loaded whole (a missing or
  hand-changed table, a new pick chain, a changed skeleton);
- iptables: the chains whose live rule count no longer matches the record are rewritten.

No I/O here: the modules list the kernel and pass the text in; tests are tables.
"""

# generation and kernel_shows are shared with the nftables module (proxy_nftables imports
# generation from here).
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    generation,
    kernel_shows,
    sha256,
)
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import TABLES
from ansible_collections.podnet.network.plugins.module_utils.services.nft import (
    AFFINITY_MAP,
    GENERATION_SET,
    changes,
    has_changes,
)

# --- nftables: nothing to do, at a glance -------------------------------------------


def inputs_digest(model_sha256, node, table, path, renderer):
    """The digest of everything a proxy_nftables run's table and boot script follow from:
    the model's text as the controller sent it (its sha256: the module's `model_sha256`, as
    the controller's `hash('sha256')` gives it), the node, table and boot path, and the
    renderer's own source (`renderer`; None when unknown, which never matches)."""
    if model_sha256 is None or renderer is None:
        return None
    return sha256("\0".join((model_sha256, node, table, path or "", renderer)))


def kernel_matches(record, live_generation, live_chains, live_rules=None):
    """True when the kernel shows the table the record describes, as far as milliseconds
    tell: its generation set holds the record's generation (`live_generation`: the set's
    elements, None when the table is gone), its chains are the recorded ones by name
    (`live_chains`) with the recorded number of rules each (`live_rules`: {chain: count},
    None when unknown). A deleted, flushed (`flush ruleset` or `flush table`) or reloaded
    table, a chain added or removed, a rule added or deleted is seen; a rule or an element
    edited in place is not (verify_live lists everything instead, at seconds per 10,000
    Services)."""
    if not record or not record.get("inputs"):
        return False
    return kernel_shows(generation(record["inputs"]), record.get("chains"), live_generation, live_chains,
                        live_rules)


# --- nftables: reload the table whole, or send element deltas -------------------------


def trusted_live(record, verify_live):
    """The record read as the live table when the module may trust it, else None (list the
    kernel). Listing 10,000 Services costs seconds; without verify_live a record is trusted,
    and a refused update then falls back to a whole reload."""
    if verify_live or record is None:
        return None
    # The skeleton always declares the affinity map; its entries are the kernel's run-time
    # pins, never recorded. Without it the record would never match the table's sets, and
    # every trusted run would reload the table whole.
    elements = {AFFINITY_MAP: [], **record.get("elements", {})}
    return {"elements": elements, "chains": record.get("chains", {})}


def plan_nft_update(ruleset, live, record, verify_live):
    """What proxy_nftables sends for `ruleset`, given `live` (the parsed listing, or the
    record as `trusted_live` gives it; None when the table does not exist) and `record`.

    {"reload": why the table is loaded whole, or None,
     "diff": changes(ruleset, live) when an update is possible, else None,
     "forget_affinity": whether stale session-affinity entries must be looked for,
     "affinity_from_live": whether `live` holds the affinity entries (else list the map),
     "fallback": whether a refused update is retried as a whole reload}
    """
    if live is None:
        return {"reload": "it does not exist", "diff": None, "forget_affinity": False,
                "affinity_from_live": False, "fallback": False}
    diff = changes(ruleset, live)
    reload = diff["reload"]
    if not reload and record and record.get("skeleton_sha256") != sha256(ruleset["skeleton"]):
        reload = "its skeleton changed (cluster CIDR or affinity timeouts)"
    if reload:
        return {"reload": reload, "diff": None, "forget_affinity": False,
                "affinity_from_live": False, "fallback": False}
    # A client pinned to an endpoint that no longer serves the Service moves on now; a
    # listed table also shows pins that outlived a previous run.
    endpoint_changes = bool({"service_endpoints", "nodeport_endpoints"} & set(diff["elements"]))
    return {
        "reload": None,
        "diff": diff,
        "forget_affinity": endpoint_changes or (verify_live and bool(live["elements"].get(AFFINITY_MAP))),
        "affinity_from_live": verify_live,
        "fallback": trusted_live(record, verify_live) is not None,
    }


def update_summary(table_name, diff):
    """The action line of an element update, or None when the elements already match. The
    generation set is bookkeeping, as the record is: a new generation alone is no change."""
    diff = dict(diff, elements={name: change for name, change in diff["elements"].items()
                                if name != GENERATION_SET})
    if not has_changes(diff):
        return None
    deleted = sum(len(d) for d, _added in diff["elements"].values())
    added = sum(len(a) for _deleted, a in diff["elements"].values())
    return (f"update table {table_name}: {deleted} elements deleted, {added} added, "
            f"{len(diff['add_chains'])} pick chains added, {len(diff['delete_chains'])} deleted")


# --- iptables: chains changed outside podnet -----------------------------------------


def parse_iptables_save(text):
    """{chain: [rule lines]} of the KUBE-* chains in one table's iptables-save output."""
    chains = {}
    for line in text.splitlines():
        if line.startswith(":KUBE-"):
            chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A KUBE-"):
            chains.setdefault(line.split()[1], []).append(line)
    return chains


def iptables_drift(previous, live):
    """`previous` with every chain whose live rule count differs marked, so it is rewritten;
    and the marks ("table chain").

    iptables-save prints rules in its own canonical order, not as rendered, so rules are
    compared by count: a rule added or deleted by hand shows; a chain deleted by hand too.
    """
    result = {}
    marks = []
    for table in TABLES:
        chains = {}
        for chain, rules in (previous.get(table) or {}).items():
            if len(live[table].get(chain, [None] * (len(rules) + 1))) != len(rules):
                chains[chain] = ["(changed outside podnet)"]
                marks.append(f"{table} {chain}")
            else:
                chains[chain] = rules
        result[table] = chains
    return result, marks

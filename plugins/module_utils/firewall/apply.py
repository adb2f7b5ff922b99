"""Make cluster traffic pass a node's firewall, and take back exactly what podnet added.

The I/O half of firewall/detect.py: reads the live ruleset, adds podnet's chains and
jumps where a foreign base chain drops, and records each addition in a state file so
`remove` (reset) and a later run (the firewall went away) take back exactly those.

Standard library only and no Ansible imports: the podnet_restore role ships this package
to the nodes (podnet_node), where the boot restore and the self-repair timer run it.
"""

import hashlib
import json
import os
import shutil
import subprocess

from .detect import (
    IPTABLES_CHAIN,
    describe,
    findings,
    iptables_restore_script,
    nft_chain_script,
    nft_jump_handles,
)

STATE_FILE = "/var/lib/podnet/firewall.json"


class FirewallError(RuntimeError):
    """A command podnet needs failed."""


def _run(argv, stdin=None, check=True):
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise FirewallError("%s failed: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()))
    return proc


def live_ruleset(chains=None):
    """Every chain, and the rules of the dropping base chains only: a full `list ruleset`
    would also print podnet's Service maps (thousands of elements) at every heal round.
    A fresh node has no nft yet (the plan reads it before podnet's packages go in): nothing
    read, and the report says so; the node play reads it again once nft is there.
    `chains`: the objects of `nft -j list chains` when the caller has read them already
    (node_info's glance), else they are read here."""
    if shutil.which("nft") is None:
        return {"nftables": [], "unread": "nft is not installed yet"}
    if chains is None:
        chains = json.loads(_run(["nft", "-j", "list", "chains"]).stdout or "{}").get("nftables", [])
    objects = list(chains)
    for _kind, chain in [next(iter(o.items())) for o in objects if isinstance(o, dict) and "chain" in o]:
        if chain.get("hook") in ("forward", "input") and chain.get("policy") == "drop":
            # Stateless (-s): a counter's value is traffic, not the firewall's shape.
            listing = _run(["nft", "-s", "-j", "list", "chain", chain["family"], chain["table"],
                            chain["name"]])
            objects += [o for o in json.loads(listing.stdout or "{}").get("nftables", []) if "rule" in o]
    return {"nftables": objects}


def _read_state(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {"iptables": [], "nft": []}


def _write_state(path, state):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def _iptables_chain_lines(chain):
    proc = _run(["iptables", "-w", "-S", chain], check=False)
    if proc.returncode != 0:
        return None
    return [line for line in proc.stdout.splitlines() if line.startswith("-A ")]


def _nft_chain_rules(family, table, chain):
    """The chain's rules as nft lists them (no handles, no counters), or None when absent."""
    proc = _run(["nft", "-s", "list", "chain", family, table, chain], check=False)
    if proc.returncode != 0:
        return None
    lines = [line.strip() for line in proc.stdout.splitlines()]
    return [line for line in lines if line and not line.startswith(("table ", "chain ", "}"))]


def _ensure_iptables(found, passes, check, actions):
    hooks = sorted({finding["hook"] for finding in found})
    script = iptables_restore_script(hooks, **passes)
    want = {IPTABLES_CHAIN[hook]: [line for line in script.splitlines()
                                   if line.startswith("-A %s " % IPTABLES_CHAIN[hook])]
            for hook in hooks}
    if any(_iptables_chain_lines(chain) != lines for chain, lines in want.items()):
        actions.append("write iptables chains %s" % ", ".join(sorted(want)))
        if not check:
            _run(["iptables-restore", "-w", "--noflush"], stdin=script)
    for finding in found:
        jump = ["-j", finding["own_chain"]]
        if _run(["iptables", "-w", "-C", finding["jump_from"]] + jump, check=False).returncode != 0:
            actions.append("insert iptables jump %s -> %s" % (finding["jump_from"], finding["own_chain"]))
            if not check:
                _run(["iptables", "-w", "-I", finding["jump_from"], "1"] + jump)


def _ensure_nft(finding, passes, ruleset, check, actions):
    family, table, own = finding["family"], finding["table"], finding["own_chain"]
    script = nft_chain_script(family, table, finding["hook"], **passes)
    want = [line.split(" %s " % own, 1)[1] for line in script.splitlines() if line.startswith("add rule ")]
    if _nft_chain_rules(family, table, own) != want:
        actions.append("write nft chain %s %s %s" % (family, table, own))
        if not check:
            _run(["nft", "-f", "-"], stdin=script)
    if not nft_jump_handles(ruleset, family, table, finding["jump_from"], own):
        actions.append("insert nft jump %s %s %s -> %s" % (family, table, finding["jump_from"], own))
        if not check:
            _run(["nft", "insert", "rule", family, table, finding["jump_from"], "jump", own])


def _table_exists(family, table):
    return _run(["nft", "list", "table", family, table], check=False).returncode == 0


def _undo_iptables(entry, actions, check, keep_chain=False):
    # iptables-nft creates the filter table when asked about it: a table that went away
    # (the firewall was removed) holds nothing of podnet's, and must not come back.
    if not _table_exists(entry.get("family") or "ip", entry.get("table") or "filter"):
        return
    jump = ["-j", entry["own_chain"]]
    while _run(["iptables", "-w", "-C", entry["jump_from"]] + jump, check=False).returncode == 0:
        actions.append("delete iptables jump %s -> %s" % (entry["jump_from"], entry["own_chain"]))
        if check:
            break
        _run(["iptables", "-w", "-D", entry["jump_from"]] + jump)
    if not keep_chain and _iptables_chain_lines(entry["own_chain"]) is not None:
        actions.append("delete iptables chain %s" % entry["own_chain"])
        if not check:
            _run(["iptables", "-w", "-F", entry["own_chain"]])
            # Another recorded jump (DOCKER-USER and FORWARD) may still point here: keep then.
            _run(["iptables", "-w", "-X", entry["own_chain"]], check=False)


def _undo_nft(entry, ruleset, actions, check):
    family, table, own = entry["family"], entry["table"], entry["own_chain"]
    if not _table_exists(family, table):
        return
    for handle in nft_jump_handles(ruleset, family, table, entry["jump_from"], own):
        actions.append("delete nft jump %s %s %s -> %s" % (family, table, entry["jump_from"], own))
        if not check:
            _run(["nft", "delete", "rule", family, table, entry["jump_from"], "handle", str(handle)])
    if _nft_chain_rules(family, table, own) is not None:
        actions.append("delete nft chain %s %s %s" % (family, table, own))
        if not check:
            _run(["nft", "delete", "chain", family, table, own])


def _key(entry):
    return (entry.get("family"), entry.get("table"), entry["jump_from"], entry["own_chain"])


def ensure(cluster_cidr, service_cidr, state_file=STATE_FILE, check=False, vxlan_peers=(), vxlan_port=8472):
    """Let cluster traffic pass every dropping base chain (and VXLAN from `vxlan_peers`, the
    node IPs that reach this node over it); take back what is no longer needed.
    Returns {"findings": [...], "report": [lines], "actions": [...]}."""
    passes = {"cluster_cidr": cluster_cidr, "service_cidr": service_cidr,
              "vxlan_peers": tuple(vxlan_peers or ()), "vxlan_port": int(vxlan_port)}
    ruleset = live_ruleset()
    found = findings(ruleset)
    actions = []
    # What was added for a firewall that changed or went away goes first; a chain still
    # used by a current finding (PODNET-FORWARD jumped from elsewhere now) keeps its rules.
    keep = {_key(f) for f in found}
    in_use = {f["own_chain"] for f in found}
    previous = _read_state(state_file)
    for entry in previous.get("iptables", []):
        if _key(entry) not in keep:
            _undo_iptables(entry, actions, check, keep_chain=entry["own_chain"] in in_use)
    for entry in previous.get("nft", []):
        if _key(entry) not in keep:
            _undo_nft(entry, ruleset, actions, check)
    if actions and not check:
        ruleset = live_ruleset()
    iptables_found = [f for f in found if f["kind"] == "iptables"]
    if iptables_found:
        _ensure_iptables(iptables_found, passes, check, actions)
    for finding in found:
        if finding["kind"] == "nftables":
            _ensure_nft(finding, passes, ruleset, check, actions)
    fields = ("family", "table", "hook", "own_chain", "jump_from")
    state = {"iptables": [{k: f[k] for k in fields} for f in iptables_found],
             "nft": [{k: f[k] for k in fields} for f in found if f["kind"] == "nftables"]}
    if not check and state != previous:
        _write_state(state_file, state)
    return {"findings": found, "report": report_lines(found, ruleset), "actions": actions}


def report_lines(found, ruleset):
    """The findings as sentences, and a line when the ruleset could not be read."""
    report = [describe(f) for f in found]
    if ruleset.get("unread"):
        report.append("firewall not read: %s (the node play reads it after installing podnet's packages)"
                      % ruleset["unread"])
    return report


def fingerprint(state_file=STATE_FILE, ruleset=None):
    """A digest of everything `ensure` and `remove` read: every chain's place and policy (not
    its handle, which a reload of another table renews), the dropping base chains' rules, the
    record, and the rules of podnet's own chains and of the chains that jump to them.
    `ruleset`: live_ruleset's reading when the caller has it (node_info's survey)."""
    ruleset = live_ruleset() if ruleset is None else ruleset
    chains = [dict((k, v) for k, v in o["chain"].items() if k != "handle")
              for o in ruleset["nftables"] if isinstance(o, dict) and "chain" in o]
    rules = [o for o in ruleset["nftables"] if isinstance(o, dict) and "rule" in o]
    previous = _read_state(state_file)
    own = []
    recorded = [dict(e, kind="iptables") for e in previous.get("iptables", [])]
    recorded += [dict(e, kind="nftables") for e in previous.get("nft", [])]
    entries = findings(ruleset) + recorded
    for entry in entries:
        if entry["kind"] == "iptables":
            own.append([_iptables_chain_lines(entry["own_chain"]), _iptables_chain_lines(entry["jump_from"])])
        else:
            own.append(_nft_chain_rules(entry["family"], entry["table"], entry["own_chain"]))
    parts = [ruleset.get("unread"), chains, rules, previous, own]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def survey(ruleset=None):
    """What on the node would drop cluster traffic, as sentences; reads only. `ruleset`:
    live_ruleset's reading when the caller has it."""
    ruleset = live_ruleset() if ruleset is None else ruleset
    return report_lines(findings(ruleset), ruleset)


def remove(state_file=STATE_FILE, check=False):
    """Take back every chain and jump podnet recorded; the state file goes too."""
    previous = _read_state(state_file)
    actions = []
    ruleset = live_ruleset()
    for entry in previous.get("iptables", []):
        _undo_iptables(entry, actions, check)
    for entry in previous.get("nft", []):
        _undo_nft(entry, ruleset, actions, check)
    if not check and os.path.exists(state_file):
        os.remove(state_file)
        actions.append("remove %s" % state_file)
    return {"actions": actions}


def restore_at_boot(cluster_cidr, service_cidr, state_file=STATE_FILE, vxlan_peers=(), vxlan_port=8472):
    """The boot restore's and self-repair's step: lines to report."""
    result = ensure(cluster_cidr, service_cidr, state_file, vxlan_peers=vxlan_peers, vxlan_port=vxlan_port)
    handled = len(result["findings"])
    return result["actions"] or ["firewall: nothing to add (%d dropping chains handled)" % handled]


def heal(cluster_cidr, service_cidr, state_file=STATE_FILE, vxlan_peers=(), vxlan_port=8472):
    """podnet-heal's step: only the lines of what had to be put back."""
    return ensure(cluster_cidr, service_cidr, state_file, vxlan_peers=vxlan_peers,
                  vxlan_port=vxlan_port)["actions"]

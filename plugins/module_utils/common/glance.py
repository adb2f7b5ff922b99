"""The glance: what the controller can know of a node without asking it again.

A module that writes podnet's files or settings on a node (node_files, sysctl) notes what
it owns in an index on the node (`remember`). node_info, the plan's one round trip at the
start of a run, reads the live state of everything in that index (`look`): each file's
digest and mode, each sysctl's value. An action plugin then compares what its task wants
with that snapshot (`files_unchanged`, `sysctls_unchanged`) and skips the round trip when
they are equal: on a run with nothing to change, a task costs no node time at all.

A module whose state is the kernel's or its processes' (routes, the firewall, the test
pods, Service DNS, the Service NAT) settles instead
(`settle`): after a run, it records the digest of the task's arguments (the action plugin
computes it, `inputs_digest`) with a fingerprint of the live state it owns, read the way
`fingerprint` reads it. node_info reads the fingerprint again and reports, per recorded
digest, whether the live state is still the one that run left (`settled`). The same inputs
on an unchanged kernel have nothing to do.

The snapshot is read at the start of the run, so drift since the last run is found as
before; a task the snapshot cannot vouch for (a path or key not in the index, another
index, a value it cannot compare) goes to the node as it always did.

Pure standard library: `digest` and the comparisons run on the controller (action plugins),
`look` on the node (node_info); `remember` takes the module only to write through
module_io.
"""

import hashlib
import json
import os
import shutil

from ansible_collections.podnet.network.plugins.module_utils.common.nft_rules import rule_counts
from ansible_collections.podnet.network.plugins.module_utils.common.process import output
from ansible_collections.podnet.network.plugins.module_utils.common.sysctl import (
    live_value,
    normalized,
    render,
    same_value,
)

# Where the index lives unless a task says otherwise; the snapshot is of this one.
INDEX = "/var/lib/podnet/glance.json"
KINDS = ("files", "sysctls")
# A file larger than this is never vouched for (its task goes to the node): the glance
# stays cheap on the node and small in the controller's facts.
MAX_FILE_BYTES = 8 << 20
DEFAULT_MODE = 0o644


def digest(data, mode):
    """How the snapshot names a file's state: its content's sha256 and its mode."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return "%s %04o" % (hashlib.sha256(data).hexdigest(), mode)


def read_index(path=INDEX):
    """{kind: [names]} of the index; empty kinds when it is missing or not what podnet writes."""
    index = _read(path)
    lists = {kind: index.get(kind) if isinstance(index.get(kind), list) else [] for kind in KINDS}
    return {kind: sorted({name for name in names if isinstance(name, str)}) for kind, names in lists.items()}


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _states(index):
    """The settled states' records: {kind, args, inputs, live} each."""
    states = index.get("states") if isinstance(index.get("states"), list) else []
    return [s for s in states if isinstance(s, dict) and isinstance(s.get("args"), dict)
            and isinstance(s.get("inputs"), str) and s.get("kind") in FINGERPRINTS
            and isinstance(s.get("replay", {}), dict)]


def _write(module, path, index):
    from ansible_collections.podnet.network.plugins.module_utils.common.module_io import write_file

    write_file(module, path, json.dumps(index, indent=1, sort_keys=True) + "\n")


def remember(module, path=INDEX, **owned):
    """Add what a module owns to the index at `path`, by kind (files: absolute paths; sysctls:
    names); no write when it is all there already."""
    names = read_index(path)
    grown = {kind: sorted(set(names[kind]).union(more)) for kind, more in owned.items()}
    if all(grown[kind] == names[kind] for kind in grown):
        return
    index = _read(path)
    index.update(names, **grown)
    _write(module, path, index)


def settle(module, kind, args, inputs, path=INDEX, replay=None):
    """Record that a run with the task digest `inputs` left the live state `fingerprint(kind,
    args)` shows now. It replaces the record of the same kind and args (the same table, the
    same device): one record per thing owned. `replay`: what the module returns that later
    tasks read (the pods' addresses), returned again when the node is not asked."""
    if not inputs:
        return
    live = fingerprint(kind, args)
    index = _read(path)
    states = [s for s in _states(index) if not (s["kind"] == kind and s["args"] == args)]
    record = {"kind": kind, "args": args, "inputs": inputs, "live": live, "replay": replay or {}}
    if record in _states(index) or (live is None and len(states) == len(_states(index))):
        return
    # No fingerprint now (nft missing, a record the module would refuse): no record at all.
    index.update(read_index(path), states=states + ([record] if live is not None else []))
    _write(module, path, index)


def file_state(path):
    """The digest of the file at `path` as node_files reads it (through a symlink), None when
    there is none, "other" when it is something podnet cannot vouch for."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if not (stat.st_mode & 0o170000 == 0o100000) or stat.st_size > MAX_FILE_BYTES:
                return "other"
            return digest(handle.read(MAX_FILE_BYTES + 1), stat.st_mode & 0o7777)
    except FileNotFoundError:
        return "other" if os.path.lexists(path) else None  # a dangling symlink is something
    except OSError:
        return "other"


def look(path=INDEX, reading=None):
    """The snapshot: {"index": the index's path, "files": {path: file_state},
    "sysctls": {name: value}, "settled": {inputs: what to replay}} of everything in the index;
    a settled state is listed only when the live state is still the one recorded.
    `reading`: the run's Reading, whose listings the fingerprints share (node_info's survey
    of the firewall too); a new one when not given."""
    index, reading = read_index(path), reading or Reading()
    return {"index": path,
            "files": {name: file_state(name) for name in index["files"]},
            "sysctls": {name: live_value(name) for name in index["sysctls"]},
            "settled": {s["inputs"]: s.get("replay", {}) for s in _states(_read(path))
                        if fingerprint(s["kind"], s["args"], reading) == s["live"]}}


# --- fingerprints: the live state a settling module owns, read cheaply ---------------


class Reading:
    """The listings one node_info run shares: nft's chains (every family, one `nft -j list
    chains`) serve the firewall's survey and fingerprint and every settled nft table, and
    the firewall's ruleset is read once for its survey and its fingerprint. A module that
    settles reads afresh (a new Reading): its fingerprint is of the state it just left."""

    def __init__(self):
        self._chains, self._ruleset = (), None

    def chains(self):
        """Every chain object of `nft -j list chains` ({"family", "table", "name", ...}),
        None when nft is missing or fails."""
        if self._chains == ():
            listing = output(["nft", "-j", "list", "chains"])
            self._chains = None if listing is None else [
                item["chain"] for item in json.loads(listing).get("nftables", []) if "chain" in item]
        return self._chains

    def firewall_ruleset(self):
        """firewall/apply.live_ruleset, read once, from this reading's chains."""
        if self._ruleset is None:
            from ansible_collections.podnet.network.plugins.module_utils.firewall.apply import live_ruleset

            chains = self.chains()
            self._ruleset = live_ruleset(None if chains is None else [{"chain": c} for c in chains])
        return self._ruleset


def _listing(argv, keep=None):
    """A JSON listing's entries (those `keep` accepts), sorted: the kernel's dump order is not
    state. [] when the command fails (no such device), None when it cannot run."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        entries = json.loads(output(argv) or "[]")
    except ValueError:
        return None
    return sorted(json.dumps(e, sort_keys=True) for e in entries if keep is None or keep(e))


def routes_fingerprint(table, protocol, device):
    """podnet's routes in `table` (by `protocol`) and its VXLAN device: the link with its
    VXLAN data and flags, its IPv4 addresses, FDB entries, permanent neighbours, and its tx
    checksum offload. What the routes module reads and makes."""
    link = ["-d", "link", "show", "dev", device]
    parts = [_listing(["ip", "-j", "-4", "route", "show", "table", str(table), "proto", str(protocol)]),
             _listing(["ip", "-j", *link]), _listing(["ip", "-j", "-4", "addr", "show", "dev", device]),
             _listing(["bridge", "-j", "fdb", "show", "dev", device], lambda e: "dst" in e),
             _listing(["ip", "-j", "-4", "neigh", "show", "dev", device],
                      lambda e: "PERMANENT" in (e.get("state") or ()))]
    if parts[0] is None:
        return None
    if parts[1]:
        out = output(["ethtool", "-k", device]) or ""
        parts.append([line for line in out.splitlines() if line.startswith("tx-checksum-ip-generic:")])
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def digests(paths):
    """{path: sha256 of its content, None when there is no file}."""
    out = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                out[path] = hashlib.sha256(handle.read()).hexdigest()
        except FileNotFoundError:
            out[path] = None
    return out


def nft_fingerprint(family, table, generation_set, files, reading=None):
    """An nftables table podnet loaded, as its module knows it at a glance: the elements of its
    generation set, its chains by name (`nft list chains` reads no rules or elements), how
    many rules each holds (the kernel's rule dump of this table, nft_rules), and its record
    and boot files: milliseconds at any size. A table deleted, flushed (`flush ruleset` or
    `flush table`) or reloaded, a chain or rule added or removed, or a file changed is seen;
    a rule or element edited in place is not, as with the module's own glance (verify_live
    lists everything)."""
    if shutil.which("nft") is None:
        return None
    listing = output(["nft", "-j", "list", "set", family, table, generation_set])  # None: no table
    generation = None if listing is None else sorted(
        json.dumps(item["set"].get("elem"), sort_keys=True)
        for item in json.loads(listing).get("nftables", []) if "set" in item)
    chains = (reading or Reading()).chains()
    rules = rule_counts(family, table)
    if chains is None or rules is None:
        return None
    names = sorted(c["name"] for c in chains if c.get("family") == family and c.get("table") == table)
    parts = [generation, names, digests(files), {name: rules.get(name, 0) for name in names}]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def firewall_fingerprint(state_file, reading=None):
    """The firewall module's view: firewall/apply.py reads it as `ensure` does."""
    from ansible_collections.podnet.network.plugins.module_utils.firewall.apply import fingerprint as firewall

    return firewall(state_file, reading.firewall_ruleset() if reading else None)


def pods_fingerprint(state_dir, conflist, netns_etc_dir=None):
    """The pods module's view: pods/lifecycle.py reads it as the module does."""
    from ansible_collections.podnet.network.plugins.module_utils.pods.errors import PodError
    from ansible_collections.podnet.network.plugins.module_utils.pods.lifecycle import fingerprint as pods

    try:
        return pods(state_dir, conflist, netns_etc_dir)
    except PodError:  # a record the module would refuse too
        return None


def dns_fingerprint(conf_dir, table, table_path, dns_ip, domain, resolv_conf=None):
    """The dns module's view: dns/live.py reads it as the module does."""
    from ansible_collections.podnet.network.plugins.module_utils.dns.live import fingerprint as dns

    return dns(conf_dir, table, table_path, dns_ip, domain, resolv_conf)


FINGERPRINTS = {"routes": routes_fingerprint, "firewall": firewall_fingerprint, "pods": pods_fingerprint,
                "dns": dns_fingerprint, "nft": nft_fingerprint}
# The fingerprints that read from a shared Reading.
SHARED = ("firewall", "nft")


def fingerprint(kind, args, reading=None):
    """The live state's fingerprint for a settling module; None when it cannot be read.
    `reading`: listings shared with the run's other fingerprints (node_info)."""
    shared = {"reading": reading} if reading is not None and kind in SHARED else {}
    try:
        return FINGERPRINTS[kind](**args, **shared)
    except (KeyError, TypeError, ValueError, OSError, RuntimeError):  # RuntimeError: a command failed
        return None


# --- the controller's side ---------------------------------------------------------


def inputs_digest(module, args):
    """The digest of a task: its module and arguments (without the glance's own)."""
    task = {key: value for key, value in args.items() if key not in ("glance_inputs", "glance_file")}
    text = json.dumps([module, task], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settled(snapshot, inputs):
    """What to replay (a dict) when a run with these inputs left the live state the snapshot
    still sees; None otherwise."""
    replay = (snapshot.get("settled") or {}).get(inputs) if snapshot else None
    return replay if isinstance(replay, dict) else None


def snapshot_of(podnet_node, index=INDEX):
    """The snapshot node_info took of `index` this run, or None (no node_info, another index)."""
    snapshot = (podnet_node or {}).get("glance") if isinstance(podnet_node, dict) else None
    if not isinstance(snapshot, dict) or snapshot.get("index") != index:
        return None
    return snapshot


def _mode(value):
    try:
        return int(str(value), 8)
    except ValueError:
        return None


def files_unchanged(snapshot, dest, files, modes=None, absent=()):
    """True when every file of a node_files task is in the snapshot exactly as the task wants
    it (content and mode), and every path it removes is known to be absent."""
    if not snapshot or not isinstance(dest, str) or not os.path.isabs(dest):
        return False
    seen, modes = snapshot.get("files") or {}, modes or {}
    wanted = list((files or {}).items()) + [(name, None) for name in absent]
    for name, content in wanted:
        if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in name.split("/"):
            return False
        path = os.path.normpath(os.path.join(dest, name))
        if path not in seen:
            return False
        if content is None:
            if seen[path] is not None:
                return False
            continue
        mode = _mode(modes.get(name, "0644"))
        if not isinstance(content, str) or mode is None or seen[path] != digest(content, mode):
            return False
    return True


def sysctls_unchanged(snapshot, sysctls, path):
    """True when every sysctl already has its value (compared as the sysctl module does) and
    the persisted file at `path` is the one the module would write (mode 0644)."""
    if not snapshot or not isinstance(sysctls, dict) or not isinstance(path, str):
        return False
    sysctls, seen = normalized(sysctls), snapshot.get("sysctls") or {}
    if not all(same_value(seen.get(name), value) for name, value in sysctls.items()):
        return False
    return (snapshot.get("files") or {}).get(os.path.normpath(path)) == digest(render(sysctls), DEFAULT_MODE)

"""The glance: what the controller can know of a node without asking it again.

A module that writes podnet's files or settings on a node (node_files, sysctl) notes what
it owns in an index on the node (`remember`). node_info, the plan's one round trip at the
start of a run, reads the live state of everything in that index (`look`): each file's
digest and mode, each sysctl's value. An action plugin then compares what its task wants
with that snapshot (`files_unchanged`, `sysctls_unchanged`) and skips the round trip when
they are equal: on a run with nothing to change, a task costs no node time at all.

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
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    lists = {kind: index.get(kind) if isinstance(index.get(kind), list) else [] for kind in KINDS}
    return {kind: sorted({name for name in names if isinstance(name, str)}) for kind, names in lists.items()}


def remember(module, path=INDEX, **owned):
    """Add what a module owns to the index at `path`, by kind (files: absolute paths; sysctls:
    names); no write when it is all there already."""
    from ansible_collections.podnet.network.plugins.module_utils.common.module_io import write_file

    index = read_index(path)
    grown = {kind: sorted(set(index[kind]).union(names)) for kind, names in owned.items()}
    if all(grown[kind] == index[kind] for kind in grown):
        return
    index.update(grown)
    write_file(module, path, json.dumps(index, indent=1, sort_keys=True) + "\n")


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


def look(path=INDEX):
    """The snapshot: {"index": the index's path, "files": {path: file_state},
    "sysctls": {name: value}} of everything in the index."""
    index = read_index(path)
    return {"index": path,
            "files": {name: file_state(name) for name in index["files"]},
            "sysctls": {name: live_value(name) for name in index["sysctls"]}}


# --- the controller's side ---------------------------------------------------------


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
    wanted = [(name, content) for name, content in (files or {}).items()] + [(name, None) for name in absent]
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

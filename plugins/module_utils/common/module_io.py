"""What podnet's modules do alike on a node: files, conntrack, and the proxy modules' report.

Unlike the rest of module_utils this is not pure core: every function takes the
AnsibleModule and touches the node. It exists so the modules stay thin and say the same
thing the same way.
"""

import contextlib
import os
import tempfile
import time

from ansible_collections.podnet.network.plugins.module_utils.common.process import NODE_LOCK, try_node_lock
from ansible_collections.podnet.network.plugins.module_utils.services.proxy import (
    stale_flows,
    udp_flows_to_clear,
)

# One lock per node for every module that applies state: two runs at once (two operators, a
# retry beside a slow run) take turns instead of interleaving a DNS swap or a proxy record.
# podnet-heal takes it too (process.try_node_lock).
LOCK_PATH = NODE_LOCK
LOCK_WAIT = 300


def read_file(module, path):
    """The file's text, or None when it does not exist; any other failure fails the module."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=f"cannot read {path}: {exc}")


def write_file(module, path, text, mode=0o644):
    """Atomic replace (mode 0644 unless said): boot must never find a half-written script or record."""
    commit_staged(module, stage_file(module, path, text, mode), path, mode)


def stage_file(module, path, text, mode=0o644):
    """`text` written and fsynced beside `path`, not in its place yet: a full disk or a
    read-only filesystem fails here, before the caller applies anything. Returns the staged
    file for commit_staged (a rename, which needs no space) or discard_staged."""
    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            # On disk before the rename: after a power cut the record is the old one or the
            # new one, never an empty file the next run would have to distrust.
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except OSError as exc:
        discard_staged(tmp)
        module.fail_json(msg=f"cannot write {path}: {exc}")
    return tmp


@contextlib.contextmanager
def written_after(module, files):
    """Each `(path, text)` of `files` staged (written and fsynced beside its place) before the
    body runs, and renamed into place once the body is done: a full disk fails the run naming
    the file before anything is applied, and a body that fails (fail_json exits) leaves the
    files as they were and no staged copy behind."""
    staged = {}
    try:
        for path, text in files:
            staged[path] = stage_file(module, path, text)
        yield
        for path, tmp in list(staged.items()):
            commit_staged(module, tmp, path)
            del staged[path]
    finally:
        for tmp in staged.values():
            discard_staged(tmp)


def commit_staged(module, tmp, path, mode=0o644):
    module.atomic_move(tmp, path)
    module.set_mode_if_different(path, "%04o" % mode, False)
    sync_directory(os.path.dirname(path) or ".")


def discard_staged(tmp):
    if tmp:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def sync_directory(directory):
    """fsync a directory, so a rename in it survives a power cut (best effort: not every
    filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def node_lock(module, what, path=LOCK_PATH, wait=LOCK_WAIT):
    """Hold the node's podnet lock until the module exits (the kernel drops it with the process).

    A second run waits for the first, at most `wait` seconds, then fails naming the holder.
    Returns the open descriptor; closing it releases the lock early."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = try_node_lock(path)
        except OSError as exc:
            module.fail_json(msg=f"cannot open podnet's node lock {path}: {exc}")
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            holder = (read_file(module, path) or "")[:200].strip() or "unknown"
            module.fail_json(msg=f"another podnet run holds this node's lock {path} ({holder}); {what} "
                                 f"waited {wait} s and changed nothing: let that run finish, then run "
                                 "again")
        time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, {what}, since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
              .encode(), 0)
    return fd


def remove_files(module, paths):
    """Remove the files that exist (none in check mode); the actions, one per file."""
    actions = []
    for path in paths:
        if not path or not os.path.lexists(path):
            continue
        actions.append(f"remove {path}")
        if module.check_mode:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            module.fail_json(msg=f"cannot remove {path}: {exc}")
    return actions


def clear_conntrack(module, commands):
    """Run `conntrack ARGS` for each argument list; the ones run."""
    conntrack = module.get_bin_path("conntrack")
    done = []
    for args in commands if conntrack else []:
        # conntrack exits 1 when nothing matched, which is the common case.
        rc, _out, err = module.run_command([conntrack, *args])
        if rc not in (0, 1):
            module.warn(f"conntrack {' '.join(args)} failed: {err.strip()}")
        done.append(args)
    return done


def clear_flows(module, old_view, view, service_cidr, rules_changed):
    """The proxies' conntrack cleanup after an apply; the conntrack commands run. With the record
    of the last apply (`old_view`), what the rule change made stale (udp_flows_to_clear); without
    it, the UDP and SCTP flows in the kernel's table that the new rules would not have made
    (stale_flows), so a lost record still leaves no client pinned to a gone endpoint."""
    if module.check_mode or not module.params["flush_conntrack"]:
        return []
    if old_view is not None:
        return clear_conntrack(module, udp_flows_to_clear(old_view, view)) if rules_changed else []
    conntrack = module.get_bin_path("conntrack")
    if not conntrack:
        return []
    listing = []
    for protocol in ("udp", "sctp"):
        rc, out, err = module.run_command([conntrack, "-L", "-p", protocol])
        if rc != 0:
            module.warn(f"conntrack -L -p {protocol} failed: {err.strip()}")
        listing.append(out)
    return clear_conntrack(module, stale_flows("".join(listing), view, service_cidr))


def exit_proxy(module, actions, diff, cleared, **extra):
    """The proxy modules' result. diff is view_diff(old, new): (before, after, changed names);
    `extra` adds the module's own return values."""
    before, after, changed_services = diff
    node = module.params["node"] or "this node"
    result = {
        "changed": bool(actions),
        "actions": actions,
        "services_changed": changed_services,
        "conntrack_cleared": cleared,
        # A summary, not the model: Ansible would otherwise copy and scan it all (seconds at scale).
        "invocation": {"module_args": {
            k: v for k, v in module.params.items() if k not in ("model", "model_delta")}},
        **extra,
    }
    if module._diff and actions:
        result["diff"] = {
            "before": before,
            "after": after,
            "before_header": f"Services on {node} (last applied)",
            "after_header": f"Services on {node} (now)",
        }
    module.exit_json(**result)

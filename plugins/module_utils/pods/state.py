"""Pod state files: one JSON record per pod, holding all a teardown or a boot-time
restore needs (/run, every netns and process are gone after a reboot).

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import json
import os
import tempfile

from .errors import PodError


def atomic_write(path, text, mode=0o644):
    """Replace `path` with `text` all at once and durably (fsync before the rename): a
    reader never sees half a file, and a power cut leaves the old file or the new one."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def state_file(state_dir, namespace, name):
    # `_` cannot occur in a DNS-1123 label, so the name is unambiguous.
    return os.path.join(state_dir, "%s_%s.json" % (namespace, name))


def log_file(state_dir, namespace, name):
    return os.path.join(state_dir, "%s_%s.log" % (namespace, name))


def read_states(state_dir):
    """Every recorded pod, keyed `namespace/name`."""
    states = {}
    if not os.path.isdir(state_dir):
        return states
    for entry in sorted(os.listdir(state_dir)):
        if not entry.endswith(".json"):
            continue
        path = os.path.join(state_dir, entry)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            raise PodError("pod state file %s is unreadable: %s" % (path, e)) from e
        if not isinstance(state, dict) or not state.get("name") or not state.get("namespace"):
            raise PodError("pod state file %s lacks name/namespace" % path)
        states["%s/%s" % (state["namespace"], state["name"])] = state
    return states


def write_state(state_dir, state):
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    path = state_file(state_dir, state["namespace"], state["name"])
    atomic_write(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def remove_state(state_dir, state):
    for path in (state_file(state_dir, state["namespace"], state["name"]),
                 log_file(state_dir, state["namespace"], state["name"])):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

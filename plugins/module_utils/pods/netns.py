"""Network namespaces by name, as `ip netns` keeps them (/run/netns/NAME).

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import os
import subprocess

from .errors import PodError

NETNS_RUN_DIR = "/run/netns"


def netns_path(name):
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name):
    """True when /run/netns/NAME is a live netns mount, not a leftover empty file."""
    return os.path.ismount(netns_path(name))


def _run(argv, what):
    proc = subprocess.run(argv, capture_output=True, cwd="/", check=False)
    if proc.returncode != 0:
        raise PodError("%s: `%s` failed: %s" % (what, " ".join(argv),
                                                proc.stderr.decode(errors="replace").strip()))
    return proc.stdout.decode(errors="replace")


def netns_add(name):
    if netns_exists(name):
        return False
    if os.path.lexists(netns_path(name)):
        # An unmounted leftover (its netns died with a mount namespace) blocks `ip netns add`.
        os.unlink(netns_path(name))
    _run(["ip", "netns", "add", name], "netns %s" % name)
    return True


def netns_del(name):
    if not os.path.lexists(netns_path(name)):
        return False
    if netns_exists(name):
        _run(["ip", "netns", "del", name], "netns %s" % name)
    else:
        os.unlink(netns_path(name))
    return True


def forget_neighbour(ip, names=()):
    """Drop every neighbour entry for `ip` here (the node) and in the namespaces `names` (its
    other pods): a pod re-created with its former address has a new MAC, and the bridge CNI
    plugin announces nothing, so an entry still REACHABLE with the old MAC would send the
    node's and the other pods' packets nowhere for up to a minute. Best effort: a namespace
    gone meanwhile is skipped."""
    for argv in [["ip", "neigh", "flush", "to", ip]] + [
            ["ip", "-n", name, "neigh", "flush", "to", ip] for name in names if netns_exists(name)]:
        subprocess.run(argv, capture_output=True, cwd="/", check=False)

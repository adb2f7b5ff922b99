"""Processes by what they are, not by their name: one reader of /proc for all of podnet.

Standard library only and no Ansible imports: the boot-time restore runs this on
nodes without Ansible (it ships inside the podnet_node package).

A PID alone proves nothing: PIDs are reused, a dead process stays a zombie until
its parent reaps it, and in the lab every node's processes share one /proc. So a
process is found by the namespace it runs in (the inode of /proc/PID/ns/net or
/ns/mnt) and by its command line, and it is checked again right before it is
signalled.

`output` is the one way podnet's readers (the glance's fingerprints, dns/live) run a short
command and take what it prints.
"""

import fcntl
import os
import shutil
import signal
import subprocess
import time

PROC = "/proc"
# One lock per node: every module that applies state holds it while it runs
# (module_io.node_lock), and podnet-heal holds it for a round, so the heal never puts back
# what a module is in the middle of changing.
NODE_LOCK = "/run/podnet/node.lock"


class ProcessError(Exception):
    """A process would not stop."""


def ns_inode(path):
    """The inode of a namespace file (/proc/PID/ns/net, /run/netns/NAME), or None if unreadable."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pid_ns_inode(pid, kind="net"):
    """The inode of PID's namespace of `kind` (net, mnt, ...), or None when PID is gone."""
    return ns_inode("%s/%d/ns/%s" % (PROC, pid, kind))


def own_ns_inode(kind="net"):
    return ns_inode("%s/self/ns/%s" % (PROC, kind))


def pids():
    """Every PID /proc shows now."""
    try:
        return [int(entry) for entry in os.listdir(PROC) if entry.isdigit()]
    except OSError:
        return []


def cmdline(pid):
    """PID's argv as a list of str, or None when it is gone or unreadable.
    (A kernel thread's is empty.)"""
    try:
        with open("%s/%d/cmdline" % (PROC, pid), "rb") as handle:
            return [arg.decode(errors="replace") for arg in handle.read().split(b"\0") if arg]
    except OSError:
        return None


def is_zombie(pid):
    """True when PID is dead but not reaped yet (Z, X) or gone altogether: it serves nothing."""
    try:
        with open("%s/%d/stat" % (PROC, pid)) as handle:
            # The command name in parentheses may itself hold spaces and parentheses.
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def matches(pid, argv_match=None, net=None, mnt=None):
    """Is PID alive (not a zombie), in the given namespaces (inodes), with an argv
    `argv_match(argv)` accepts? None means any."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if argv_match is not None:
        argv = cmdline(pid)
        if not argv or not argv_match(argv):
            return False
    if net is not None and pid_ns_inode(pid, "net") != net:
        return False
    if mnt is not None and pid_ns_inode(pid, "mnt") != mnt:
        return False
    return not is_zombie(pid)


def find(argv_match=None, net=None, mnt=None):
    """PIDs of live processes matching `matches()`, sorted."""
    return sorted(pid for pid in pids() if matches(pid, argv_match, net, mnt))


def argv_is(expected):
    """An argv_match for exactly this command line."""
    expected = list(expected)
    return lambda argv: argv == expected


def read_pidfile(path):
    try:
        with open(path) as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def from_pidfile(path, argv_match=None, net=None, mnt=None):
    """The PID recorded in `path` when it is still that process (argv and namespaces), else None."""
    pid = read_pidfile(path)
    return pid if pid is not None and matches(pid, argv_match, net, mnt) else None


def terminate(pid, alive, timeout=2.0, kill_timeout=1.0, poll=0.05):
    """Stop PID: SIGTERM, then SIGKILL after `timeout` seconds.

    `alive(pid)` says whether PID is still the process meant; it is asked before
    every signal, so a PID reused by another process is never signalled.
    Returns False when it was not running, True once it is gone; raises
    ProcessError when even SIGKILL did not end it within `kill_timeout`.
    """
    if not alive(pid):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        if not alive(pid):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not alive(pid):
                return True
            time.sleep(poll)
    raise ProcessError("pid %d did not stop" % pid)


def try_node_lock(path=NODE_LOCK):
    """The node lock, taken, as an open descriptor (closing it releases the lock), or None
    when a podnet run holds it now. Never waits: module_io.node_lock waits with it, a
    podnet-heal round skips."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def output(argv, timeout=30):
    """What a short reading command (ip, nft, bridge, ethtool) prints, None when it fails,
    times out or is not installed: the fingerprints read the node with it."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None

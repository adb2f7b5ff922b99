"""The one process a test pod runs: podnet-echo inside the pod's netns, started
detached, found again through /proc and stopped only when it is really ours.

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import os
import subprocess
import time

from ..common import process
from .errors import PodError
from .netns import netns_exists, netns_path

DEFAULT_ECHO_SERVER = "/usr/local/lib/podnet/podnet-echo.py"
DEFAULT_PYTHON = "/usr/bin/python3"
SERVER_READY_TIMEOUT = 3.0

# Run inside the pod netns: succeed once the port accepts a connection.
# A subprocess because Python 3.11 has no os.setns.
_PROBE = (
    "import socket,sys,time\n"
    "end=time.monotonic()+float(sys.argv[2])\n"
    "while True:\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=0.5).close(); sys.exit(0)\n"
    "    except OSError:\n"
    "        if time.monotonic()>end: sys.exit(1)\n"
    "        time.sleep(0.05)\n"
)


def listen_specs(ports):
    """`tcp:P` and `udp:P` for every declared port: a Service may reach the pod
    over either protocol, so the server answers both whatever the declaration says."""
    specs = []
    for number in sorted({int(p["containerPort"]) for p in ports or []}):
        specs += ["tcp:%d" % number, "udp:%d" % number]
    return specs


def _is_echo_server(echo_server, pod_name=None):
    """An argv_match for our echo server, of one pod when `pod_name` is given."""
    def match(argv):
        if echo_server not in argv:
            return False
        if pod_name is None:
            return True
        try:
            return argv[argv.index("--name") + 1] == pod_name
        except (ValueError, IndexError):
            return False
    return match


def server_alive(pid, echo_server, pod_name=None, netns=None):
    """True if PID is still our echo server (not a reused PID), in NETNS if given."""
    net = None
    if netns is not None:
        net = process.ns_inode(netns_path(netns))
        if net is None:
            return False
    return process.matches(pid, _is_echo_server(echo_server, pod_name), net=net)


def find_servers(netns, echo_server):
    """PIDs of echo servers inside NETNS, found via /proc: covers a lost or stale pid record."""
    want = process.ns_inode(netns_path(netns)) if netns_exists(netns) else None
    if want is None:
        return []
    return process.find(_is_echo_server(echo_server), net=want)


def stop_server(pid, echo_server, pod_name=None, netns=None, timeout=2.0):
    """Stop our echo server; never signals a PID that is not it. Returns True if one was stopped."""
    try:
        return process.terminate(pid, lambda p: server_alive(p, echo_server, pod_name), timeout=timeout)
    except process.ProcessError as e:
        raise PodError("echo server pid %d of pod %s did not stop" % (pid, pod_name or "?")) from e


def _log_tail(path, limit=800):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _udp_bound(pid, port):
    """Is PID's netns holding a UDP socket on PORT? (/proc/PID/net/udp shows that netns)."""
    try:
        with open("/proc/%d/net/udp" % pid) as f:
            next(f)
            return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in f)
    except (OSError, StopIteration, IndexError, ValueError):
        return False


def start_server(netns, pod_name, ports, echo_server=DEFAULT_ECHO_SERVER, log_path=None,
                 python=DEFAULT_PYTHON, timeout=SERVER_READY_TIMEOUT):
    """Start podnet-echo detached inside NETNS and wait until it serves. Returns its PID."""
    specs = listen_specs(ports)
    if not specs:
        return None
    if not os.path.isfile(echo_server):
        raise PodError("echo server %s not found (pod %s)" % (echo_server, pod_name))
    argv = ["ip", "netns", "exec", netns, python, echo_server, "--name", pod_name]
    for spec in specs:
        argv += ["--listen", spec]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        # A new session (setsid) detaches the server from Ansible's process group;
        # `ip netns exec` execs, so the PID we get is the server's own.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd="/", close_fds=True, start_new_session=True)
    finally:
        if log_path:
            log.close()
    tcp_ports = [int(s.split(":")[1]) for s in specs if s.startswith("tcp:")]
    end = time.monotonic() + timeout
    ready = False
    if tcp_ports:
        probe = subprocess.run(["ip", "netns", "exec", netns, python, "-c", _PROBE, str(tcp_ports[0]),
                                str(timeout)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd="/", timeout=timeout + 5, check=False)
        ready = probe.returncode == 0 and proc.poll() is None
    else:
        udp_ports = [int(s.split(":")[1]) for s in specs]
        while time.monotonic() < end and proc.poll() is None:
            if all(_udp_bound(proc.pid, p) for p in udp_ports):
                ready = True
                break
            time.sleep(0.05)
    if not ready:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tail = _log_tail(log_path) if log_path else ""
        raise PodError("echo server of pod %s in netns %s did not serve %s within %ss%s"
                       % (pod_name, netns, ", ".join(specs), timeout,
                          ": %s" % tail if tail else " (exit status %s)" % proc.returncode))
    return proc.pid

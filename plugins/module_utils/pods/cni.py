"""Run test pods by hand, the way a container runtime would, with the real CNI plugins.

Standard library only and no Ansible imports: this file is also copied to the
nodes and imported by the boot-time restore script, where Ansible is absent.

A pod here is a network namespace (`ip netns add`), wired by the node's
conflist (bridge + host-local + portmap), plus one podnet-echo process inside
it. Its state lives in one JSON file per pod under the state dir, holding
everything needed to tear it down or bring it back after a reboot (/run is
gone then, with every netns and process): the recorded IP, the CNI result and
the network config the pod was added with, because CNI DEL must be given the
config of the ADD, not whatever the conflist says today.
"""

import copy
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import tempfile
import time

DEFAULT_CNI_BIN_DIR = "/usr/lib/cni"
DEFAULT_STATE_DIR = "/var/lib/podnet/pods"
DEFAULT_ECHO_SERVER = "/usr/local/lib/podnet/podnet-echo.py"
DEFAULT_PYTHON = "/usr/bin/python3"
NETNS_RUN_DIR = "/run/netns"
# `ip netns exec NAME` bind-mounts every file of /etc/netns/NAME over /etc: a pod's
# resolv.conf lives there.
NETNS_ETC_DIR = "/etc/netns"
POD_IFNAME = "eth0"
LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
HOST_LOCAL_DEFAULT_DATA_DIR = "/var/lib/cni/networks"
PLUGIN_TIMEOUT = 60
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


class PodError(Exception):
    """A pod could not be created, torn down or inspected."""


class CNIError(PodError):
    """A CNI plugin failed; carries the plugin's own JSON error."""

    def __init__(self, plugin, command, msg, code=None, details=None, container_id=None):
        self.plugin = plugin
        self.command = command
        self.msg = msg
        self.code = code
        self.details = details
        self.container_id = container_id
        text = "CNI %s %s%s failed" % (command, plugin, " for %s" % container_id if container_id else "")
        if code is not None:
            text += " (code %s)" % code
        text += ": %s" % msg
        if details:
            text += " (%s)" % details
        super().__init__(text)


# --- CNI ---------------------------------------------------------------------

def load_conflist(path):
    """Read and sanity-check a CNI conflist; returns it as a dict."""
    try:
        with open(path) as f:
            conflist = json.load(f)
    except OSError as e:
        raise PodError("cannot read CNI conflist %s: %s" % (path, e.strerror or e)) from e
    except ValueError as e:
        raise PodError("CNI conflist %s is not valid JSON: %s" % (path, e)) from e
    check_conflist(conflist, path)
    return conflist


def check_conflist(conflist, where="conflist"):
    if not isinstance(conflist, dict):
        raise PodError("%s: a conflist must be a JSON object" % where)
    for field in ("cniVersion", "name"):
        if not isinstance(conflist.get(field), str) or not conflist[field]:
            raise PodError("%s: %s is required" % (where, field))
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise PodError("%s: plugins must be a non-empty list" % where)
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) or not plugin["type"]:
            raise PodError("%s: plugins[%d] needs a type" % (where, i))


def conflist_digest(conflist):
    return hashlib.sha256(json.dumps(conflist, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lease_data_dir(conflist):
    """Where host-local keeps this network's leases, or None if no plugin uses host-local.
    host-local appends the network name to dataDir itself."""
    for plugin in conflist.get("plugins", []):
        ipam = plugin.get("ipam") or {}
        if ipam.get("type") == "host-local":
            return os.path.join(ipam.get("dataDir") or HOST_LOCAL_DEFAULT_DATA_DIR, conflist["name"])
    return None


def plugin_config(conflist, plugin, prev_result=None, runtime_config=None):
    """One plugin's stdin, as libcni builds it from a conflist entry."""
    config = copy.deepcopy(plugin)
    config["name"] = conflist["name"]
    config["cniVersion"] = conflist["cniVersion"]
    if prev_result is not None:
        config["prevResult"] = prev_result
    # Only capabilities the plugin declares and the runtime has data for are passed.
    wanted = {k: v for k, v in (runtime_config or {}).items() if (plugin.get("capabilities") or {}).get(k)}
    if wanted:
        config["runtimeConfig"] = wanted
    return config


def find_plugin(bin_dir, plugin_type):
    for d in str(bin_dir).split(os.pathsep):
        path = os.path.join(d, plugin_type)
        if d and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CNIError(plugin_type, "lookup", "no executable %r in CNI_PATH %s" % (plugin_type, bin_dir))


def exec_plugin(bin_dir, command, config, container_id, netns_path, ifname, cni_args=None,
                timeout=PLUGIN_TIMEOUT):
    """Run one plugin once. Returns its parsed result (None when it prints nothing, as DEL does)."""
    plugin_type = config["type"]
    path = find_plugin(bin_dir, plugin_type)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path or "",
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(bin_dir),
    })
    if cni_args:
        env["CNI_ARGS"] = cni_args
    try:
        proc = subprocess.run([path], input=json.dumps(config).encode(), env=env, cwd="/",
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise CNIError(plugin_type, command, "no answer within %ss" % timeout,
                       container_id=container_id) from e
    out = proc.stdout.decode(errors="replace").strip()
    parsed = None
    if out:
        try:
            parsed = json.loads(out)
        except ValueError:
            parsed = None
    if proc.returncode != 0:
        if isinstance(parsed, dict) and ("msg" in parsed or "code" in parsed):
            raise CNIError(plugin_type, command, parsed.get("msg", ""), code=parsed.get("code"),
                           details=parsed.get("details"), container_id=container_id)
        raise CNIError(plugin_type, command,
                       "exit status %d: %s" % (proc.returncode,
                                               (out or proc.stderr.decode(errors="replace")).strip()[:500]),
                       container_id=container_id)
    if out and parsed is None:
        raise CNIError(plugin_type, command, "result is not JSON: %s" % out[:500], container_id=container_id)
    return parsed


def cni_add(conflist, container_id, netns_path, bin_dir=DEFAULT_CNI_BIN_DIR, ifname=POD_IFNAME, ip=None,
            runtime_config=None):
    """ADD every plugin in order, each given the previous one's result; returns the last result.

    `ip` asks host-local for that address (CNI_ARGS IP=...). On failure the chain
    is DELeted, as runtimes do, so no half-wired veth or lease is left behind.
    """
    cni_args = "IgnoreUnknown=1;IP=%s" % ip if ip else None
    result = None
    try:
        for plugin in conflist["plugins"]:
            result = exec_plugin(bin_dir, "ADD", plugin_config(conflist, plugin, result, runtime_config),
                                 container_id, netns_path, ifname, cni_args)
    except PodError:
        try:
            cni_del(conflist, container_id, netns_path, bin_dir, ifname, prev_result=result)
        except PodError:
            pass
        raise
    return result


def cni_del(conflist, container_id, netns_path, bin_dir=DEFAULT_CNI_BIN_DIR, ifname=POD_IFNAME,
            prev_result=None, runtime_config=None):
    """DEL every plugin in reverse order. Plugins treat a gone netns as done, so
    this is safe to repeat; a netns path that no longer exists is passed empty."""
    if netns_path and not os.path.exists(netns_path):
        netns_path = ""
    errors = []
    for plugin in reversed(conflist["plugins"]):
        try:
            exec_plugin(bin_dir, "DEL", plugin_config(conflist, plugin, prev_result, runtime_config),
                        container_id, netns_path, ifname)
        except CNIError as e:
            errors.append(e)
    # Every plugin gets its DEL even if one fails, so as much as possible is released.
    if errors:
        raise errors[0]


def loopback_add(container_id, netns_path, bin_dir=DEFAULT_CNI_BIN_DIR):
    return exec_plugin(bin_dir, "ADD", dict(LOOPBACK_CONF), container_id, netns_path, "lo")


def loopback_del(container_id, netns_path, bin_dir=DEFAULT_CNI_BIN_DIR):
    if netns_path and not os.path.exists(netns_path):
        return
    exec_plugin(bin_dir, "DEL", dict(LOOPBACK_CONF), container_id, netns_path or "", "lo")


def result_ip(result):
    """The pod's IPv4 address from a CNI result (1.0.0/0.4.0/0.3.x "ips", 0.2.0 "ip4")."""
    if not isinstance(result, dict):
        return None
    interfaces = result.get("interfaces") or []
    candidates = []
    for entry in result.get("ips") or []:
        try:
            iface = ipaddress.ip_interface(entry.get("address", ""))
        except ValueError:
            continue
        if iface.version != 4:
            continue
        index = entry.get("interface")
        in_sandbox = (isinstance(index, int) and 0 <= index < len(interfaces)
                      and bool(interfaces[index].get("sandbox")))
        candidates.append((not in_sandbox, str(iface.ip)))
    if candidates:
        return sorted(candidates, key=lambda c: c[0])[0][1]
    ip4 = (result.get("ip4") or {}).get("ip")
    if ip4:
        return str(ipaddress.ip_interface(ip4).ip)
    return None


def clean_leases(data_dir, live_container_ids):
    """Remove host-local leases held by containers that no longer exist.

    host-local keeps one file per IP (content: container ID, then ifname) and
    never forgets them on its own: after a reboot every lease leaks. The
    `lock` and `last_reserved_ip.*` files are host-local's own and stay.
    Returns the removed file names, sorted.
    """
    if not data_dir or not os.path.isdir(data_dir):
        return []
    live = set(live_container_ids)
    removed = []
    # host-local takes this same flock, so a plugin running now never sees half a cleanup.
    lock_fd = os.open(os.path.join(data_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        for entry in sorted(os.listdir(data_dir)):
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                continue
            path = os.path.join(data_dir, entry)
            try:
                with open(path) as f:
                    owner = f.read().splitlines()[0].strip() if os.path.isfile(path) else None
            except (OSError, IndexError):
                owner = ""
            if owner is None or owner in live:
                continue
            try:
                os.unlink(path)
                removed.append(entry)
            except FileNotFoundError:
                pass
    finally:
        os.close(lock_fd)
    return removed


# --- network namespaces --------------------------------------------------------

def netns_path(name):
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name):
    """True when /run/netns/NAME is a live netns mount, not a leftover empty file."""
    return os.path.ismount(netns_path(name))


def _run(argv, what):
    proc = subprocess.run(argv, capture_output=True, cwd="/")
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


def _netns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# --- the pod's resolv.conf ------------------------------------------------------

def render_resolv_conf(nameserver, namespace, cluster_domain):
    """What the kubelet writes for a pod with dnsPolicy ClusterFirst: the cluster DNS, the
    search path that makes `frontend` mean frontend.<namespace>.svc.<domain>, and ndots:5
    so names with up to four dots try the search path first."""
    return ("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n"
            % (nameserver, namespace, cluster_domain, cluster_domain, cluster_domain))


def resolv_conf_path(netns, etc_dir=NETNS_ETC_DIR):
    return os.path.join(etc_dir, netns, "resolv.conf")


def read_resolv_conf(netns, etc_dir=NETNS_ETC_DIR):
    try:
        with open(resolv_conf_path(netns, etc_dir)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_resolv_conf(netns, text, etc_dir=NETNS_ETC_DIR):
    """Replace the pod's resolv.conf atomically: a resolver never reads half a file.
    Returns True when it changed."""
    if read_resolv_conf(netns, etc_dir) == text:
        return False
    directory = os.path.dirname(resolv_conf_path(netns, etc_dir))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".resolv.conf.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, resolv_conf_path(netns, etc_dir))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def remove_resolv_conf(netns, etc_dir=NETNS_ETC_DIR):
    """Remove the pod's resolv.conf, and its /etc/netns directory once empty."""
    try:
        os.unlink(resolv_conf_path(netns, etc_dir))
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.join(etc_dir, netns))
    except OSError:
        pass  # absent, or holds files that are not podnet's


# --- the echo server ---------------------------------------------------------

def listen_specs(ports):
    """`tcp:P` and `udp:P` for every declared port: a Service may reach the pod
    over either protocol, so the server answers both whatever the declaration says."""
    specs = []
    for number in sorted({int(p["containerPort"]) for p in ports or []}):
        specs += ["tcp:%d" % number, "udp:%d" % number]
    return specs


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def _is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def server_alive(pid, echo_server, pod_name=None, netns=None):
    """True if PID is still our echo server (not a reused PID), in NETNS if given."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    argv = _cmdline(pid)
    if not argv or echo_server not in argv or _is_zombie(pid):
        return False
    if pod_name is not None:
        try:
            if argv[argv.index("--name") + 1] != pod_name:
                return False
        except (ValueError, IndexError):
            return False
    if netns is not None:
        want = _netns_inode(netns_path(netns))
        if want is None or want != _netns_inode("/proc/%d/ns/net" % pid):
            return False
    return True


def find_servers(netns, echo_server):
    """PIDs of echo servers inside NETNS, found via /proc: covers a lost or stale pid record."""
    want = _netns_inode(netns_path(netns)) if netns_exists(netns) else None
    if want is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if _netns_inode("/proc/%d/ns/net" % pid) == want and server_alive(pid, echo_server):
            pids.append(pid)
    return pids


def stop_server(pid, echo_server, pod_name=None, netns=None, timeout=2.0):
    """Stop our echo server; never signals a PID that is not it. Returns True if one was stopped."""
    if not server_alive(pid, echo_server, pod_name):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 1.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not server_alive(pid, echo_server, pod_name):
                return True
            time.sleep(0.05)
    raise PodError("echo server pid %d of pod %s did not stop" % (pid, pod_name or "?"))


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
                               cwd="/", timeout=timeout + 5)
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


# --- pod state -----------------------------------------------------------------

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
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def remove_state(state_dir, state):
    for path in (state_file(state_dir, state["namespace"], state["name"]),
                 log_file(state_dir, state["namespace"], state["name"])):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def pod_health(state):
    """(healthy, reason): is the recorded pod really there - netns, address and server?"""
    if not state.get("ip"):
        return False, "no IP recorded"
    if not netns_exists(state["netns"]):
        return False, "netns %s is missing" % state["netns"]
    if listen_specs(state.get("ports")):
        if not server_alive(state.get("pid"), state.get("echo_server", DEFAULT_ECHO_SERVER),
                            state["name"], state["netns"]):
            return False, "echo server (pid %s) is not running" % state.get("pid")
    return True, "running"


# --- pods ---------------------------------------------------------------------

def teardown_pod(state, bin_dir=DEFAULT_CNI_BIN_DIR, state_dir=None):
    """Stop the server, CNI DEL, delete the netns; the state file is removed only
    when `state_dir` is given. Safe on a half-created or already-gone pod."""
    echo_server = state.get("echo_server", DEFAULT_ECHO_SERVER)
    netns = state["netns"]
    stop_server(state.get("pid"), echo_server, state["name"])
    for pid in find_servers(netns, echo_server):
        stop_server(pid, echo_server)
    path = netns_path(netns)
    network = state.get("network")
    if network:
        cni_del(network, state["container_id"], path, bin_dir, prev_result=state.get("cni_result"))
    loopback_del(state["container_id"], path, bin_dir)
    netns_del(netns)
    if state_dir:
        if state.get("resolv_conf") is not None:
            remove_resolv_conf(netns, state.get("netns_etc_dir", NETNS_ETC_DIR))
        remove_state(state_dir, state)


def create_pod(spec, conflist, state_dir, bin_dir=DEFAULT_CNI_BIN_DIR, echo_server=DEFAULT_ECHO_SERVER,
               ip=None, python=DEFAULT_PYTHON):
    """Create one pod from scratch and record it; returns its state.

    spec: name, namespace, labels, ports, netns, container_id, spec_hash; optionally
    resolv_conf (the text of the pod's /etc/resolv.conf) and netns_etc_dir.
    `ip` asks for that address (the pod's previous one); if host-local refuses
    it (taken, or outside a new range), the pod gets any free address instead.
    The state file is written before anything is created, so a failure half way
    leaves a record the next run tears down.
    """
    state = {
        "name": spec["name"],
        "namespace": spec["namespace"],
        "labels": dict(spec.get("labels") or {}),
        "ports": list(spec.get("ports") or []),
        "netns": spec["netns"],
        "container_id": spec["container_id"],
        "spec_hash": spec.get("spec_hash"),
        "echo_server": echo_server,
        "network": conflist,
        "ip": None,
        "pid": None,
        "cni_result": None,
    }
    if spec.get("resolv_conf") is not None:
        state["resolv_conf"] = spec["resolv_conf"]
        state["netns_etc_dir"] = spec.get("netns_etc_dir") or NETNS_ETC_DIR
    write_state(state_dir, state)
    path = netns_path(state["netns"])
    netns_add(state["netns"])
    if state.get("resolv_conf") is not None:
        # Before the server starts: `ip netns exec` mounts it as the pod's /etc/resolv.conf.
        write_resolv_conf(state["netns"], state["resolv_conf"], state["netns_etc_dir"])
    loopback_add(state["container_id"], path, bin_dir)
    try:
        result = cni_add(conflist, state["container_id"], path, bin_dir, ip=ip)
    except CNIError:
        if not ip:
            raise
        result = cni_add(conflist, state["container_id"], path, bin_dir)
    state["cni_result"] = result
    state["ip"] = result_ip(result)
    if not state["ip"]:
        raise PodError("CNI ADD for pod %s/%s returned no IPv4 address: %s"
                       % (state["namespace"], state["name"], json.dumps(result)[:500]))
    write_state(state_dir, state)
    state["pid"] = start_server(state["netns"], state["name"], state["ports"], echo_server,
                                log_file(state_dir, state["namespace"], state["name"]), python)
    write_state(state_dir, state)
    return state


def recreate_pod(spec, conflist, state_dir, old_state=None, bin_dir=DEFAULT_CNI_BIN_DIR,
                 echo_server=DEFAULT_ECHO_SERVER, python=DEFAULT_PYTHON):
    """Tear down whatever is left of the pod, then create it again, asking for its old IP."""
    ip = None
    if old_state:
        ip = old_state.get("ip")
        teardown_pod(old_state, bin_dir)
    else:
        # No record, but a netns or lease from a lost run may still be there.
        teardown_pod({"name": spec["name"], "netns": spec["netns"], "container_id": spec["container_id"],
                      "echo_server": echo_server, "network": conflist}, bin_dir)
    return create_pod(spec, conflist, state_dir, bin_dir, echo_server, ip=ip, python=python)


def restore_pods(state_dir=DEFAULT_STATE_DIR, bin_dir=DEFAULT_CNI_BIN_DIR, conflist=None,
                 python=DEFAULT_PYTHON):
    """Bring back every recorded pod whose netns or server is gone (after a reboot).

    Each pod is re-created with the network config it was recorded with (or
    `conflist` if given) and asks host-local for its recorded IP. One pod failing
    does not stop the others. Returns [{pod, status, ip, old_ip, error}] where
    status is running (was fine), restored or failed.
    """
    report = []
    for key, state in read_states(state_dir).items():
        healthy, _ = pod_health(state)
        if healthy:
            report.append({"pod": key, "status": "running", "ip": state["ip"], "old_ip": state["ip"]})
            continue
        spec = {k: state.get(k) for k in ("name", "namespace", "labels", "ports", "netns", "container_id",
                                          "spec_hash", "resolv_conf", "netns_etc_dir")}
        network = conflist or state.get("network")
        try:
            if not network:
                raise PodError("pod %s has no recorded network config" % key)
            new = recreate_pod(spec, network, state_dir, state, bin_dir,
                               state.get("echo_server", DEFAULT_ECHO_SERVER), python)
            report.append({"pod": key, "status": "restored", "ip": new["ip"], "old_ip": state.get("ip")})
        except (PodError, OSError) as e:
            report.append({"pod": key, "status": "failed", "ip": None, "old_ip": state.get("ip"),
                           "error": str(e)})
    return report


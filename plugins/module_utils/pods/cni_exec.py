"""Calling the CNI plugins the way libcni does, by hand: one conflist, its plugins in
order on ADD with each given the previous one's result (prevResult), in reverse on DEL;
and host-local's leases, which nobody releases after a reboot.

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import copy
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess

from .errors import CNIError, PodError

DEFAULT_CNI_BIN_DIR = "/usr/lib/cni"
POD_IFNAME = "eth0"
LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
HOST_LOCAL_DEFAULT_DATA_DIR = "/var/lib/cni/networks"
PLUGIN_TIMEOUT = 60


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
                              capture_output=True, timeout=timeout, check=False)
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


# podnet's own test pods' container IDs (pods/spec.py container_id) start with this; a
# container runtime's (containerd, podman: 64 hex digits) never does.
PODNET_CONTAINER_PREFIX = "podnet-"


def clean_leases(data_dir, live_container_ids, owner_prefix=PODNET_CONTAINER_PREFIX):
    """Remove host-local leases held by podnet's own containers that no longer exist.

    host-local keeps one file per IP (content: container ID, then ifname) and
    never forgets them on its own: after a reboot every lease leaks. Only a
    lease whose owner is one of podnet's containers (its ID starts with
    `owner_prefix`) is podnet's to release: another runtime on the same network
    (containerd, podman using podnet's conflist) keeps its leases, live or not,
    or an address could be handed out twice. The `lock` and `last_reserved_ip.*`
    files are host-local's own and stay. Returns the removed file names, sorted.
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
            if owner is None or owner in live or not owner.startswith(owner_prefix):
                continue
            try:
                os.unlink(path)
                removed.append(entry)
            except FileNotFoundError:
                pass
    finally:
        os.close(lock_fd)
    return removed

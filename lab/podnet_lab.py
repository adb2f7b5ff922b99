#!/usr/bin/env python3
"""podnet lab: a small cluster of "nodes" made of namespaces on this machine.

    podnet-switch    bridge br0, one port per namespace below (a plain L2 switch);
                     br1, br2, ... for the inventory's further segments (podnet_lab.segments)
    podnet-router    eth0 on the node segment, eth1 to podnet-internet, segN on segment N;
                     forwards between them, never NATs, and has no route to the pod CIDRs
    podnet-internet  an echo server on TCP/UDP 80 ("the internet")
                     (the router also answers DNS for the test zone podnet.test, and
                     NXDOMAIN for every other name: it never asks a real resolver)
    podnet-client    an external client on the node segment
    podnet-<node>    one per host of the inventory group `nodes`

Every node also has a persistent mount namespace (/run/podnet-lab/<node>.mnt)
with its own /run tmpfs, its own sysfs and its own copy of the directories the
roles write (NODE_PRIVATE_DIRS), so a node looks like a separate machine to
Ansible. Nothing is ever changed in the machine's own network namespace.

Usage: podnet_lab.py [--inventory DIR] create|destroy|status|reboot NODE|exec NODE -- CMD|shell NODE
"""

import argparse
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machines  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The fast lab by default; PODNET_LAB_INVENTORY=inventory/nodes picks the machine lab
# (the live tests read the same variable, so one suite serves both).
DEFAULT_INVENTORY = Path(os.environ.get("PODNET_LAB_INVENTORY") or REPO / "inventory" / "lab").resolve()
NETNS_DIR = Path("/run/netns")
ECHO_SERVER = REPO / "roles" / "podnet_test_pods" / "files" / "podnet-echo.py"
# The lab's "upstream" DNS: the names the router answers; anything else is NXDOMAIN.
ROUTER_DNS_ZONE = "podnet.test"
ROUTER_DNS_RECORDS = {"internet.podnet.test": "internet_ip"}
RESTORE_ENTRY_POINT = "/usr/local/lib/podnet/podnet-restore"

INFRA = ("switch", "router", "internet", "client")

# A node's "disk": every path the roles write, bind-mounted from
# STATE_DIR/nodes/<node>/<path> inside the node's mount namespace. It survives
# `reboot`; /run (a tmpfs) does not.
NODE_PRIVATE_DIRS = (
    "/etc/cni",
    "/etc/sysctl.d",
    "/etc/modules-load.d",
    "/etc/podnet",
    "/etc/systemd/system",
    "/etc/netns",
    "/etc/iproute2",
    "/etc/dnsmasq.d",
    "/var/lib/cni",
    "/var/lib/podnet",
    "/usr/local/lib/podnet",
)
# Copied from the host on first creation so `ip` still finds its tables.
SEEDED_FROM_HOST = ("/etc/iproute2",)

# A new netns copies IPv4 sysctls from the root namespace, so state the boot
# values; the playbooks must prove they set ip_forward themselves.
NODE_BOOT_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
    "net.bridge.bridge-nf-call-arptables": "0",
}
INFRA_SYSCTLS = {
    # br_netfilter would otherwise pass bridged frames through the switch's
    # (empty) iptables hooks: keep the switch a plain L2 switch.
    "switch": {
        "net.ipv4.ip_forward": "0",
        "net.bridge.bridge-nf-call-iptables": "0",
        "net.bridge.bridge-nf-call-ip6tables": "0",
        "net.bridge.bridge-nf-call-arptables": "0",
    },
    "router": {"net.ipv4.ip_forward": "1"},
    "internet": {"net.ipv4.ip_forward": "0"},
    "client": {"net.ipv4.ip_forward": "0"},
}
NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


class LabError(Exception):
    pass


@dataclass(frozen=True)
class Topology:
    prefix: str
    nodes: dict  # node name -> node_ip
    node_prefixlen: int
    router_ip: str
    client_ip: str
    internet_prefixlen: int
    router_internet_ip: str
    internet_ip: str
    # (destination CIDR, via node IP): how the external client reaches Service
    # addresses, as a homelab router would send a service CIDR to a node.
    client_routes: tuple = ()
    # node -> Debian release, for nodes that are machines (lab/machines.py); the
    # others are namespaces sharing this machine's packages.
    machines: tuple = ()
    # node -> the init it must boot with, where the inventory names one (systemd is the
    # default; sshd alone is the fallback when a release's systemd cannot boot here).
    inits: tuple = ()
    # Further L2 segments behind the router: (bridge, router interface, router IP, prefixlen).
    segments: tuple = ()
    # node -> (bridge, prefixlen, gateway) for nodes on a further segment; others are on br0.
    node_segments: tuple = ()

    def attachment(self, node):
        """(bridge, prefixlen, gateway) of a node's segment."""
        return dict(self.node_segments).get(node, ("br0", self.node_prefixlen, self.router_ip))

    def ns(self, name):
        return self.prefix + name

    # Each lab (one per prefix) keeps its own run, state and lock, so two labs can
    # stand side by side; the fast lab's paths are those it always had.
    @property
    def run_dir(self):
        return Path(f"/run/{self.prefix}lab")

    @property
    def state_dir(self):
        return Path(f"/var/lib/{self.prefix}lab")

    @property
    def lock_file(self):
        return Path(f"/run/lock/{self.prefix}lab.lock")

    def is_machine(self, node):
        return node in dict(self.machines)

    def release(self, node):
        return dict(self.machines)[node]

    def init(self, node):
        return dict(self.inits).get(node, "systemd")

    def namespaces(self):
        return [self.ns(n) for n in (*INFRA, *self.nodes)]

    def switch_port(self, name):
        """The switch-side veth of a namespace; interface names stop at 15 bytes."""
        port = "sw-" + name
        if len(port) > 15:
            port = "sw-" + hashlib.sha1(name.encode()).hexdigest()[:12]
        return port


# ---------------------------------------------------------------- inventory

def _find_group(groups, name):
    for group_name, group in (groups or {}).items():
        group = group or {}
        if group_name == name:
            return group
        found = _find_group(group.get("children"), name)
        if found is not None:
            return found
    return None


def _group_hosts(group):
    hosts = dict(group.get("hosts") or {})
    for child in (group.get("children") or {}).values():
        hosts.update(_group_hosts(child or {}))
    return hosts


def _yaml_files(path):
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
    return [p for p in (path.with_suffix(".yml"), path.with_suffix(".yaml")) if p.is_file()]


@functools.lru_cache(maxsize=8)
def load_topology(inventory=DEFAULT_INVENTORY):
    inventory = Path(inventory)
    hosts = {}
    for path in _yaml_files(inventory):
        if path.stem == "services":
            continue  # the services inventory file: Kubernetes manifests, not hosts
        data = yaml.safe_load(path.read_text()) or {}
        group = _find_group(data, "nodes")
        if group is not None:
            hosts.update(_group_hosts(group))
    lab = {}
    for path in _yaml_files(inventory / "group_vars" / "all"):
        lab.update((yaml.safe_load(path.read_text()) or {}).get("podnet_lab") or {})
    if not hosts:
        raise LabError(f"{inventory}: no hosts in group 'nodes'")
    missing = {"node_subnet", "router_ip", "client_ip", "internet_subnet", "router_internet_ip",
               "internet_ip"} - set(lab)
    if missing:
        raise LabError(f"{inventory}/group_vars/all: podnet_lab lacks {', '.join(sorted(missing))}")
    node_subnet = ipaddress.ip_network(lab["node_subnet"])
    internet_subnet = ipaddress.ip_network(lab["internet_subnet"])
    segments = list(_segments(inventory, lab))
    nodes, node_segments = {}, []
    for name, hostvars in hosts.items():
        if name in INFRA:
            raise LabError(f"{inventory}: node name {name!r} is reserved for the lab")
        ip = (hostvars or {}).get("node_ip")
        segment = next((s for s in segments if ip is not None and ipaddress.ip_address(ip) in s[0]), None)
        if segment is not None:
            subnet, bridge, _router_if, router_ip = segment
            node_segments.append((name, (bridge, subnet.prefixlen, router_ip)))
        elif ip is None or ipaddress.ip_address(ip) not in node_subnet:
            subnets = ", ".join(str(s) for s in [node_subnet] + [s[0] for s in segments])
            raise LabError(f"{inventory}: host {name}: node_ip {ip!r} is not in {subnets}")
        if str(ip) in (*nodes.values(), lab["router_ip"], lab["client_ip"]):
            raise LabError(f"{inventory}: host {name}: node_ip {ip} is already taken")
        nodes[name] = str(ip)
    return Topology(
        prefix=lab.get("prefix", "podnet-"),
        nodes=nodes,
        node_prefixlen=node_subnet.prefixlen,
        router_ip=lab["router_ip"],
        client_ip=lab["client_ip"],
        internet_prefixlen=internet_subnet.prefixlen,
        router_internet_ip=lab["router_internet_ip"],
        internet_ip=lab["internet_ip"],
        client_routes=tuple(_client_routes(inventory, lab, nodes)),
        machines=tuple((node, release) for node, release, _ in _machines(inventory, lab, nodes)),
        inits=tuple((node, init) for node, _, init in _machines(inventory, lab, nodes) if init),
        segments=tuple((bridge, router_if, router_ip, subnet.prefixlen)
                       for subnet, bridge, router_if, router_ip in segments),
        node_segments=tuple(node_segments),
    )


def _segments(inventory, lab):
    """podnet_lab.segments: [{subnet, router_ip}], each a bridge brN and the router's segN."""
    for number, segment in enumerate(lab.get("segments") or [], 1):
        where = f"{inventory}/group_vars/all: podnet_lab.segments[{number - 1}]"
        try:
            subnet = ipaddress.ip_network(segment["subnet"])
            router_ip = ipaddress.ip_address(segment["router_ip"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"{where}: needs subnet and router_ip ({exc})") from None
        if router_ip not in subnet:
            raise LabError(f"{where}: router_ip {router_ip} is not in {subnet}")
        yield subnet, f"br{number}", f"seg{number}", str(router_ip)


def _machines(inventory, lab, nodes):
    """(node, release, init or None) from `machines: {node: release}` or
    `machines: {node: {release: ..., init: systemd|sshd}}`."""
    for node, spec in (lab.get("machines") or {}).items():
        where = f"{inventory}/group_vars/all: podnet_lab.machines[{node}]"
        if node not in nodes:
            raise LabError(f"{where}: not a node")
        if not isinstance(spec, dict):
            spec = {"release": spec}
        unknown = sorted(set(spec) - {"release", "init"})
        if unknown or "release" not in spec:
            raise LabError(f"{where}: needs `release` (and may have `init`), "
                           f"not {', '.join(unknown) or 'nothing'}")
        init = spec.get("init")
        if init is not None and init not in machines.INITS:
            raise LabError(f"{where}.init: {init!r} is not one of {', '.join(machines.INITS)}")
        yield node, str(spec["release"]), init


def _client_routes(inventory, lab, nodes):
    for cidr, node in (lab.get("client_routes") or {}).items():
        if node not in nodes:
            raise LabError(
                f"{inventory}/group_vars/all: podnet_lab.client_routes[{cidr}]: {node!r} is not a node")
        yield str(ipaddress.ip_network(cidr)), nodes[node]


# ---------------------------------------------------------------- helpers

def run(argv, stdin=None, check=True):
    proc = subprocess.run(argv, input=stdin, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise LabError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def ip_batch(lines, netns=None):
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, stdin="".join(line + "\n" for line in lines))


def ns_id(path):
    """(dev, inode) of a bound namespace file, or None if it is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_dev == NSFS_DEV else None


def netns_path(ns):
    return NETNS_DIR / ns


def mount_ns_path(topo, node):
    return topo.run_dir / f"{node}.mnt"


def node_disk(topo, node, path=""):
    return topo.state_dir / "nodes" / node / path.lstrip("/")


def machine_root(topo, node):
    return topo.state_dir / "machines" / node


def machine_pidfile(topo, node):
    return topo.run_dir / f"{node}.boot.pid"


def _boot_process_alive(topo, node):
    try:
        pid = int(machine_pidfile(topo, node).read_text())
    except (OSError, ValueError):
        return False
    return not _is_zombie(pid)


def machine_init_pid(topo, node):
    """PID 1 of a machine node (as this host numbers it), or None when it is down."""
    try:
        boot_pid = int(machine_pidfile(topo, node).read_text())
    except (OSError, ValueError):
        return None
    if ns_id(f"/proc/{boot_pid}/ns/net") != ns_id(netns_path(topo.ns(node))) or _is_zombie(boot_pid):
        return None
    pid = machines.init_pid(boot_pid)
    return pid if pid and not _is_zombie(pid) else None


def nsenter_argv(topo, name):
    if name in INFRA:
        return ["nsenter", f"--net={netns_path(topo.ns(name))}", "--"]
    if topo.is_machine(name):
        pid = machine_init_pid(topo, name)
        if pid is None:
            raise LabError(f"machine {name} is not running: run create (or reboot {name})")
        return machines.enter_argv(pid)
    return ["nsenter", f"--mount={mount_ns_path(topo, name)}", f"--net={netns_path(topo.ns(name))}", "--"]


def set_sysctls(ns, values):
    run(["nsenter", f"--net={netns_path(ns)}", "--", "sysctl", "-q", "-w",
         *(f"{k}={v}" for k, v in values.items())])


@functools.lru_cache(maxsize=4)
def _lock(lock_file):
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


# ---------------------------------------------------------------- importable API

def node_exec_argv(node, inventory=DEFAULT_INVENTORY):
    """argv prefix that runs a command inside a lab node (net + mount ns) or
    inside client/router/internet/switch (net ns only)."""
    topo = load_topology(Path(inventory).resolve())
    if node not in topo.nodes and node not in INFRA:
        raise LabError(f"unknown lab host {node!r}: nodes are {', '.join(topo.nodes)}; "
                       f"also {', '.join(INFRA)}")
    return nsenter_argv(topo, node)


def lab_namespaces(inventory=DEFAULT_INVENTORY):
    return load_topology(inventory).namespaces()


def node_is_up(topo, node):
    if topo.is_machine(node):
        return machine_init_pid(topo, node) is not None
    return bool(ns_id(mount_ns_path(topo, node)))


def lab_is_up(topo):
    return (all(ns_id(netns_path(ns)) for ns in topo.namespaces())
            and all(node_is_up(topo, n) for n in topo.nodes)
            and echo_pid(topo) is not None and router_dns_pid(topo) is not None
            and (not topo.machines or mirror_pid(topo) is not None))


# ---------------------------------------------------------------- building

def attach_to_switch(topo, name, ip, prefixlen, gateway, bridge="br0"):
    """Plug namespace `name` into `bridge` as eth0 with `ip`, default route via `gateway`."""
    port = topo.switch_port(name)
    # A fixed MAC per address, as a real NIC has: after a simulated reboot the
    # other nodes' neighbour entries for this node are still right.
    mac = "02:00:" + ":".join("%02x" % int(octet) for octet in ip.split("."))
    ip_batch([f"link add {port} type veth peer name eth0 address {mac} netns {topo.ns(name)}",
              f"link set {port} master {bridge}",
              f"link set {port} up"], netns=topo.ns("switch"))
    lines = ["link set lo up", f"addr add {ip}/{prefixlen} dev eth0", "link set eth0 up"]
    if gateway:
        lines.append(f"route add default via {gateway}")
    ip_batch(lines, netns=topo.ns(name))


def build_infra(topo):
    ip_batch([f"netns add {topo.ns(n)}" for n in INFRA])
    ip_batch(["link set lo up", "link add br0 type bridge", "link set br0 up"], netns=topo.ns("switch"))
    attach_to_switch(topo, "router", topo.router_ip, topo.node_prefixlen, None)
    # Each further segment: its own bridge, the router's leg on it (the router routes between
    # the node subnets and knows nothing of podCIDRs).
    for bridge, router_if, router_ip, prefixlen in topo.segments:
        port = topo.switch_port("router-" + router_if)
        ip_batch([f"link add {bridge} type bridge", f"link set {bridge} up",
                  f"link add {port} type veth peer name {router_if} netns {topo.ns('router')}",
                  f"link set {port} master {bridge}", f"link set {port} up"], netns=topo.ns("switch"))
        ip_batch([f"addr add {router_ip}/{prefixlen} dev {router_if}", f"link set {router_if} up"],
                 netns=topo.ns("router"))
    attach_to_switch(topo, "client", topo.client_ip, topo.node_prefixlen, topo.router_ip)
    if topo.client_routes:
        ip_batch([f"route add {cidr} via {via}" for cidr, via in topo.client_routes], netns=topo.ns("client"))
    # The internet is a separate segment: a direct veth from the router.
    ip_batch([f"link add eth1 type veth peer name eth0 netns {topo.ns('internet')}",
              f"addr add {topo.router_internet_ip}/{topo.internet_prefixlen} dev eth1",
              "link set eth1 up"], netns=topo.ns("router"))
    ip_batch(["link set lo up",
              f"addr add {topo.internet_ip}/{topo.internet_prefixlen} dev eth0",
              "link set eth0 up",
              f"route add default via {topo.router_internet_ip}"], netns=topo.ns("internet"))
    for name, values in INFRA_SYSCTLS.items():
        set_sysctls(topo.ns(name), values)


def build_node_netns(topo, node):
    """A node's network namespace as it is at boot."""
    run(["ip", "netns", "add", topo.ns(node)])
    set_sysctls(topo.ns(node), NODE_BOOT_SYSCTLS)
    bridge, prefixlen, gateway = topo.attachment(node)
    attach_to_switch(topo, node, topo.nodes[node], prefixlen, gateway, bridge)


def mount_boot_filesystems(topo, node):
    """What a node's boot mounts: an empty /run and a sysfs showing its own interfaces."""
    run(nsenter_argv(topo, node) + ["/bin/sh", "-ec",
        "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run; mkdir -p /run/lock; "
        "mount -t sysfs sysfs /sys"])


def created_mountpoints(topo):
    return topo.state_dir / "host-mountpoints.json"


def ensure_host_mountpoints(topo):
    """Bind mounts need their target to exist on the shared filesystem."""
    record = created_mountpoints(topo)
    created = json.loads(record.read_text()) if record.exists() else []
    for path in NODE_PRIVATE_DIRS:
        missing = []
        p = Path(path)
        while not p.exists():
            missing.append(str(p))
            p = p.parent
        for d in reversed(missing):
            os.mkdir(d, 0o755)
            created.append(d)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(created, indent=1) + "\n")


def build_node_mount_ns(topo, node):
    for path in NODE_PRIVATE_DIRS:
        disk = node_disk(topo, node, path)
        if not disk.exists():
            if path in SEEDED_FROM_HOST and Path(path).is_dir():
                shutil.copytree(path, disk, symlinks=True)
            else:
                disk.mkdir(parents=True)
    mnt = mount_ns_path(topo, node)
    mnt.touch()
    # slave: the node still sees the host's later mounts (netns add/del under
    # /run/netns), but nothing it mounts leaks back to the host.
    run(["unshare", f"--mount={mnt}", "--propagation", "slave", "true"])
    mount_boot_filesystems(topo, node)
    binds = "; ".join(f"mount --bind {shlex.quote(str(node_disk(topo, node, p)))} {shlex.quote(p)}"
                      for p in NODE_PRIVATE_DIRS)
    run(nsenter_argv(topo, node) + ["/bin/sh", "-ec", binds])


def echo_pidfile(topo):
    return topo.run_dir / "internet-echo.pid"


def echo_log(topo):
    return topo.run_dir / "internet-echo.log"


def router_dns_pidfile(topo):
    return topo.run_dir / "router-dns.pid"


def mirror_pidfile(topo):
    return topo.run_dir / "mirror.pid"


def _pid_in(pidfile, netns):
    try:
        pid = int(pidfile.read_text())
        alive = ns_id(f"/proc/{pid}/ns/net") == ns_id(netns_path(netns))
    except (OSError, ValueError):
        return None
    return pid if alive and not _is_zombie(pid) else None


def mirror_pid(topo):
    return _pid_in(mirror_pidfile(topo), topo.ns("internet"))


def mirror_url(topo):
    return f"http://{topo.internet_ip}:{machines.MIRROR_PORT}"


def start_mirror(topo):
    """The LAN's Debian mirror, served from the internet namespace: one flat repository per
    release the machines run (lab/machines.py builds and caches them)."""
    if mirror_pid(topo):
        return
    web = topo.state_dir / "mirror"
    web.mkdir(parents=True, exist_ok=True)
    for release in sorted(set(dict(topo.machines).values())):
        link = web / release
        if not link.exists():
            link.symlink_to(machines.mirror(release))
    with open(topo.run_dir / "mirror.log", "ab") as log:
        proc = subprocess.Popen(
            nsenter_argv(topo, "internet") + ["/usr/bin/python3", "-m", "http.server", "--bind",
                                              topo.internet_ip, "--directory", str(web),
                                              str(machines.MIRROR_PORT)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
    mirror_pidfile(topo).write_text(f"{proc.pid}\n")
    argv = nsenter_argv(topo, "client") + ["curl", "-sf", "-o", "/dev/null", "--max-time", "1",
                                           mirror_url(topo) + "/"]
    deadline = time.monotonic() + 10
    while subprocess.run(argv, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"the mirror did not start; see {topo.run_dir / 'mirror.log'}")
        time.sleep(0.1)


def ssh_key(topo):
    """The admin's key pair (the workstation's), made once per lab."""
    key = topo.state_dir / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@podnet-lab", "-f", str(key)])
    return key


def machine_init_file(topo, node):
    """What the machine booted as PID 1 (`systemd`, or `sshd` and why)."""
    return topo.run_dir / f"{node}.init"


def machine_init(topo, node):
    try:
        init, _, why = machine_init_file(topo, node).read_text().partition("\n")
    except OSError:
        return "systemd", ""
    return init.strip() or "systemd", why.strip()


def boot_machine(topo, node, wait=True, init=None, why=""):
    """Power on a machine node: systemd (or, as the fallback, sshd alone) as PID 1 in its
    own namespaces, inside its netns."""
    init = init or topo.init(node)
    root = machine_root(topo, node)
    machines.prepare_root(root, topo.release(node), node, mirror_url(topo),
                          ssh_key(topo).with_suffix(".pub").read_text())
    machine_init_file(topo, node).write_text(f"{init}\n{why}\n")
    log = open(topo.run_dir / f"{node}.boot.log", "ab")
    proc = subprocess.Popen(machines.boot_argv(netns_path(topo.ns(node)), root, init),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
                            start_new_session=True)
    machine_pidfile(topo, node).write_text(f"{proc.pid}\n")
    if wait:
        return await_machine(topo, node)
    return None


class BootFailed(LabError):
    """A machine's init did not come up."""


def _ssh_answers(topo, node):
    return subprocess.run(nsenter_argv(topo, "client")
                          + ["/bin/sh", "-c", f"echo | socat -T1 - TCP:{topo.nodes[node]}:22"],
                          capture_output=True, text=True).stdout.startswith("SSH-")


def wait_for_machine(topo, node, timeout=90):
    """Until the machine has booted (systemd running or degraded; or its sshd-only
    fallback up) and sshd answers. Returns a word or two for the status line."""
    init, why = machine_init(topo, node)
    deadline = time.monotonic() + timeout
    state = "no PID 1"
    while time.monotonic() < deadline:
        pid = machine_init_pid(topo, node)
        if pid is None and not _boot_process_alive(topo, node):
            log = topo.run_dir / f"{node}.boot.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise BootFailed(f"machine {node} did not boot: {' / '.join(tail)} (see {log})")
        if pid and init == "sshd":
            if _ssh_answers(topo, node):
                return f"NO systemd: sshd runs as PID 1{' (' + why + ')' if why else ''}"
        elif pid:
            proc = subprocess.run(machines.enter_argv(pid) + ["systemctl", "is-system-running"],
                                  capture_output=True, text=True)
            state = proc.stdout.strip() or proc.stderr.strip()
            if state in ("running", "degraded") and _ssh_answers(topo, node):
                return f"systemd {state}"
        time.sleep(0.2)
    raise BootFailed(f"machine {node} did not finish booting in {timeout} s ({init}: {state}); "
                     f"see {topo.run_dir / (node + '.boot.log')}")


def await_machine(topo, node):
    """wait_for_machine, falling back to sshd alone when systemd cannot boot: the node
    stays reachable over SSH, and the status line says it runs without an init."""
    try:
        return wait_for_machine(topo, node)
    except BootFailed as failed:
        if machine_init(topo, node)[0] != "systemd":
            raise
        print(f"  {node}: systemd could not boot on Debian {topo.release(node)} here ({failed}); "
              f"falling back to sshd as PID 1 (no podnet-restore at boot)", file=sys.stderr)
        kill_lab_processes({ns_id(netns_path(topo.ns(node)))}, set())
        boot_machine(topo, node, wait=False, init="sshd", why=f"systemd could not boot: {failed}")
        return wait_for_machine(topo, node)


def echo_pid(topo):
    return _pid_in(echo_pidfile(topo), topo.ns("internet"))


def start_echo_server(topo):
    if echo_pid(topo):
        return
    log_start = echo_log(topo).stat().st_size if echo_log(topo).exists() else 0
    with open(echo_log(topo), "ab") as log:
        proc = subprocess.Popen(
            nsenter_argv(topo, "internet") + ["/usr/bin/python3", str(ECHO_SERVER), "--name", "internet",
                                              "--listen", "tcp:80", "--listen", "udp:80"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
            start_new_session=True)
    echo_pidfile(topo).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"echo server exited ({proc.returncode}); see {echo_log(topo)}")
        if b"listening" in echo_log(topo).read_bytes()[log_start:]:
            return
        time.sleep(0.02)
    raise LabError(f"echo server did not start within 5 s; see {echo_log(topo)}")


def router_dns_pid(topo):
    return _pid_in(router_dns_pidfile(topo), topo.ns("router"))


def start_router_dns(topo):
    """The upstream resolver a homelab's router would be, answering only the test zone:
    no resolv.conf, no server, and `local=/#/` makes every other name NXDOMAIN here, so
    nothing the lab asks ever reaches a real resolver. kill_lab_processes ends it with
    the router's namespace."""
    if router_dns_pid(topo):
        return
    records = [f"--host-record={name},{getattr(topo, field)}" for name, field in ROUTER_DNS_RECORDS.items()]
    run(nsenter_argv(topo, "router") + [
        "/usr/sbin/dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--local=/#/",
        f"--listen-address={topo.router_ip}", "--bind-interfaces", "--local-ttl=60",
        f"--pid-file={router_dns_pidfile(topo)}", *records])


def write_state(topo):
    state_file = topo.run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"namespaces": [], "nodes": []}
    state["namespaces"] = sorted(set(state["namespaces"]) | set(topo.namespaces()))
    state["nodes"] = sorted(set(state["nodes"]) | set(topo.nodes))
    state_file.write_text(json.dumps(state, indent=1) + "\n")


def create(topo):
    _lock(topo.lock_file)
    if lab_is_up(topo):
        print("lab is already up")
        return 0
    start = time.monotonic()
    topo.run_dir.mkdir(mode=0o755, exist_ok=True)
    present = [ns for ns in topo.namespaces() if ns_id(netns_path(ns))]
    if not ns_id(netns_path(topo.ns("switch"))) or not all(ns_id(netns_path(topo.ns(n))) for n in INFRA):
        if present:
            raise LabError(f"a partial lab exists ({', '.join(present)}): run destroy first")
        write_state(topo)
        build_infra(topo)
    write_state(topo)
    for node in topo.nodes:
        if not ns_id(netns_path(topo.ns(node))):
            if ns_id(mount_ns_path(topo, node)) or machine_init_pid(topo, node):
                raise LabError(f"node {node} runs but has no netns: run destroy first")
            build_node_netns(topo, node)
    if any(not topo.is_machine(n) for n in topo.nodes):
        ensure_host_mountpoints(topo)
    for node in topo.nodes:
        if not topo.is_machine(node) and not ns_id(mount_ns_path(topo, node)):
            build_node_mount_ns(topo, node)
    start_echo_server(topo)
    start_router_dns(topo)
    if topo.machines:
        start_mirror(topo)
        booting = [n for n in topo.nodes if topo.is_machine(n) and not machine_init_pid(topo, n)]
        for node in booting:
            boot_machine(topo, node, wait=False)
        for node in booting:
            print(f"  {node}: Debian {topo.release(node)}, {await_machine(topo, node)}")
    print(f"lab is up: {', '.join(topo.namespaces())} ({time.monotonic() - start:.2f} s)")
    return 0


# ---------------------------------------------------------------- tearing down

def _is_zombie(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def pod_netns_ids(topo, node):
    """Namespaces bound under the node's own /run/netns (its pods)."""
    if topo.is_machine(node) or not ns_id(mount_ns_path(topo, node)):
        return set()  # a machine's pods end with its PID namespace and mounts
    proc = run(["nsenter", f"--mount={mount_ns_path(topo, node)}", "--", "/bin/sh", "-c",
                'for f in /run/netns/*; do [ -e "$f" ] && stat -L -c "%d %i" "$f"; done; true'],
               check=False)
    return {tuple(int(x) for x in line.split()) for line in proc.stdout.splitlines() if line.strip()}


def lab_processes(net_ids, mnt_ids):
    """Every live process in one of the given namespaces, and its descendants (one /proc scan)."""
    children, victims = {}, set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            net, mnt = ns_id(f"/proc/{pid}/ns/net"), ns_id(f"/proc/{pid}/ns/mnt")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
        if net in net_ids or mnt in mnt_ids:
            victims.add(pid)
    todo = list(victims)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in victims:
                victims.add(child)
                todo.append(child)
    return {pid for pid in victims - {os.getpid(), os.getppid()} if not _is_zombie(pid)}


def kill_lab_processes(net_ids, mnt_ids):
    """SIGKILL every process in one of the given namespaces, and its descendants, scanning
    again until a scan finds none: a process one of them forked just after a scan (a
    background `setsid` during a reboot) is found by the next."""
    net_ids, mnt_ids = set(net_ids) - {None}, set(mnt_ids) - {None}
    deadline = time.monotonic() + 5
    while True:
        victims = lab_processes(net_ids, mnt_ids)
        if not victims:
            return
        if time.monotonic() > deadline:
            raise LabError(f"processes would not die: {sorted(victims)}")
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def destroy(topo):
    _lock(topo.lock_file)
    start = time.monotonic()
    state_file = topo.run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    namespaces = sorted(set(topo.namespaces()) | set(state.get("namespaces", [])))
    nodes = sorted(set(topo.nodes) | set(state.get("nodes", [])))
    net_ids = {ns_id(netns_path(ns)) for ns in namespaces}
    for node in nodes:
        net_ids |= pod_netns_ids(topo, node)
    # A machine's PID 1 lives in its node's netns: killing it ends its whole PID
    # namespace (pods, sshd, dnsmasq) and with it the machine's mounts.
    kill_lab_processes(net_ids, {ns_id(mount_ns_path(topo, n)) for n in nodes})
    for node in nodes:
        if ns_id(mount_ns_path(topo, node)):
            run(["umount", str(mount_ns_path(topo, node))])
    present = [ns for ns in namespaces if netns_path(ns).exists()]
    if present:
        ip_batch([f"netns del {ns}" for ns in present])
    shutil.rmtree(topo.run_dir, ignore_errors=True)
    record = created_mountpoints(topo)
    created = json.loads(record.read_text()) if record.exists() else []
    _refuse_mounts_below(topo.state_dir)
    # rm(1), not shutil.rmtree: a machine's root filesystem is tens of thousands of files,
    # and --one-file-system never follows a mount that appeared since the check.
    run(["rm", "-rf", "--one-file-system", "--", str(topo.state_dir)])
    # Another lab's nodes may have these host directories as their mountpoints: removing
    # one would detach that lab's bind mounts. Only the last lab standing removes them.
    others = [d for d in Path("/run").glob("*lab") if d != topo.run_dir and (d / "state.json").exists()]
    for path in reversed(created if not others else []):
        try:
            os.rmdir(path)
        except OSError:
            pass  # not empty or already gone: something else owns it now
    print(f"lab destroyed ({time.monotonic() - start:.2f} s)")
    return 0


def _refuse_mounts_below(path):
    """Never delete through a mount: a machine's root must be unmounted (its PID 1 dead)."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as mounts:
        below = [line.split()[4] for line in mounts if line.split()[4].startswith(prefix)]
    if below:
        raise LabError(f"still mounted below {path}: {', '.join(below[:5])}")


def reboot_machine(topo, node):
    """Pull the plug and power on again: PID 1 killed (its PID namespace ends), the
    network namespace torn down and made anew, systemd booted from the same disk; then
    wait for podnet-restore.service, which brings the network back by itself."""
    start = time.monotonic()
    kill_lab_processes({ns_id(netns_path(topo.ns(node)))}, set())
    run(["ip", "-n", topo.ns("switch"), "link", "del", topo.switch_port(node)], check=False)
    if netns_path(topo.ns(node)).exists():
        run(["ip", "netns", "del", topo.ns(node)])
    build_node_netns(topo, node)
    boot_machine(topo, node, wait=False)
    state = await_machine(topo, node)
    print(f"{node} rebooted: {state} after {time.monotonic() - start:.2f} s")
    argv = nsenter_argv(topo, node)
    unit = subprocess.run(argv + ["systemctl", "show", "-p", "ActiveState", "-p", "Result",
                                  "podnet-restore.service"], capture_output=True, text=True).stdout
    journal = subprocess.run(argv + ["journalctl", "-b", "-o", "cat", "--no-pager",
                                     "-u", "podnet-restore.service"],
                             capture_output=True, text=True).stdout
    print(journal, end="")
    if "LoadState=not-found" in unit or not journal.strip():
        print(f"podnet-restore.service did not run on {node}")
    elif "Result=success" not in unit:
        print(f"podnet-restore.service failed on {node}: {unit.split()}", file=sys.stderr)
        return 1
    return 0


def reboot(topo, node):
    _lock(topo.lock_file)
    if node not in topo.nodes:
        raise LabError(f"{node!r} is not a node of the inventory ({', '.join(topo.nodes)})")
    if topo.is_machine(node):
        if not ns_id(netns_path(topo.ns("switch"))):
            raise LabError("the lab is not up: run create first")
        return reboot_machine(topo, node)
    if not (ns_id(mount_ns_path(topo, node)) and ns_id(netns_path(topo.ns("switch")))):
        raise LabError("the lab is not up: run `make lab` first")
    start = time.monotonic()
    old_net = ns_id(netns_path(topo.ns(node)))
    kill_lab_processes({old_net} | pod_netns_ids(topo, node), {ns_id(mount_ns_path(topo, node))})
    # /run (and with it the pods' namespaces) is a tmpfs: a reboot wipes it.
    # sysfs pins the old netns, so it goes too. The bind mounts are the disk.
    run(["nsenter", f"--mount={mount_ns_path(topo, node)}", "--", "/bin/sh", "-c",
         "umount -l /run; umount -l /sys; true"])
    # Delete the veth explicitly: netns teardown is asynchronous and the
    # switch port name is reused at once.
    run(["ip", "-n", topo.ns("switch"), "link", "del", topo.switch_port(node)], check=False)
    if netns_path(topo.ns(node)).exists():
        run(["ip", "netns", "del", topo.ns(node)])
    build_node_netns(topo, node)
    mount_boot_filesystems(topo, node)
    print(f"{node} rebooted ({time.monotonic() - start:.2f} s)")
    if not os.access(node_disk(topo, node, RESTORE_ENTRY_POINT), os.X_OK):
        print(f"{RESTORE_ENTRY_POINT} is absent on {node}: nothing to restore")
        return 0
    print(f"running {RESTORE_ENTRY_POINT} on {node}", flush=True)
    proc = subprocess.run(nsenter_argv(topo, node) + [RESTORE_ENTRY_POINT])
    if proc.returncode != 0:
        print(f"{RESTORE_ENTRY_POINT} failed on {node} (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode
    return 0


# ---------------------------------------------------------------- status, exec, shell

def status(topo):
    up = True
    for name in (*INFRA, *topo.nodes):
        ns = topo.ns(name)
        if not ns_id(netns_path(ns)):
            print(f"  {name:10} {ns:20} absent")
            up = False
            continue
        addrs = json.loads(run(["ip", "-n", ns, "-j", "-4", "addr", "show"]).stdout or "[]")
        cidrs = " ".join(f"{a['local']}/{a['prefixlen']}" for link in addrs
                         for a in link.get("addr_info", []) if link["ifname"] != "lo")
        extra = ""
        if name in topo.nodes and topo.is_machine(name):
            pid = machine_init_pid(topo, name)
            up &= pid is not None
            init, why = machine_init(topo, name)
            if pid and init == "sshd":
                extra = (f"  Debian {topo.release(name)}, NO systemd: sshd is PID {pid} "
                         f"({why or 'as the inventory says'})")
            elif pid:
                state = subprocess.run(nsenter_argv(topo, name) + ["systemctl", "is-system-running"],
                                       capture_output=True, text=True).stdout.strip()
                extra = f"  Debian {topo.release(name)}, systemd PID {pid}: {state}"
            else:
                extra = f"  Debian {topo.release(name)}: powered off"
        elif name in topo.nodes:
            mounted = bool(ns_id(mount_ns_path(topo, name)))
            up &= mounted
            extra = (f"  pods: {len(pod_netns_ids(topo, name))}" if mounted else "  NO mount namespace")
        print(f"  {name:10} {ns:20} {cidrs}{extra}")
    pid = echo_pid(topo) if ns_id(netns_path(topo.ns("internet"))) else None
    up &= pid is not None
    print(f"  echo server on {topo.internet_ip}:80: " + (f"pid {pid}" if pid else "not running"))
    dns = router_dns_pid(topo) if ns_id(netns_path(topo.ns("router"))) else None
    up &= dns is not None
    print(f"  DNS ({ROUTER_DNS_ZONE}) on {topo.router_ip}:53: " + (f"pid {dns}" if dns else "not running"))
    if topo.machines:
        pid = mirror_pid(topo) if ns_id(netns_path(topo.ns("internet"))) else None
        up &= pid is not None
        print(f"  Debian mirror at {mirror_url(topo)}: " + (f"pid {pid}" if pid else "not running"))
    print("lab is up" if up else "lab is NOT (fully) up")
    return 0 if up else 1


def exec_in(topo, node, cmd):
    if not cmd:
        raise LabError("exec: no command given (exec NODE -- CMD...)")
    if node not in topo.nodes and node not in INFRA:
        raise LabError(f"unknown lab host {node!r}: nodes are {', '.join(topo.nodes)}; "
                       f"also {', '.join(INFRA)}")
    if not ns_id(netns_path(topo.ns(node))) or (node in topo.nodes and not node_is_up(topo, node)):
        raise LabError(f"{node} does not exist: run `make lab` first")
    argv = nsenter_argv(topo, node)
    sys.stdout.flush()
    os.execvp(argv[0], argv + cmd)


def main(argv=None):
    parser = argparse.ArgumentParser(description="The podnet lab: namespaces on this machine as nodes.")
    parser.add_argument("--inventory", default=str(DEFAULT_INVENTORY),
                        help="Ansible inventory directory of the lab (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create", help="build the lab (no-op if it is up)")
    sub.add_parser("destroy", help="remove the lab and everything it started")
    sub.add_parser("status", help="show what exists")
    p = sub.add_parser("reboot", help="simulate a node reboot, then run its podnet-restore")
    p.add_argument("node")
    p = sub.add_parser("exec", help="run a command in a node (or client/router/internet/switch)")
    p.add_argument("node")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("shell", help="an interactive shell in a node")
    p.add_argument("node")
    args = parser.parse_args(argv)

    try:
        topo = load_topology(Path(args.inventory).resolve())
        if args.command == "create":
            return create(topo)
        if args.command == "destroy":
            return destroy(topo)
        if args.command == "status":
            return status(topo)
        if args.command == "reboot":
            return reboot(topo, args.node)
        if args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return exec_in(topo, args.node, cmd)
        if args.command == "shell":
            os.environ["debian_chroot"] = topo.ns(args.node)  # Debian's bashrc shows it in the prompt
            return exec_in(topo, args.node, [os.environ.get("SHELL", "/bin/bash")])
    except LabError as e:
        print(f"podnet-lab: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Real Debian machines as lab nodes: their own root filesystem, systemd as PID 1, sshd.

A machine node is what a homelab user has: a fresh minimal Debian server (python3,
openssh-server, sudo, iproute2, iputils-ping and nothing of podnet's), an `admin` user with
an SSH key and passwordless sudo, and apt pointed at a package mirror on the LAN. The
mirror is the lab's "internet" namespace serving, per release, every package podnet's
roles install (with their dependencies): a package a role forgets to install is then a
failed converge, not a silent success.

    image(release)   /var/cache/podnet-lab/images/<release>-<recipe hash>.tar (mmdebstrap, cached)
    mirror(release)  /var/cache/podnet-lab/mirror/<release>-<recipe hash>/   (flat repo, cached)

Booting (boot_argv): inside the node's network namespace, `unshare` gives the machine its
own mount, PID, UTS, IPC and cgroup namespaces; a shell mounts its /proc, a read-only
/sys, /proc/sys read-only except /proc/sys/net (so systemd-sysctl can only set the
node's own network sysctls, never the host's kernel.* ones), and a private /dev (a tmpfs
with null, zero, full, random, urandom, tty, ptmx and devpts; /dev/console is /dev/null),
then chroots and execs systemd as PID 1 with `container=podnet-lab`. Gettys, udev,
timesyncd are masked in the image: a node never touches the host's consoles, devices or
clock. Stopping a machine is pulling its plug: SIGKILL to its PID 1 ends the whole PID
namespace.
"""

import contextlib
import fcntl
import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Shared by every lab on this machine (a build takes a minute, a lab seconds); a
# developer can point a lab at another cache with PODNET_LAB_CACHE.
CACHE = Path(os.environ.get("PODNET_LAB_CACHE") or "/var/cache/podnet-lab")
MIRROR_PORT = 3142
ADMIN = "admin"

# What a fresh minimal server has (plus systemd to boot it). Nothing of podnet's. apt is
# named: a flat mirror's Packages carry the .debs' own priorities, where bookworm's apt is
# not "required", so minbase alone would leave it out.
BASE_PACKAGES = ("apt", "systemd-sysv", "python3", "openssh-server", "sudo", "iproute2", "iputils-ping")
# What the roles' apt tasks may ask for besides their own lists: Ansible's apt module
# installs python3-apt itself when it is missing. socat is the tests' UDP client. ufw is
# the firewall the machine scenario gives node3 before podnet arrives, dbus the system bus
# networkctl reaches networkd over on node3, whose uplink systemd-networkd (part of the
# systemd package on Debian 12 and 13) manages there (molecule/nodes/prepare.yml).
EXTRA_MIRROR_PACKAGES = ("python3-apt", "socat", "ufw", "dbus")
# Units a machine in a namespace must not run: consoles and ttys are the host's, udev
# would trigger the host's devices, timesyncd would set the host's clock.
MASKED_UNITS = (
    "getty@.service", "serial-getty@.service", "console-getty.service", "container-getty@.service",
    "getty-static.service", "getty.target", "systemd-udevd.service", "systemd-udev-trigger.service",
    "systemd-udev-settle.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-timesyncd.service", "systemd-firstboot.service", "systemd-hwdb-update.service",
)
RECIPE_VERSION = "2"


class MachineError(Exception):
    pass


def role_packages():
    """Every package list a role declares in its defaults (`*_packages`): what the mirror serves."""
    packages = []
    for defaults in sorted((REPO / "roles").glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        for key, value in data.items():
            if key.endswith("_packages") and isinstance(value, list):
                packages.extend(str(p) for p in value)
    return sorted(set(packages))


def _recipe_hash(*parts):
    return hashlib.sha256("\n".join([RECIPE_VERSION, *parts]).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _building(target):
    """One build of a cache entry at a time: labs with other prefixes share the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(argv, log):
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise MachineError(f"`{shlex.join(argv[:4])} ...` failed ({proc.returncode}); see {log}")


_DOWNLOAD_ALL = (
    'chroot "$1" /bin/sh -c \'mkdir -p /var/cache/podnet-pool && cd /var/cache/podnet-pool && '
    'dpkg-query -W -f "\\${Package}=\\${Version}\\n" | xargs apt-get download -q\''
)


def mirror(release):
    """The flat package repository for `release`: the base system, every role's packages and
    their dependencies, as Debian has them today. Built once, then cached."""
    packages = sorted(set(BASE_PACKAGES) | set(role_packages()) | set(EXTRA_MIRROR_PACKAGES))
    target = CACHE / "mirror" / f"{release}-{_recipe_hash(release, *packages)}"
    with _building(target):
        if not (target / "Packages").exists():
            _build_mirror(target, release, packages)
    return target


def _build_mirror(target, release, packages):
    tmp = target.with_name(target.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    (tmp / "pool").mkdir(parents=True)
    log = target.with_name(target.name + ".log")
    # In the finished chroot, apt downloads again every package that is installed
    # (essential ones included, at the versions installed): that set is the mirror.
    _run(["mmdebstrap", "--variant=minbase", "--format=null", "--include=" + ",".join(packages),
          "--customize-hook=" + _DOWNLOAD_ALL,
          f"--customize-hook=sync-out /var/cache/podnet-pool {tmp / 'pool'}",
          release], log)
    with open(tmp / "Packages", "wb") as out:
        subprocess.run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], cwd=tmp,
                       stdout=out, stderr=subprocess.DEVNULL, check=True)
    # A Release file, as every Debian mirror has (apt refuses a repository without one).
    # It names its suite: mmdebstrap picks the essential set by suite and codename.
    release_text = subprocess.run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={release}",
                                   "-o", f"APT::FTPArchive::Release::Codename={release}", "release", "."],
                                  cwd=tmp, capture_output=True, check=True).stdout
    (tmp / "Release").write_bytes(release_text)
    subprocess.run(["rm", "-rf", str(target)], check=True)
    tmp.rename(target)


def image(release):
    """A fresh minimal server's root filesystem as a tarball, built from the release's
    mirror (so the node and the mirror agree on every version). Cached."""
    source = mirror(release)
    packages = sorted(BASE_PACKAGES)
    recipe = _recipe_hash(release, source.name, *packages, *MASKED_UNITS)
    target = CACHE / "images" / f"{release}-{recipe}.tar"
    with _building(target):
        if not target.exists():
            _build_image(target, release, source, packages)
    return target


def _build_image(target, release, source, packages):
    log = target.with_suffix(".log")
    masks = " ".join(f'ln -sf /dev/null "$1/etc/systemd/system/{u}";' for u in MASKED_UNITS)
    hooks = [
        masks,
        # Each node makes its own host keys at first boot (ssh-keygen -A in prepare_root).
        'rm -f "$1"/etc/ssh/ssh_host_*',
        f'chroot "$1" useradd --create-home --shell /bin/bash {ADMIN}',
        f'echo "{ADMIN} ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/{ADMIN}"; '
        f'chmod 0440 "$1/etc/sudoers.d/{ADMIN}"',
        # No package lists: like a server whose lists are old, apt must refresh them.
        'rm -rf "$1"/var/lib/apt/lists/*',
        'rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"',
    ]
    tmp = target.with_name(target.name + ".tmp")
    _run(["mmdebstrap", "--variant=minbase", "--format=tar", "--include=" + ",".join(packages),
          *(f"--customize-hook={h}" for h in hooks),
          release, str(tmp), f"deb [trusted=yes] copy://{source} ./"], log)
    tmp.rename(target)


def prepare_root(root, release, hostname, mirror_url, authorized_key):
    """Unpack the release's image into `root` once; then (again at every boot) what the
    machine's installer would have set: its name, apt's source, the admin's key."""
    root = Path(root)
    if not (root / "etc" / "os-release").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(root), "-xpf", str(image(release))], check=True)
        subprocess.run(["chroot", str(root), "ssh-keygen", "-A"], check=True, capture_output=True)
    (root / "etc" / "hostname").write_text(hostname + "\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n")
    (root / "etc" / "apt" / "sources.list").write_text(f"deb [trusted=yes] {mirror_url}/{release} ./\n")
    for extra in (root / "etc" / "apt" / "sources.list.d").glob("*"):
        extra.unlink()
    ssh_dir = root / "home" / ADMIN / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key)
    uid_gid = subprocess.run(["chroot", str(root), "id", "-u", ADMIN], capture_output=True, text=True,
                             check=True).stdout.strip()
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, int(uid_gid), int(uid_gid))
    os.chmod(ssh_dir / "authorized_keys", 0o600)


# Run by /bin/sh as PID 1 of the machine's new namespaces, with the root dir as $1.
_BOOT = r"""
set -e
root=$1
mount --make-rprivate /
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount --bind "$root/proc/sys/net" "$root/proc/sys/net"
mount -o remount,bind,rw "$root/proc/sys/net"
if [ -e "$root/proc/sysrq-trigger" ]; then mount --bind /dev/null "$root/proc/sysrq-trigger"; fi
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,size=16m tmpfs "$root/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read name major minor <<EOF
$d
EOF
  mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
touch "$root/dev/console"
mount --bind /dev/null "$root/dev/console"
ln -s /proc/self/fd "$root/dev/fd"
if [ "$2" = sshd ]; then
  # The fallback when a release's systemd cannot boot here: sshd alone, so the node is
  # still reachable as a homelab machine is (but nothing runs podnet-restore at boot).
  exec chroot "$root" /usr/bin/env -i container=podnet-lab TERM=dumb /bin/sh -c \
    'mkdir -p -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e'
fi
exec chroot "$root" /usr/bin/env -i container=podnet-lab TERM=dumb /lib/systemd/systemd --log-target=journal
"""

INITS = ("systemd", "sshd")


def boot_argv(netns_path, root, init="systemd"):
    """argv that boots the machine in `root` inside the network namespace at `netns_path`
    with `init` (systemd, or sshd alone as the fallback) as its PID 1; the process it
    starts (unshare) stays outside, its child is the machine's PID 1."""
    if init not in INITS:
        raise ValueError(f"init {init!r}: one of {', '.join(INITS)}")
    return ["nsenter", f"--net={netns_path}", "--",
            "unshare", "--mount", "--pid", "--uts", "--ipc", "--cgroup", "--fork", "--kill-child",
            "--", "/bin/sh", "-c", _BOOT, "boot", str(root), init]


def init_pid(unshare_pid):
    """The machine's PID 1 (as the host numbers it): the child of its unshare process."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def enter_argv(pid):
    """argv prefix that runs a command inside the machine, as root on its console would."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
            "--root", "--wd", "--", "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
            "LANG=C.UTF-8"]

"""The pod's /etc/resolv.conf: `ip netns exec NAME` bind-mounts every file of
/etc/netns/NAME over /etc, so a pod's resolv.conf lives there.

Standard library only and no Ansible imports: the podnet_restore role ships this
package to the nodes (podnet_node), where the boot-time restore runs it without Ansible.
"""

import os

from .state import atomic_write

NETNS_ETC_DIR = "/etc/netns"


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
    path = resolv_conf_path(netns, etc_dir)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic_write(path, text)
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

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a network namespace (and mount namespace) of the controller
description:
  - Runs every command inside a Linux network namespace on the controller, and
    optionally inside a mount namespace bound to a file, so each namespace looks
    like a separate host (own interfaces, routes, nftables, and, with a mount
    namespace, own /run, /etc/cni, /var/lib/cni, ...).
  - Built for the podnet lab (C(make lab)), where every node is such a pair of
    namespaces. Files are copied on the shared filesystem (Ansible's temporary
    directory is not private to a node), as with the C(local) connection.
author: podnet developers (!UNKNOWN)
extends_documentation_fragment:
  - connection_pipelining
options:
  netns_name:
    description: Name of the network namespace, as in C(/run/netns/<name>).
    type: str
    required: true
    vars:
      - name: ansible_netns_name
  netns_mount_ns:
    description:
      - File a mount namespace is bound to. When set, commands enter it too
        (with C(nsenter)); when not, C(ip netns exec) is used.
    type: str
    vars:
      - name: ansible_netns_mount_ns
  become_success_timeout:
    description: Seconds to wait for become to succeed (as in the C(local) connection).
    type: int
    default: 10
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    description: Strip become output preceding the command (as in the C(local) connection).
    type: bool
    default: true
    vars:
      - name: ansible_local_become_strip_preamble
"""

import os
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection

NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


def _is_namespace(path):
    try:
        return os.stat(path).st_dev == NSFS_DEV
    except OSError:
        return False


class Connection(LocalConnection):
    """Local connection whose commands run inside a namespace."""

    transport = "netns"

    def _connect(self):
        if not self._connected:
            name, mount_ns = self.get_option("netns_name"), self.get_option("netns_mount_ns")
            if not _is_namespace(f"/run/netns/{name}"):
                raise AnsibleConnectionFailure(
                    f"network namespace {name!r} does not exist (run `make lab` first)")
            if mount_ns and not _is_namespace(mount_ns):
                raise AnsibleConnectionFailure(
                    f"mount namespace file {mount_ns} is not bound (run `make lab` first)")
        return super()._connect()

    def exec_command(self, cmd, in_data=None, sudoable=True):
        name, mount_ns = self.get_option("netns_name"), self.get_option("netns_mount_ns")
        if mount_ns:
            prefix = ["nsenter", f"--mount={mount_ns}", f"--net=/run/netns/{name}", "--"]
        else:
            prefix = ["ip", "netns", "exec", name]
        wrapped = shlex.join(prefix + ["/bin/sh", "-c", cmd])
        return super().exec_command(wrapped, in_data=in_data, sudoable=sudoable)

"""A native testinfra backend for the podnet lab.

testinfra's ansible backend runs `ansible -m shell` per command (about 3 s)
for connections it does not know, such as `netns`; this one runs the command
directly inside the lab host's namespaces, in milliseconds.

    host = get_lab_host("node1")          # or client, router, internet, switch
    assert host.file("/etc/cni/net.d").is_directory
"""

import subprocess

import testinfra.backend
import testinfra.host
from testinfra.backend import base

from lab import podnet_lab


class NetnsBackend(base.BaseBackend):
    NAME = "netns"

    def __init__(self, hostname, inventory=podnet_lab.DEFAULT_INVENTORY, **kwargs):
        super().__init__(hostname, **kwargs)
        self.argv = podnet_lab.node_exec_argv(hostname, inventory)

    def run(self, command, *args, **kwargs):
        cmd = self.get_command(command, *args)
        proc = subprocess.run(self.argv + ["/bin/sh", "-c", cmd], capture_output=True)
        return self.result(proc.returncode, self.encode(cmd), proc.stdout, proc.stderr)


# `testinfra --hosts netns://node1` (and testinfra.get_host) find it by name.
testinfra.backend.BACKENDS.setdefault("netns", f"{__name__}.NetnsBackend")


def get_lab_host(name, inventory=podnet_lab.DEFAULT_INVENTORY):
    backend = NetnsBackend(name, inventory)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host

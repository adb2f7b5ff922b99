"""playbooks/reset.yml and playbooks/remove_node.yml on the lab (issue 11).

Reset: the node as reset leaves it is byte-identical before and after a full podnet
converge + reset round (so reset removes everything podnet adds), it holds no trace of
podnet, and what podnet does not own (a foreign nft table, a foreign CNI config, another
runtime's host-local lease) is still there. Remove-node: the other nodes lose their route
to the node's podCIDR and the node keeps no podCIDR. The lab is converged again after.
"""

import hashlib
import json
import os
import pathlib

import pytest

from lab import probe
from lab.podnet_lab import NODE_PRIVATE_DIRS, load_topology
from tests.lab.lab_runs import ansible_playbook

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
NODE = NODES[-1]
FOREIGN_LEASE = "/var/lib/cni/networks/podnet/10.244.250.250"
FOREIGN_ID = "5f2c" * 16


def sh(node, script):
    proc = probe.Source(node).run(["sh", "-c", script], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def processes(node):
    """Command lines of the processes in the node's network namespace (its pods' not included)."""
    inode = os.stat("/run/netns/" + TOPOLOGY.ns(node)).st_ino
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat("/proc/%s/ns/net" % pid).st_ino == inode:
                cmdline = pathlib.Path("/proc/%s/cmdline" % pid).read_bytes()
                found.append(cmdline.replace(b"\0", b" ").decode())
        except OSError:
            continue
    return sorted(found)


def snapshot(node):
    """Everything a node's kernel and disk hold that podnet could have changed (live sysctl
    values aside: see roles/podnet_reset/README.md)."""
    files = sh(node, "find %s -xdev \\( -type f -o -type l \\) -exec sha256sum {} + 2>/dev/null | sort; true"
               % " ".join(NODE_PRIVATE_DIRS))
    # host-local's own bookkeeping in a network directory another runtime shares (its lease
    # is there): the allocator's cursor moves whenever anyone's pod gets an address, and the
    # directory, the other runtime's too, stays.
    files = "".join(line + "\n" for line in files.splitlines()
                    if not line.endswith(("/networks/podnet/last_reserved_ip.0", "/networks/podnet/lock")))
    # The lab binds the node's own disk on these directories: they stay, emptied.
    dirs = sh(node, "find %s -xdev -mindepth 1 -type d 2>/dev/null | sort; true"
              % " ".join(NODE_PRIVATE_DIRS))
    return {
        "nft": sh(node, "nft -s list ruleset"),
        "links": sh(node, "ip -br link"),
        "addresses": sh(node, "ip -br address"),
        "routes": sh(node, "ip route show table all"),
        "rules": sh(node, "ip rule"),
        "netns": sh(node, "ip netns list"),
        "files": files,
        "dirs": dirs,
        "processes": processes(node),
        "digest": hashlib.sha256(files.encode()).hexdigest(),
    }


def reset(node):
    run = ansible_playbook("playbooks/reset.yml", "--limit", node)
    assert run.returncode == 0, run.stdout[-3000:]
    return run


@pytest.fixture(scope="module")
def foreign():
    """Things on the node that are not podnet's: a firewall table, a CNI config, a lease."""
    sh(NODE, "nft add table inet foreign; nft add chain inet foreign input "
             "'{ type filter hook input priority 10; policy accept; }'; "
             "nft add rule inet foreign input counter")
    sh(NODE, "echo '{}' > /etc/cni/net.d/99-foreign.conf; mkdir -p /var/lib/cni/networks/podnet; "
             "printf '%s\\r\\neth0' > %s" % (FOREIGN_ID, FOREIGN_LEASE))
    yield
    sh(NODE, "nft delete table inet foreign; rm -f /etc/cni/net.d/99-foreign.conf %s" % FOREIGN_LEASE)
    run = ansible_playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]


def test_reset_removes_everything_podnet_added_and_nothing_else(foreign):
    reset(NODE)
    before = snapshot(NODE)
    text = "\n".join(str(v) for v in before.values())
    for trace in ("table ip podnet", "cbr0", "proto 158", "/etc/podnet", "/var/lib/podnet",
                  "/usr/local/lib/podnet", "podnet-restore", "10-podnet.conflist", "dnsmasq"):
        assert trace not in text, trace
    assert "table inet foreign" in before["nft"]
    assert "99-foreign.conf" in before["files"] and FOREIGN_LEASE in before["files"]

    run = ansible_playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "table ip podnet" in sh(NODE, "nft list tables")

    reset(NODE)
    assert snapshot(NODE) == before
    again = reset(NODE)
    assert "changed=0" in again.stdout.split("PLAY RECAP")[-1]


def test_remove_node_frees_its_podcidr_and_others_drop_its_routes(foreign):
    run = ansible_playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    pod_cidr = json.loads(sh(NODE, "cat /etc/podnet/node.json"))["pod_cidr"]
    assert all(pod_cidr in sh(n, "ip route show proto 158") for n in NODES if n != NODE)

    run = ansible_playbook("playbooks/remove_node.yml", "-e", "podnet_remove_node=%s" % NODE)
    assert run.returncode == 0, run.stdout[-3000:]
    for other in NODES:
        if other != NODE:
            assert pod_cidr not in sh(other, "ip route show proto 158")
            assert pod_cidr not in sh(other, "cat /etc/podnet/routes.json")
    # Gone, or (where the lab binds the node's disk on it) empty.
    assert not sh(NODE, "ls -A /etc/podnet 2>/dev/null; true").strip()

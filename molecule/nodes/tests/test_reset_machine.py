"""playbooks/reset.yml on a real machine (issue 11): a machine that podnet was put on and taken
off again is as it was, byte for byte where podnet writes, in every kernel table, and in its
units, its firewall (Docker's rules on node1) included.

Runs last in the scenario (conftest.py): it leaves node1 reset.
"""

import difflib
import hashlib

from lab.podnet_lab import load_topology
from tests.lab.lab_runs import ansible_playbook
from tests.lab.netns_backend import get_lab_host

TOPOLOGY = load_topology()
NODE = "node1"
# Where podnet writes on a machine (its packages aside: they stay, as a user would want).
WRITES = ("/etc", "/var/lib/cni", "/var/lib/podnet", "/usr/local", "/run/podnet", "/run/netns")
# host-local's own bookkeeping moves with anyone's pod; podnet's node lock is taken by every
# podnet module, reset's own included (it stays, in /run, until the next boot).
MOVING = ("/networks/podnet/last_reserved_ip.0", "/networks/podnet/lock", "/run/podnet/node.lock")


def sh(h, script):
    done = h.run(script)
    assert done.rc == 0, f"{script}: {done.stderr}"
    return done.stdout


def snapshot(h):
    where = " ".join(WRITES)
    files = sh(h, f"find {where} -xdev \\( -type f -o -type l \\) -exec sha256sum {{}} + 2>/dev/null "
                  "| sort; true")
    files = "".join(line + "\n" for line in files.splitlines() if not line.endswith(MOVING))
    return {
        "nft": sh(h, "nft -s list ruleset"),
        "iptables": sh(h, "iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]/[0:0]/'"),
        "links": sh(h, "ip -br link"),
        "addresses": sh(h, "ip -br address"),
        "routes": sh(h, "ip route show table all"),
        "rules": sh(h, "ip rule"),
        "netns": sh(h, "ip netns list"),
        "files": files,
        "dirs": sh(h, f"find {where} -xdev -type d 2>/dev/null | sort; true"),
        "enabled units": sh(h, "systemctl list-unit-files --no-legend --state=enabled,masked | sort"),
        # The admin's own login manager comes and goes with Ansible's SSH connection.
        "running services": sh(h, "systemctl list-units --no-legend --plain --type=service --state=running "
                                  "| awk '{print $1}' | grep -v -e '^user@' -e '^user-runtime-dir@' | sort"),
        "podnet's processes": sh(h, "pgrep -a dnsmasq; pgrep -af '[p]odnet-|[p]odnet_node'; true"),
        "digest": hashlib.sha256(files.encode()).hexdigest(),
    }


def reset():
    run = ansible_playbook("playbooks/reset.yml", "--limit", NODE)
    assert run.returncode == 0, run.stdout[-3000:]
    return run


def test_reset_leaves_the_machine_as_it_was():
    h = get_lab_host(NODE)
    reset()
    before = snapshot(h)
    text = "\n".join(str(value) for value in before.values())
    for trace in ("table ip podnet", "cbr0", "proto 158", "/etc/podnet/", "/var/lib/podnet/", "PODNET-",
                  "podnet-restore", "podnet-heal", "10-podnet.conflist", "networkd.conf.d/podnet.conf"):
        assert trace not in text, trace
    assert ":FORWARD DROP" in before["iptables"] and ":DOCKER-USER" in before["iptables"]

    run = ansible_playbook("site.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "table ip podnet" in sh(h, "nft list tables")
    assert "podnet-heal.service" in sh(h, "systemctl list-units --no-legend --state=running")
    assert "ManageForeignRoutes=no" in sh(h, "cat /etc/systemd/networkd.conf.d/podnet.conf")

    reset()
    after = snapshot(h)
    changed = {key: "".join(difflib.unified_diff(before[key].splitlines(True), after[key].splitlines(True),
                                                 n=0))
               for key in before if key != "digest" and after[key] != before[key]}
    assert changed == {}
    again = reset()
    assert "changed=0" in again.stdout.split("PLAY RECAP")[-1]

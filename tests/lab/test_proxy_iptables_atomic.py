"""The iptables backend is all or nothing across its tables: iptables-restore commits the filter
table and then the nat table on their own, so the second half can fail after the first went in.
Here a stand-in iptables-restore commits the first table of its input, then fails (once, as a
kernel refusing the second commit would), and the real module runs in a scratch network
namespace: after the failure the node must hold exactly what it held before (nothing, or the
last applied chains and jumps), and the next run must converge.

Needs root, ip and the iptables tools; a throwaway namespace, never the lab's or the root one.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_proxy_iptables import changed_model, service, sport, web_endpoints

REPO = Path(__file__).resolve().parents[2]
RESTORE = shutil.which("iptables-restore")

# Commits the first table of its input and fails the rest, the first time only (a marker file);
# --test and every later call go to the real iptables-restore.
HALF = """#!/bin/sh
for arg; do [ "$arg" = --test ] && exec {real} "$@"; done
[ -e {marker} ] && exec {real} "$@"
touch {marker}
awk '/^COMMIT/ {{ print; exit }} {{ print }}' | {real} "$@" || exit $?
echo "iptables-restore: line 2 failed (the second table refused, injected)" >&2
exit 1
"""

PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - podnet.network.{module}:
        model: "{{{{ lookup('file', '{model}') | from_json | to_json }}}}"
        node: node1
        state_dir: {state}
        path: {state}/podnet-services.rules
"""


def _available():
    return (hasattr(os, "geteuid") and os.geteuid() == 0 and RESTORE and shutil.which("ip")
            and shutil.which("iptables-save"))


@pytest.fixture
def scratch(tmp_path):
    netns = "podnet-scratch-atomic-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    yield netns
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)


def iptables_save(netns):
    """podnet's chains and the jumps to them, as iptables-save shows them (an empty table that
    iptables-nft creates on first use is not podnet's)."""
    done = subprocess.run(["ip", "netns", "exec", netns, "iptables-save"], capture_output=True, text=True,
                          check=True, timeout=60)
    return [line for line in done.stdout.splitlines() if "KUBE-" in line]


# The state directory as a full disk: a small tmpfs over it, in a mount namespace of the run's
# own (gone when the run ends), holding the last applied files and filled to the last byte.
# After the play the shell lists what the directory then holds, for the test to compare.
FULL = """set -e
mkdir -p {saved}
cp -a {state}/. {saved}/
mount -t tmpfs -o size=256k podnet-full {state}
cp -a {saved}/. {state}/
dd if=/dev/zero of={state}/.filler bs=4k 2>/dev/null || true
set +e
"$@"
rc=$?
rm -f {state}/.filler
echo "== state after"
for f in $(ls -A {state} | sort); do echo "$f $(sha256sum < {state}/$f)"; done
exit $rc
"""


def files_of(directory):
    return ["%s %s" % (path.name, hashlib.sha256(path.read_bytes()).hexdigest() + "  -")
            for path in sorted(Path(directory).iterdir())]


def apply(netns, tmp_path, model, broken=False, full=False, module="proxy_iptables"):
    """Run the proxy module as a play inside the namespace; PATH finds the stand-in when
    `broken`; the state directory is a full disk when `full`."""
    (tmp_path / "model.json").write_text(json.dumps(model))
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(module=module, model=tmp_path / "model.json", state=tmp_path / "state"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "iptables-restore"
    if broken:
        stand_in.write_text(HALF.format(real=RESTORE, marker=tmp_path / "failed-once"))
        stand_in.chmod(0o755)
    elif stand_in.exists():
        stand_in.unlink()
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    playbook = str(Path(sys.executable).parent / "ansible-playbook")
    wrap = []
    if full:
        script = tmp_path / "full.sh"
        script.write_text(FULL.format(state=tmp_path / "state", saved=tmp_path / "saved"))
        wrap = ["unshare", "--mount", "--propagation", "private", "sh", str(script)]
    return subprocess.run([*wrap, "ip", "netns", "exec", netns, playbook, "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


NEW_WEB = service("web", "10.96.0.20", [sport("http", "TCP", 80, web_endpoints(8080, last="10.244.3.6"),
                                              target_port=8080)])


@pytest.mark.skipif(not _available(), reason="needs root, ip and the iptables tools")
def test_a_failed_first_apply_leaves_nothing(scratch, tmp_path):
    empty = iptables_save(scratch)
    run = apply(scratch, tmp_path, changed_model(), broken=True)
    assert run.returncode != 0
    assert iptables_save(scratch) == empty, run.stdout[-3000:]
    assert "what it had committed was rolled back, the live rules are as before" in run.stdout
    run = apply(scratch, tmp_path, changed_model())
    assert run.returncode == 0, run.stdout[-3000:]
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in (
        iptables_save(scratch))


@pytest.mark.skipif(not _available(), reason="needs root, ip and the iptables tools")
def test_a_failed_update_leaves_the_last_applied_chains(scratch, tmp_path):
    run = apply(scratch, tmp_path, changed_model())
    assert run.returncode == 0, run.stdout[-3000:]
    applied = iptables_save(scratch)
    new = changed_model(web=NEW_WEB, **{"np-cluster": None})
    run = apply(scratch, tmp_path, new, broken=True)
    assert run.returncode != 0
    assert iptables_save(scratch) == applied, run.stdout[-3000:]
    assert "rolled back, the live rules are as before" in run.stdout
    run = apply(scratch, tmp_path, new)
    assert run.returncode == 0, run.stdout[-3000:]
    converged = iptables_save(scratch)
    assert converged != applied
    assert apply(scratch, tmp_path, new).stdout.count("changed=0") == 1
    assert iptables_save(scratch) == converged


@pytest.mark.skipif(not _available(), reason="needs root, ip and the iptables tools")
def test_beside_another_proxy_the_module_refuses_and_touches_nothing(scratch, tmp_path):
    """kube-proxy's (or k3s's) chains are theirs: podnet's backend used to declare KUBE-SERVICES in
    its restore, flushing the other proxy's rules."""
    theirs = ("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-THEIRS - [0:0]\n"
              "-A KUBE-SERVICES -d 10.43.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-THEIRS\n"
              "-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n")
    done = subprocess.run(["ip", "netns", "exec", scratch, RESTORE, "--noflush"], input=theirs, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before = iptables_save(scratch)
    run = apply(scratch, tmp_path, changed_model())
    assert run.returncode != 0
    assert iptables_save(scratch) == before
    assert "this node has KUBE-* chains podnet did not create (nat KUBE-SERVICES, nat KUBE-SVC-THEIRS)" in (
        " ".join(run.stdout.split()))


@pytest.mark.skipif(not _available() or not shutil.which("unshare"), reason="needs root, unshare, iptables")
def test_a_full_disk_fails_naming_the_file_before_the_chains_change(scratch, tmp_path):
    """The boot file and the record are staged before iptables-restore runs: with no room for
    them, the run fails naming the file, and the chains, the files and the directory (no staged
    leftovers) are as the last apply left them."""
    run = apply(scratch, tmp_path, changed_model())
    assert run.returncode == 0, run.stdout[-3000:]
    applied, before = iptables_save(scratch), files_of(tmp_path / "state")
    new = changed_model(web=NEW_WEB, **{"np-cluster": None})
    run = apply(scratch, tmp_path, new, full=True)
    assert run.returncode != 0
    assert re.search(r"cannot write \S+/state/\S+: \[Errno 28\] No space left on device", run.stdout), (
        run.stdout[-3000:])
    assert iptables_save(scratch) == applied
    assert run.stdout.split("== state after\n", 1)[1].splitlines() == before
    run = apply(scratch, tmp_path, new)
    assert run.returncode == 0, run.stdout[-3000:]
    assert iptables_save(scratch) != applied


@pytest.mark.skipif(not _available(), reason="needs root, ip and the iptables tools")
def test_after_a_reboot_the_proxys_verdicts_come_before_a_firewalls_accepts(scratch, tmp_path):
    """The boot restore on a machine with ufw: ufw's rules are in by then, podnet's firewall
    step (entry 35) puts its accept chain at the top of FORWARD and INPUT, then the proxy's
    boot file (entry 50) goes in. Its jumps must lead, as after a run: appended, a pod's
    packet to a ClusterIP with no local endpoint was accepted by the firewall chain and
    routed away, instead of dropped (seen on a real machine with ufw, issue 11)."""
    run = apply(scratch, tmp_path, changed_model())
    assert run.returncode == 0, run.stdout[-3000:]
    boot = (tmp_path / "state" / "podnet-services.rules").read_text()
    rebooted = scratch + "-boot"
    subprocess.run(["ip", "netns", "add", rebooted], check=True, capture_output=True, timeout=30)
    try:
        def in_ns(*argv, stdin=None):
            done = subprocess.run(["ip", "netns", "exec", rebooted, *argv], input=stdin, capture_output=True,
                                  text=True, timeout=60, cwd=REPO,
                                  env=dict(os.environ, PYTHONPATH=str(REPO / ".collections")))
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        in_ns(sys.executable, str(REPO / "lab" / "firewall_presets.py"), rebooted, "apply", "ufw")
        boot_step = ("import sys; from ansible_collections.podnet.network.plugins.module_utils.firewall."
                     "apply import restore_at_boot; print(restore_at_boot('10.244.0.0/16', '10.96.0.0/12', "
                     "state_file=sys.argv[1]))")
        in_ns(sys.executable, "-c", boot_step, str(tmp_path / "firewall.json"))
        in_ns("iptables-restore", "--noflush", stdin=boot)
        for chain in ("FORWARD", "INPUT", "OUTPUT"):
            targets = [line.split(" -j ")[-1] for line in in_ns("iptables", "-w", "-S", chain).splitlines()
                       if line.startswith("-A ")]
            kube = [t for t in targets if t.startswith("KUBE-")]
            assert kube, (chain, targets)
            # Every KUBE jump before anything else: podnet's accept chain, ufw's chains.
            assert targets[:len(kube)] == kube, (chain, targets)
            if chain != "OUTPUT":
                assert "PODNET-%s" % chain in targets[len(kube):], (chain, targets)
    finally:
        subprocess.run(["ip", "netns", "del", rebooted], check=False, capture_output=True, timeout=30)

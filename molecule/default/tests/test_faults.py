"""Faults on the live lab (issue 12): two runs at once, a run killed in the middle, a full disk.

After each, every node's Service NAT is fully one of the runs' rules, never between them
(checked with the play's own --check: for one of the two files the NAT task finds nothing
to change on that node), and the next run converges. The Services play alone (plan, test pods, services):
what a user re-runs most, and where the node lock and the proxy's records live.
"""

import os
import re
import signal
import subprocess
import sys
import time

from test_services import NODES, REPO, SERVICE_PLAYS, SERVICES_FILE, ansible_playbook

from lab import probe

EXTRA = ("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: fault-extra\nspec:\n"
         "  selector:\n    app: frontend\n  ports:\n    - name: http\n      port: 8088\n"
         "      targetPort: http\n")


def services_file(tmp_path, extra):
    path = tmp_path / ("services-%s.yml" % ("extra" if extra else "lab"))
    path.write_text(SERVICES_FILE.read_text() + (EXTRA if extra else ""))
    return path


def changed_per_node(run):
    recap = run.stdout.split("PLAY RECAP")[-1]
    return {node: int(re.search(r"\b%s\s*:.*?changed=(\d+)" % node, recap).group(1)) for node in NODES}


NAT_TASK = "podnet_services : Service NAT, nftables backend"


def converged_on(path):
    """The nodes whose Service NAT the play with `path` would not change (--check)."""
    run = ansible_playbook(*SERVICE_PLAYS, "--check", "-e", "podnet_services_file=%s" % path)
    assert run.returncode == 0, run.stdout[-3000:]
    task = run.stdout.split(NAT_TASK, 1)[1].split("TASK [", 1)[0]
    return {node for node in NODES if "ok: [%s]" % node in task}


def assert_each_node_fully_at_one_of(*paths):
    at = {path: converged_on(path) for path in paths}
    between = [node for node in NODES if not any(node in nodes for nodes in at.values())]
    assert not between, "nodes between two states: %s (%s)" % (between, at)


def converge_back(again=True):
    """The lab's own Services again; then (again) a second run that changes nothing."""
    run = ansible_playbook(*SERVICE_PLAYS, "-e", "podnet_services_file=%s" % SERVICES_FILE)
    assert run.returncode == 0, run.stdout[-3000:]
    if again:
        run = ansible_playbook(*SERVICE_PLAYS, "-e", "podnet_services_file=%s" % SERVICES_FILE)
        assert run.returncode == 0 and not any(changed_per_node(run).values()), run.stdout[-3000:]


def start(path):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    from tests.lab.lab_runs import inventory_args
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                             *inventory_args(), *SERVICE_PLAYS, "-e", "podnet_services_file=%s" % path],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def test_two_runs_at_once_take_turns_on_each_node(tmp_path):
    lab, extra = services_file(tmp_path, False), services_file(tmp_path, True)
    runs = [start(extra), start(lab)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [out[-3000:] for out in outputs]
    assert_each_node_fully_at_one_of(lab, extra)
    converge_back(again=False)  # the next test ends with the run that changes nothing


def test_a_run_killed_while_it_applies_leaves_each_node_old_or_new(tmp_path):
    lab, extra = services_file(tmp_path, False), services_file(tmp_path, True)
    run = start(extra)
    seen = ""
    deadline = time.monotonic() + 300
    while NAT_TASK not in seen:
        line = run.stdout.readline()
        assert line and time.monotonic() < deadline, "the run ended before applying: " + seen[-3000:]
        seen += line
    # Into the task: the nodes are loading, or some have and some have not. Then the whole
    # run, its connections and the module processes on the nodes, at once.
    time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    assert_each_node_fully_at_one_of(lab, extra)
    converge_back(again=False)  # the last test ends with the run that changes nothing


# A small filesystem of its own over the directory of node1's boot-time nft scripts (in the
# node's own mount namespace), its files copied in and the rest filled.
FILL = ("d=/etc/podnet/nftables; t=$(mktemp -d); cp -a $d/. $t/; "
        "mount -t tmpfs -o size=512k podnet-fault $d && cp -a $t/. $d/; rm -rf $t; "
        "dd if=/dev/zero of=$d/.filler bs=4k 2>/dev/null; true")


def test_a_full_disk_fails_the_run_naming_the_file_and_changes_nothing_there(tmp_path):
    lab, extra = services_file(tmp_path, False), services_file(tmp_path, True)
    node = NODES[0]
    sh = probe.Source(node)
    filled = sh.run(["sh", "-c", FILL], timeout=60)
    assert filled.returncode == 0, filled.stderr
    try:
        assert "podnet-fault" in sh.run(["sh", "-c", "grep podnet-fault /proc/mounts"]).stdout
        run = ansible_playbook(*SERVICE_PLAYS, "-e", "podnet_services_file=%s" % extra)
        assert run.returncode != 0, run.stdout[-3000:]
        assert "No space left on device" in run.stdout and "podnet-services.nft" in run.stdout, \
            run.stdout[-3000:]
        assert node in converged_on(lab), "%s changed though its disk was full" % node
    finally:
        sh.run(["umount", "/etc/podnet/nftables"], timeout=60)
    converge_back()

"""Running the project's playbooks against the lab, as the live tests do."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def inventory_args(args=()):
    """`-i` for the lab under test (PODNET_LAB_INVENTORY), unless the caller or molecule
    names an inventory: a test meant for one lab must never converge a lab of another prefix."""
    lab = os.environ.get("PODNET_LAB_INVENTORY")
    if lab and "-i" not in args and "ANSIBLE_INVENTORY" not in os.environ:
        return ("-i", str(pathlib.Path(lab) / "hosts.yml"))
    return ()


def ansible_playbook(*args, timeout=300, env=None):
    """ansible-playbook from this venv, in the repository, stdout and stderr together.
    `env`: more environment for this run."""
    # Molecule forces colour on; the assertions read plain text.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **(env or {}))
    # The lab under test (PODNET_LAB_INVENTORY), unless the caller or molecule names one:
    # a lab of another prefix must never be converged by a test meant for this one.
    args = (*inventory_args(args), *args)
    return subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), *args],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)


def task_results(results_file, *args, timeout=300):
    """ansible-playbook as `ansible_playbook` runs it, with the podnet_results callback
    (tests/lab/callback_plugins) writing every task result to `results_file`: the run, and
    its results as {host, task, action, changed, glanced, failed, skipped} in run order."""
    results_file = pathlib.Path(results_file)
    results_file.unlink(missing_ok=True)
    run = ansible_playbook(*args, timeout=timeout, env={
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO / "tests" / "lab" / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "podnet_results", "PODNET_RESULTS_FILE": str(results_file)})
    lines = results_file.read_text().splitlines() if results_file.exists() else []
    return run, [json.loads(line) for line in lines]


def netns_playbook(netns, play, timeout=300):
    """ansible-playbook of the play file `play` on localhost inside the network namespace
    `netns` (a scratch one the test made): the real modules through AnsiballZ, as on a node,
    never in the root namespace. Fails the test with the run's output unless it succeeds."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    playbook = str(pathlib.Path(sys.executable).parent / "ansible-playbook")
    run = subprocess.run(["ip", "netns", "exec", netns, playbook, "-i", "localhost,", "-c", "local",
                          "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run

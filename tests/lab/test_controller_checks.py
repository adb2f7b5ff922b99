"""The plan's first play checks the controller and the inventory before anything else:
real ansible-playbook runs, no node needed (the checks run on the controller)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.lab_runs import ansible_playbook

INVENTORIES = {
    # a group `nodes` with no host in it
    "empty nodes group": "all:\n  children:\n    nodes:\n      hosts: {}\n",
    # machines listed, but not in `nodes`
    "no nodes group": ("all:\n  children:\n    servers:\n      hosts:\n        pi1:\n"
                       "          ansible_host: 192.0.2.21\n"),
}


@pytest.mark.parametrize("case", sorted(INVENTORIES))
def test_an_inventory_without_nodes_fails_clearly(tmp_path, case):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORIES[case])
    run = ansible_playbook("-i", str(inventory), "site.yml", timeout=120)
    assert run.returncode != 0, run.stdout[-2000:]
    assert "has no hosts in a group called `nodes`" in run.stdout, run.stdout[-2000:]
    assert str(inventory) in run.stdout


OLD_ANSIBLE = "2.18"
OLD_VENV = Path(__file__).resolve().parents[2] / ".cache" / f"venv-ansible-core-{OLD_ANSIBLE}"


def test_an_older_ansible_core_fails_at_once_naming_the_version():
    """ansible-core 2.18 used to fail deep in the plan ("a string or stream input is
    required"); now the first task says what is needed. The old release comes from PyPI
    into .cache (once)."""
    python = OLD_VENV / "bin" / "python"
    if not (OLD_VENV / "bin" / "ansible-playbook").exists():
        subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"ansible-core=={OLD_ANSIBLE}.*"], check=True, timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ANSIBLE_CONFIG=str(repo / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    run = subprocess.run([str(OLD_VENV / "bin" / "ansible-playbook"), "-i", "inventory/lab/hosts.yml",
                          "site.yml"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "podnet needs ansible-core 2.19 or newer; this controller runs ansible-core 2.18." in run.stdout, \
        run.stdout[-2000:]
    assert "PLAY [Plan the cluster]" not in run.stdout  # nothing else ran


# Each play run alone, without the plays it needs before it: the message says which, and
# nothing went to the node (its connection leads nowhere: a module sent there would make the
# host unreachable, not failed).
WITHOUT_PLAN = {
    "playbooks/node.yml": "run playbooks/plan.yml (site.yml does) before playbooks/node.yml",
    "playbooks/pod_network.yml": "run playbooks/plan.yml (site.yml does) before the pod network",
    "playbooks/test_pods.yml": "run playbooks/plan.yml (site.yml does) before the test pods",
    "playbooks/network_policy.yml": "run playbooks/plan.yml and playbooks/test_pods.yml (site.yml does) "
                                    "before NetworkPolicy",
    "playbooks/services.yml": "run playbooks/plan.yml and playbooks/test_pods.yml (site.yml does) "
                              "before the Services",
    "playbooks/dns.yml": "run playbooks/plan.yml, playbooks/test_pods.yml and playbooks/services.yml "
                         "before the DNS",
}
NOWHERE = ("all:\n  children:\n    nodes:\n      hosts:\n        n1:\n"
           "          ansible_connection: podnet.network.netns\n"
           "          ansible_netns_name: podnet-nosuch-n1\n"
           "          ansible_netns_mount_ns: /run/podnet-nosuch/n1.mnt\n")


@pytest.mark.parametrize("play", sorted(WITHOUT_PLAN))
def test_a_play_run_without_the_plan_says_which_to_run_first(tmp_path, play):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(NOWHERE)
    run = ansible_playbook("-i", str(inventory), play, timeout=120)
    output = " ".join(run.stdout.split())
    assert run.returncode != 0, run.stdout[-2000:]
    assert WITHOUT_PLAN[play] in output, run.stdout[-2000:]
    assert "unreachable=0" in output and "failed=1" in output, run.stdout[-2000:]

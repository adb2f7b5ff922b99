"""A node's life in the cluster (issue 11): a --limit play cannot give away a podCIDR."""

import json
import re

from lab import probe
from lab.podnet_lab import load_topology
from tests.lab.lab_runs import REPO, ansible_playbook

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
NODE_STATE = "/etc/podnet/node.json"


def persisted_pod_cidrs():
    return {n: json.loads(probe.Source(n).run(["cat", NODE_STATE]).stdout)["pod_cidr"] for n in NODES}


def plan_with_report(tmp_path):
    """plan.yml, then every node in the play says its podCIDR."""
    playbook = tmp_path / "plan_report.yml"
    playbook.write_text(
        "- ansible.builtin.import_playbook: %s/playbooks/plan.yml\n"
        "- hosts: nodes\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"PODCIDR {{ inventory_hostname }} {{ podnet_plan_pod_cidr }}\"\n" % REPO)
    return playbook


def test_a_play_limited_to_a_new_node_is_refused_before_it_gets_a_podcidr(tmp_path):
    node = NODES[-1]
    persisted = persisted_pod_cidrs()
    # The last node becomes new: nothing persisted. Left to itself, the plan would give it the
    # lowest podCIDR, which another node owns.
    aside = probe.Source(node).run(["mv", NODE_STATE, NODE_STATE + ".aside"])
    assert aside.returncode == 0, aside.stderr
    try:
        run = ansible_playbook(str(plan_with_report(tmp_path)), "--limit", node)
    finally:
        probe.Source(node).run(["mv", NODE_STATE + ".aside", NODE_STATE])
    assert run.returncode != 0
    assert "This play leaves out %s (--limit)" % ", ".join(n for n in NODES if n != node) in run.stdout
    assert not re.findall(r"PODCIDR (\S+) (\S+)", run.stdout)
    assert persisted_pod_cidrs() == persisted

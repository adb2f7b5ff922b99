"""A node's life in the cluster (issue 11): adding one with --limit keeps every podCIDR."""

import json
import re

from lab import probe
from lab.podnet_lab import load_topology
from tests.lab.lab_runs import REPO, ansible_playbook

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
NODE_STATE = "/etc/podnet/node.json"


def plan_with_report(tmp_path):
    """plan.yml, then every node in the play says its podCIDR."""
    playbook = tmp_path / "plan_report.yml"
    playbook.write_text(
        "- ansible.builtin.import_playbook: %s/playbooks/plan.yml\n"
        "- hosts: nodes\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.debug:\n"
        "        msg: \"PODCIDR {{ inventory_hostname }} {{ podnet_plan_pod_cidr }}\"\n" % REPO)
    return playbook


def test_a_new_node_added_with_limit_never_gets_a_podcidr_another_node_owns(tmp_path):
    node = NODES[-1]
    persisted = {n: json.loads(probe.Source(n).run(["cat", NODE_STATE]).stdout)["pod_cidr"] for n in NODES}
    # The last node becomes new: nothing persisted, and the lowest free podCIDR is not its old one.
    lowest = min(persisted.values())
    assert persisted[node] != lowest
    aside = probe.Source(node).run(["mv", NODE_STATE, NODE_STATE + ".aside"])
    assert aside.returncode == 0, aside.stderr
    try:
        run = ansible_playbook(str(plan_with_report(tmp_path)), "--limit", node)
    finally:
        probe.Source(node).run(["mv", NODE_STATE + ".aside", NODE_STATE])
    assert run.returncode == 0, run.stdout[-3000:]
    given = dict(re.findall(r"PODCIDR (\S+) (\S+)", run.stdout))
    assert list(given) == [node]
    # Every other node's podCIDR was read from the node and kept: the new one gets a free one.
    assert given[node] not in {cidr for n, cidr in persisted.items() if n != node}
    assert "--limit leaves out" in run.stdout

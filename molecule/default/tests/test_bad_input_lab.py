"""Bad input stops site.yml in the plan, and no node changes: real ansible-playbook runs on the lab.

tests/unit/test_bad_input.py holds the whole table, calling the plan's code directly; here a
few representative rows go through the real plan on a converged lab (converge first:
`ansible-playbook -i $PODNET_LAB_INVENTORY/hosts.yml site.yml`). Some of them used to fail
only on the nodes, after earlier plays had changed them (two Services on one externalIP and
port: `nft` refused the map on every node; a Service on the cluster DNS address: the DNS
play), or not at all (a Service in the policies file was skipped). Each run must fail in
the plan with the message naming file, object and field, no later play may start, and every
node's rules, routes, addresses and podnet files must be what they were.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import podnet_lab
from tests.lab.lab_runs import REPO, ansible_playbook, task_results

LAB_INVENTORY = Path(os.environ.get("PODNET_LAB_INVENTORY") or REPO / "inventory" / "lab")
NODES = list(podnet_lab.load_topology().nodes)
# What a node holds that podnet could change, with no counters or timers in it.
SNAPSHOT = ("nft -s list ruleset; ip -4 route show table all; ip -4 addr; ip link show cbr0; "
            "find /etc/podnet /var/lib/podnet /etc/cni -type f -print0 2>/dev/null | sort -z "
            "| xargs -0 -r sha256sum")

AFFINITY_ENTRIES = re.compile(r"(map affinity \{[^}]*?)\s*elements = \{[^}]*\}")

WEB = ("apiVersion: v1\nkind: Service\nmetadata: {name: %s}\n"
       "spec: {ports: [{port: 80}], externalIPs: [203.0.113.77]}\n")
CASES = {
    "same externalIP and port": (
        "services.yml", WEB % "claim-a" + "---\n" + WEB % "claim-b",
        "document 2 (line 6), Service default/claim-b: spec.externalIPs[0]: 203.0.113.77:80/TCP is already "
        "a frontend of Service default/claim-a"),
    "a Service on the cluster DNS address": (
        "services.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: coredns}\n"
                        "spec: {clusterIP: 10.96.0.10, ports: [{port: 53, protocol: UDP}]}\n",
        "Service default/coredns: spec.clusterIP: 10.96.0.10 is the cluster DNS address (podnet_dns_ip)"),
    "an Endpoints typo": (
        "services.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n"
                        "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\n"
                        "subsets: [{addresses: [{ip: 192.0.2.5, nodename: node1}], ports: [{port: 5432}]}]\n",
        "Endpoints default/db: subsets[0].addresses[0].nodename: unknown field (did you mean nodeName?)"),
    "a loopback endpoint": (
        "services.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n"
                        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                        "metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}\naddressType: "
                        "IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{port: 5432}]\n",
        "EndpointSlice default/db-1: endpoints[0].addresses[0]: 127.0.0.1 may not be in the loopback range"),
    "a Service in the policies file": (
        "policies.yml", WEB % "lost",
        "policies.yml: document 1 (line 1), Service: kind: the policies file (podnet_policies_file) holds "
        "only NetworkPolicy and Namespace objects; a Service belongs in the services file"),
    "a services file that is not UTF-8": (
        "services.yml", b"# caf\xe9\napiVersion: v1\n",
        "services.yml: line 1, column 6: the file is not UTF-8 text: byte 0xe9"),
}


def snapshot():
    lab = [sys.executable, str(REPO / "lab" / "podnet_lab.py")]
    result = {}
    for node in NODES:
        run = subprocess.run(lab + ["exec", node, "--", "sh", "-c", SNAPSHOT], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        # The kernel's own entries, not podnet's rules: sessionAffinity clients (test traffic
        # of other suites), each with its time left, which runs down between two snapshots.
        result[node] = AFFINITY_ENTRIES.sub(r"\1", run.stdout)
    return result


@pytest.fixture(scope="module")
def converged():
    """The lab converged with its own files: what every bad run must leave untouched."""
    before = snapshot()
    assert all("table ip podnet-services" in text for text in before.values()), \
        "converge the lab first: ansible-playbook -i $PODNET_LAB_INVENTORY/hosts.yml site.yml"
    return before


def bad_inventory(tmp_path, filename, content):
    """A copy of the lab's inventory with one file replaced, beside which the plan reads it."""
    inventory = tmp_path / "inventory"
    shutil.copytree(LAB_INVENTORY, inventory, symlinks=False)
    target = inventory / filename
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    return inventory / "hosts.yml"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_stops_in_the_plan_and_no_node_changes(converged, tmp_path, case):
    filename, content, message = CASES[case]
    run = ansible_playbook("-i", str(bad_inventory(tmp_path, filename, content)), "site.yml", timeout=300)
    assert run.returncode != 0, run.stdout[-3000:]
    flat = " ".join(run.stdout.split())
    assert message in flat, run.stdout[-3000:]
    assert "PLAY [Plan the cluster]" in run.stdout
    assert "PLAY [Prepare the nodes]" not in run.stdout, run.stdout[-3000:]
    assert snapshot() == converged


def test_the_lab_still_converges_with_nothing_to_change(converged, tmp_path):
    """After the refused runs, the lab's own files apply as a no-op: nothing was half-applied."""
    run, results = task_results(tmp_path / "results.jsonl", "-i", str(LAB_INVENTORY / "hosts.yml"),
                                "site.yml", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    recap = [line for line in run.stdout.splitlines() if " : ok=" in line]
    changed = [(result["host"], result["task"]) for result in results if result["changed"]]
    assert recap and all("changed=0" in line for line in recap) and not changed, \
        "\n".join(recap) + "\nchanged: %s" % changed
    assert snapshot() == converged

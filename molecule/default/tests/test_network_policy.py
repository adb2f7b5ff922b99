"""NetworkPolicy, proven with real packets in the lab (molecule verify).

1. The truth tables of tests/policy_cases.py (namespaces x, y, z; pods a, b, c spread over
   the three nodes; ports 80 and 81 over TCP and UDP), the same cases the unit tests trace
   through the rendered rules. For each case the policies are resolved against the lab's
   real pods, each node's table is loaded by the real podnet.network.nftables module, and every
   pod tries every pod: 324 real connections per case, judged against the hand-written
   expectation. Same-node pairs cross the bridge (br_netfilter), the others cross nodes.
2. A policy judges the endpoint a ClusterIP leads to (after DNAT), not the ClusterIP.
3. The lab's own policy, applied by the playbooks: db-access lets only pods labelled
   db-access=true reach the db pod, directly or through its Service; it survives a reboot.
4. A bad policy stops the run in the plan and changes nothing; check mode changes nothing.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table

from lab import probe
from lab.podnet_lab import load_topology, node_exec_argv
from tests import policy_cases
from tests.lab.lab_runs import ansible_playbook

REPO = pathlib.Path(__file__).resolve().parents[3]

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
SERVICES_FILE = REPO / "inventory" / "lab" / "services.yml"
TABLE = "podnet-policy"
POLICY_PLAYS = ("playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/network_policy.yml")
# Allowed connections in the lab take milliseconds; a dropped one is judged after this
# (longer than the 1 s after which a lost SYN is sent again).
PROBE_TIMEOUT = 1.5



def node_run(node, command, timeout=60):
    return subprocess.run(node_exec_argv(node) + command, capture_output=True, text=True, timeout=timeout)


def live_table(node):
    return node_run(node, ["nft", "-s", "list", "table", "ip", TABLE]).stdout  # -s: without counters


def table_objects(node):
    """The live table object by object (lab/probe.nft_objects), without counters."""
    return probe.nft_objects(node_run(node, ["nft", "-j", "-s", "list", "table", "ip", TABLE]).stdout)


def load_table(node, content):
    """The real module, run in the node as Ansible would run it, without a playbook. A
    machine node (inventory/nodes) has neither this repository nor Ansible's Python: there
    the module's own one-transaction script goes to nft."""
    if TOPOLOGY.is_machine(node):
        proc = subprocess.run(node_exec_argv(node) + ["nft", "-f", "-"],
                              input=build_script("ip", TABLE, content), capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, (node, proc.stderr[-2000:])
        flushed = node_run(node, ["conntrack", "-F"])
        assert flushed.returncode == 0, flushed.stderr
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"family": "ip", "table": TABLE, "content": content}, handle)
    try:
        proc = node_run(node, [sys.executable, str(REPO / "bench" / "run_module.py"), "nftables",
                               handle.name])
    finally:
        os.unlink(handle.name)
    result = json.loads(proc.stdout or "{}")
    assert proc.returncode == 0 and not result.get("failed"), (node, proc.stdout[-2000:], proc.stderr[-2000:])
    # A connection an earlier case allowed must not let this case's first packet pass
    # as "established": start every case with empty conntrack tables.
    flushed = node_run(node, ["conntrack", "-F"])
    assert flushed.returncode == 0, flushed.stderr


@pytest.fixture(scope="module")
def lab_pods():
    pods = probe.pods(NODES)
    truth = {"%s/%s" % (p["namespace"], p["name"]): p for p in pods
             if p["namespace"] in policy_cases.NAMESPACES}
    assert set(truth) == set(policy_cases.NODE_OF), "the lab runs the truth-table pods: %s" % sorted(truth)
    for key, pod in truth.items():
        assert pod["node"] == policy_cases.NODE_OF[key], (key, pod["node"])
    return pods, truth


# Whether a case's tables replaced the lab's own policies on the nodes.
_CASE_LOADED = {"loaded": False}


def restore_lab_policies():
    """The playbooks put the lab's own policies back after the truth-table cases."""
    if _CASE_LOADED["loaded"]:
        run = ansible_playbook(*POLICY_PLAYS)
        assert run.returncode == 0, run.stdout[-4000:]
        _CASE_LOADED["loaded"] = False


@pytest.fixture(scope="module")
def case_tables(lab_pods):
    """Load a case's tables on every node, as the module does; the lab's own come back after."""
    pods, _ = lab_pods

    def apply(text):
        model = load_policies([(text, "case.yml")], pods)
        _CASE_LOADED["loaded"] = True
        with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
            list(pool.map(lambda node: load_table(node, render_table(model, node, table=TABLE)), NODES))

    yield apply
    restore_lab_policies()


@pytest.fixture
def lab_policies():
    restore_lab_policies()


def probe_all(truth, targets):
    """{(source key, target index): outcome} from every truth-table pod, all sources at once."""
    sources = {key: probe.Source(pod["node"], pod) for key, pod in truth.items()}
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        rows = dict(zip(sources, pool.map(lambda s: probe.reach(s, targets, PROBE_TIMEOUT), sources.values()),
                        strict=True))
    return rows


# SCTP cases are traced only: this kernel has no SCTP.
LIVE_CASES = [case for case in policy_cases.CASES if not case.pure_only]


@pytest.mark.parametrize("case", LIVE_CASES, ids=lambda case: case.name)
def test_truth_table(case, lab_pods, case_tables):
    _, truth = lab_pods
    ips = {key: pod["ip"] for key, pod in truth.items()}
    case_tables(case.objects(ips))
    probes = [(dst, port, protocol) for dst in sorted(truth) for port in policy_cases.PORTS
              for protocol in policy_cases.PROTOCOLS]
    rows = probe_all(truth, [(ips[dst], port, protocol) for dst, port, protocol in probes])
    expected, observed = {}, {}
    for src in sorted(truth):
        for (dst, port, protocol), outcome in zip(probes, rows[src], strict=True):
            expected[(src, dst, port, protocol)] = case.expect(src, dst, port, protocol)
            observed[(src, dst, port, protocol)] = outcome == "answer"
            # A policy drops; nothing here may answer with a refusal.
            assert not outcome.startswith("REJECT"), (case.name, src, dst, port, protocol, outcome)
    wrong = sorted(probe for probe in expected if expected[probe] != observed[probe])
    assert not wrong, "%s: %d probes wrong, first %s\n%s" % (
        case.name, len(wrong), wrong[:6],
        policy_cases.compare_matrices(case.expect, lambda *probe: observed[probe]))


def test_policy_judges_the_endpoint_after_service_dnat(lab_pods, case_tables):
    """x/a reachable only from x/b: through Service x/a's ClusterIP the same holds, because the
    forward hook sees the packet after the Service DNAT has chosen the endpoint."""
    pods, truth = lab_pods
    model = probe.services_model(NODES, pods)
    service = next(s for s in model["services"] if (s["namespace"], s["name"]) == ("x", "a"))
    case_tables(policy_cases.namespaces_yaml() + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
    - from: [{podSelector: {matchLabels: {pod: b}}}]
""")
    targets = [(service["cluster_ip"], 80, "TCP"), (service["cluster_ip"], 80, "UDP"),
               (truth["x/a"]["ip"], 80, "TCP")]
    for key, pod in truth.items():
        outcomes = probe.reach(probe.Source(pod["node"], pod), targets, PROBE_TIMEOUT)
        want = ["answer" if key == "x/b" else "DROP"] * 3
        if key == "x/a":
            # Directly, a pod's packets to itself never leave it. Through its Service they
            # come back hairpinned, and the policy judges them before the masquerade: from
            # x/a, which this policy does not allow.
            want[2] = "answer"
        assert outcomes == want, (key, outcomes)


# --- the lab's own policy, through the playbooks ----------------------------------------

def lab_model():
    pods = probe.pods(NODES)
    services = probe.services_model(NODES, pods)
    by_name = {"%s/%s" % (p["namespace"], p["name"]): p for p in pods}
    db_ip = next(s for s in services["services"] if s["name"] == "db")["cluster_ip"]
    return by_name, db_ip


def check_db_policy():
    pods, db_service = lab_model()
    db = pods["default/db"]
    failures = []
    sources = [("default/backend-0", True), ("default/backend-1", True), ("default/client", False),
               ("default/frontend-0", False), ("x/a", False)]
    for key, allowed in sources:
        pod = pods[key]
        outcomes = probe.reach(probe.Source(pod["node"], pod), [(db["ip"], 5432, "TCP"),
                                                                (db_service, 5432, "TCP")], PROBE_TIMEOUT)
        if outcomes != ["answer" if allowed else "DROP"] * 2:
            failures.append("%s -> db (pod, Service): %s, expected %s" % (key, outcomes, allowed))
    # The node a pod runs on always reaches it; another node is not a pod the policy allows.
    for node in NODES:
        outcome = probe.reach(probe.Source(node), [(db["ip"], 5432, "TCP")], PROBE_TIMEOUT)
        want = "answer" if node == db["node"] else "DROP"
        if outcome != [want]:
            failures.append("node %s -> db: %s, expected %s" % (node, outcome, want))
    # db's other traffic is not isolated: it still reaches the internet host (egress).
    internet = probe.reach(probe.Source(db["node"], db), [(probe.INTERNET_IP, 80, "TCP")], PROBE_TIMEOUT)
    if internet != ["answer"]:
        failures.append("db cannot reach the internet host")
    assert not failures, "\n".join(failures)


def test_db_is_reachable_only_from_pods_labelled_for_it(lab_policies):
    check_db_policy()


def test_policy_table_holds_sets_not_pod_pairs(lab_policies):
    """The truth-table pods are in sets; rules grow with policy rules only."""
    table = live_table(next(p["node"] for p in probe.pods(NODES) if p["name"] == "db"))
    assert "db-access" in table, table
    rules = [line for line in table.splitlines() if "comment" in line]
    assert 0 < len(rules) <= 4, rules


def test_policy_survives_a_reboot(lab_policies):
    node = next(p["node"] for p in probe.pods(NODES) if p["name"] == "db")
    before = table_objects(node)
    reboot = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "reboot", node],
                            capture_output=True, text=True, timeout=120)
    assert reboot.returncode == 0, reboot.stdout + reboot.stderr
    assert table_objects(node) == before
    check_db_policy()


def test_bad_policy_stops_the_run_and_changes_nothing(tmp_path, lab_policies):
    bad = tmp_path / "services.yml"
    bad.write_text(SERVICES_FILE.read_text() + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: x}
spec:
  podSelector: {}
  ingress:
    - from:
        - ipBlock: {cidr: 10.244.0.0/16, except: [192.168.0.0/24]}
""")
    before = {node: live_table(node) for node in NODES}
    run = ansible_playbook("site.yml", "-e", "podnet_services_file=%s" % bad)
    assert run.returncode != 0
    assert str(bad) in run.stdout and "NetworkPolicy x/broken" in run.stdout, run.stdout[-3000:]
    assert "spec.ingress[0].from[0].ipBlock.except[0]" in run.stdout, run.stdout[-3000:]
    assert {node: live_table(node) for node in NODES} == before


def test_check_mode_reports_a_new_policy_and_changes_nothing(tmp_path, lab_policies):
    extra = tmp_path / "services.yml"
    extra.write_text(SERVICES_FILE.read_text() + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: y}
spec:
  podSelector: {}
""")
    before = {node: live_table(node) for node in NODES}
    run = ansible_playbook(*POLICY_PLAYS, "--check", "--diff", "-e", "podnet_services_file=%s" % extra)
    assert run.returncode == 0, run.stdout[-4000:]
    # The diff shows y's pods joining the set of pods isolated for ingress.
    y_pods = [p["ip"] for p in probe.pods(NODES) if p["namespace"] == "y"]
    added = [ip for ip in y_pods if re.search(r"^\+.*\b%s\b" % re.escape(ip), run.stdout, re.M)]
    assert added == y_pods, run.stdout[-4000:]
    assert re.search(r"node\d\s+: ok=\d+\s+changed=[1-9]", run.stdout), run.stdout[-2000:]
    assert {node: live_table(node) for node in NODES} == before

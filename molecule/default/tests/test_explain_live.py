"""`podnet explain` on the live lab (PODNET_LAB_INVENTORY; converge it first with site.yml).

The command reads each node through Ansible and explains; these tests hold its explanations
against the expectations the live packet tests hold the kernel to:
- every row of the Services packet table (tests/service_packets.py, sent for real by
  molecule/default/tests/test_services.py): verdict, endpoint set, masquerade, on both
  backends (the iptables one through the services play, then back);
- every NetworkPolicy truth table (tests/policy_cases.py, sent for real by
  molecule/default/tests/test_network_policy.py): each case's tables loaded on the nodes as
  that suite loads them, the live policy tables read back and every probe explained;
- the command line itself: text, --json, the pictures, bad input, --live against the kernel's
  own nftables trace.
"""

import html
import json
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from ansible_collections.podnet.network.plugins.module_utils.explain import road
from ansible_collections.podnet.network.plugins.module_utils.explain.cluster import (
    GATHER_SCRIPT,
    Cluster,
    Node,
)

from lab import probe
from lab.podnet_lab import load_topology, node_exec_argv
from tests import policy_cases, service_packets
from tests.lab.lab_runs import ansible_playbook

REPO = pathlib.Path(__file__).resolve().parents[3]
TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
INVENTORY = pathlib.Path(os.environ.get("PODNET_LAB_INVENTORY") or REPO / "inventory" / "lab")
sys.path.insert(0, str(REPO / "tools"))
import podnet  # noqa: E402


def cli(*args, timeout=180):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "podnet.py"), "-i", str(INVENTORY), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def cluster():
    """The live cluster as the command reads it: through Ansible."""
    return podnet.load_cluster(INVENTORY)


def row_arguments(row):
    source, target, protocol, _expected, _masq = row
    kind, _, name = source.partition(":")
    return (name if kind in ("pod", "node") else TOPOLOGY.client_ip), target, protocol


def check_row(cluster, packet):
    source, target, protocol = row_arguments(packet.row)
    result = road.explain(cluster, source, target, protocol)
    text = road.render_text(result)
    if packet.expected in ("DROP", "REJECT"):
        assert result["verdict"] == packet.expected, text
        return
    if packet.expected == "NONE":
        assert [e["endpoint"] for e in result["endpoints"]] == ["%s:%d" % (packet.daddr, packet.dport)], text
        return
    assert result["verdict"] == "ACCEPT", text
    assert {e["endpoint"] for e in result["endpoints"]} == set(packet.expected), text
    for endpoint in result["endpoints"]:
        if packet.masq is None:
            continue
        want = endpoint["endpoint"].split(":")[0] == packet.saddr if packet.masq == "hairpin" else packet.masq
        assert endpoint["masquerade"] is want, text


def table_packets(cluster):
    pods = probe.pods(NODES)
    model = probe.services_model(NODES, pods)
    return service_packets.packets(model, pods, TOPOLOGY.nodes, client_ip=TOPOLOGY.client_ip)


def test_every_service_row_explained_on_both_backends(cluster):
    packets = table_packets(cluster)
    assert cluster.nodes["node1"].backend == "nftables"
    for packet in packets:
        check_row(cluster, packet)
    run = ansible_playbook(
        "playbooks/plan.yml",
        "playbooks/test_pods.yml",
        "playbooks/services.yml",
        "-e",
        "podnet_proxy_backend=iptables",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    try:
        iptables = podnet.load_cluster(INVENTORY)
        assert {node.backend for node in iptables.nodes.values()} == {"iptables"}
        for packet in packets:
            check_row(iptables, packet)
        # The kernel's trace of kube-proxy's chains (iptables-nft) agrees too, on every kind.
        disagree = live_disagreements()
        assert not disagree, disagree
    finally:
        run = ansible_playbook("playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/services.yml")
        assert run.returncode == 0, run.stdout[-3000:]


# --- what a node lists, read back ---------------------------------------------------------------
# The tracers read the renderers' text in the unit tests and a node's own listing here: both
# spellings of one ruleset must walk the same. A throwaway network namespace (unshare -n), so
# neither the lab nor the root namespace is touched.


def in_scratch(script):
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def unit_packets():
    from tests.unit.test_service_packets import MODEL, PACKETS, local_addresses
    from tests.unit.test_service_packets import NODES as UNIT_NODES

    return MODEL, UNIT_NODES, PACKETS, local_addresses


def test_nft_listing_walks_as_the_rendered_text():
    from ansible_collections.podnet.network.plugins.module_utils.explain import nft_trace
    from ansible_collections.podnet.network.plugins.module_utils.services.nft import (
        full_content,
        render_nftables,
    )

    model, nodes, packets, local_addresses = unit_packets()
    for node in nodes:
        text = full_content(render_nftables(model, node))
        listing = in_scratch("nft -f - <<'EOF'\n%sEOF\nnft list table ip podnet-services" % text)
        assert "elements = {" in listing
        for packet in (p for p in packets if p.node == node):
            sent = {
                "saddr": packet.saddr,
                "daddr": packet.daddr,
                "dport": packet.dport,
                "protocol": packet.protocol,
                "path": packet.path,
            }
            assert nft_trace.trace(listing, sent, local_addresses(node)) == nft_trace.trace(
                text, sent, local_addresses(node)
            ), packet.label


def test_iptables_save_walks_as_the_rendered_rules():
    from ansible_collections.podnet.network.plugins.module_utils.explain import iptables_trace
    from ansible_collections.podnet.network.plugins.module_utils.services.iptables import (
        render_iptables,
        restore_text,
    )

    model, nodes, packets, local_addresses = unit_packets()
    for node in nodes:
        ruleset = render_iptables(model, node)
        jumps = "\n".join("iptables -t %s -A %s %s" % jump for jump in ruleset["jumps"])
        saved = in_scratch(
            "iptables-restore --noflush <<'EOF'\n%sEOF\n%s\niptables-save -t nat; iptables-save -t filter"
            % (restore_text(ruleset), jumps)
        )
        tables = iptables_trace.load_save(saved)
        for packet in (p for p in packets if p.node == node):
            sent = {
                "saddr": packet.saddr,
                "daddr": packet.daddr,
                "dport": packet.dport,
                "protocol": packet.protocol,
                "path": packet.path,
            }
            live = iptables_trace.trace_tables(tables, sent, local_addresses(node))
            rendered = iptables_trace.trace(
                restore_text(ruleset), ruleset["jumps"], sent, local_addresses(node)
            )
            assert live["verdict"] == rendered["verdict"], packet.label
            assert {e: (round(v["share"], 6), v["masquerade"]) for e, v in live["endpoints"].items()} == {
                e: (round(v["share"], 6), v["masquerade"]) for e, v in rendered["endpoints"].items()
            }, packet.label


# --- the command line -------------------------------------------------------------------------


def test_the_demo_flows_in_words_json_and_pictures(tmp_path):
    run = cli("explain", "default/client", "frontend:http", "--svg", str(tmp_path / "road.svg"))
    assert run.returncode == 0, run.stderr
    for words in (
        "Service default/frontend port http",
        "DNAT to",
        "share 33%",
        "proto podnet",
        "conntrack on node1",
        "ACCEPT",
    ):
        assert words in run.stdout, run.stdout
    assert (tmp_path / "road.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    run = cli("explain", "default/client", "db", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["verdict"] == "DROP" and "denied by NetworkPolicy default/db-access" in result["reason"]
    run = cli("diagram", "-o", str(tmp_path / "cluster.svg"), "-o", str(tmp_path / "cluster.png"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cluster.png").read_bytes().startswith(b"\x89PNG")
    # dot writes a hyphen in SVG text as &#45;
    assert "default/frontend-1" in html.unescape((tmp_path / "cluster.svg").read_text())


@pytest.mark.parametrize(
    "args, message",
    [
        (("default/nobody", "frontend:http"), "unknown source 'default/nobody'"),
        (("default/client", "nosuch:80"), "no Service default/nosuch"),
    ],
)
def test_bad_input_is_named(args, message):
    run = cli("explain", *args)
    assert run.returncode == 2 and message in run.stderr, (run.returncode, run.stderr)


def test_an_unreachable_node_is_named(tmp_path):
    inventory = tmp_path / "inv"
    subprocess.run(["cp", "-rL", str(INVENTORY), str(inventory)], check=True)
    hosts = (inventory / "hosts.yml").read_text().replace("node3:\n", "node9:\n")
    (inventory / "hosts.yml").write_text(hosts)
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "podnet.py"),
            "-i",
            str(inventory),
            "explain",
            "default/client",
            "frontend:http",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 2 and "node9" in run.stderr, run.stderr


# One flow of each kind, traced live by the kernel on both backends (nftables here, the
# iptables one in test_every_service_row_explained_on_both_backends, while it is loaded).
LIVE_FLOWS = [
    ("default/client", "frontend:http"),  # ClusterIP, to any of three endpoints
    ("default/client", "nothing:80"),  # no endpoints: REJECT
    ("default/web-0", "web:http"),  # hairpin
    ("default/client", "web-local:80"),  # internalTrafficPolicy: Local
    ("node3", "web:http@node3"),  # NodePort, externalTrafficPolicy: Local, the node itself
    # --live sends from a pod or a node: what comes from outside is sent by another node here,
    # which reaches the target node over the LAN as an outside client's packet does.
    ("node1", "web:http@node3"),  # NodePort, externalTrafficPolicy: Local, no local endpoint: DROP
    ("node1", "nothing:80@node2"),  # NodePort, externalTrafficPolicy: Cluster, no endpoints: REJECT
    ("node2", "frontend:http@external"),  # an external IP, from a node
    ("default/client", "internet:80"),  # egress masquerade to outside the cluster
    ("default/frontend-0", "db"),  # policy deny (db on node2, frontend-0 on node1)
]


def live_disagreements():
    """Every LIVE_FLOWS flow explained --live in one command (one read of the cluster): the
    flows whose kernel trace does not agree, with what was said."""
    run = cli("explain", *[part for flow in LIVE_FLOWS for part in flow], "--live", "--json", timeout=900)
    results = json.loads(run.stdout) if run.stdout.strip() else []
    assert run.returncode in (0, 3) and len(results) == len(LIVE_FLOWS), (run.returncode, run.stderr[-2000:])
    return [(flow, result.get("live")) for flow, result in zip(LIVE_FLOWS, results, strict=True)
            if not (result.get("live") or {}).get("agrees") or not result["live"].get("events")]


def test_live_trace_agrees_on_every_kind_of_flow():
    disagree = live_disagreements()
    assert not disagree, disagree


# --- NetworkPolicy truth tables (last: each case replaces the lab's own policies until the end) ---


def policy_sections(base):
    """The cluster's gathered sections with each node's live policy table read again (directly:
    41 cases through Ansible would cost minutes; the Ansible path is tested above)."""

    def read(node):
        proc = subprocess.run(
            node_exec_argv(node) + ["sh", "-c", GATHER_SCRIPT], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return node, proc.stdout

    with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
        outputs = dict(pool.map(read, NODES))
    from ansible_collections.podnet.network.plugins.module_utils.explain.cluster import split_sections

    nodes = {name: Node(name, split_sections(outputs[name]), base.nodes[name].node_ip) for name in NODES}
    return Cluster(nodes, base.model, base.client)


LIVE_CASES = [case for case in policy_cases.CASES if not case.pure_only]


@pytest.fixture(scope="module")
def case_tables():
    sys.path.insert(0, str(REPO / "molecule" / "default" / "tests"))
    import test_network_policy as live_policy  # the live suite's own loader: the module, per node

    pods = probe.pods(NODES)
    truth = {
        "%s/%s" % (p["namespace"], p["name"]): p for p in pods if p["namespace"] in policy_cases.NAMESPACES
    }

    def apply(case):
        model = live_policy.load_policies(
            [(case.objects({k: p["ip"] for k, p in truth.items()}), "case.yml")], pods
        )
        with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
            list(
                pool.map(
                    lambda node: live_policy.load_table(
                        node, live_policy.render_table(model, node, table=live_policy.TABLE)
                    ),
                    NODES,
                )
            )

    yield truth, apply
    run = ansible_playbook(*live_policy.POLICY_PLAYS)
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.mark.parametrize("case", LIVE_CASES, ids=lambda case: case.name)
def test_truth_table_explained(case, cluster, case_tables):
    truth, apply = case_tables
    apply(case)
    live = policy_sections(cluster)
    wrong = []
    for probe_ in policy_cases.probes():
        result = road.explain(live, probe_.src, "pod/%s:%d/%s" % (probe_.dst, probe_.port, probe_.protocol))
        explained = result["verdict"] == "ACCEPT"
        if explained != case.expect(*probe_):
            wrong.append((probe_, result["reason"]))
    assert not wrong, "%s: %d of %d explanations disagree, first: %s" % (
        case.name,
        len(wrong),
        len(policy_cases.probes()),
        wrong[:3],
    )

"""Services, proven with real packets in the lab (molecule verify), on both backends.

The packet table is tests/service_packets.py, the same rows the unit tests trace through
the rendered rules. Here each row is sent for real (curl, socat) from a pod, a node or the
external client, and the echo server's answer says which pod answered and which source
address it saw. The whole table runs once with the nftables backend and once with the
iptables one; switching backend must leave no trace of the other.
"""

import json
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import probe
from lab.podnet_lab import load_topology
from tests import service_packets
from tests.lab.lab_runs import ansible_playbook
from tests.lab.netns_backend import get_lab_host

REPO = pathlib.Path(__file__).resolve().parents[3]

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
SERVICES_FILE = REPO / "inventory" / "lab" / "services.yml"
# Tries per row: with 2 endpoints, 16 tries all hitting one has odds 2^-15.
TRIES = 16
# Plays that re-resolve and re-apply Services (the node and pod network plays are not needed).
SERVICE_PLAYS = ("playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/services.yml")



def apply_services(*extra):
    run = ansible_playbook(*SERVICE_PLAYS, *extra)
    assert run.returncode == 0, run.stdout[-4000:]
    return run


def host(node):
    return get_lab_host(node)


def live_model(text=None):
    """The services model as the play computed it: the file, the pods' real IPs, the
    allocations the nodes persisted."""
    pods = probe.pods(NODES)
    return probe.services_model(NODES, pods, text), pods


def uses_nftables(node):
    return host(node).run("nft list table ip podnet-services").rc == 0


def kube_chains(node):
    return [line for line in host(node).run("iptables-save").stdout.splitlines() if line.startswith(":KUBE-")]


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def backend(request):
    if request.param == "iptables":
        apply_services("-e", "podnet_proxy_backend=iptables")
        for node in NODES:
            assert not uses_nftables(node), f"{node} kept the nftables table after switching"
            assert ":KUBE-SERVICES - [0:0]" in kube_chains(node)
    else:
        for node in NODES:
            assert uses_nftables(node)
            assert kube_chains(node) == [], f"{node} has KUBE-* chains in nftables mode"
    model, pods = live_model()
    packets = service_packets.packets(model, pods, TOPOLOGY.nodes, client_ip=TOPOLOGY.client_ip)
    yield {"name": request.param, "packets": {p.label: p for p in packets}}
    if request.param == "iptables":
        apply_services()
        for node in NODES:
            assert uses_nftables(node)
            assert kube_chains(node) == [], f"{node} kept KUBE-* chains after switching back"


def source_of(packet, pods):
    kind, _, name = packet.source.partition(":")
    if kind == "pod":
        pod = next(p for p in pods if p["name"] == name)
        return probe.Source(pod["node"], pod)
    return probe.Source(name if kind == "node" else "client")


def send(source, packet, timeout=2):
    """("answer", echo JSON) | ("REJECT", why) | ("DROP", why)."""
    return probe.connect(source, packet.daddr, packet.dport, packet.protocol, timeout)


def test_packet_table_covers_the_lab():
    assert len(service_packets.ROWS) >= 20


ROW_IDS = [f"{r[0]} -> {r[1]}/{r[2]}" for r in service_packets.ROWS]


@pytest.mark.parametrize("row", service_packets.ROWS, ids=ROW_IDS)
def test_service_packet(backend, row):
    label = f"{row[0]} -> {row[1]}/{row[2]}"
    packet = backend["packets"][label]
    source = source_of(packet, probe.pods(NODES))
    if isinstance(packet.expected, str):
        # No Service rule matches 127.0.0.1, and nothing listens there: the kernel refuses.
        want = "REJECT" if packet.expected == "NONE" else packet.expected
        started = time.monotonic()
        outcome, detail = send(source, packet)
        assert outcome == want, f"{label}: {outcome} ({detail}), expected {want}"
        if want == "REJECT":
            assert time.monotonic() - started < 1.5, f"{label}: the refusal took a timeout"
        return
    sticky = row[1].split(":")[0] in service_packets.STICKY
    # With sessionAffinity: ClientIP the first connection picks the endpoint and the rules
    # remember it; connections racing that first one each miss the memory and pick at
    # random (kube-proxy's `recent` match races the same way). So one goes alone first.
    outcomes = [send(source, packet)] if sticky else []
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes += pool.map(lambda _: send(source, packet), range(TRIES - len(outcomes)))
    failures = [detail for outcome, detail in outcomes if outcome != "answer"]
    assert not failures, f"{label}: {failures[:3]}"
    answers = [detail for _, detail in outcomes]
    expected = set(packet.expected.values())
    seen = {answer["pod"] for answer in answers}
    assert seen <= expected, f"{label}: answered by {seen}, expected only {expected}"
    if sticky:
        assert len(seen) == 1, f"{label}: sessionAffinity ClientIP, yet {seen} answered"
    elif len(expected) > 1:
        assert len(seen) > 1, f"{label}: {TRIES} connections all went to {seen}"
    if packet.masq is None or packet.source.startswith("node:"):
        # A node masqueraded to its own address is indistinguishable from not masqueraded;
        # that it answered at all shows the reply found its way back.
        return
    for answer in answers:
        masqueraded = answer["client"] != packet.saddr
        want = answer["ip"] == packet.saddr if packet.masq == "hairpin" else packet.masq
        assert masqueraded == want, (
            f"{label}: {answer['pod']} saw {answer['client']}, expected "
            f"{'a masqueraded address' if want else packet.saddr}")


FLIP = """
---
apiVersion: v1
kind: Service
metadata:
  name: udp-flip
spec:
  ports:
    - port: 5353
      protocol: UDP
---
apiVersion: v1
kind: Endpoints
metadata:
  name: udp-flip
subsets:
  - addresses:
{addresses}
    ports:
      - port: 9053
        protocol: UDP
"""


def flip_file(tmp_path, pods):
    text = SERVICES_FILE.read_text() + FLIP.format(
        addresses="\n".join(f"      - ip: {p['ip']}" for p in pods))
    path = tmp_path / f"services-{len(pods)}.yml"
    path.write_text(text)
    return path


def udp_from(source, vip, source_port):
    proc = source.run(["socat", "-T2", "-", f"UDP:{vip}:5353,sourceport={source_port}"],
                      timeout=10, input="podnet\n")
    return json.loads(proc.stdout.strip().splitlines()[0]) if proc.stdout.strip() else None


def test_udp_flows_move_when_their_endpoint_goes(backend, tmp_path):
    """A UDP client keeps its source port; once its endpoint leaves the Service, the
    conntrack entry that pinned it there is deleted and the next datagram goes elsewhere.
    Then the Service leaves the file, and the nodes."""
    pods = {p["name"]: p for p in probe.pods(NODES)}
    backends = [pods["backend-0"], pods["backend-1"]]
    extra = ["-e", f"podnet_proxy_backend={backend['name']}"]
    run = apply_services("-e", f"podnet_services_file={flip_file(tmp_path, backends)}", "--diff", *extra)
    assert "default/udp-flip:5353/UDP" in run.stdout, "diff mode names the Service that changed"
    model, _ = live_model(flip_file(tmp_path, backends).read_text())
    vip = next(s["cluster_ip"] for s in model["services"] if s["name"] == "udp-flip")
    client = probe.Source("node1", pods["client"])
    first = udp_from(client, vip, 40404)
    assert first is not None, "udp-flip does not answer"
    again = udp_from(client, vip, 40404)
    assert again["pod"] == first["pod"], "the same flow stays on its endpoint"
    remaining = [p for p in backends if p["name"] != first["pod"]]
    apply_services("-e", f"podnet_services_file={flip_file(tmp_path, remaining)}", *extra)
    moved = udp_from(client, vip, 40404)
    assert moved is not None and moved["pod"] == remaining[0]["name"], (first, moved)
    # The Service leaves the file: its rules leave every node.
    apply_services(*extra)
    gone = udp_from(client, vip, 40405)
    assert gone is None, f"udp-flip still answers after leaving the file: {gone}"
    for node in NODES:
        listing = host(node).run("nft list ruleset; iptables-save").stdout
        assert vip not in listing, f"{node} still has rules for {vip}"

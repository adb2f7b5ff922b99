"""Services that fail safely and come back: bad input changes nothing; a reboot restores.

Separate from test_services.py, whose module-scoped backend fixture may still hold the
iptables backend while its tests run; these expect the default (nftables) lab.
"""

import difflib
import subprocess
import sys

import pytest
from test_services import (
    NODES,
    REPO,
    SERVICE_PLAYS,
    TOPOLOGY,
    ansible_playbook,
    host,
    live_model,
    send,
    service_packets,
    source_of,
    uses_nftables,
)

from lab import probe

BAD_FILES = [
    ("duplicate clusterIP", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n"
     "  clusterIP: 10.96.5.5\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\n"
     "metadata: {name: b}\nspec:\n  clusterIP: 10.96.5.5\n  ports: [{port: 80}]\n",
     ["document 2", "Service default/b", "clusterIP", "10.96.5.5"]),
    ("nodePort out of range", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n"
     "  type: NodePort\n  ports: [{port: 80, nodePort: 40000}]\n",
     ["document 1", "Service default/a", "spec.ports[0].nodePort", "40000"]),
    ("YAML that does not parse", "apiVersion: v1\nkind: Service\nmetadata: {name: a\n",
     ["line", "YAML does not parse"]),
]


def node_rules():
    # What traffic and time change (learned affinity elements, Debian 13's chain counters)
    # is left out: not a change podnet made (lab/probe.py).
    return {node: (probe.stable_nft(host(node).run("nft -s list ruleset").stdout),
                   probe.stable_iptables(host(node).run("iptables-save").stdout),
                   host(node).file("/etc/podnet/services/allocations.json").content_string)
            for node in NODES}


def changes(before, after):
    """The lines that differ, for a failure message that says what changed."""
    lines = []
    for old, new in zip(before, after, strict=True):
        old, new = (x if isinstance(x, list) else x.splitlines() for x in (old, new))
        lines += difflib.unified_diff(old, new, lineterm="", n=1)
    return "\n".join(lines[:60])


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_services_file_fails_in_the_plan_and_changes_nothing(tmp_path, case):
    _, text, words = case
    path = tmp_path / "services.yml"
    path.write_text(text)
    before = node_rules()
    run = ansible_playbook("site.yml", "-e", f"podnet_services_file={path}")
    assert run.returncode != 0
    for word in [str(path), *words]:
        assert word in run.stdout, f"{word!r} missing from the error:\n{run.stdout[-2000:]}"
    after = node_rules()
    for node in NODES:
        assert after[node] == before[node], f"{node} changed:\n" + changes(before[node], after[node])


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_services_come_back_after_a_node_reboot(backend):
    node = "node3"
    if backend == "iptables":
        run = ansible_playbook(*SERVICE_PLAYS, "-e", "podnet_proxy_backend=iptables")
        assert run.returncode == 0, run.stdout[-3000:]
    try:
        result = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "reboot", node],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        assert result.returncode == 0, result.stdout
        if backend == "nftables":
            assert uses_nftables(node)
        else:
            assert ":KUBE-SERVICES - [0:0]" in host(node).run("iptables-save -t nat").stdout
        model, pods = live_model()
        by_label = {p.label: p for p in service_packets.packets(model, pods, TOPOLOGY.nodes)}
        for label in ("client -> web:http@node3/TCP", "pod:frontend-2 -> backend:api/TCP",
                      "pod:frontend-2 -> web-local:80/TCP", "client -> frontend:http@external/TCP"):
            packet = by_label[label]
            outcome, detail = send(source_of(packet, pods), packet)
            want = packet.expected if isinstance(packet.expected, str) else "answer"
            assert outcome == want, f"after reboot ({backend}), {label}: {outcome} {detail}"
    finally:
        if backend == "iptables":
            run = ansible_playbook(*SERVICE_PLAYS)
            assert run.returncode == 0, run.stdout[-3000:]


FOREIGN_NFT = ("table inet someone-elses { chain input { type filter hook input priority 10; "
               "policy accept; tcp dport 2222 counter accept; }; }")
FOREIGN_IPT = ["-t nat -N FOREIGN", "-t nat -A FOREIGN -p tcp --dport 2222 -j RETURN",
               "-t nat -I PREROUTING -j FOREIGN", "-t filter -N FOREIGN-FW",
               "-t filter -A FOREIGN-FW -j RETURN", "-t filter -A INPUT -j FOREIGN-FW"]


def foreign_state(h):
    nft = h.run("nft -s list table inet someone-elses").stdout
    ipt = [line for line in h.run("iptables-save").stdout.splitlines()
           if "FOREIGN" in line and not line.startswith("#")]
    return nft, ipt


def test_switching_backends_leaves_rules_podnet_does_not_own():
    """A firewall's table and chains, and jumps to them from the built-in chains, come
    through a switch to iptables and back unchanged."""
    h = host(NODES[0])
    assert h.run(f"nft '{FOREIGN_NFT}'").rc == 0
    for rule in FOREIGN_IPT:
        assert h.run(f"iptables {rule}").rc == 0, rule
    try:
        before = foreign_state(h)
        assert before[0] and len(before[1]) == 6, before
        for backend in ("iptables", "nftables"):
            run = ansible_playbook(*SERVICE_PLAYS, "-e", f"podnet_proxy_backend={backend}")
            assert run.returncode == 0, run.stdout[-3000:]
            assert foreign_state(h) == before, f"switching to {backend} touched rules podnet does not own"
    finally:
        h.run("nft delete table inet someone-elses")
        h.run("iptables -t nat -D PREROUTING -j FOREIGN; iptables -t nat -F FOREIGN; "
              "iptables -t nat -X FOREIGN")
        h.run("iptables -D INPUT -j FOREIGN-FW; iptables -F FOREIGN-FW; iptables -X FOREIGN-FW")
    assert uses_nftables(NODES[0])

"""The NetworkPolicy table in the kernel: nft accepts what the renderer writes, and real packets
through a bridge get the verdicts the tracer (tests/unit/test_policy_render.py) predicts.

Moved from the unit suite, which stays hermetic: these need root, nft, unshare (a throwaway
network namespace each, never the lab's or the root one), and for the packets ip and socat.
The models and cases are the unit tests' own.
"""

import os
import shutil
import subprocess
import tempfile

import pytest
from ansible_collections.podnet.network.plugins.module_utils.explain.policy_trace import PolicyTracer

from tests.unit.test_policy_render import (
    CASES,
    NODES,
    TWO_RULES,
    address,
    chain_rules,
    load_policies,
    many_pods,
    model_of,
    pod,
    policy,
    render_table,
)

# --- nft: the kernel accepts the tables, and agrees with the tracer -------------------------------

HAVE_NFT = os.geteuid() == 0 and all(shutil.which(tool) for tool in ("nft", "unshare"))


def nft_in_scratch(script, *commands):
    """Run `nft -f` of `script` then `commands` (shell) in a throwaway network namespace."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as handle:
        handle.write(script)
        handle.flush()
        shell = "nft -f %s && %s" % (handle.name, " && ".join(commands) or "true")
        return subprocess.run(["unshare", "--net", "sh", "-c", shell], capture_output=True, text=True,
                              timeout=120, check=False)


@pytest.mark.skipif(not HAVE_NFT, reason="needs root, nft and unshare")
@pytest.mark.parametrize("case", ["no policy: everything flows", "named port resolves on each selected pod",
                                  "egress: DNS anywhere and http to web pods only",
                                  "ingress and egress isolation on one node"])
def test_nft_loads_the_tables(case):
    model = model_of(*CASES[case][0])
    for node in NODES:
        text = render_table(model, node)
        done = nft_in_scratch(text, "nft -c -f /dev/stdin < /dev/null")
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not HAVE_NFT, reason="needs root, nft and unshare")
def test_nft_loads_chunked_sets_and_lists_them_back():
    text = render_table(model_of(TWO_RULES, pods=many_pods(3000)), "node1")
    done = nft_in_scratch(text, "nft list set ip podnet-policy p_x_p_pods | grep -c 10.244")
    assert done.returncode == 0, done.stderr


LIVE = HAVE_NFT and all(shutil.which(tool) for tool in ("ip", "socat", "timeout"))
# Three pods on one bridge (br_netfilter on, as on a node); the table judges their traffic.
LIVE_SCRIPT = r"""
set -e
mount -t tmpfs none /run/netns 2>/dev/null || { mkdir -p /run/netns; mount -t tmpfs none /run/netns; }
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
ip link add cbr0 type bridge; ip addr add 10.244.1.1/24 dev cbr0; ip link set cbr0 up
sysctl -qw net.bridge.bridge-nf-call-iptables=1
for spec in %(pods)s; do
  n=${spec%%%%:*}; ip=${spec#*:}
  ip netns add $n; ip link add v$n type veth peer name eth0 netns $n
  ip link set v$n master cbr0 up
  ip -n $n addr add $ip/24 dev eth0; ip -n $n link set eth0 up; ip -n $n link set lo up
done
nft -f %(table)s
for port in %(ports)s; do
  for n in %(names)s; do
    ip netns exec $n timeout 20 socat TCP-LISTEN:$port,fork,reuseaddr SYSTEM:true >/dev/null 2>&1 &
    listeners="$listeners $!"
  done
done
sleep 0.5
while read from to port; do
  if ip netns exec $from timeout 2 socat -T1 /dev/null TCP:$to:$port,connect-timeout=0.3 2>/dev/null
  then echo "$from $to $port accept"; else echo "$from $to $port drop"; fi
done < %(probes)s
kill $listeners 2>/dev/null || true
"""


@pytest.mark.skipif(not LIVE, reason="needs root, nft, unshare, ip and socat")
def test_kernel_agrees_with_the_tracer():
    """Real packets through the bridge of a scratch namespace: the kernel's verdicts are the tracer's."""
    pods = [pod("x", "web", "10.244.1.10", "node1", [("http", 8080, "TCP")], app="web"),
            pod("x", "client", "10.244.1.11", "node1", app="client"),
            pod("x", "other", "10.244.1.12", "node1", app="other")]
    model = model_of(
        policy("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: "
               "{app: client}}}], ports: [{port: 80}, {port: 8000, endPort: 8010}, {port: http}]}]}"),
        policy("{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], "
               "egress: [{to: [{podSelector: {matchLabels: {app: web}}}]}]}", name="client-out"), pods=pods)
    text = render_table(model, "node1")
    names = {p["ip"]: p["name"] for p in pods}
    probes = [(source, destination, port) for source in names for destination in names
              if source != destination for port in (80, 8005, 8011, 8080)]
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "t.nft"), "w") as handle:
            handle.write(text)
        with open(os.path.join(scratch, "probes"), "w") as handle:
            handle.writelines("%s %s %d\n" % (names[s], d, port) for s, d, port in probes)
        script = LIVE_SCRIPT % {"pods": " ".join("%s:%s" % (n, ip) for ip, n in names.items()),
                                "names": " ".join(names.values()), "ports": "80 8005 8011 8080",
                                "table": os.path.join(scratch, "t.nft"),
                                "probes": os.path.join(scratch, "probes")}
        done = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    tracer = PolicyTracer(text)
    expected = ["%s %s %d %s" % (names[s], d, port, tracer.verdict("forward", s, d, "TCP", port))
                for s, d, port in probes]
    assert done.stdout.splitlines() == expected
    # client -> web on 80, 8005, 8080; web and other -> client (its ingress is open), web -> other
    assert sum(line.endswith("accept") for line in expected) == 3 + 4 + 4 + 4


# --- scale ----------------------------------------------------------------------------------------

def scale_model(policies=1000, pods=100):
    """`policies` policies over `pods` pods in 10 namespaces: each selects its app's pods and allows two
    apps, a namespace and an ipBlock on a few ports, one a named port; half also restrict egress."""
    pod_list = [pod("ns%d" % (i % 10), "pod%d" % i, address(i % 3 + 1, i // 3), "node%d" % (i % 3 + 1),
                    [("http", 8080, "TCP")], app="app%d" % (i % 20)) for i in range(pods)]
    docs = []
    for i in range(policies):
        app, namespace = "app%d" % (i % 20), "ns%d" % (i % 10)
        egress = (", egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "
                  "ns%d}}}], ports: [{port: 5432}]}]" % ((i + 1) % 10)) if i % 2 else ""
        peers = ("[{podSelector: {matchExpressions: [{key: app, operator: In, values: [app%d, app%d]}]}}, "
                 "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ns%d}}}, "
                 "{ipBlock: {cidr: 192.168.0.0/16, except: [192.168.56.0/24]}}]"
                 % ((i + 1) % 20, (i + 2) % 20, (i + 3) % 10))
        docs.append(policy(
            "{podSelector: {matchLabels: {app: %s}}, ingress: [{from: %s, ports: [{port: 80}, "
            "{port: 8000, endPort: 8100}, {port: http}]}]%s}" % (app, peers, egress),
            name="policy-%d" % i, namespace=namespace))
    return load_policies([("".join(docs), "policies.yml")], pod_list)


@pytest.mark.skipif(not HAVE_NFT, reason="needs root, nft and unshare")
def test_many_policies_load_with_a_rule_per_policy_rule():
    """Shape at scale (timing is bench/bench_policy.py's job): rules follow policy rules, not pods."""
    text = render_table(scale_model(policies=200), "node1")
    done = nft_in_scratch(text)
    assert done.returncode == 0, done.stderr
    assert len(chain_rules(text, "pod_ingress")) == 2 * 200 + 1  # numbered + named, per policy rule

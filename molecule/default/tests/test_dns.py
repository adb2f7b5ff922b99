"""Service DNS, asked for real from pods in the lab (molecule verify).

Every record the core renders from the live services model is asked from a pod on every
node and must come back as rendered, authoritative, with TTL 5; names that do not exist
are NXDOMAIN with aa; other names go to the lab router's test zone. Then the lab is
changed and put back: one node's dnsmasq killed (only that node's pods fail, a run brings
it back), a Service added under a continuous stream of queries (none may fail), the
original file put back (a second run changes nothing), and a node rebooted.
"""

import json
import pathlib
import subprocess
import sys
from collections import defaultdict

import pytest
from ansible_collections.podnet.network.plugins.module_utils.dns.records import build_records, zone_lines

from lab import probe
from lab.podnet_lab import load_topology
from tests.lab.lab_runs import ansible_playbook
from tests.lab.netns_backend import get_lab_host

REPO = pathlib.Path(__file__).resolve().parents[3]

TOPOLOGY = load_topology()
NODES = sorted(TOPOLOGY.nodes)
SERVICES_FILE = REPO / "inventory" / "lab" / "services.yml"
# The cluster DNS address the plan decides for the lab (podnet_plan_cluster_dns_ip: no podnet_dns_ip
# in the inventory, so the tenth address of service_cidr, dns.records.cluster_dns_ip).
DNS_IP = "10.96.0.10"
DOMAIN = "cluster.local"
TTL = 5
# The plays that re-resolve the Services and serve them (site.yml's last steps).
DNS_PLAYS = ("playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/services.yml", "playbooks/dns.yml")
# Until the lab inventory names the router as the upstream resolver.
UPSTREAM = ("-e", json.dumps({"podnet_dns_upstreams": [TOPOLOGY.router_ip]}))

# Run inside a pod: one fresh UDP socket per question (as a stub resolver does), all in
# parallel; the answer and authority sections, decoded.
_ASK = r"""
import json, random, socket, struct, sys, threading
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "SRV": 33}
NAMES = {v: k for k, v in TYPES.items()}
def name_at(m, o):
    labels, end = [], None
    while m[o]:
        if m[o] & 0xC0 == 0xC0:
            end = o + 2 if end is None else end
            o = ((m[o] & 0x3F) << 8) | m[o + 1]
            continue
        labels.append(m[o + 1:o + 1 + m[o]].decode()); o += 1 + m[o]
    return ".".join(labels) + ".", (o + 1 if end is None else end)
def ask(server, port, name, qtype, timeout):
    q = struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack("!HH", TYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout); s.sendto(q, (server, port)); m = s.recv(4096)
    _, flags, qd, an, ns, _ = struct.unpack("!HHHHHH", m[:12]); o = 12
    for _ in range(qd):
        o = name_at(m, o)[1] + 4
    out = {"rcode": flags & 15, "aa": bool(flags & 0x400), "answers": [], "authority": []}
    for section, count in (("answers", an), ("authority", ns)):
        for _ in range(count):
            n, o = name_at(m, o); t, _, ttl, ln = struct.unpack("!HHIH", m[o:o + 10]); o += 10
            d = m[o:o + ln]
            if t == 1: v = socket.inet_ntoa(d)
            elif t in (2, 5, 12): v = name_at(m, o)[0]
            elif t == 33: v = "%d %d %d %s" % (*struct.unpack("!HHH", d[:6]), name_at(m, o + 6)[0])
            elif t == 6: v = struct.unpack("!I", d[-4:])[0]
            else: v = d.hex()
            out[section].append([n, NAMES.get(t, t), ttl, v]); o += ln
    return out
server, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
questions, results = json.load(sys.stdin), {}
def run(i, name, qtype):
    try:
        results[i] = ask(server, port, name, qtype, timeout)
    except OSError as exc:
        results[i] = {"error": str(exc) or type(exc).__name__}
threads = [threading.Thread(target=run, args=(i, *q)) for i, q in enumerate(questions)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps([results[i] for i in range(len(questions))]))
"""

# Run inside a pod until its stdin closes: a fresh-socket query every 20 ms, counted. Each
# waits 5 s for its answer, as a pod's resolver does (resolv.conf's default timeout): a
# query lost in the update is never answered, however long it waits, while a busy machine
# (the scenarios of make test side by side on two cores) may answer one late.
_STREAM = r"""
import json, random, socket, struct, sys, threading, time
name, done, ok, failed = sys.argv[1], threading.Event(), 0, []
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
while not done.is_set():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5); s.sendto(struct.pack("!HHHHHH", random.randrange(65536), 0x100, 1, 0, 0, 0) + q,
                                      ("%s", 53))
            m = s.recv(4096)
        if m[3] & 15 or not struct.unpack("!H", m[6:8])[0]:
            failed.append("%%.3f rcode %%d" %% (time.time(), m[3] & 15))
        else:
            ok += 1
    except OSError as exc:
        failed.append("%%.3f %%s" %% (time.time(), exc))
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed}))
""" % DNS_IP



def run_dns_plays(*extra):
    run = ansible_playbook(*DNS_PLAYS, *UPSTREAM, *extra)
    assert run.returncode == 0, run.stdout[-4000:]
    return run


def ask(source, questions, server=DNS_IP, port=53, timeout=2.0):
    proc = source.run(["python3", "-c", _ASK, server, str(port), str(timeout)], timeout=timeout + 20,
                      input=json.dumps([list(q) for q in questions]))
    assert proc.returncode == 0, f"resolver in {source.label} failed: {proc.stderr[-500:]}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def pods():
    return probe.pods(NODES)


@pytest.fixture(scope="module")
def sources(pods):
    """One pod of namespace default on every node."""
    chosen = {}
    for pod in pods:
        if pod["namespace"] == "default":
            chosen.setdefault(pod["node"], probe.Source(pod["node"], pod))
    assert sorted(chosen) == NODES, "every node needs a pod in namespace default"
    return chosen


@pytest.fixture(scope="module")
def expected(pods):
    """The cluster zone as the core renders it from the live model: {(name, type): {data}}."""
    model = probe.services_model(NODES, pods)
    table = defaultdict(set)
    for line in zone_lines(build_records(model, DOMAIN, DNS_IP), TTL):
        name, _, _, rtype, data = line.split(" ", 4)
        table[(name, rtype)].add(data)
    return table


def test_every_record_from_every_node(sources, expected):
    questions = sorted(expected)
    kinds = {rtype for _, rtype in questions}
    assert {"A", "PTR", "SRV"} <= kinds, kinds
    for source in sources.values():
        replies = ask(source, questions)
        for (name, rtype), reply in zip(questions, replies, strict=True):
            assert "error" not in reply, f"{source.label}: {name} {rtype}: {reply}"
            got = {data for n, t, _, data in reply["answers"] if (n, t) == (name, rtype)}
            assert (reply["rcode"], got) == (0, expected[(name, rtype)]), f"{source.label}: {name} {rtype}"
            # Fresh from the zone: aa and the full TTL; repeated within the TTL, from the
            # front's cache: less TTL and no aa (as CoreDNS's cache plugin answers).
            ttls = {ttl for _, _, ttl, _ in reply["answers"]}
            assert 0 < min(ttls) and max(ttls) <= TTL and (ttls == {TTL} or not reply["aa"]), reply


def test_headless_service_lists_every_ready_endpoint(sources, pods):
    web = sorted(p["ip"] for p in pods if p["namespace"] == "default" and p["name"].startswith("web-"))
    reply = ask(sources[NODES[0]], [(f"web-headless.default.svc.{DOMAIN}", "A")])[0]
    assert len(web) == 2 and sorted(a[3] for a in reply["answers"]) == web


@pytest.mark.parametrize("name, rtype", [
    (f"nothing-here.default.svc.{DOMAIN}", "A"),
    (f"frontend.nowhere.svc.{DOMAIN}", "A"),
    (f"_nope._tcp.frontend.default.svc.{DOMAIN}", "SRV"),
    ("254.255.111.10.in-addr.arpa", "PTR"),     # service CIDR, no Service
    ("254.255.244.10.in-addr.arpa", "PTR"),     # cluster CIDR, no headless endpoint
])
def test_missing_names_are_authoritative_nxdomain(sources, name, rtype):
    reply = ask(sources[NODES[-1]], [(name, rtype)])[0]
    assert (reply["rcode"], reply["aa"]) == (3, True), reply
    # The negative TTL is the SOA's minimum: TTL, as positive answers.
    assert [(t, ttl, minimum) for _, t, ttl, minimum in reply["authority"]] == [("SOA", TTL, TTL)], reply


def test_other_names_go_upstream(sources):
    replies = ask(sources[NODES[1]], [("internet.podnet.test", "A"), ("nothing.podnet.test", "A")])
    assert [a[3] for a in replies[0]["answers"]] == [TOPOLOGY.internet_ip]
    assert replies[1]["rcode"] == 3


def test_kube_dns_and_search_path(sources):
    source = sources[NODES[0]]
    assert ask(source, [(f"kube-dns.kube-system.svc.{DOMAIN}", "A")])[0]["answers"][0][3] == DNS_IP
    resolv = source.run(["cat", "/etc/resolv.conf"]).stdout
    assert resolv == (f"nameserver {DNS_IP}\nsearch default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\n"
                      "options ndots:5\n")
    # The short name through the search path, as an application would use it.
    answer = probe.http(source, "frontend")
    assert answer and answer["pod"].startswith("frontend-"), answer


def test_external_client_asks_node1():
    reply = ask(probe.Source("client"), [(f"frontend.default.svc.{DOMAIN}", "A")])[0]
    assert reply["rcode"] == 0 and reply["answers"], reply


def _kill_dns(node):
    """Kill podnet's dnsmasq on `node` only (its netns), as a crash would."""
    # Only dnsmasq itself (-x): `pgrep -f` on the pattern also finds this very shell, whose
    # command line holds it, and once PIDs wrap round the shell may come first and kill itself.
    # Then until none is left in this netns (at most 3 s), so the next query cannot race a
    # process still on its way out.
    script = ("me=$(readlink /proc/self/ns/net); for i in $(seq 30); do left=0; "
              "for p in $(pgrep -x dnsmasq); do "
              "grep -q /etc/podnet/dns/ /proc/$p/cmdline 2>/dev/null || continue; "
              "[ \"$(readlink /proc/$p/ns/net)\" = \"$me\" ] && { kill -9 $p; left=1; }; done; "
              "[ $left = 0 ] && exit 0; sleep 0.1; done; exit 1")
    result = get_lab_host(node).run(script)
    assert result.rc == 0, "podnet's dnsmasq on %s did not die: %s" % (node, result.stderr)


def _stream(source, name):
    return subprocess.Popen(source.argv(["python3", "-c", _STREAM, name]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_node_answers_its_own_pods_then_update_under_load_then_back(sources, tmp_path):
    kube_dns = [(f"kube-dns.kube-system.svc.{DOMAIN}", "A")]
    victim = NODES[1]
    _kill_dns(victim)
    try:
        for node, source in sorted(sources.items()):
            reply = ask(source, kube_dns, timeout=1.0)[0]
            # Answers come from the pod's own node: only the victim's pods see nothing.
            assert ("error" in reply) == (node == victim), (node, reply)

        # One more Service with a named port, added while every node's pods keep asking.
        extra = tmp_path / "services.yml"
        extra.write_text(SERVICES_FILE.read_text() + (
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: dns-extra\nspec:\n"
            "  selector:\n    app: frontend\n  ports:\n    - name: extra\n      port: 8443\n"
            "      targetPort: http\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: outside\n"
            "spec:\n  type: ExternalName\n  externalName: internet.podnet.test\n"))
        streams = {node: _stream(source, f"frontend.default.svc.{DOMAIN}")
                   for node, source in sorted(sources.items()) if node != victim}
        run = run_dns_plays("-e", f"podnet_services_file={extra}")
        counts = {node: json.loads(s.communicate(input="", timeout=30)[0]) for node, s in streams.items()}
        for node, count in counts.items():
            assert count["ok"] > 50 and not count["failed"], (node, count)
        print("queries during the update:", {n: c["ok"] for n, c in counts.items()})
        assert "start instance on port" in run.stdout or "changed: [" in run.stdout

        for source in sources.values():
            a, srv, cname = ask(source, [(f"dns-extra.default.svc.{DOMAIN}", "A"),
                                         (f"_extra._tcp.dns-extra.default.svc.{DOMAIN}", "SRV"),
                                         (f"outside.default.svc.{DOMAIN}", "CNAME")])
            assert a["answers"] and srv["answers"][0][3] == f"0 100 8443 dns-extra.default.svc.{DOMAIN}.", srv
            assert cname["answers"][0][3] == "internet.podnet.test.", cname
            assert "error" not in ask(source, kube_dns)[0]  # the victim's DNS is back
    finally:
        run_dns_plays()
    gone = ask(sources[NODES[0]], [(f"dns-extra.default.svc.{DOMAIN}", "A")])[0]
    assert gone["rcode"] == 3
    again = run_dns_plays()
    recap = [line for line in again.stdout.splitlines() if line.startswith(tuple(NODES))]
    # On failure: each changed task, its header and what it said.
    lines = again.stdout.splitlines()
    changed = ["\n".join(lines[max(i - 3, 0):i + 4])
               for i, line in enumerate(lines) if line.startswith("changed:")]
    assert recap and all("changed=0" in line for line in recap), (recap, changed)


def test_reboot_brings_dns_back(sources):
    node = NODES[1]
    reboot = subprocess.run([sys.executable, str(REPO / "lab" / "podnet_lab.py"), "reboot", node],
                            capture_output=True, text=True, timeout=120)
    assert reboot.returncode == 0, reboot.stdout + reboot.stderr
    assert "Service DNS on" in reboot.stdout
    reply = ask(sources[node], [(f"frontend.default.svc.{DOMAIN}", "A")])[0]
    assert reply["rcode"] == 0 and reply["answers"], reply

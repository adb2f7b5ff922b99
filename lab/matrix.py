"""Print what the lab's network does, with real packets.

1. The pod network: from each pod and node to a pod on every node and to the
   internet host. A cell says the source address the server saw:
     "ok 10.244.0.3"    reached, and the server saw the client's own address;
     "ok 192.168.56.11" reached, seen as that node (masqueraded);
     "--"               no answer within the time limit.
2. Services: the packet table of tests/service_packets.py (the same rows the
   tests check), each sent a few times: who answered and which address they saw,
   or DROP / REJECT, against what Kubernetes semantics expect.
3. NetworkPolicy: the db pod, which the db-access policy (services.yml) opens
   only to pods labelled db-access=true, tried directly and through its Service
   from every pod of the default namespace and from every node.
"""

import argparse
import pathlib
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
import probe  # noqa: E402
from podnet_lab import load_topology  # noqa: E402

SERVICES_FILE = REPO / "inventory" / "lab" / "services.yml"
TRIES = 6


def build(nodes):
    # The truth-table pods of namespaces x, y and z belong to the policy tests.
    pods = [p for p in probe.pods(nodes) if p["namespace"] == "default"]
    sources = [probe.Source(p["node"], p) for p in pods]
    sources += [probe.Source(n) for n in nodes]
    # One pod per node (the first with a TCP port) as targets keeps the table readable.
    by_node = {}
    for p in pods:
        if probe.first_tcp_port(p):
            by_node.setdefault(p["node"], p)
    targets = [("%s %s" % (p["name"], p["ip"]), p["ip"], probe.first_tcp_port(p)) for p in by_node.values()]
    targets.append(("internet %s" % probe.INTERNET_IP, probe.INTERNET_IP, 80))
    return sources, targets


def render(sources, targets, results):
    width0 = max(len(s.label) for s in sources) + 2
    widths = [max(len(t[0]), 18) + 2 for t in targets]
    header = "".join(t[0].ljust(w) for t, w in zip(targets, widths, strict=True))
    lines = ["from \\ to".ljust(width0) + header]
    failures = 0
    for source in sources:
        cells = []
        for target, width in zip(targets, widths, strict=True):
            answer = results[(source.label, target[0])]
            if answer is None:
                failures += 1
                cells.append("--".ljust(width))
            else:
                cells.append(("ok %s" % answer["client"]).ljust(width))
        lines.append(source.label.ljust(width0) + "".join(cells))
    return "\n".join(lines), failures


def services_table(topology):
    """(text, failures): each packet-table row sent for real, against its expectation."""
    sys.path.insert(0, str(REPO / "tests"))
    from tests import service_packets

    nodes = sorted(topology.nodes)
    pods = probe.pods(nodes)
    model = probe.services_model(nodes, pods)
    packets = service_packets.packets(model, pods, topology.nodes, client_ip=topology.client_ip)

    def source_of(packet):
        kind, _, name = packet.source.partition(":")
        if kind == "pod":
            pod = next(p for p in pods if p["name"] == name)
            return probe.Source(pod["node"], pod)
        return probe.Source(name if kind == "node" else "client")

    def observe(packet):
        tries = 1 if isinstance(packet.expected, str) else TRIES
        return [probe.connect(source_of(packet), packet.daddr, packet.dport, packet.protocol)
                for _ in range(tries)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        observed = list(pool.map(observe, packets))
    lines, failures = [], 0
    width = max(len(p.label) for p in packets) + 2
    lines.append("%s%-22s %-34s %s" % ("row".ljust(width), "sent to", "expected", "observed"))
    for packet, outcomes in zip(packets, observed, strict=True):
        if isinstance(packet.expected, str):
            # NONE: no Service rule; nothing listens on 127.0.0.1 there, so the kernel refuses.
            want = "REJECT" if packet.expected == "NONE" else packet.expected
            seen = outcomes[0][0]
            ok = seen == want
            expected, observed_text = packet.expected, seen
        else:
            answers = [detail for outcome, detail in outcomes if outcome == "answer"]
            who = sorted({a["pod"] for a in answers})
            clients = sorted({a["client"] for a in answers})
            ok = len(answers) == len(outcomes) and set(who) <= set(packet.expected.values())
            expected = ",".join(sorted(set(packet.expected.values())))
            observed_text = "%s seeing %s" % (",".join(who) or "no answer", ",".join(clients))
        failures += 0 if ok else 1
        sent_to = "%s:%s" % (packet.daddr, packet.dport)
        lines.append("%s%-22s %-34s %s %s" % (packet.label.ljust(width), sent_to, expected,
                                             "ok  " if ok else "FAIL", observed_text))
    return "\n".join(lines), failures


def policy_table(topology):
    """(text, failures): who reaches the db pod, against the db-access policy's promise."""
    nodes = sorted(topology.nodes)
    pods = [p for p in probe.pods(nodes) if p["namespace"] == "default"]
    db = next(p for p in pods if p["name"] == "db")
    db_ip = next((s["cluster_ip"] for s in probe.services_model(nodes, pods)["services"]
                  if (s["namespace"], s["name"]) == ("default", "db")), None)
    targets = [(db["ip"], 5432, "TCP")] + ([(db_ip, 5432, "TCP")] if db_ip else [])
    sources = [(probe.Source(p["node"], p), (p.get("labels") or {}).get("db-access") == "true")
               for p in pods if p is not db]
    # The node a pod runs on always reaches it (Kubernetes: the kubelet's probes must).
    sources += [(probe.Source(n), n == db["node"]) for n in nodes]
    with ThreadPoolExecutor(max_workers=8) as pool:
        observed = list(pool.map(lambda s: probe.reach(s[0], targets), sources))
    width = max(len(s.label) for s, _ in sources) + 2
    titles = ["db pod %s:5432" % db["ip"]] + (["db Service %s:5432" % db_ip] if db_ip else [])
    lines, failures = ["from".ljust(width) + "expected  " + "".join(h.ljust(26) for h in titles)], 0
    for (source, allowed), outcomes in zip(sources, observed, strict=True):
        want = "answer" if allowed else "DROP"
        ok = all(o == want for o in outcomes)
        failures += 0 if ok else 1
        lines.append("%s%-10s%s%s" % (source.label.ljust(width), "allowed" if allowed else "denied",
                                      "".join(o.ljust(26) for o in outcomes), "ok" if ok else "FAIL"))
    return "\n".join(lines), failures, len(sources)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-services", action="store_true", help="only the pod network matrix")
    options = parser.parse_args(argv)
    topology = load_topology()
    nodes = sorted(topology.nodes)
    sources, targets = build(nodes)
    table, failures = render(sources, targets, probe.matrix(nodes, sources, targets))
    print("Pod network (cell: ok <source address the server saw>, -- no answer):\n")
    print(table)
    total = len(sources) * len(targets)
    print("\n%d of %d probes answered." % (total - failures, total))
    if not options.no_services:
        services, service_failures = services_table(topology)
        print("\nServices (inventory/lab/services.yml; each row sent %d times, or once when it "
              "must fail):\n" % TRIES)
        print(services)
        print("\n%d of %d Service rows behave as Kubernetes specifies."
              % (len(services.splitlines()) - 1 - service_failures, len(services.splitlines()) - 1))
        failures += service_failures
        policy, policy_failures, rows = policy_table(topology)
        print("\nNetworkPolicy db-access (only pods labelled db-access=true reach db):\n")
        print(policy)
        print("\n%d of %d sources get what the policy promises." % (rows - policy_failures, rows))
        failures += policy_failures
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

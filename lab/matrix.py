"""Print the lab's reachability matrix: from each pod and node to each pod
and to the internet host.

A cell says which pod answered and the source address it saw:
  "ok 10.244.0.3"   reached, and the server saw the client's own address;
  "ok 192.168.56.11" reached, seen as that node (masqueraded);
  "--"              no answer within the time limit.
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import probe  # noqa: E402
from podnet_lab import load_topology  # noqa: E402


def build(nodes):
    pods = probe.pods(nodes)
    sources = [probe.Source(p["node"], p) for p in pods]
    sources += [probe.Source(n) for n in nodes]
    targets = [("%s %s" % (p["name"], p["ip"]), p["ip"], probe.first_tcp_port(p)) for p in pods
               if probe.first_tcp_port(p)]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    nodes = sorted(load_topology().nodes)
    sources, targets = build(nodes)
    table, failures = render(sources, targets, probe.matrix(nodes, sources, targets))
    print("Reachability (cell: ok <source address the server saw>, -- no answer):\n")
    print(table)
    total = len(sources) * len(targets)
    print("\n%d of %d probes answered." % (total - failures, total))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

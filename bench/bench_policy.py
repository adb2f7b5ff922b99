#!/usr/bin/env python3
"""NetworkPolicy at scale: podnet's path from a policies file to the kernel, against a bare load.

    make bench                 # also runs this: 100 and 1,000 policies over 300 pods
    python bench/bench_policy.py --policies 100 1000 --pods 300

For each size, in fresh scratch network namespaces (podnet-bench-PID-..., deleted at the
end; the machine's own namespace is never touched):

- load:      parse, validate and resolve the YAML (load_policies; on the controller);
- render:    one node's table (render_table);
- bare:      `nft -f` of exactly that table;
- apply:     the podnet.network.nftables module's first apply, run as Ansible runs it on a node
             (bench/run_module.py), Python start-up included;
- again:     the module once more with nothing changed (what a second site.yml run costs);
- update:    the module after one policy changed (the table is replaced atomically);
- ratio:     apply / bare, measured side by side in this run.

Every policy selects one app's pods and allows two other apps, a namespace and an ipBlock
with an except on three ports (one a range, one named); every other one also limits egress.
Every command has a time limit; the benchmark stops by itself.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script
from ansible_collections.podnet.network.plugins.module_utils.policy.model import load_policies
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table

from bench import REPO, Scratch, timed  # noqa: E402  (also makes podnet's module_utils importable)

NAMESPACES = 10
APPS = 20
NODES = 3


def synthetic_pods(count):
    return [{"namespace": "ns%d" % (i % NAMESPACES), "name": "pod%d" % i,
             "labels": {"app": "app%d" % (i % APPS)},
             "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
             "ip": "10.244.%d.%d" % (i % NODES + 1, i // NODES + 2), "node": "node%d" % (i % NODES + 1)}
            for i in range(count)]


def synthetic_policies(count, variant=0):
    docs = []
    for i in range(count):
        app, namespace = "app%d" % (i % APPS), "ns%d" % (i % NAMESPACES)
        egress = ("  egress:\n"
                  "    - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ns%d}}}]\n"
                  "      ports: [{port: 5432}]\n" % ((i + 1) % NAMESPACES)) if i % 2 else ""
        docs.append(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            "metadata: {name: policy-%d, namespace: %s}\nspec:\n"
            "  podSelector: {matchLabels: {app: %s}}\n"
            "  ingress:\n"
            "    - from:\n"
            "        - podSelector: {matchExpressions: [{key: app, operator: In, values: [app%d, app%d]}]}\n"
            "        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ns%d}}\n"
            "        - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.56.0/24]}\n"
            "      ports: [{port: %d}, {port: 8000, endPort: 8100}, {port: http}]\n%s"
            % (i, namespace, app, (i + 1) % APPS, (i + 2) % APPS, (i + 3) % NAMESPACES,
               80 + (variant if i == count // 2 else 0), egress))
    return "---\n".join(docs)


def module_run(ns, args, tmp):
    args_file = pathlib.Path(tmp) / "args.json"
    args_file.write_text(json.dumps(args))
    seconds, proc = timed(ns.argv(sys.executable, str(REPO / "bench" / "run_module.py"), "nftables",
                                  str(args_file)))
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise RuntimeError("podnet.network.nftables failed: %s" % result.get("msg"))
    return seconds, result


def measure(policies, pods):
    pod_list = synthetic_pods(pods)
    text = synthetic_policies(policies)
    started = time.perf_counter()
    model = load_policies([(text, "policies.yml")], pod_list)
    load = time.perf_counter() - started
    started = time.perf_counter()
    table = render_table(model, "node1")
    render = time.perf_counter() - started
    changed_model = load_policies([(synthetic_policies(policies, variant=1), "policies.yml")], pod_list)
    changed = render_table(changed_model, "node1")
    tag = "policy-%d" % policies
    with tempfile.TemporaryDirectory() as tmp, Scratch("bare-" + tag) as ns:
        script = pathlib.Path(tmp) / "table.nft"
        script.write_text(build_script("ip", "podnet-policy", table))
        bare, _ = timed(ns.argv("nft", "-f", str(script)))
    with tempfile.TemporaryDirectory() as tmp, Scratch("module-" + tag) as ns:
        base = {"family": "ip", "table": "podnet-policy", "state_dir": tmp, "path": tmp + "/boot.nft"}
        apply, result = module_run(ns, dict(base, content=table), tmp)
        assert result["changed"], result
        again, result = module_run(ns, dict(base, content=table), tmp)
        assert not result["changed"], result
        update, result = module_run(ns, dict(base, content=changed), tmp)
        assert result["changed"], result
    rules = sum(1 for line in table.splitlines() if "comment" in line)
    return load, render, bare, apply, again, update, rules, len(table.splitlines())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--policies", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--pods", type=int, default=300)
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_policy.py needs root (it creates scratch network namespaces)")
    header = (f"{'policies':>9} {'pods':>5} {'rules':>6} {'lines':>7} {'load s':>7} {'render s':>9} "
              f"{'bare s':>7} {'apply s':>8} {'ratio':>6} {'again s':>8} {'update s':>9}")
    print(f"NetworkPolicy, one node's table ({NODES} nodes, {NAMESPACES} namespaces)")
    print(header)
    print("-" * len(header))
    for count in options.policies:
        load, render, bare, apply, again, update, rules, lines = measure(count, options.pods)
        print(f"{count:>9} {options.pods:>5} {rules:>6} {lines:>7} {load:>7.3f} {render:>9.3f} {bare:>7.3f} "
              f"{apply:>8.3f} {apply / bare:>6.2f} {again:>8.3f} {update:>9.3f}", flush=True)


if __name__ == "__main__":
    main()

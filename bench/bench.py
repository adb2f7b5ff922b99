#!/usr/bin/env python3
"""Service NAT at scale: podnet's modules against a bare load of the same rules.

    make bench            # 100, 1,000 and 10,000 Services x 5 endpoints, both backends
    python bench/bench.py --services 100 1000 --endpoints 5

For each size and backend, in a fresh scratch network namespace (podnet-bench-PID, deleted
at the end; the machine's own namespace is never touched):

- render:   the pure core turning the services model into rules (in this process);
- bare:     `nft -f` / `iptables-restore --noflush` of exactly the rules the module loads;
- apply:    the module's first apply (a fresh namespace, so a full load), run as Ansible
            runs it on a node (bench/run_module.py), Python start-up included;
- update:   the module again after one Service lost an endpoint; with verify_live (reads
            the live rules back) and without (nftables: the record, once a glance at the
            table's generation agrees; iptables: the record);
- no-op:    the module again with the same model, as a no-op run of the playbook calls it
            (nftables: the glance alone, nothing rendered);
- ratio:    apply / bare, measured side by side in this run.

iptables above --iptables-max Services (default 2,000) is skipped unless asked for:
`iptables-restore --noflush` (what kube-proxy and podnet must use, to leave other chains
alone) takes time growing with the square of the chain count here (2.5 s for 1,000
Services x 5 endpoints, 8.9 s for 2,000: several minutes for 10,000).

Every command has a time limit; the benchmark stops by itself.
"""

import argparse
import ipaddress
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import (
    render_iptables,
    restore_text,
)
from ansible_collections.podnet.network.plugins.module_utils.services.nft import full_content, render_nftables

NODES = ("node1", "node2", "node3")
TIMEOUT = 600


def synthetic_model(services, endpoints):
    """`services` Services of `endpoints` endpoints each; every tenth is a NodePort."""
    first_vip = int(ipaddress.ip_address("10.96.0.11"))
    first_pod = int(ipaddress.ip_address("10.244.0.2"))
    result = []
    for i in range(services):
        node_port = 30000 + i // 10 if i % 10 == 0 else None
        result.append({
            "namespace": "bench", "name": f"svc-{i}", "type": "NodePort" if node_port else "ClusterIP",
            "cluster_ip": str(ipaddress.ip_address(first_vip + i)), "external_ips": [],
            "external_traffic_policy": "Cluster", "internal_traffic_policy": "Cluster",
            "session_affinity_timeout": None,
            "ports": [{
                "name": "http", "protocol": "TCP", "port": 80, "node_port": node_port, "target_port": 8080,
                "endpoints": [{"ip": str(ipaddress.ip_address(first_pod + i * endpoints + j)), "port": 8080,
                               "node": NODES[j % len(NODES)], "pod": None} for j in range(endpoints)],
            }],
        })
    return {"cluster_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
            "node_port_range": [30000, 32767], "services": result}


def run(argv, timeout=TIMEOUT, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True, **kwargs)


def timed(argv, **kwargs):
    started = time.perf_counter()
    proc = run(argv, **kwargs)
    return time.perf_counter() - started, proc


class Scratch:
    """A network namespace for one measurement, gone afterwards."""

    def __init__(self, tag):
        self.name = f"podnet-bench-{os.getpid()}-{tag}"

    def __enter__(self):
        run(["ip", "netns", "add", self.name])
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=60)

    def argv(self, *command):
        return ["ip", "netns", "exec", self.name, *command]


def bare_load(backend, model, tag):
    with tempfile.TemporaryDirectory() as tmp, Scratch(f"bare-{tag}") as ns:
        path = pathlib.Path(tmp) / "rules"
        if backend == "nftables":
            ruleset = render_nftables(model, "node1")
            path.write_text(build_script("ip", ruleset["table"], full_content(ruleset)))
            seconds, _ = timed(ns.argv("nft", "-f", str(path)))
        else:
            path.write_text(restore_text(render_iptables(model, "node1")))
            seconds, _ = timed(ns.argv("iptables-restore", "--noflush"), input=path.read_text())
    return seconds


def module_run(ns, backend, args, tmp):
    args_file = pathlib.Path(tmp) / "args.json"
    args_file.write_text(json.dumps(args))
    seconds, proc = timed(ns.argv(sys.executable, str(REPO / "bench" / "run_module.py"),
                                  f"proxy_{backend}", str(args_file)))
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise RuntimeError(f"{backend} module failed: {result.get('msg')}")
    return seconds, result


def module_apply_and_update(backend, model, tag):
    """(full apply, update with verify_live, update trusting the record, no-op)."""
    with tempfile.TemporaryDirectory() as tmp, Scratch(f"module-{tag}") as ns:
        base = {"node": "node1", "state_dir": tmp, "path": f"{tmp}/boot.rules", "flush_conntrack": False}
        apply_seconds, result = module_run(ns, backend, dict(base, model=json.dumps(model)), tmp)
        assert result["changed"], result
        updates = []
        for verify, drop in ((True, 0), (False, 1)):
            changed = json.loads(json.dumps(model))
            changed["services"][len(changed["services"]) // 2]["ports"][0]["endpoints"].pop(drop)
            args = dict(base, model=json.dumps(changed), verify_live=verify)
            seconds, result = module_run(ns, backend, args, tmp)
            assert result["changed"] and result["services_changed"], result
            updates.append(seconds)
            model = changed
        noop_seconds, result = module_run(ns, backend, dict(base, model=json.dumps(model)), tmp)
        assert not result["changed"], result
    return apply_seconds, updates[0], updates[1], noop_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["nftables", "iptables"],
                        choices=["nftables", "iptables"])
    parser.add_argument("--iptables-max", type=int, default=2000,
                        help="skip the iptables backend above this many Services (default 2000)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root (it creates scratch network namespaces)")

    header = (f"{'services':>9} {'backend':<9} {'render s':>9} {'bare s':>8} {'apply s':>8} "
              f"{'ratio':>6} {'update s':>9} {'update(trust) s':>16} {'no-op s':>8}")
    print(f"Service NAT, {options.endpoints} endpoints per Service, one node's rules")
    print(header)
    print("-" * len(header))
    for count in options.services:
        model = synthetic_model(count, options.endpoints)
        for backend in options.backends:
            if backend == "iptables" and count > options.iptables_max:
                print(f"{count:>9} {backend:<9} skipped: iptables-restore --noflush grows with the square of "
                      f"the chain count (--iptables-max {count} to measure)", flush=True)
                continue
            started = time.perf_counter()
            render_nftables(model, "node1") if backend == "nftables" else render_iptables(model, "node1")
            render = time.perf_counter() - started
            tag = f"{backend}-{count}"
            bare = bare_load(backend, model, tag)
            apply, update, update_trusting, noop = module_apply_and_update(backend, model, tag)
            print(f"{count:>9} {backend:<9} {render:>9.3f} {bare:>8.3f} {apply:>8.3f} {apply / bare:>6.2f} "
                  f"{update:>9.3f} {update_trusting:>16.3f} {noop:>8.3f}", flush=True)


if __name__ == "__main__":
    main()

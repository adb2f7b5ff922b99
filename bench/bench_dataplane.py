#!/usr/bin/env python3
"""Whether the data plane stays flat as Services grow, and what kube-proxy's nftables layout
would cost to load the same Services.

    make bench                                # 1, 10,000 and 100,000 Services x 5 endpoints
    python bench/bench_dataplane.py --services 1 10000 --seconds 3

For each size, in scratch network namespaces (podnet-bench-PID-*, deleted at the end; the
machine's own namespace is never touched): a node and a pod joined by a veth pair. The node
holds podnet's Service table for N Services (the one podnet.network.proxy_nftables loads,
`nft -f` of the rendered table), the first Service's one endpoint being the pod's listener.
From the node, TCP connects per second (a Python client opening and closing connections for
--seconds; bench_overlay's client and listener):

- ClusterIP:   to the first Service's clusterIP (DNAT by podnet's table);
- pod direct:  to the pod's address, the same table loaded;
- vs 1:        ClusterIP connects/s over the same at 1 Service (issue 13: at least 0.90);
- vs direct:   ClusterIP over pod direct (issue 13: at least 0.80);
- podnet load: `nft -f` of podnet's table, in a fresh namespace;
- kube-proxy layout load: `nft -f` of the same Services in kube-proxy's nftables layout (a
  chain per Service port, a chain per endpoint, the Service IPs in one verdict map), in a
  fresh namespace, stopped after --kube-proxy-timeout seconds.

Every command has a time limit; the benchmark stops by itself.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script  # noqa: E402
from ansible_collections.podnet.network.plugins.module_utils.services.nft import (  # noqa: E402
    full_content,
    render_nftables,
)
from bench_overlay import CONNECT_CLIENT, CONNECT_SERVER  # noqa: E402

from bench import Scratch, bare_load, run, synthetic_model  # noqa: E402

NODE_IP, POD_IP = "10.244.0.1", "10.244.0.2"
LISTENER_PORT = 5202  # bench_overlay's listener: 5201 + 1
ELEMENTS_PER_STATEMENT = 1000


def measured_model(count, endpoints):
    """`count` Services; the first one's only endpoint is the pod's listener, on the port the
    client connects to (bench_overlay's, the Service's port too)."""
    model = synthetic_model(count, endpoints)
    port = model["services"][0]["ports"][0]
    port.update(port=LISTENER_PORT, target_port=LISTENER_PORT,
                endpoints=[{"ip": POD_IP, "port": LISTENER_PORT, "node": "node1", "pod": None}])
    return model


def connects(node, pod, address, seconds):
    """Connects/s from namespace `node` to `address`, the pod's listener behind it."""
    listener = subprocess.Popen(pod.argv(sys.executable, "-c", CONNECT_SERVER, POD_IP),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        listener.stdout.readline()
        return float(run(node.argv(sys.executable, "-c", CONNECT_CLIENT, address, str(seconds)),
                         timeout=seconds + 60).stdout)
    finally:
        listener.kill()
        listener.wait()


def data_plane(model, seconds, tag):
    """(ClusterIP connects/s, pod direct connects/s) through podnet's table for `model`, each
    from a fresh node (the first run's TIME_WAIT sockets would hold the second's ports)."""
    ruleset = render_nftables(model, "node1")
    first = model["services"][0]
    rates = []
    for target in (first["cluster_ip"], POD_IP):
        with Scratch(f"dp-node-{tag}") as node, Scratch(f"dp-pod-{tag}") as pod, \
                tempfile.TemporaryDirectory() as tmp:
            run(["ip", "-n", node.name, "link", "add", "pod", "type", "veth", "peer", "name", "eth0",
                 "netns", pod.name])
            for ns, dev, address in ((node, "pod", NODE_IP), (pod, "eth0", POD_IP)):
                run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
                run(["ip", "-n", ns.name, "addr", "add", f"{address}/24", "dev", dev])
                run(["ip", "-n", ns.name, "link", "set", dev, "up"])
            # As a node's default route would: the clusterIP is routed before the DNAT moves it.
            run(["ip", "-n", node.name, "route", "add", model["service_cidr"], "dev", "pod"])
            script = pathlib.Path(tmp) / "table.nft"
            script.write_text(build_script("ip", ruleset["table"], full_content(ruleset)))
            run(node.argv("nft", "-f", str(script)))
            rates.append(connects(node, pod, target, seconds))
    if not rates[0]:
        raise RuntimeError(f"no connection through {first['cluster_ip']}: podnet's table did not DNAT")
    return tuple(rates)


def kube_proxy_layout(model):
    """The Services as kube-proxy's nftables mode lays them out: a verdict map from Service
    address to a chain per Service port, which picks (numgen) a chain per endpoint that DNATs."""
    lines = ["table ip kube-proxy-layout {",
             "\tmap service-ips {", "\t\ttype ipv4_addr . inet_proto . inet_service : verdict", "\t}",
             "\tchain mark-for-masquerade {", "\t\tmeta mark set meta mark | 0x4000", "\t}",
             "\tchain services {", "\t\tip daddr . meta l4proto . th dport vmap @service-ips", "\t}",
             "\tchain nat-output {", "\t\ttype nat hook output priority -100; policy accept;",
             "\t\tjump services", "\t}"]
    elements = []
    for i, svc in enumerate(model["services"]):
        for p, port in enumerate(svc["ports"]):
            chain = f"service-{i}-{p}"
            endpoints = port["endpoints"]
            picks = ", ".join(f"{j} : goto endpoint-{i}-{p}-{j}" for j in range(len(endpoints)))
            lines += [f"\tchain {chain} {{", f"\t\tnumgen random mod {len(endpoints)} vmap {{ {picks} }}",
                      "\t}"]
            for j, ep in enumerate(endpoints):
                lines += [f"\tchain endpoint-{i}-{p}-{j} {{",
                          f"\t\tip saddr {ep['ip']} jump mark-for-masquerade",
                          f"\t\tmeta l4proto tcp dnat to {ep['ip']}:{ep['port']}", "\t}"]
            elements.append(f"{svc['cluster_ip']} . tcp . {port['port']} : goto {chain}")
    lines.append("}")
    for start in range(0, len(elements), ELEMENTS_PER_STATEMENT):
        lines.append("add element ip kube-proxy-layout service-ips { %s }"
                     % ", ".join(elements[start:start + ELEMENTS_PER_STATEMENT]))
    return "\n".join(lines) + "\n"


def kube_proxy_load(model, tag, limit):
    """Seconds `nft -f` takes for kube-proxy's layout, or None when stopped after `limit`."""
    with Scratch(f"kp-{tag}") as ns, tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / "kube-proxy.nft"
        script.write_text(kube_proxy_layout(model))
        started = time.perf_counter()
        try:
            run(ns.argv("nft", "-f", str(script)), timeout=limit)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1, 10000, 100000])
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3, help="each connect measurement's length")
    parser.add_argument("--kube-proxy-timeout", type=int, default=300,
                        help="stop kube-proxy's layout's load after this many seconds")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_dataplane.py needs root (it creates scratch network namespaces)")
    header = (f"{'services':>9} {'ClusterIP conn/s':>17} {'pod direct conn/s':>18} {'vs 1':>6} "
              f"{'vs direct':>10} {'podnet load s':>14} {'kube-proxy layout load s':>25}")
    print(f"Data plane through podnet's Service table (nftables), {options.endpoints} endpoints per "
          f"Service, TCP connects for {options.seconds} s from the node")
    print(header)
    print("-" * len(header))
    first_rate = None
    for count in options.services:
        model = measured_model(count, options.endpoints)
        cluster, direct = data_plane(model, options.seconds, str(count))
        first_rate = first_rate or cluster
        load = bare_load("nftables", model, f"dp-{count}")
        kube = kube_proxy_load(model, str(count), options.kube_proxy_timeout)
        kube_text = f"{kube:.3f}" if kube is not None else f"> {options.kube_proxy_timeout} (stopped)"
        print(f"{count:>9} {cluster:>17.0f} {direct:>18.0f} {cluster / first_rate:>6.2f} "
              f"{cluster / direct:>10.2f} {load:>14.3f} {kube_text:>25}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What the overlay costs: pod to pod over VXLAN against a direct route and node to node.

    make bench            # includes this table
    python bench/bench_overlay.py --seconds 3

Two scratch nodes (network namespaces podnet-bench-PID-*, deleted at the end; the machine's
own namespace is never touched) share one underlay link (veth, MTU 1500), each with one pod
(a namespace behind a veth, its podCIDR's .1 on the node side). The pods' routes are put in
place by podnet's own routes module (bench/run_module.py), first as direct routes via the
other node's IP, then over podnet.1 (VXLAN, pods at MTU 1450 as podnet sets them), so the
VXLAN row measures exactly the device podnet programs, offloads as podnet leaves them.

For each road: TCP throughput (iperf3, one stream, --seconds each) and TCP connect rate
(a Python client opening and closing connections for --seconds against a listener that
accepts and closes). The last column is each row over node to node. Every command has a
time limit; the benchmark stops by itself.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 60
UNDERLAY_MTU = 1500
VXLAN_OVERHEAD = 50
NODES = {  # name: (node IP, podCIDR)
    "a": ("192.168.100.1", "10.1.0.0/24"),
    "b": ("192.168.100.2", "10.2.0.0/24"),
}
CONNECT_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201 + 1)); s.listen(512); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""
CONNECT_CLIENT = """
import socket, sys, time
end, n = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    c = socket.create_connection((sys.argv[1], 5202), timeout=2); c.close(); n += 1
print(n / float(sys.argv[2]))
"""


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=True, **kwargs)


class Lab:
    def __init__(self):
        self.prefix = f"podnet-bench-{os.getpid()}-"

    def ns(self, name):
        return self.prefix + name

    def ip(self, name, *args):
        run(["ip", "-n", self.ns(name), *args])

    def exec(self, name, *argv):
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def __enter__(self):
        for name in ("a", "b", "pod-a", "pod-b"):
            run(["ip", "netns", "add", self.ns(name)])
        run(["ip", "-n", self.ns("a"), "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
             "netns", self.ns("b")])
        for node, (node_ip, cidr) in NODES.items():
            gateway = cidr.replace(".0/24", ".1")
            pod_ip = cidr.replace(".0/24", ".2")
            self.ip(node, "link", "set", "lo", "up")
            self.ip(node, "addr", "add", f"{node_ip}/24", "dev", "eth0")
            self.ip(node, "link", "set", "eth0", "up")
            run(self.exec(node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
            run(["ip", "-n", self.ns(node), "link", "add", "pod", "type", "veth", "peer", "name", "eth0",
                 "netns", self.ns("pod-" + node)])
            self.ip(node, "addr", "add", f"{gateway}/24", "dev", "pod")
            self.ip(node, "link", "set", "pod", "up")
            self.ip("pod-" + node, "link", "set", "lo", "up")
            self.ip("pod-" + node, "addr", "add", f"{pod_ip}/24", "dev", "eth0")
            self.ip("pod-" + node, "link", "set", "eth0", "up")
            self.ip("pod-" + node, "route", "add", "default", "via", gateway)
        return self

    def __exit__(self, *exc):
        for name in ("a", "b", "pod-a", "pod-b"):
            subprocess.run(["ip", "netns", "del", self.ns(name)], capture_output=True, timeout=60)

    def roads(self, via):
        """podnet's routes module on both nodes: direct routes, or the VXLAN device."""
        for node, (node_ip, cidr) in NODES.items():
            (peer_ip, peer_cidr), = [v for k, v in NODES.items() if k != node]
            vtep, peer_vtep = cidr.split("/")[0], peer_cidr.split("/")[0]
            mac = "0a:58:" + ":".join("%02x" % int(o) for o in vtep.split("."))
            peer_mac = "0a:58:" + ":".join("%02x" % int(o) for o in peer_vtep.split("."))
            if via == "vxlan":
                route = {"dest": peer_cidr, "gateway": peer_vtep, "dev": "podnet.1", "onlink": True}
                args = {"routes": [route],
                        "vxlan": {"device": "podnet.1", "vni": 1, "port": 8472, "local": node_ip,
                                  "address": vtep, "mac": mac, "mtu": UNDERLAY_MTU - VXLAN_OVERHEAD,
                                  "peers": [{"node_ip": peer_ip, "vtep_ip": peer_vtep,
                                             "vtep_mac": peer_mac}]}}
            else:
                args = {"routes": [{"dest": peer_cidr, "gateway": peer_ip}], "vxlan": {"device": "podnet.1"}}
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(args, handle)
            try:
                proc = run(self.exec(node, sys.executable, str(REPO / "bench" / "run_module.py"), "routes",
                                     handle.name))
            finally:
                os.unlink(handle.name)
            result = json.loads(proc.stdout)
            if result.get("failed"):
                raise RuntimeError(f"routes module on {node}: {result.get('msg')}")
            # The pod MTU podnet's CNI config would give: the underlay's less VXLAN's overhead.
            mtu = UNDERLAY_MTU - VXLAN_OVERHEAD if via == "vxlan" else UNDERLAY_MTU
            self.ip("pod-" + node, "link", "set", "eth0", "mtu", str(mtu))
            self.ip(node, "link", "set", "pod", "mtu", str(mtu))


def measure(lab, client, server, address, seconds):
    """(Gbit/s, connects/s) from namespace `client` to `address` in namespace `server`."""
    listeners = [subprocess.Popen(lab.exec(server, "iperf3", "-s", "-1", "-B", address),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                 subprocess.Popen(lab.exec(server, sys.executable, "-c", CONNECT_SERVER, address),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)]
    try:
        listeners[1].stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            proc = subprocess.run(lab.exec(client, "iperf3", "-J", "-c", address, "-t", str(seconds)),
                                  capture_output=True, text=True, timeout=seconds + TIMEOUT)
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the server is not listening yet
        if proc.returncode != 0:
            raise RuntimeError(f"iperf3 to {address}: {proc.stdout[-500:]}{proc.stderr[-500:]}")
        gbits = json.loads(proc.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        connects = run(lab.exec(client, sys.executable, "-c", CONNECT_CLIENT, address, str(seconds)))
        rate = float(connects.stdout)
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()
    return gbits, rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3, help="each measurement's length (default 3)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_overlay.py needs root (it creates scratch network namespaces)")
    if not shutil.which("iperf3"):
        sys.exit("bench_overlay.py needs iperf3 (make deps installs it)")
    seconds = int(options.seconds) if options.seconds >= 1 else 1
    rows = []
    with Lab() as lab:
        lab.roads("direct")
        rows.append(("node to node", *measure(lab, "a", "b", NODES["b"][0], seconds)))
        rows.append(("pod to pod, direct route", *measure(lab, "pod-a", "pod-b", "10.2.0.2", seconds)))
        lab.roads("vxlan")
        rows.append(("pod to pod, VXLAN (podnet.1)", *measure(lab, "pod-a", "pod-b", "10.2.0.2", seconds)))
    base_gbits, base_rate = rows[0][1], rows[0][2]
    header = (f"{'road':<30} {'TCP Gbit/s':>11} {'connects/s':>11} {'throughput ratio':>17} "
              f"{'connect ratio':>14}")
    print(f"Pod network roads, one TCP stream, {seconds} s each, underlay MTU {UNDERLAY_MTU}")
    print(header)
    print("-" * len(header))
    for road, gbits, rate in rows:
        print(f"{road:<30} {gbits:>11.2f} {rate:>11.0f} {gbits / base_gbits:>17.2f} "
              f"{rate / base_rate:>14.2f}")


if __name__ == "__main__":
    main()

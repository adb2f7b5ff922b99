#!/usr/bin/env python3
"""Time to heal: a neighbour takes podnet's state away, podnet-heal puts it back.

    PODNET_LAB_INVENTORY=... python bench/heal_times.py [--node node1] [--every 2]

On a converged lab node, starts podnet-heal (as podnet-heal.service runs it) inside the
node, then, one at a time: `nft flush ruleset` (what `systemctl restart nftables` does
first), `ip route flush proto 158`, kill -9 of the DNS front dnsmasq, kill -9 of a test
pod's server. For each, the seconds from the event until the state is back (polled every
0.1 s; a limit of 30 s each). The heal process is stopped at the end (by its PID).
"""

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))
sys.path.insert(0, str(HERE.parent))
import probe  # noqa: E402
from podnet_lab import node_exec_argv  # noqa: E402

HEAL = "/usr/local/lib/podnet/podnet-heal"


def sh(node, script):
    return subprocess.run(node_exec_argv(node) + ["sh", "-c", script], capture_output=True, text=True,
                          timeout=30)


def until(check, limit=30.0):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", default="node1")
    parser.add_argument("--every", default="2")
    args = parser.parse_args()
    node = args.node
    heal = subprocess.Popen(node_exec_argv(node) + ["python3", HEAL, "--every", args.every],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    results = {}
    try:
        time.sleep(3)
        tables = sh(node, "nft list tables").stdout
        routes = sh(node, "ip route show proto 158").stdout
        pods = [p for p in probe.pods([node]) if p["namespace"] == "default" and probe.first_tcp_port(p)]
        pod = pods[0]

        sh(node, "nft flush ruleset")
        results["nft flush ruleset"] = until(lambda: sh(node, "nft list tables").stdout == tables)

        sh(node, "ip route flush proto 158")
        results["ip route flush proto 158"] = until(
            lambda: sh(node, "ip route show proto 158").stdout == routes)

        front = sh(node, "pgrep -f 'dnsmasq.*front' | head -1").stdout.split()
        if front:
            sh(node, "kill -9 %s" % front[0])
            results["kill -9 dnsmasq (front)"] = until(
                lambda: sh(node, "pgrep -f 'dnsmasq.*front'").returncode == 0
                and probe.Source(node, pod).run(["python3", "-c", "import socket; socket.gethostbyname('"
                                                 "web.default.svc.cluster.local')"]).returncode == 0)
        server = pod.get("pid")
        if server:
            os.kill(int(server), signal.SIGKILL)
            results["kill -9 test pod server %s" % pod["name"]] = until(
                lambda: probe.http(probe.Source(node), pod["ip"], probe.first_tcp_port(pod),
                                   timeout=1) is not None)
    finally:
        os.killpg(heal.pid, signal.SIGTERM)
        out = heal.communicate(timeout=10)[0]
    for event, seconds in results.items():
        print("%-40s %s" % (event, "%.1f s" % seconds if seconds is not None else "NOT HEALED in 30 s"))
    print("--- podnet-heal's log ---")
    print(out[-3000:])


if __name__ == "__main__":
    main()

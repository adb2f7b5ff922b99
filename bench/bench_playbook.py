#!/usr/bin/env python3
"""Service NAT as users meet it: `ansible-playbook` on the lab, side by side in one run.

    make bench                                   # 1, 1,000, 10,000 and 100,000 Services x 5 endpoints
    python bench/bench_playbook.py --services 1 1000 --inventory /tmp/inv-mine

For each size, on a converged lab (`make site`), the plays a Service change runs
(`playbooks/plan.yml playbooks/test_pods.yml playbooks/services.yml`, nftables backend),
with a generated services file of N selector-less Services (an Endpoints object each, 5
addresses), timed from the command line:

- first:    the Service NAT removed from every node first (its table, record and boot file);
- no-op:    the same file again (--repeat times, the median shown);
- endpoint: one endpoint address of one Service changed (--repeat times, moved back and
            forth, the median shown: a single run on a two-core lab varies by 15 %);
- added:    one Service more;
- removed:  one Service fewer.

Sizes above --full-max (10,000) run first and no-op only: the issue asks that 100,000
Services apply at all, with the controller's memory printed (`ctl MB`: the largest
ansible-playbook process so far).

`nft s` is the longest kernel transaction any node ran (the module's `nft_seconds`); `x1`
is the run's wall time over the same run with 1 Service (the first size measured).
`bare nft -f` is a bare load of one node's table in a scratch namespace, for scale.

Then the same for NetworkPolicy (`--policies`, default 1 and 1,000): `playbooks/plan.yml
playbooks/test_pods.yml playbooks/network_policy.yml` with a generated policies file of N
policies over the lab's own pods (each selects one app of the default namespace and admits
two others, a namespace and an ipBlock on three ports; every other one limits egress too):
first (podnet's policy table removed from every node first), no-op, one policy's port
changed, one added, one removed.

First of all, a no-op `site.yml` (`--site-runs`, default 3, after one run that converges
the lab): the whole cluster's playbook with nothing to change, against issue 13's target of
8 s; `glanced` is how many task results the run's glance answered without asking a node.

Every run has a time limit (--timeout); the lab's own services and policies are applied
again at the end, so the lab is left as `make site` left it.
"""

import argparse
import ipaddress
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench import bare_load, synthetic_model  # noqa: E402

PLAYS = ["playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/services.yml"]
POLICY_PLAYS = ["playbooks/plan.yml", "playbooks/test_pods.yml", "playbooks/network_policy.yml"]
# The lab's pods (inventory/lab: cluster.yml), as the policies select them.
POLICY_APPS = ("web", "frontend", "backend", "client", "db")
POLICY_NAMESPACES = ("default", "x", "y", "z")  # the ones policies admit from
FIRST_ADDRESS = int(ipaddress.ip_address("10.200.0.0"))
SITE_NOOP_TARGET = 8.0  # seconds, issue 13


def services_file(count, endpoints, changed=False, added=0, removed=0):
    """N Services with an Endpoints object each. `changed`: one endpoint of the middle
    Service moves; `added`: Services appended; `removed`: Services dropped from the front."""
    docs = []
    for i in range(removed, count + added):
        addresses = [str(ipaddress.ip_address(FIRST_ADDRESS + i * endpoints + j)) for j in range(endpoints)]
        if changed and i == count // 2:
            addresses[0] = "10.199.0.1"
        docs.append(
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: bench}\n"
            "spec:\n  ports: [{name: http, port: 80, targetPort: 8080}]\n"
            "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: svc-%d, namespace: bench}\n"
            "subsets:\n- addresses: [%s]\n  ports: [{name: http, port: 8080}]\n"
            % (i, i, ", ".join("{ip: %s}" % a for a in addresses)))
    return "".join(docs)


def policies_file(count, changed=False, added=0, removed=0):
    """N NetworkPolicies over the lab's pods. `changed`: the middle one's first port moves;
    `added`: policies appended; `removed`: policies dropped from the front."""
    docs = []
    for i in range(removed, count + added):
        app = POLICY_APPS[i % len(POLICY_APPS)]
        others = POLICY_APPS[(i + 1) % len(POLICY_APPS)], POLICY_APPS[(i + 2) % len(POLICY_APPS)]
        egress = ("  egress:\n    - to: [{namespaceSelector: {matchLabels: "
                  "{kubernetes.io/metadata.name: %s}}}]\n      ports: [{port: 5432}]\n"
                  % POLICY_NAMESPACES[(i + 1) % len(POLICY_NAMESPACES)]) if i % 2 else ""
        docs.append(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            "metadata: {name: bench-%d, namespace: default}\nspec:\n"
            "  podSelector: {matchLabels: {app: %s}}\n  ingress:\n    - from:\n"
            "        - podSelector: {matchExpressions: [{key: app, operator: In, values: [%s, %s]}]}\n"
            "        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: %s}}\n"
            "        - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.56.0/24]}\n"
            "      ports: [{port: %d}, {port: 8000, endPort: 8100}, {port: http}]\n%s"
            % (i, app, *others, POLICY_NAMESPACES[(i + 3) % len(POLICY_NAMESPACES)],
               81 if changed and i == count // 2 else 80, egress))
    return "---\n".join(docs)


def playbook(inventory, plays, timeout, extra=(), report_too=False):
    """(wall seconds, longest nft transaction on a node, changed tasks) of one ansible-playbook,
    and its callback's whole report with `report_too`."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="podnet_bench", ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_CALLBACK_PLUGINS=str(REPO / "bench" / "callback_plugins"),
               PODNET_LAB_INVENTORY=str(inventory))
    argv = [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory / "hosts.yml"),
            *plays, *extra]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
                          check=False)
    seconds = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"nft_seconds"')]
    report = json.loads(lines[-1]) if lines else None
    if proc.returncode != 0 or report is None or report["failed"]:
        sys.exit("ansible-playbook %s failed (rc %d): %s\n%s" % (
            " ".join(plays), proc.returncode, report and report["failed"], proc.stderr[-2000:]))
    if os.environ.get("PODNET_BENCH_TASKS"):
        slowest = sorted(report["tasks"].items(), key=lambda item: -item[1])[:8]
        print("    slowest tasks: " + ", ".join("%s %.1f s" % item for item in slowest), flush=True)
    if report_too:
        return seconds, report["nft_seconds"], report["changed"], report
    return seconds, report["nft_seconds"], report["changed"]


def site_rows(inventory, options):
    """A no-op site.yml, side by side: what a user waits for when nothing changed."""
    print(f"ansible-playbook site.yml, 3-node lab {inventory}, nothing to change")
    header = f"{'run':<9} {'wall s':>8} {'changed':>8} {'tasks':>6} {'glanced':>8}"
    print(header)
    print("-" * len(header))
    playbook(inventory, ["site.yml"], options.timeout)
    times = []
    for run in range(1, options.site_runs + 1):
        seconds, _nft, changed, report = playbook(inventory, ["site.yml"], options.timeout, report_too=True)
        times.append(seconds)
        print(f"{'no-op %d' % run:<9} {seconds:>8.1f} {changed:>8} {len(report['tasks']):>6} "
              f"{report.get('glanced', 0):>8}", flush=True)
    middle = sorted(times)[len(times) // 2]
    print(f"  {'met    ' if middle <= SITE_NOOP_TARGET else 'NOT met'} no-op site.yml under "
          f"{SITE_NOOP_TARGET:.0f} s: median {middle:.1f} s\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1, 1000, 10000, 100000])
    parser.add_argument("--full-max", type=int, default=10000,
                        help="sizes above this are measured first and no-op only (issue 13: that they apply)")
    parser.add_argument("--endpoints", type=int, default=5)
    parser.add_argument("--inventory", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("PODNET_LAB_INVENTORY", REPO / "inventory/lab")))
    parser.add_argument("--policies", type=int, nargs="*", default=[1, 1000],
                        help="NetworkPolicy counts (none: no NetworkPolicy rows)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one ansible-playbook may take")
    parser.add_argument("--site-runs", type=int, default=3, help="no-op site.yml runs (0: none)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the no-op and of the one-endpoint change, the median shown (odd)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_playbook.py needs root (the lab's nodes are network namespaces)")
    inventory = options.inventory.resolve()
    if options.site_runs:
        site_rows(inventory, options)
    steps = (("first", {}), ("no-op", {}), ("endpoint", {"changed": True}),
             ("added", {"changed": True, "added": 1}),
             ("removed", {"changed": True, "added": 1, "removed": 1}))
    header = (f"{'services':>9} {'run':<9} {'wall s':>8} {'x1':>6} {'nft s':>7} {'changed':>8} "
              f"{'bare nft -f':>12} {'ctl MB':>7}")
    repeat = max(1, options.repeat | 1)
    print(f"ansible-playbook {' '.join(PLAYS)}, 3-node lab {inventory}, nftables backend, "
          f"{options.endpoints} endpoints per Service; no-op and endpoint: the median of {repeat} runs")
    print(header)
    print("-" * len(header))
    baseline, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "services.yml"
        extra = ["-e", "podnet_services_file=%s" % path, "-e", "podnet_proxy_backend=nftables"]
        for count in options.services:
            bare = bare_load("nftables", synthetic_model(count, options.endpoints), f"pb-{count}")
            for step, change in steps if count <= options.full_max else steps[:2]:
                path.write_text(services_file(count, options.endpoints, **change))
                if step == "first":
                    subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible"), "nodes", "-i",
                                    str(inventory / "hosts.yml"), "-m", "podnet.network.proxy_nftables",
                                    "-a", "state=absent path=/etc/podnet/nftables/podnet-services.nft"],
                                   capture_output=True, timeout=options.timeout, cwd=REPO, check=True,
                                   env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
                samples = [playbook(inventory, PLAYS, options.timeout, extra)]
                for again in range(1, repeat if step in ("no-op", "endpoint") else 1):
                    if step == "endpoint":
                        # The endpoint back, then moved again: each run changes one endpoint,
                        # and the last leaves it moved, as the next step expects.
                        path.write_text(services_file(count, options.endpoints, changed=again % 2 == 0))
                    samples.append(playbook(inventory, PLAYS, options.timeout, extra))
                seconds, nft, changed = sorted(samples)[len(samples) // 2]
                baseline.setdefault(step, seconds)
                memory = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                rows[count, step] = (seconds, nft, bare, memory)
                print(f"{count:>9} {step:<9} {seconds:>8.1f} {seconds / baseline[step]:>6.2f} {nft:>7.3f} "
                      f"{changed:>8} {bare if step == 'first' else 0:>12.3f} {memory:>7.0f}", flush=True)
    # The lab's own Services back.
    playbook(inventory, PLAYS, options.timeout)
    targets(rows, options.services, options.full_max)
    if options.policies:
        policy_rows(inventory, options)


def policy_rows(inventory, options):
    """The NetworkPolicy row family: the policy plays, side by side at each size."""
    steps = (("first", {}), ("no-op", {}), ("changed", {"changed": True}),
             ("added", {"changed": True, "added": 1}),
             ("removed", {"changed": True, "added": 1, "removed": 1}))
    header = f"{'policies':>9} {'run':<9} {'wall s':>8} {'x1':>6} {'changed':>8} {'ctl MB':>7}"
    print(f"\nansible-playbook {' '.join(POLICY_PLAYS)}, 3-node lab, policies over the lab's pods")
    print(header)
    print("-" * len(header))
    baseline = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "policies.yml"
        extra = ["-e", "podnet_policies_file=%s" % path]
        for count in options.policies:
            for step, change in steps:
                path.write_text(policies_file(count, **change))
                if step == "first":
                    subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible"), "nodes", "-i",
                                    str(inventory / "hosts.yml"), "-m", "podnet.network.nftables",
                                    "-a", "table=podnet-policy state=absent "
                                    "path=/etc/podnet/nftables/podnet-policy.nft"],
                                   capture_output=True, timeout=options.timeout, cwd=REPO, check=True,
                                   env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
                seconds, _nft, changed = playbook(inventory, POLICY_PLAYS, options.timeout, extra)
                baseline.setdefault(step, seconds)
                memory = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                print(f"{count:>9} {step:<9} {seconds:>8.1f} {seconds / baseline[step]:>6.2f} {changed:>8} "
                      f"{memory:>7.0f}", flush=True)
    # The lab's own policies back.
    playbook(inventory, POLICY_PLAYS, options.timeout)


def targets(rows, counts, full_max):
    """Issue 13's targets, from this run's rows: the smallest size is the baseline, the
    largest fully measured one is held to them; larger ones need only apply."""
    full = [count for count in counts if count <= full_max]
    base, top = min(counts), max(full or counts)
    if base == top:
        return
    print(f"\ntargets at {top} Services (baseline: {base}):")
    first, noop, endpoint = rows[top, "first"], rows[top, "no-op"], rows[top, "endpoint"]
    checks = [
        (f"first apply within 3x the {base}-Service run plus a bare nft -f per node",
         first[0], 3 * rows[base, "first"][0] + 3 * first[2]),
        (f"no-op within 1.5x the {base}-Service no-op", noop[0], 1.5 * rows[base, "no-op"][0]),
        (f"one endpoint changed within 1.5x the {base}-Service no-op", endpoint[0],
         1.5 * rows[base, "no-op"][0]),
        ("one endpoint changed: kernel transaction under 50 ms", endpoint[1], 0.050),
    ]
    for what, value, limit in checks:
        print(f"  {'met    ' if value <= limit else 'NOT met'} {what}: {value:.3f} s (limit {limit:.3f} s)")
    for count in counts:
        if count > full_max:
            first, noop = rows[count, "first"], rows[count, "no-op"]
            print(f"  {count} Services apply: first {first[0]:.1f} s, no-op {noop[0]:.1f} s, "
                  f"controller memory up to {noop[3]:.0f} MB")


if __name__ == "__main__":
    main()

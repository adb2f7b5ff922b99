#!/usr/bin/env python3
"""podnet: look at a live podnet cluster from the controller.

    podnet explain FROM TO [FROM TO ...] [--json] [--svg FILE]... [--diagram FILE]... [--live]
                                          a packet's road, hop by hop (one per pair)
    podnet diagram [-o FILE.svg|FILE.png]...  the cluster as a picture

FROM: a pod (`default/client`, `client`), a node (`node1`) or an address (`192.168.56.100`,
`client` for the lab's external client). TO: a Service port (`frontend:http`, `web-local:80/TCP`,
`web:http@node1` for its NodePort on node1, `frontend:http@external`), a pod (`default/db`,
`default/db:5432`), or `IP:PORT[/PROTO]`.

The live state comes from the nodes through Ansible itself (an ad-hoc `ansible.builtin.shell`
of read-only commands over the inventory's own connection: the netns lab, or SSH to real
machines), the names from the inventory's services file, as the services play reads them.
The explaining is plugins/module_utils/explain/, pure and unit-tested.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / ".collections"), str(REPO)]

from ansible_collections.podnet.network.plugins.module_utils.explain import cluster as live  # noqa: E402
from ansible_collections.podnet.network.plugins.module_utils.explain import diagram, live_trace, road  # noqa: E402
from ansible_collections.podnet.network.plugins.module_utils.explain.cluster import ExplainError  # noqa: E402
from ansible_collections.podnet.network.plugins.module_utils.services.model import load_services  # noqa: E402

BIN = pathlib.Path(sys.executable).parent


def default_inventory():
    return pathlib.Path(os.environ.get("PODNET_LAB_INVENTORY") or REPO / "inventory" / "lab")


def _ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env["PATH"] = "%s:%s" % (BIN, env.get("PATH", ""))
    return env


def inventory_source(inventory):
    """What `-i` takes: an inventory directory's hosts.yml (its services.yml is no inventory)."""
    inventory = pathlib.Path(inventory)
    if inventory.is_dir() and (inventory / "hosts.yml").exists():
        return inventory / "hosts.yml"
    return inventory


def inventory_vars(inventory):
    """{host: vars} of the group `nodes`, as Ansible resolves them."""
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory_source(inventory)), "--list"],
        capture_output=True,
        text=True,
        env=_ansible_env(),
        timeout=120,
    )
    if proc.returncode != 0:
        raise ExplainError("cannot read the inventory %s: %s" % (inventory, proc.stderr.strip()[-500:]))
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    nodes = data.get("nodes", {}).get("hosts", [])
    if not nodes:
        raise ExplainError("inventory %s has no hosts in the group `nodes`" % inventory)
    return {host: hostvars.get(host, {}) for host in nodes}


def ansible_shell(inventory, script, limit=None, timeout=120):
    """{host: result}: `script` run by ansible.builtin.shell on the group `nodes` (or `limit`),
    over the inventory's own connection; each host's result as Ansible's tree callback saved it."""
    with tempfile.TemporaryDirectory(prefix="podnet-explain.") as tree:
        argv = [str(BIN / "ansible"), "-i", str(inventory_source(inventory)), "nodes"]
        argv += ["--limit", limit] if limit else []
        argv += ["-m", "ansible.builtin.shell", "-a", script, "--tree", tree]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_ansible_env(), timeout=timeout)
        results = {path.name: json.loads(path.read_text()) for path in pathlib.Path(tree).iterdir()}
    return proc, results


def gather(inventory, timeout=120):
    """(proc, {host: result}) of the read-only GATHER_SCRIPT on every node."""
    return ansible_shell(inventory, live.GATHER_SCRIPT, timeout=timeout)


def node_sections(hosts, proc, results):
    """{host: {section: text}}, or an error naming every node that did not answer and why."""
    answers, problems = {}, []
    for host in hosts:
        result = results.get(host, {})
        if result.get("unreachable") or result.get("failed") or "stdout" not in result:
            why = (result.get("msg") or result.get("stderr") or "no answer").strip()
            problems.append("%s: %s" % (host, why[:300]))
            continue
        answers[host] = live.split_sections(result["stdout"])
    if problems:
        raise ExplainError(
            "cannot read the live state of every node (ansible exited %d):\n  %s"
            % (proc.returncode, "\n  ".join(problems))
        )
    return answers


def services_text(inventory, hostvars):
    path = hostvars.get("podnet_services_file")
    folder = inventory if inventory.is_dir() else inventory.parent
    path = pathlib.Path(path) if path else folder / "services.yml"
    return (path.read_text(), str(path)) if path.exists() else ("", str(path))


def load_cluster(inventory=None):
    """The live Cluster: node state through Ansible, names from the inventory's services file."""
    inventory = pathlib.Path(inventory or default_inventory())
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The inventory's variables and the nodes' state are independent: ask at once.
        gathered = pool.submit(gather, inventory)
        hostvars = inventory_vars(inventory)
        sections = node_sections(sorted(hostvars), *gathered.result())
    nodes = {
        name: live.Node(name, sections[name], hostvars[name].get("node_ip")) for name in sorted(hostvars)
    }
    first = hostvars[sorted(hostvars)[0]]
    pods = [pod for node in nodes.values() for pod in node.pods]
    text, filename = services_text(inventory, first)
    previous = next((n.allocations for n in nodes.values() if n.allocations), None)
    kwargs = {
        key: first[var]
        for key, var in (("service_cidr", "service_cidr"), ("cluster_cidr", "cluster_cidr"))
        if var in first
    }
    model = load_services(text, filename, pods, previous=previous, **kwargs) if text else {"services": []}
    lab = first.get("podnet_lab") or {}
    client = (
        {"ip": lab.get("client_ip"), "routes": lab.get("client_routes") or {}, "gateway": sorted(hostvars)[0]}
        if lab
        else {}
    )
    return live.Cluster(nodes, model, client)


def write_picture(dot_source, path):
    """SVG or PNG (by the suffix) from Graphviz's dot, through the graphviz Python binding."""
    import graphviz  # the PyPI binding to Debian's graphviz (dot); only the pictures need it

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".") or "svg"
    graph = graphviz.Source(dot_source)
    data = graph.pipe(format=fmt)
    path.write_bytes(data)
    return path


def cmd_explain(args):
    if len(args.flow) % 2:
        raise ExplainError("FROM and TO come in pairs; %r has no TO" % args.flow[-1])
    flows = list(zip(args.flow[0::2], args.flow[1::2], strict=True))
    if args.svg and len(args.svg) != len(flows):
        raise ExplainError("one --svg per flow: %d flows, %d --svg" % (len(flows), len(args.svg)))
    cluster = load_cluster(args.inventory)
    results = []
    for index, (source, target) in enumerate(flows):
        result = road.explain(cluster, source, target, args.protocol, args.via)
        if args.live:
            result["live"] = run_live(args, cluster, source, result)
        if args.svg:
            write_picture(diagram.cluster_dot(cluster, result), args.svg[index])
        results.append(result)
    for path in args.diagram or []:
        write_picture(diagram.cluster_dot(cluster), path)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2, default=str))
    else:
        for index, result in enumerate(results):
            print(("\n" if index else "") + road.render_text(result, colour=sys.stdout.isatty()))
            if args.svg:
                print("picture: %s" % args.svg[index])
            if result.get("live"):
                print(live_words(result["live"]))
        for path in args.diagram or []:
            print("cluster picture: %s" % path)
    if any(r.get("live") and not r["live"]["agrees"] for r in results):
        return 3
    return 0


def run_live(args, cluster, source_text, result):
    """One real connection of the flow, traced by the kernel on the node it starts from."""
    source = road.parse_source(cluster, source_text, args.via)
    if source["kind"] == "external":
        raise ExplainError("--live sends from a pod or a node; %s is neither" % source_text)
    endpoints = [e["endpoint"] for e in result.get("endpoints", [])]
    script = live_trace.trace_script(
        result["packet"], live_trace.sender_argv(source, result["packet"]), source["node"], endpoints
    )
    inventory = pathlib.Path(args.inventory or default_inventory())
    proc, results = ansible_shell(inventory, script)
    answer = results.get(source["node"], {})
    if "stdout" not in answer or "sender exited" not in answer["stdout"]:
        raise ExplainError(
            "--live: %s did not run the trace (ansible exited %d): %s"
            % (
                source["node"],
                proc.returncode,
                (answer.get("msg") or answer.get("stderr") or proc.stdout)[-500:],
            )
        )
    traces = {host: live_trace.parse_trace(r.get("stdout", "")) for host, r in results.items()}
    return live_trace.compare(result, traces)


def live_words(live):
    kernel = live["kernel"]
    head = "live: one real connection, traced by the kernel (%d trace events): %s%s" % (
        live["events"],
        kernel["verdict"],
        " at %s" % kernel["endpoint"] if kernel["endpoint"] else "",
    )
    chains = ", ".join(
        "%s %s%s" % (table, chain, " (%s)" % verdict if verdict else "")
        for table, chain, verdict in kernel["rules"]
    )
    lines = [head, "  rules the kernel reports: %s" % (chains or "none")]
    if live["agrees"]:
        lines.append("  the kernel's trace agrees with the explanation")
    else:
        lines += ["  DISAGREES: %s" % difference for difference in live["differences"]]
    return "\n".join(lines)


def cmd_diagram(args):
    cluster = load_cluster(args.inventory)
    for path in args.output:
        write_picture(diagram.cluster_dot(cluster), path)
        print("wrote %s" % path)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="podnet", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-i", "--inventory", help="inventory directory (default: $PODNET_LAB_INVENTORY or inventory/lab)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    explain = sub.add_parser("explain", help="a packet's road through the live cluster")
    explain.add_argument(
        "flow", nargs="+", metavar="FROM TO", help="one or more pairs: FROM TO [FROM TO ...]"
    )
    explain.add_argument("--protocol", "-p", choices=["TCP", "UDP", "SCTP", "tcp", "udp", "sctp"])
    explain.add_argument("--via", help="the node an external source's packet enters by")
    explain.add_argument("--json", action="store_true", help="the road as JSON")
    explain.add_argument(
        "--svg",
        metavar="FILE",
        action="append",
        help="draw the road on the cluster (.svg or .png), one per flow",
    )
    explain.add_argument("--diagram", metavar="FILE", action="append", help="also draw the cluster alone")
    explain.add_argument(
        "--live",
        action="store_true",
        help="send one real packet with nftables tracing on and compare the kernel's trace",
    )
    explain.set_defaults(run=cmd_explain)
    drawing = sub.add_parser("diagram", help="the cluster as a picture")
    drawing.add_argument(
        "-o",
        "--output",
        action="append",
        metavar="FILE",
        help="FILE.svg or FILE.png (repeatable; default podnet-cluster.svg)",
    )
    drawing.set_defaults(run=cmd_diagram)
    args = parser.parse_args(argv)
    if args.command == "diagram" and not args.output:
        args.output = ["podnet-cluster.svg"]
    try:
        return args.run(args)
    except ExplainError as error:
        print("podnet %s: %s" % (args.command, error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

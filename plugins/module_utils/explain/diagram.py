"""The live cluster as a Graphviz graph (dot text): nodes with their LAN address, bridge and
podCIDR, their pods, the routes between nodes, Services and their endpoints; and, given a
road from road.explain(), that packet's road drawn over it in red.

Pure: text out. Graphviz's dot places everything (tools/podnet.py renders the text to SVG or
PNG through the graphviz Python binding); nothing here has coordinates.
"""

import ipaddress

ROAD = "#c0392b"
OK = "#1e8449"


def _quote(text):
    # Labels keep their `\n` line breaks; only quotes need escaping.
    return '"%s"' % str(text).replace('"', '\\"')


def _id(*parts):
    return _quote("_".join(str(p) for p in parts))


def _attrs(**attrs):
    return "[%s]" % ", ".join(
        "%s=%s" % (key, _quote(value)) for key, value in attrs.items() if value is not None
    )


def _pod_id(pod):
    return _id("pod", pod["namespace"], pod["name"])


def cluster_dot(cluster, road=None):
    """dot text for the cluster, with `road` (road.explain()'s result) drawn on it."""
    lines = [
        "digraph podnet {",
        "  graph %s;"
        % _attrs(
            rankdir="LR",
            fontname="Helvetica",
            fontsize="11",
            compound="true",
            newrank="true",
            label=_title(road),
            labelloc="t",
        ),
        "  node %s;" % _attrs(fontname="Helvetica", fontsize="10", shape="box", style="rounded"),
        "  edge %s;" % _attrs(fontname="Helvetica", fontsize="9", color="#7f8c8d"),
    ]
    lan = _lan(cluster)
    lines.append(
        "  %s %s;"
        % (
            _id("lan"),
            _attrs(
                label="LAN %s" % lan if lan else "node network",
                shape="ellipse",
                style="filled",
                fillcolor="#eaf2f8",
            ),
        )
    )
    for name, node in sorted(cluster.nodes.items()):
        lines.append("  subgraph %s {" % _id("cluster", name))
        lines.append(
            "    graph %s;"
            % _attrs(
                label="%s  %s\\npodCIDR %s  (%s proxy)"
                % (name, node.node_ip, node.pod_cidr, node.backend or "no"),
                style="rounded",
                color="#34495e",
            )
        )
        lines.append("    %s %s;" % (_id("eth", name), _attrs(label="eth0 %s" % node.node_ip)))
        lines.append(
            "    %s %s;"
            % (
                _id("cbr0", name),
                _attrs(label="bridge cbr0", shape="box", style="filled", fillcolor="#fdebd0"),
            )
        )
        for pod in sorted(node.pods, key=lambda p: (p["namespace"], p["name"])):
            lines.append(
                "    %s %s;"
                % (_pod_id(pod), _attrs(label="%s/%s\\n%s" % (pod["namespace"], pod["name"], pod.get("ip"))))
            )
            lines.append("    %s -> %s %s;" % (_pod_id(pod), _id("cbr0", name), _attrs(dir="none")))
        lines.append(
            "    %s -> %s %s;" % (_id("cbr0", name), _id("eth", name), _attrs(dir="none", style="dotted"))
        )
        lines.append("  }")
        lines.append("  %s -> %s %s;" % (_id("eth", name), _id("lan"), _attrs(dir="none")))
    # Routes between nodes: a podCIDR via the node that owns it.
    for name, node in sorted(cluster.nodes.items()):
        for route in node.routes:
            other = cluster.node_by_ip(route.get("gateway", "")) if route.get("gateway") else None
            if other is not None and route.get("dst") != "default":
                lines.append(
                    "  %s -> %s %s;"
                    % (
                        _id("eth", name),
                        _id("eth", other.name),
                        _attrs(label=route["dst"], style="dashed", color="#95a5a6", constraint="false"),
                    )
                )
    lines += _services(cluster)
    if road:
        lines += _road(cluster, road)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _title(road):
    if not road:
        return "podnet cluster"
    return "%s -> %s: %s" % (road["source"], road["target"], road["verdict"])


def _lan(cluster):
    for node in cluster.nodes.values():
        for _ifname, address, prefix in node.addresses:
            if address == node.node_ip:
                return str(ipaddress.ip_network("%s/%s" % (address, prefix), strict=False))
    return None


def _services(cluster):
    lines = [
        "  subgraph %s {" % _id("cluster", "services"),
        "    graph %s;" % _attrs(label="Services", style="dashed", color="#2874a6"),
    ]
    edges = []
    by_ip = {pod.get("ip"): pod for pod in cluster.pods}
    for service in cluster.model.get("services", []):
        ports = ", ".join(
            "%s/%s%s"
            % (p["port"], p["protocol"], " nodePort %s" % p["node_port"] if p.get("node_port") else "")
            for p in service["ports"]
        )
        address = service.get("cluster_ip") or "headless"
        lines.append(
            "    %s %s;"
            % (
                _id("svc", service["namespace"], service["name"]),
                _attrs(
                    label="%s/%s\\n%s  %s" % (service["namespace"], service["name"], address, ports),
                    shape="box",
                    style="filled",
                    fillcolor="#d6eaf8",
                ),
            )
        )
        seen = set()
        for port in service["ports"]:
            for endpoint in port.get("endpoints", []):
                pod = by_ip.get(endpoint["ip"])
                if pod is not None and endpoint["ip"] not in seen:
                    seen.add(endpoint["ip"])
                    edges.append(
                        "  %s -> %s %s;"
                        % (
                            _id("svc", service["namespace"], service["name"]),
                            _pod_id(pod),
                            _attrs(style="dotted", color="#5dade2", arrowsize="0.5"),
                        )
                    )
    lines.append("  }")
    return lines + edges


def _road(cluster, road):
    """The packet's road in red: source -> Service -> each endpoint (share, verdict)."""
    lines = []
    source = road["packet"]["saddr"]
    pod = cluster.pod_by_ip(source)
    node = cluster.node_by_ip(source)
    if pod is not None:
        start = _pod_id(pod)
    elif node is not None:
        start = _id("eth", node.name)
    else:
        start = _id("external", source)
        lines.append(
            "  %s %s;"
            % (start, _attrs(label="%s\\n%s" % (road["source"], source), shape="ellipse", color=ROAD))
        )
    target = road["packet"]["daddr"]
    service = next(
        (
            s
            for s in cluster.model.get("services", [])
            if s.get("cluster_ip") == target or target in (s.get("external_ips") or [])
        ),
        None,
    )
    hop = start
    if (
        service is not None
        or road.get("endpoints")
        and any(e["endpoint"].split(":")[0] != target for e in road["endpoints"])
    ):
        middle = (
            _id("svc", service["namespace"], service["name"]) if service else _id("eth", road["entry_node"])
        )
        lines.append(
            "  %s -> %s %s;"
            % (
                start,
                middle,
                _attrs(
                    color=ROAD,
                    penwidth="2.5",
                    fontcolor=ROAD,
                    label="1: %s:%s/%s" % (target, road["packet"]["dport"], road["packet"]["protocol"]),
                ),
            )
        )
        hop = middle
    if not road.get("endpoints"):
        end = _id("verdict")
        lines.append(
            "  %s %s;"
            % (
                end,
                _attrs(
                    label="%s\\n%s" % (road["verdict"], _wrap(road["reason"])),
                    shape="octagon",
                    color=ROAD,
                    fontcolor=ROAD,
                ),
            )
        )
        lines.append("  %s -> %s %s;" % (hop, end, _attrs(color=ROAD, penwidth="2.5")))
        return lines
    for index, endpoint in enumerate(road["endpoints"]):
        pod = cluster.pod_by_ip(endpoint["endpoint"].split(":")[0])
        end = _pod_id(pod) if pod else _id("addr", endpoint["endpoint"])
        if pod is None:
            lines.append("  %s %s;" % (end, _attrs(label=endpoint["endpoint"], shape="ellipse")))
        label = "%.0f%%%s" % (endpoint["share"] * 100, " masq" if endpoint["masquerade"] else "")
        if endpoint["verdict"] != "ACCEPT":
            stop = _id("verdict", index)
            lines.append(
                "  %s %s;"
                % (
                    stop,
                    _attrs(
                        label="%s\\n%s" % (endpoint["verdict"], _wrap(endpoint["reason"])),
                        shape="octagon",
                        color=ROAD,
                        fontcolor=ROAD,
                    ),
                )
            )
            lines.append(
                "  %s -> %s %s;"
                % (hop, stop, _attrs(color=ROAD, penwidth="2.5", label=label, fontcolor=ROAD))
            )
            lines.append("  %s -> %s %s;" % (stop, end, _attrs(color=ROAD, style="dashed", arrowhead="tee")))
        else:
            lines.append(
                "  %s -> %s %s;" % (hop, end, _attrs(color=OK, penwidth="2.5", label=label, fontcolor=OK))
            )
    return lines


def _wrap(text, width=48):
    words, lines, current = str(text).split(), [], ""
    for word in words:
        if current and len(current) + len(word) + 1 > width:
            lines.append(current)
            current = word
        else:
            current = (current + " " + word).strip()
    lines.append(current)
    return "\\n".join(lines[:6])

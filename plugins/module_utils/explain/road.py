"""A packet's road through the live cluster, hop by hop, in words: the core of `podnet explain`.

Pure: a `Cluster` (cluster.py: every node's live rulesets, routes, pods; the services model for
names) and a FROM and TO in, a road out. The kernel's decisions are not guessed: each node's
live Service table is walked by the tracers of this package (nft_trace over `nft list table`,
iptables_trace over `iptables-save`), its NetworkPolicy table by policy_trace, its routes are
looked up as the kernel would (longest prefix); the words say what each matched rule means in
Kubernetes' terms, naming the Service, port and policy it came from.

The road of one new connection's first packet:
  source (pod netns and veth, bridge; the node itself; an outside address and the node it enters)
  -> the first node's Service rules (prerouting, or output for the node's own traffic): REJECT,
     DROP, or which endpoints may be chosen, with what share, why, and whether masqueraded
  -> per endpoint: the first node's forward hook (NetworkPolicy egress, and ingress when the
     endpoint is on the same node), its egress masquerade, its route and next hop, the
     endpoint node's forward hook (NetworkPolicy ingress), delivery; then the reply through
     conntrack.
"""

import functools
import ipaddress
import re

from ansible_collections.podnet.network.plugins.module_utils.explain import (
    iptables_trace,
    nft_trace,
    policy_trace,
)
from ansible_collections.podnet.network.plugins.module_utils.explain.cluster import ExplainError
from ansible_collections.podnet.network.plugins.module_utils.services import categorize

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICES_TABLE = "ip podnet-services"
POLICY_TABLE = "ip podnet-policy"

# What the nftables Service table's maps and sets mean (services/nft.py writes them).
NFT_MARKS = {
    "@cluster_ips": categorize.MASQ_OUTSIDE_CLUSTER,
    "@external_ips_masq": categorize.MASQ_EXTERNAL,
    "@nodeports_masq": "traffic to a NodePort (externalTrafficPolicy: Cluster)",
    "@external_ips_local": categorize.MASQ_EXTERNAL_FROM_NODE,
    "@nodeports_local": categorize.MASQ_EXTERNAL_FROM_NODE,
}
LOCAL_ONLY = "this node's endpoints only (externalTrafficPolicy: Local, an outside client)"
NFT_PICKS = {
    "service_endpoint_count": "the Service port's endpoints for this traffic",
    "nodeport_endpoint_count": "the NodePort's endpoints",
    "external_local_endpoint_count": LOCAL_ONLY,
    "nodeport_local_endpoint_count": LOCAL_ONLY,
}


# --- FROM and TO ----------------------------------------------------------------------------


def _pod_named(cluster, text):
    namespace, _unused, name = text.rpartition("/")
    namespace = namespace or "default"
    return next((p for p in cluster.pods if (p["namespace"], p["name"]) == (namespace, name)), None)


def parse_source(cluster, text, via=None):
    """{"kind": pod|node|external, "label", "node", "path", "saddr", "pod"}."""
    pod = _pod_named(cluster, text)
    if pod is None and _is_address(text):
        pod = cluster.pod_by_ip(text)
    if pod is not None:
        if not pod.get("ip"):
            raise ExplainError("pod %s/%s has no IP: is it running?" % (pod["namespace"], pod["name"]))
        return {
            "kind": "pod",
            "label": "pod %s/%s" % (pod["namespace"], pod["name"]),
            "node": pod["node"],
            "path": "prerouting",
            "saddr": pod["ip"],
            "pod": pod,
        }
    node = cluster.nodes.get(text) or (cluster.node_by_ip(text) if _is_address(text) else None)
    if node is not None:
        return {
            "kind": "node",
            "label": "node %s" % node.name,
            "node": node.name,
            "path": "output",
            "saddr": node.node_ip,
            "pod": None,
        }
    if text == "client" and cluster.client.get("ip"):
        text = cluster.client["ip"]
    if _is_address(text):
        return {
            "kind": "external",
            "label": "external %s" % text,
            "node": via,
            "path": "prerouting",
            "saddr": text,
            "pod": None,
        }
    raise ExplainError(
        "unknown source %r: not a pod (%s), a node (%s) or an address"
        % (
            text,
            _some(["%s/%s" % (p["namespace"], p["name"]) for p in cluster.pods]),
            ", ".join(sorted(cluster.nodes)),
        )
    )


def _some(names, count=8):
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def _is_address(text):
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _services(cluster, namespace, name):
    return [s for s in cluster.model["services"] if (s["namespace"], s["name"]) == (namespace, name)]


def parse_target(cluster, text, protocol=None):
    """{"kind": service|pod|address, "label", "daddr", "dport", "protocol", "service", "port", "how"}.

    Service port: `frontend:http`, `ns/web-local:80/TCP`, `web:http@node1` (its NodePort on node1),
    `frontend:http@external` (its first externalIP), or a bare `db` (a Service with one port);
    pod: `pod/default/db:5432` (`default/db` when no Service is called db); address: `IP:PORT[/PROTO]`.
    """
    only_pod = text.startswith("pod/")
    body, _unused, where = text[len("pod/") :].partition("@") if only_pod else text.partition("@")
    body, slash_proto = _split_protocol(body)
    protocol = (protocol or slash_proto or "").upper() or None
    head, _unused, port_text = body.partition(":")
    namespace, _unused, name = head.rpartition("/")
    namespace = namespace or "default"
    if _is_address(head):
        return _address_target(cluster, head, port_text, protocol)
    services = _services(cluster, namespace, name)
    if services and not only_pod:
        service = services[0]
        ports = [p for p in service["ports"] if not protocol or p["protocol"] == protocol]
        if port_text:
            ports = [p for p in ports if port_text in (p.get("name"), str(p["port"]))]
        if len(ports) != 1:
            raise ExplainError(
                "Service %s/%s has %s port %s: its ports are %s"
                % (
                    namespace,
                    name,
                    "no" if not ports else "more than one",
                    port_text or "(name one)",
                    ", ".join(
                        "%s%s/%s" % (p["name"] + "=" if p.get("name") else "", p["port"], p["protocol"])
                        for p in service["ports"]
                    ),
                )
            )
        port = ports[0]
        label = "Service %s/%s port %s" % (namespace, name, port.get("name") or port["port"])
        if where == "external":
            if not service.get("external_ips"):
                raise ExplainError("Service %s/%s has no externalIPs" % (namespace, name))
            return _target(
                "service",
                label + " (externalIP)",
                service["external_ips"][0],
                port["port"],
                port["protocol"],
                service,
                port,
                "externalIP",
            )
        if where:
            node = cluster.nodes.get(where)
            if node is None:
                raise ExplainError(
                    "unknown node %r in %r: nodes are %s" % (where, text, ", ".join(cluster.nodes))
                )
            if not port.get("node_port"):
                raise ExplainError("Service %s/%s port %s has no nodePort" % (namespace, name, port["port"]))
            return _target(
                "service",
                label + " (NodePort on %s)" % where,
                node.node_ip,
                port["node_port"],
                port["protocol"],
                service,
                port,
                "NodePort",
            )
        if not service.get("cluster_ip"):
            raise ExplainError(
                "Service %s/%s is headless: it has no ClusterIP (DNS names its pods)" % (namespace, name)
            )
        return _target(
            "service",
            label,
            service["cluster_ip"],
            port["port"],
            port["protocol"],
            service,
            port,
            "ClusterIP",
        )
    pod = _pod_named(cluster, head)
    if pod is not None:
        ports = [p for p in pod.get("ports", []) if not protocol or p.get("protocol", "TCP") == protocol]
        if port_text:
            ports = [p for p in ports if port_text in (p.get("name"), str(p["containerPort"]))] or (
                [{"containerPort": int(port_text), "protocol": protocol or "TCP"}]
                if port_text.isdigit()
                else []
            )
        if not ports:
            raise ExplainError(
                "pod %s/%s has no port %s%s"
                % (pod["namespace"], pod["name"], port_text or "", "/" + protocol if protocol else "")
            )
        port = ports[0]
        return _target(
            "pod",
            "pod %s/%s" % (pod["namespace"], pod["name"]),
            pod["ip"],
            port["containerPort"],
            port.get("protocol", "TCP"),
            None,
            None,
            None,
        )
    raise ExplainError(
        "unknown destination %r: no Service %s/%s and no pod of that name (Services: %s)"
        % (
            text,
            namespace,
            name,
            _some(sorted("%s/%s" % (s["namespace"], s["name"]) for s in cluster.model["services"])),
        )
    )


def _split_protocol(body):
    head, _unused, proto = body.rpartition("/")
    if proto.upper() in PROTOCOLS and head:
        return head, proto.upper()
    return body, None


def _target(kind, label, daddr, dport, protocol, service, port, how):
    return {
        "kind": kind,
        "label": label,
        "daddr": daddr,
        "dport": int(dport),
        "protocol": protocol,
        "service": service,
        "port": port,
        "how": how,
    }


def _address_target(cluster, address, port_text, protocol):
    if not port_text.isdigit():
        raise ExplainError("an address needs a port: %s:PORT" % address)
    protocol = protocol or "TCP"
    found = cluster.service_port_at(address, protocol, int(port_text))
    if found:
        service, port, how = found
        return _target(
            "service",
            "Service %s/%s port %s (%s)"
            % (service["namespace"], service["name"], port.get("name") or port["port"], how),
            address,
            int(port_text),
            protocol,
            service,
            port,
            how,
        )
    return _target("address", cluster.name_of(address), address, int(port_text), protocol, None, None, None)


# --- the first node: Service rules -----------------------------------------------------------


def entry_node(cluster, source, target):
    if source["node"]:
        return source["node"]
    node = cluster.node_by_ip(target["daddr"])
    if node is not None:
        return node.name
    address = ipaddress.ip_address(target["daddr"])
    for cidr, name in (cluster.client.get("routes") or {}).items():
        if address in ipaddress.ip_network(cidr):
            return name
    if cluster.client.get("gateway"):
        return cluster.client["gateway"]
    return sorted(cluster.nodes)[0]


@functools.lru_cache(maxsize=64)
def _policy_tracer(text):
    return policy_trace.PolicyTracer(text)


@functools.lru_cache(maxsize=16)
def _iptables_tables(text):
    # trace_tables only reads the tables: one load serves every packet.
    return iptables_trace.load_save(text)


def trace_services(node, packet):
    """The node's live Service rules walked for `packet`: the tracer's result, with "backend"."""
    local = node.local_addresses
    if node.backend == "nftables":
        result = nft_trace.trace(node.services_nft, packet, local, steps=True)
    elif node.backend == "iptables":
        result = iptables_trace.trace_tables(
            _iptables_tables(node.iptables), packet, local, steps=True
        )
    else:
        result = {"verdict": "ACCEPT", "endpoints": {}, "masquerade": False, "steps": []}
    result["backend"] = node.backend
    return result


def _comment(rule):
    match = re.search(r'--comment "([^"]*)"', rule or "") or re.search(r'comment "([^"]*)"', rule or "")
    return match.group(1) if match else None


def nft_step_words(cluster, step):
    """One matched rule of the nftables Service table, in words."""
    rule, effect, chain = step["rule"] or "", step["effect"], step["chain"]
    where = "%s %s chain %s" % (step["hook"], SERVICES_TABLE, chain)
    if effect.startswith("mark"):
        why = next((w for key, w in NFT_MARKS.items() if key in rule), "a masquerade decision")
        return "%s: marked for masquerade (mark 0x4000), because this is %s" % (where, why)
    if effect.startswith("dnat"):
        endpoint = effect.split()[-1]
        pod = cluster.pod_by_ip(endpoint.split(":")[0])
        who = " (pod %s/%s on %s)" % (pod["namespace"], pod["name"], pod["node"]) if pod else ""
        if step.get("map") == "affinity":
            return (
                "%s: DNAT to %s%s: sessionAffinity ClientIP, the affinity map already holds this "
                "client's endpoint" % (where, endpoint, who)
            )
        value, modulus = step["draw"] or (0, 1)
        share = (
            "the only endpoint"
            if modulus == 1
            else "numgen drew %d of 0..%d: a 1/%d share" % (value, modulus - 1, modulus)
        )
        return "%s: DNAT to %s%s, %s (map %s)" % (where, endpoint, who, share, step.get("map"))
    if effect.startswith("goto") and step.get("map") in NFT_PICKS:
        count = effect.rsplit("_", 1)[-1]
        return "%s: %s endpoint(s) to choose from, %s (map %s -> %s)" % (
            where,
            count,
            NFT_PICKS[step["map"]],
            step["map"],
            effect.split()[-1],
        )
    if step.get("map") == "no_endpoints" or step.get("map") == "no_endpoint_nodeports":
        if effect == "drop":
            return (
                "%s: DROP, internalTrafficPolicy: Local and no endpoint of this Service on this node "
                "(map %s)" % (where, step["map"])
            )
        return "%s: the Service port has no endpoints at all (map %s -> %s)" % (where, step["map"], effect)
    if chain == nftables_reject_chain() and effect == "reject":
        return "%s: REJECT, the client is told at once (ICMP port unreachable / TCP reset)" % where
    if effect == "drop" and "no_local" in rule:
        return (
            "%s: DROP, externalTrafficPolicy: Local and no endpoint on this node, for a client "
            "outside it (`%s`)" % (where, rule)
        )
    if effect == "masquerade":
        if "@hairpin" in rule:
            return "%s: masqueraded, because this is %s (hairpin)" % (where, categorize.MASQ_HAIRPIN)
        return "%s: masqueraded to the outgoing interface's address (the mark set above)" % where
    return "%s: `%s` -> %s" % (where, rule, effect)


def nftables_reject_chain():
    return "reject_service"


def iptables_step_words(cluster, step):
    """One rule kube-proxy's iptables layout took, in words (its comments name the Service)."""
    chain, rule, target, weight = step
    comment = _comment(rule)
    about = " (%s)" % comment if comment else ""
    if "--probability" in rule:
        return "%s: picked with probability %s of the packets left%s -> %s" % (
            chain,
            re.search(r"--probability (\S+)", rule).group(1),
            about,
            target,
        )
    if target == "DNAT":
        endpoint = re.search(r"--to-destination (\S+)", rule).group(1)
        pod = cluster.pod_by_ip(endpoint.split(":")[0])
        who = " (pod %s/%s on %s)" % (pod["namespace"], pod["name"], pod["node"]) if pod else ""
        return "%s: DNAT to %s%s" % (chain, endpoint, who)
    if target == "KUBE-MARK-MASQ":
        return "%s: marked for masquerade%s" % (chain, about)
    if target in ("REJECT", "DROP"):
        return "%s: %s%s: `%s`" % (chain, target, about, rule)
    if target == "MASQUERADE":
        return "%s: masqueraded to the outgoing interface's address%s" % (chain, about)
    if target == "MARK":
        return "%s: %s" % (chain, rule)
    return "%s: -> %s%s" % (chain, target, about)


def service_words(cluster, result, steps):
    if result["backend"] == "nftables":
        return [nft_step_words(cluster, step) for step in steps]
    if result["backend"] == "iptables":
        return [iptables_step_words(cluster, step) for step in steps]
    return []


# --- NetworkPolicy ----------------------------------------------------------------------------


def _policies_selecting(tracer, chain, address):
    """Names of the policies whose rules in `chain` select `address` (their p_..._pods set)."""
    names = []
    for matches, _verdict, text in tracer.chains[chain].rules if chain in tracer.chains else []:
        for match in matches:
            if (
                match[0] == "lookup"
                and re.fullmatch(r"p_\S+_pods", match[2])
                and tracer.sets[match[2]].contains((int(ipaddress.IPv4Address(address)),))
            ):
                name = (_comment(text) or "").split(" ")[0]
                if name and name not in names:
                    names.append(name)
    return names


def policy_verdict(cluster, node, saddr, daddr, protocol, dport):
    """The node's live NetworkPolicy table for a new connection at its forward hook:
    {"verdict": accept|drop, "words", "rules", "policies"}."""
    if not node.policy:
        return {
            "verdict": "accept",
            "words": "no NetworkPolicy table on %s" % node.name,
            "rules": [],
            "policies": [],
        }
    tracer = _policy_tracer(node.policy)
    verdict, rules = tracer.trace("forward", saddr, daddr, protocol.lower(), dport)
    src, dst = cluster.name_of(saddr), cluster.name_of(daddr)
    what = "%s -> %s on %s/%s" % (src, dst, dport, protocol)
    last = rules[-1] if rules else ""
    if verdict == "drop":
        direction = "ingress" if last.startswith("pod_ingress") else "egress"
        selected = daddr if direction == "ingress" else saddr
        policies = _policies_selecting(tracer, "pod_%s" % direction, selected)
        if direction == "ingress":
            why = "no ingress rule admits %s to %s on %s/%s" % (src, dst, dport, protocol)
        else:
            why = "no egress rule lets %s reach %s on %s/%s" % (src, dst, dport, protocol)
        words = "denied by NetworkPolicy %s: %s is isolated for %s (selected by %s) and %s" % (
            ", ".join(policies) or "(unnamed)",
            cluster.name_of(selected),
            direction,
            ", ".join(policies) or "a policy",
            why,
        )
        return {
            "verdict": "drop",
            "words": words + " (%s forward, chain %s, `%s`)" % (POLICY_TABLE, *last.split(": ", 1)),
            "rules": rules,
            "policies": policies,
        }
    allowing = [_comment(r) for r in rules if _comment(r)]
    if allowing:
        words = "allowed by NetworkPolicy %s: %s" % (", ".join(allowing), what)
    else:
        words = "%s's NetworkPolicy table isolates neither end: %s allowed" % (node.name, what)
    return {"verdict": "accept", "words": words, "rules": rules, "policies": allowing}


# --- routes and egress ------------------------------------------------------------------------


def egress_masquerade(cluster, node, saddr, daddr):
    """Whether the node's egress table (`ip podnet`) masquerades saddr -> daddr, and its rule."""
    if not node.egress:
        return None
    for line in node.egress.splitlines():
        match = re.search(r"ip saddr (\S+) ip daddr != (\S+) .*masquerade", line)
        if (
            match
            and ipaddress.ip_address(saddr) in ipaddress.ip_network(match.group(1))
            and ipaddress.ip_address(daddr) not in ipaddress.ip_network(match.group(2))
        ):
            return line.strip()
    return None


def route_words(cluster, node, daddr):
    """(words, next node name or None, the interface it leaves by, source address for masquerade)."""
    found = node.route_to(daddr)
    if found is None:
        return "%s has no route to %s: the packet is dropped" % (node.name, daddr), None, None, None
    route, _unused = found
    dev = route.get("dev")
    source = route.get("prefsrc") or next((a for ifname, a, _unused in node.addresses if ifname == dev), None)
    dst = route.get("dst")
    if route.get("gateway"):
        other = cluster.node_by_ip(route["gateway"])
        if other is not None:
            return (
                "route %s via %s dev %s%s: %s's podCIDR, next hop %s"
                % (
                    dst,
                    route["gateway"],
                    dev,
                    " proto podnet" if route.get("protocol") in ("158", "podnet") else "",
                    other.name,
                    other.name,
                ),
                other.name,
                dev,
                source,
            )
        return (
            "route %s via %s dev %s: out of the cluster, next hop %s"
            % (dst, route["gateway"], dev, cluster.name_of(route["gateway"])),
            None,
            dev,
            source,
        )
    if dev == "cbr0":
        return (
            "route %s dev cbr0: this node's podCIDR, across the bridge cbr0 to the pod's veth" % dst,
            node.name,
            dev,
            source,
        )
    other = cluster.node_by_ip(daddr)
    return (
        "route %s dev %s: on the node's own network%s"
        % (dst, dev, ", straight to %s" % other.name if other else ""),
        other.name if other else None,
        dev,
        source,
    )


# --- the whole road ---------------------------------------------------------------------------


def source_words(cluster, source, target, entry):
    pod = source["pod"]
    if source["kind"] == "pod":
        node = cluster.nodes[pod["node"]]
        veth = node.pod_interface(pod)
        return (
            "%s (%s) in netns %s on %s sends a new connection to %s:%d/%s; its default route leads "
            "out of eth0 into %s on %s's bridge cbr0, where the node's netfilter sees it (br_netfilter), "
            "hook prerouting"
            % (
                source["label"],
                pod["ip"],
                pod.get("netns", "?"),
                pod["node"],
                target["daddr"],
                target["dport"],
                target["protocol"],
                "its host-side veth " + veth if veth else "the pod's veth",
                pod["node"],
            )
        )
    if source["kind"] == "node":
        return "%s (%s) sends a new connection to %s:%d/%s from its own stack: hook output" % (
            source["label"],
            source["saddr"],
            target["daddr"],
            target["dport"],
            target["protocol"],
        )
    return (
        "%s sends a new connection to %s:%d/%s; it reaches %s (%s) on the node network, hook prerouting"
        % (
            source["label"],
            target["daddr"],
            target["dport"],
            target["protocol"],
            entry,
            cluster.nodes[entry].node_ip,
        )
    )


def explain(cluster, source_text, target_text, protocol=None, via=None):
    """The road of one new connection from `source_text` to `target_text`, as a dict (see
    render_text for how it reads)."""
    source = parse_source(cluster, source_text, via)
    target = parse_target(cluster, target_text, protocol)
    entry_name = entry_node(cluster, source, target)
    if entry_name not in cluster.nodes:
        raise ExplainError("unknown node %r" % entry_name)
    entry = cluster.nodes[entry_name]
    packet = {
        "saddr": source["saddr"],
        "daddr": target["daddr"],
        "dport": target["dport"],
        "protocol": target["protocol"],
        "path": source["path"],
    }
    road = {
        "from": source_text,
        "to": target_text,
        "source": source["label"],
        "target": target["label"],
        "packet": packet,
        "entry_node": entry_name,
        "backend": entry.backend,
        "hops": [],
    }
    hops = road["hops"]
    hops.append(
        {
            "node": source["node"] if source["kind"] != "external" else None,
            "stage": "source",
            "words": source_words(cluster, source, target, entry_name),
        }
    )

    if source["kind"] == "pod" and target["daddr"] == source["saddr"]:
        hops.append(
            {
                "node": None,
                "stage": "deliver",
                "words": "the pod's own address: the packet never leaves "
                "its network namespace, so no node rule, Service or NetworkPolicy sees it",
            }
        )
        road.update(verdict="ACCEPT", reason="a pod talking to itself", endpoints=[], masquerade=False)
        return road

    result = trace_services(entry, packet)
    service_hop = {
        "node": entry_name,
        "stage": "services",
        "backend": entry.backend,
        "words": "%s, %s Service rules (%s backend)" % (entry_name, source["path"], entry.backend or "no"),
        "rules": service_words(cluster, result, result["steps"]),
    }
    hops.append(service_hop)
    if result["verdict"] != "ACCEPT":
        reason = service_hop["rules"][-1] if service_hop["rules"] else "the Service rules refused it"
        road.update(verdict=result["verdict"], reason=reason, endpoints=[], masquerade=False)
        return road

    if result["endpoints"]:
        count = len(result["endpoints"])
        service_hop["choice"] = (
            "one endpoint" if count == 1 else "%d endpoints, each with its share of new connections" % count
        )
        branches = [
            (endpoint, info["share"], info["masquerade"], info.get("steps", []))
            for endpoint, info in result["endpoints"].items()
        ]
    else:
        if target["kind"] == "service":
            service_hop["rules"].append("no Service rule matched: nothing DNATs this packet")
        branches = [("%s:%d" % (target["daddr"], target["dport"]), 1.0, result["masquerade"], None)]

    road["endpoints"] = []
    for endpoint, share, masqueraded, steps in branches:
        road["endpoints"].append(
            _endpoint_road(
                cluster, source, target, entry, packet, endpoint, share, masqueraded, steps, result
            )
        )
    verdicts = {e["verdict"] for e in road["endpoints"]}
    road["verdict"] = verdicts.pop() if len(verdicts) == 1 else "MIXED"
    road["masquerade"] = any(e["masquerade"] for e in road["endpoints"])
    road["reason"] = "; ".join(sorted({e["reason"] for e in road["endpoints"]}))
    return road


def _endpoint_road(cluster, source, target, entry, packet, endpoint, share, masqueraded, steps, result):
    daddr, _unused, dport = endpoint.rpartition(":")
    dport = int(dport)
    pod = cluster.pod_by_ip(daddr)
    out = {
        "endpoint": endpoint,
        "pod": "%s/%s" % (pod["namespace"], pod["name"]) if pod else None,
        "node": pod["node"] if pod else None,
        "share": share,
        "masquerade": bool(masqueraded),
        "hops": [],
        "verdict": "ACCEPT",
    }
    hops = out["hops"]
    if steps:
        hops.append(
            {
                "node": entry.name,
                "stage": "services",
                "rules": service_words(cluster, result, steps),
                "words": "the road to %s" % endpoint,
            }
        )
    saddr = source["saddr"]
    # The first node's forward hook: NetworkPolicy (the source pod's egress, and the
    # destination's ingress if it is here); pod traffic crosses it, the node's own does not.
    node, seen_saddr = entry, saddr
    local = daddr in entry.local_addresses
    if source["path"] == "prerouting" and not local:
        verdict = policy_verdict(cluster, entry, saddr, daddr, packet["protocol"], dport)
        hops.append(
            {
                "node": entry.name,
                "stage": "policy",
                "words": "%s, forward, %s" % (entry.name, verdict["words"]),
                "policies": verdict["policies"],
            }
        )
        if verdict["verdict"] == "drop":
            out.update(verdict="DROP", reason=verdict["words"])
            return out
    if local:
        hops.append(
            {
                "node": entry.name,
                "stage": "deliver",
                "words": "%s is %s's own address: delivered to "
                "its own stack (hook input)" % (daddr, entry.name),
            }
        )
        out.update(reason="delivered to %s" % entry.name)
        return out
    masq_words = None
    if masqueraded:
        masq_words = "masqueraded by the Service rules (see above)"
    else:
        egress = egress_masquerade(cluster, entry, saddr, daddr)
        if egress:
            masqueraded = True
            masq_words = (
                "masqueraded by the pod egress table (ip podnet: `%s`): it leaves the cluster CIDR" % egress
            )
    words, next_node, _dev, src_after = route_words(cluster, entry, daddr)
    hops.append({"node": entry.name, "stage": "route", "words": "%s, routing: %s" % (entry.name, words)})
    if masqueraded:
        seen_saddr = src_after or saddr
        hops.append(
            {
                "node": entry.name,
                "stage": "masquerade",
                "words": "%s, postrouting: %s; the source becomes %s" % (entry.name, masq_words, seen_saddr),
            }
        )
    else:
        why = "the source keeps its address %s" % saddr
        if source["kind"] == "pod":
            why += " (pod to pod stays inside the cluster CIDR: nothing to masquerade)"
        hops.append(
            {
                "node": entry.name,
                "stage": "masquerade",
                "words": "%s, postrouting: not masqueraded, %s" % (entry.name, why),
            }
        )
    out["masquerade"] = bool(masqueraded)
    if next_node and next_node != entry.name:
        node = cluster.nodes[next_node]
        verdict = policy_verdict(cluster, node, seen_saddr, daddr, packet["protocol"], dport)
        hops.append(
            {
                "node": node.name,
                "stage": "policy",
                "words": "%s, forward, %s" % (node.name, verdict["words"]),
                "policies": verdict["policies"],
            }
        )
        if verdict["verdict"] == "drop":
            out.update(verdict="DROP", reason=verdict["words"])
            return out
    elif next_node is None and words.startswith(entry.name + " has no route"):
        out.update(verdict="DROP", reason=words)
        return out
    if pod:
        veth = cluster.nodes[pod["node"]].pod_interface(pod)
        hops.append(
            {
                "node": pod["node"],
                "stage": "deliver",
                "words": "%s, bridge cbr0 -> %s -> pod %s/%s "
                "(%s:%d) in netns %s"
                % (
                    pod["node"],
                    veth or "its veth",
                    pod["namespace"],
                    pod["name"],
                    daddr,
                    dport,
                    pod.get("netns", "?"),
                ),
            }
        )
    else:
        hops.append(
            {
                "node": None,
                "stage": "deliver",
                "words": "on to %s (%s:%d)" % (cluster.name_of(daddr), daddr, dport),
            }
        )
    undo = []
    if endpoint != "%s:%d" % (target["daddr"], target["dport"]):
        undo.append("un-DNAT (the reply's source becomes %s:%d again)" % (target["daddr"], target["dport"]))
    if masqueraded:
        undo.append("un-masquerade (its destination becomes %s again)" % saddr)
    hops.append(
        {
            "node": entry.name,
            "stage": "reply",
            "words": "reply: %s answers %s; conntrack on %s knows the "
            "connection%s, and it goes back to %s; NetworkPolicy lets replies through "
            "(ct state established)"
            % (
                cluster.name_of(daddr),
                seen_saddr,
                entry.name,
                ": " + " and ".join(undo) if undo else "",
                source["label"],
            ),
        }
    )
    out["reason"] = "reaches %s" % (out["pod"] and "pod " + out["pod"] or cluster.name_of(daddr))
    return out


# --- text ---------------------------------------------------------------------------------------


def render_text(road, colour=False):
    def paint(text, code):
        return "\033[%sm%s\033[0m" % (code, text) if colour else text

    verdict_colour = {"ACCEPT": "32", "DROP": "31", "REJECT": "31", "MIXED": "33"}
    packet = road["packet"]
    lines = [
        "%s -> %s   (%s -> %s:%s/%s)"
        % (
            road["source"],
            road["target"],
            packet["saddr"],
            packet["daddr"],
            packet["dport"],
            packet["protocol"],
        )
    ]
    number = 0
    for hop in road["hops"]:
        number += 1
        lines.append("%2d. %s" % (number, hop["words"]))
        for rule in hop.get("rules", []):
            lines.append("      - %s" % rule)
        if hop.get("choice"):
            lines.append("      => %s:" % hop["choice"])
    for endpoint in road.get("endpoints", []):
        head = endpoint["endpoint"] + (
            " (pod %s on %s)" % (endpoint["pod"], endpoint["node"]) if endpoint["pod"] else ""
        )
        lines.append(
            "    %s  share %.0f%%  %s%s"
            % (
                paint(head, "1"),
                endpoint["share"] * 100,
                paint(endpoint["verdict"], verdict_colour[endpoint["verdict"]]),
                ", masqueraded" if endpoint["masquerade"] else "",
            )
        )
        for hop in endpoint["hops"]:
            if hop["stage"] == "services":
                continue
            lines.append("      - %s" % hop["words"])
    lines.append(
        "%s: %s" % (paint(road["verdict"], verdict_colour.get(road["verdict"], "0")), road["reason"])
    )
    return "\n".join(lines)

"""The live cluster as `podnet explain` reads it: what each node's kernel holds, parsed.

Pure: the text of a few commands per node goes in (GATHER_SCRIPT's sections, run on the
node over whatever connection Ansible uses), a `Cluster` comes out. Nothing here runs a
command.
"""

import ipaddress
import json

# One shell script per node; each section's output follows a marker line. Every command
# only reads. A section whose command fails (no such table) is empty.
SECTIONS = {
    "addresses": "ip -j addr show",
    "routes": "ip -j route show table main",
    "links": "ip -j link show",
    "netns": "ip -j netns list",
    "pods": "cat /var/lib/podnet/pods/*.json 2>/dev/null",
    "services_nft": "nft list table ip podnet-services 2>/dev/null",
    "iptables": "iptables-save -t nat 2>/dev/null; iptables-save -t filter 2>/dev/null",
    "policy": "nft list table ip podnet-policy 2>/dev/null",
    "egress": "nft list table ip podnet 2>/dev/null",
    "allocations": "cat /etc/podnet/services/allocations.json 2>/dev/null",
    "node": "cat /etc/podnet/node.json 2>/dev/null",
}
MARKER = "==podnet-explain== "
GATHER_SCRIPT = (
    "".join("echo '%s%s'; %s; " % (MARKER, name, command) for name, command in SECTIONS.items()) + "true"
)


class ExplainError(Exception):
    """Input `podnet explain` cannot answer: an unknown pod, Service or node, unreadable state."""


def split_sections(output):
    """{section: text} from the output of GATHER_SCRIPT."""
    sections, current = {}, None
    for line in output.splitlines(keepends=True):
        if line.startswith(MARKER):
            current = line[len(MARKER) :].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line
    missing = set(SECTIONS) - set(sections)
    if missing:
        raise ExplainError("the node's answer lacks %s" % ", ".join(sorted(missing)))
    return sections


def decode_all(text):
    """Every JSON object in a concatenation of JSON documents (the pod state files)."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    text = text.strip()
    while index < len(text):
        obj, end = decoder.raw_decode(text, index)
        objects.append(obj)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return objects


def _json(text, default):
    text = text.strip()
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError as error:
        raise ExplainError("cannot read %r...: %s" % (text[:60], error)) from None


class Node:
    """One node's live state."""

    def __init__(self, name, sections, node_ip=None):
        self.name = name
        self.sections = sections
        self.addresses = []  # [(ifname, address, prefix length)]
        for link in _json(sections["addresses"], []):
            for info in link.get("addr_info", []):
                if info.get("family") == "inet":
                    self.addresses.append((link["ifname"], info["local"], info["prefixlen"]))
        self.routes = _json(sections["routes"], [])
        self.links = {link["ifname"]: link for link in _json(sections["links"], [])}
        self.netns_ids = {ns["name"]: ns.get("id") for ns in _json(sections.get("netns", ""), [])}
        self.pods = []
        for pod in decode_all(sections["pods"]):
            pod["node"] = name
            self.pods.append(pod)
        self.services_nft = sections["services_nft"] if sections["services_nft"].strip() else None
        iptables = sections["iptables"]
        self.iptables = iptables if ":KUBE-SERVICES" in iptables else None
        self.policy = sections["policy"] if sections["policy"].strip() else None
        self.egress = sections["egress"] if sections["egress"].strip() else None
        self.allocations = _json(sections["allocations"], {})
        self.persisted = _json(sections["node"], {})
        self.node_ip = node_ip or self._guess_node_ip()

    def _guess_node_ip(self):
        for route in self.routes:
            if route.get("dst") == "default" and route.get("prefsrc"):
                return route["prefsrc"]
        for ifname, address, _unused in self.addresses:
            if ifname not in ("lo", "cbr0"):
                return address
        return None

    @property
    def local_addresses(self):
        return sorted({address for _unused, address, _unused in self.addresses})

    @property
    def pod_cidr(self):
        if self.persisted.get("pod_cidr"):
            return self.persisted["pod_cidr"]
        for ifname, address, prefix in self.addresses:
            if ifname == "cbr0":
                return str(ipaddress.ip_network("%s/%s" % (address, prefix), strict=False))
        return None

    @property
    def backend(self):
        if self.services_nft:
            return "nftables"
        if self.iptables:
            return "iptables"
        return None

    def route_to(self, address):
        """The route the node takes to `address`: (route dict, its prefix length), or None."""
        address = ipaddress.ip_address(address)
        best = None
        for route in self.routes:
            dst = route.get("dst")
            net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)
            if address in net and route.get("type", "unicast") == "unicast":
                if best is None or net.prefixlen > best[1]:
                    best = (route, net.prefixlen)
        return best

    def pod_interface(self, pod):
        """The host side of a pod's veth: the bridge port whose peer lives in the pod's netns."""
        netns_id = self.netns_ids.get(pod.get("netns"))
        if netns_id is None:
            return None
        for name, link in sorted(self.links.items()):
            if link.get("master") == "cbr0" and link.get("link_netnsid") == netns_id:
                return name
        return None


class Cluster:
    """Every node's live state, the pods they run, and the services model (names for addresses)."""

    def __init__(self, nodes, model=None, client=None):
        self.nodes = nodes  # {name: Node}
        self.model = model or {"services": []}
        self.client = client or {}  # {"ip", "routes": {cidr: node}, "gateway": node}
        self.pods = sorted(
            (pod for node in nodes.values() for pod in node.pods), key=lambda p: (p["namespace"], p["name"])
        )
        self.cluster_cidr = self.model.get("cluster_cidr", "10.244.0.0/16")

    # --- names for addresses -------------------------------------------------------------

    def pod_by_ip(self, address):
        return next((pod for pod in self.pods if pod.get("ip") == str(address)), None)

    def node_by_ip(self, address):
        return next((node for node in self.nodes.values() if node.node_ip == str(address)), None)

    def node_of_pod_cidr(self, address):
        address = ipaddress.ip_address(address)
        for node in self.nodes.values():
            if node.pod_cidr and address in ipaddress.ip_network(node.pod_cidr):
                return node
        return None

    def name_of(self, address):
        """A human name for an address: a pod, a node, a Service, or the address alone."""
        address = str(address)
        pod = self.pod_by_ip(address)
        if pod:
            return "pod %s/%s" % (pod["namespace"], pod["name"])
        node = self.node_by_ip(address)
        if node:
            return "node %s" % node.name
        for service in self.model["services"]:
            if service.get("cluster_ip") == address:
                return "Service %s/%s (ClusterIP)" % (service["namespace"], service["name"])
            if address in (service.get("external_ips") or []):
                return "Service %s/%s (externalIP)" % (service["namespace"], service["name"])
        if self.client.get("ip") == address:
            return "the external client"
        return address

    def service_port_at(self, address, protocol, port):
        """(service, port, how) for a Service address:port, or for a NodePort on a node's address."""
        protocol = protocol.upper()
        for service in self.model["services"]:
            for sp in service["ports"]:
                if sp["protocol"] != protocol:
                    continue
                if sp["port"] == port and service.get("cluster_ip") == address:
                    return service, sp, "ClusterIP"
                if sp["port"] == port and address in (service.get("external_ips") or []):
                    return service, sp, "externalIP"
                if sp.get("node_port") == port and (self.node_by_ip(address) or address == "nodeport"):
                    return service, sp, "NodePort"
        return None

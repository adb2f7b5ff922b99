"""The lab's Services as a table of packets: one contract, checked twice.

Each row says where a connection starts, what it asks for, and what must happen: which
endpoints may answer (by pod name), or DROP / REJECT / NONE (no Service: the packet goes
on untouched), and whether the endpoint sees the client's own address or a masqueraded one.
tests/unit/test_service_packets.py runs the rows through both backends' rulesets with the
pure tracers; molecule/default/tests/test_services.py sends them as real packets in the lab.

Rows name things, not addresses, so the same rows hold for the fake pod IPs of the unit
tests and the real ones of the lab: `resolve()` turns a row into addresses using the
services model, the pods and the nodes.

Sources:   "pod:NAME" (a test pod, from its node), "node:NAME" (the node itself),
           "client" (the external client, 192.168.56.100, routed to ClusterIPs and
           externalIPs via node1; to a NodePort it goes straight to that node).
Targets:   "SERVICE:PORT" (the ClusterIP), "SERVICE:PORT@external" (its first externalIP),
           "SERVICE:PORT@NODE" (the NodePort on NODE's address), "127.0.0.1:PORT".
masq:      True (endpoint sees another address), False (sees the client's), "hairpin"
           (only the source pod itself, reached through its Service, sees another address),
           None (not checked here: the egress table decides).
"""

from dataclasses import dataclass

FRONTEND = {"frontend-0", "frontend-1", "frontend-2"}
BACKEND = {"backend-0", "backend-1"}
WEB = {"web-0", "web-1"}
INTERNET = {"internet"}

# (source, target, protocol, expected, masq)
ROWS = [
    # ClusterIP from a pod: any endpoint, the pod's own address kept.
    ("pod:client", "frontend:http", "TCP", FRONTEND, False),
    ("pod:client", "backend:api", "TCP", BACKEND, False),
    ("pod:client", "backend:dns", "UDP", BACKEND, False),
    ("pod:frontend-2", "backend:api", "TCP", BACKEND, False),
    # ClusterIP from outside the pod network: masqueraded, so replies come back.
    ("node:node2", "frontend:http", "TCP", FRONTEND, True),
    ("node:node3", "backend:dns", "UDP", BACKEND, True),
    ("client", "frontend:http", "TCP", FRONTEND, True),
    # externalIPs, externalTrafficPolicy: Cluster: masqueraded.
    ("client", "frontend:http@external", "TCP", FRONTEND, True),
    # NodePort, externalTrafficPolicy: Local: the client's address kept, local endpoint only...
    ("client", "web:http@node1", "TCP", {"web-0"}, False),
    ("client", "web:http@node2", "TCP", {"web-1"}, False),
    # ... and a node without one drops outside traffic;
    ("client", "web:http@node3", "TCP", "DROP", None),
    # pods and the node itself still get through, to any endpoint (the node masqueraded).
    ("pod:frontend-2", "web:http@node3", "TCP", WEB, False),
    ("node:node3", "web:http@node3", "TCP", WEB, True),
    # NodePorts are not opened on loopback.
    ("node:node1", "127.0.0.1:31380", "TCP", "NONE", None),
    # Hairpin: a pod reaching itself through its own Service.
    ("pod:web-0", "web:http", "TCP", WEB, "hairpin"),
    # internalTrafficPolicy: Local: this node's endpoints only; none here: DROP.
    ("pod:client", "web-local:80", "TCP", {"web-0"}, False),
    ("pod:frontend-2", "web-local:80", "TCP", "DROP", None),
    # No endpoints: rejected at once, on every frontend.
    ("pod:client", "nothing:80", "TCP", "REJECT", None),
    ("client", "nothing:80@node2", "TCP", "REJECT", None),
    ("node:node1", "nothing:80", "TCP", "REJECT", None),
    # A Service for something outside the cluster (Endpoints object).
    ("pod:client", "internet:80", "TCP", INTERNET, None),
    # sessionAffinity: ClientIP (the tracer sees every endpoint possible; live, one answers).
    ("pod:client", "backend-sticky:80", "TCP", BACKEND, False),
]

STICKY = {"backend-sticky"}


@dataclass
class Packet:
    """A row in addresses: what to send from where, and what may answer."""

    row: tuple
    source: str          # "pod:NAME", "node:NAME" or "client"
    node: str            # the node whose rules see the packet first
    path: str            # "prerouting" (arrives) or "output" (the node sends it)
    saddr: str
    daddr: str
    dport: int
    protocol: str
    expected: object     # {"IP:PORT": pod name} or "DROP" / "REJECT" / "NONE"
    masq: object

    @property
    def label(self):
        return f"{self.row[0]} -> {self.row[1]}/{self.row[2]}"


def _service_port(model, service, port):
    for svc in model["services"]:
        if svc["name"] == service:
            for p in svc["ports"]:
                if port in (p["name"], str(p["port"])):
                    return svc, p
    raise KeyError(f"no Service port {service}:{port} in the model")


def resolve(row, model, pods, nodes, client_ip="192.168.56.100", client_gateway="node1"):
    """A row in addresses. pods: [{name, ip, node}]; nodes: {name: node_ip}."""
    source, target, protocol, expected, masq = row
    by_name = {pod["name"]: pod for pod in pods}
    by_ip = {pod["ip"]: pod["name"] for pod in pods}
    kind, _, name = source.partition(":")
    target, _, where = target.partition("@")
    if target.startswith("127.0.0.1:"):
        svc, port, daddr, dport = None, None, "127.0.0.1", int(target.split(":")[1])
    else:
        service, _, port_name = target.partition(":")
        svc, port = _service_port(model, service, port_name)
        if where == "external":
            daddr, dport = svc["external_ips"][0], port["port"]
        elif where:
            daddr, dport = nodes[where], port["node_port"]
        else:
            daddr, dport = svc["cluster_ip"], port["port"]

    if kind == "pod":
        pod = by_name[name]
        node, path, saddr = pod["node"], "prerouting", pod["ip"]
    elif kind == "node":
        node, path, saddr = name, "output", nodes[name]
    else:
        node = where if where in nodes else client_gateway
        path, saddr = "prerouting", client_ip

    if isinstance(expected, str):
        answer = expected
    else:
        answer = {}
        for ep in port["endpoints"]:
            pod_name = by_ip.get(ep["ip"], "internet")
            if pod_name in expected:
                answer[f"{ep['ip']}:{ep['port']}"] = pod_name
        missing = set(expected) - set(answer.values())
        if missing:
            raise KeyError(f"row {row}: {', '.join(sorted(missing))} are not endpoints of {target}")
    return Packet(row, source, node, path, saddr, daddr, dport, protocol, answer, masq)


def packets(model, pods, nodes, **kwargs):
    return [resolve(row, model, pods, nodes, **kwargs) for row in ROWS]

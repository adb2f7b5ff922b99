"""One categorisation per Service port: the Service semantics both proxy backends spell.

Model: kube-proxy's pkg/proxy/topology.go `CategorizeEndpoints` and the service port's
`UsesClusterEndpoints` / `UsesLocalEndpoints` / `ExternallyAccessible`. For one node and
each Service port of the services model (docs/services.md) this decides, once:

- whether the port is proxied at all (not for headless or ExternalName Services);
- which endpoints serve ClusterIP traffic (all, or with internalTrafficPolicy: Local this
  node's), which serve outside clients of an external destination (all, or with
  externalTrafficPolicy: Local this node's), and which pods and the node itself reach there;
- the verdict when those are none: REJECT when the port has no endpoint at all, DROP when it
  has some but none here;
- what is masqueraded, and why;
- the session affinity timeout.

services/nft.py and services/iptables.py only write this down in their own syntax; the model
is checked here, once, for both. Pure: no I/O.
"""

import collections
import dataclasses
import ipaddress

from ansible_collections.podnet.network.plugins.module_utils.common.manifests import PROTOCOLS

REJECT, DROP = "REJECT", "DROP"

# Why a packet to a Service port is masqueraded (kube-proxy's KUBE-MARK-MASQ cases).
# Its endpoint would answer a client outside the pod network straight, bypassing the un-DNAT.
MASQ_OUTSIDE_CLUSTER = "ClusterIP traffic from outside the cluster CIDR"
# externalTrafficPolicy: Cluster: the endpoint may be on another node, which must answer via this one.
MASQ_EXTERNAL = "traffic to an external destination (externalTrafficPolicy: Cluster)"
# externalTrafficPolicy: Local keeps an outside client's address; the node's own traffic is
# short-circuited to every endpoint, from an address the endpoint could not answer.
MASQ_EXTERNAL_FROM_NODE = "the node's own traffic to an external destination (externalTrafficPolicy: Local)"
# An endpoint reaching itself through its Service would see its own address as the source.
MASQ_HAIRPIN = "an endpoint reaching itself through its Service"


class ServiceModelError(ValueError):
    """A services model no backend can turn into rules (bad protocol, address, port...)."""


class Endpoint(collections.namedtuple("Endpoint", "ip port node")):
    __slots__ = ()

    @property
    def key(self):
        return "%s:%d" % (self.ip, self.port)


@dataclasses.dataclass(frozen=True)
class ServicePort:
    """One Service port as one node proxies it. The endpoint tuples keep the model's order."""

    name: str  # kube-proxy's ServicePortName: "namespace/name:port", "namespace/name" if unnamed
    namespace: str
    service: str
    port_name: str
    protocol: str  # "TCP"
    l4: str  # the kernel's name: "tcp"
    port: int
    cluster_ip: str
    external_ips: tuple
    node_port: object  # int, or None
    internal_local: bool  # internalTrafficPolicy: Local
    external_local: bool  # externalTrafficPolicy: Local, on a port reachable from outside
    affinity_timeout: object  # seconds of sessionAffinity: ClientIP; None without, or with no endpoint
    endpoints: tuple  # every ready endpoint, each once
    node_endpoints: tuple  # those on this node
    cluster_endpoints: tuple  # kube-proxy's clusterEndpoints: () when no traffic uses them all
    local_endpoints: tuple  # kube-proxy's localEndpoints: () when no policy is Local

    @property
    def externally_accessible(self):
        """As kube-proxy: nodePorts and externalIPs (a ClusterIP Service's too) are reachable from outside."""
        return bool(self.node_port) or bool(self.external_ips)

    @property
    def internal_endpoints(self):
        """Where ClusterIP traffic goes."""
        return self.local_endpoints if self.internal_local else self.cluster_endpoints

    @property
    def external_endpoints(self):
        """Where an outside client's traffic to an externalIP or nodePort goes (pods and the
        node itself always reach `cluster_endpoints`: kube-proxy's short-circuit); () for a
        port with no such destination."""
        if not self.externally_accessible:
            return ()
        return self.local_endpoints if self.external_local else self.cluster_endpoints

    @property
    def reachable_endpoints(self):
        """The endpoints some traffic reaches here, in model order (kube-proxy's allReachableEndpoints)."""
        used = {ep.key for ep in self.cluster_endpoints} | {ep.key for ep in self.local_endpoints}
        return tuple(ep for ep in self.endpoints if ep.key in used)

    def _verdict(self, endpoints):
        if endpoints:
            return None
        if not self.endpoints:
            return REJECT, "%s has no endpoints" % self.name
        return DROP, "%s has no local endpoints" % self.name

    @property
    def internal_verdict(self):
        """None, or (REJECT or DROP, why) for ClusterIP traffic that has no endpoint to go to."""
        return self._verdict(self.internal_endpoints)

    @property
    def external_verdict(self):
        """None, or (REJECT or DROP, why) for outside traffic to an externalIP or nodePort. A DROP
        concerns outside clients only: pods and the node itself still reach every endpoint."""
        return self._verdict(self.external_endpoints) if self.externally_accessible else None

    @property
    def hairpin_endpoints(self):
        """Only a local endpoint can hairpin: its own node is the one that DNATs it."""
        return self.node_endpoints

    @property
    def masquerade(self):
        """Why traffic to this port is masqueraded: a tuple of the MASQ_* reasons that apply.

        A port with endpoints masquerades ClusterIP traffic from outside the cluster CIDR even
        when none of them is here (iTP Local): that traffic is dropped before NAT anyway."""
        if not self.endpoints:
            return ()
        reasons = [MASQ_OUTSIDE_CLUSTER]
        if self.externally_accessible:
            reasons.append(MASQ_EXTERNAL_FROM_NODE if self.external_local else MASQ_EXTERNAL)
        if self.hairpin_endpoints:
            reasons.append(MASQ_HAIRPIN)
        return tuple(reasons)


def proxied(svc):
    """Is a Service proxied at all? Headless and ExternalName Services get no NAT, as in
    Kubernetes (DNS answers them), nor does one without ports."""
    if svc.get("type") == "ExternalName":
        return False
    if svc.get("cluster_ip") in (None, "", "None"):
        return False
    return bool(svc.get("ports"))


# --- checks ---------------------------------------------------------------------------

def _ipv4(value, what):
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError) as exc:
        raise ServiceModelError("%s: %r is not an IPv4 address" % (what, value)) from exc


def _port(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ServiceModelError("%s: %r is not a port number" % (what, value))
    return value


def checked_cluster_cidr(value):
    """The cluster CIDR, normalised; pod traffic comes from inside it."""
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError) as exc:
        raise ServiceModelError("cluster_cidr: %r is not an IPv4 network" % (value,)) from exc


def _protocol(value, what):
    protocol = str(value).upper()
    if protocol not in PROTOCOLS:
        raise ServiceModelError("%s: protocol %r is not one of %s" % (what, value, ", ".join(PROTOCOLS)))
    return protocol


def _affinity(value, what):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ServiceModelError("%s: session_affinity_timeout %r is not a number of seconds" % (what, value))
    return value


def _endpoints(port, what):
    """The ready endpoints, checked, each (address, port) once, in model order."""
    seen, out = set(), []
    for ep in port.get("endpoints") or []:
        ip = _ipv4(ep.get("ip"), what + " endpoint")
        endpoint = Endpoint(ip, _port(ep.get("port"), what + " endpoint " + ip), ep.get("node"))
        if endpoint.key not in seen:
            seen.add(endpoint.key)
            out.append(endpoint)
    return tuple(out)


def service_port_name(namespace, name, port_name):
    """kube-proxy's ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port."""
    base = "%s/%s" % (namespace, name)
    return "%s:%s" % (base, port_name) if port_name else base


# --- categorisation -------------------------------------------------------------------

def categorize_port(svc, port, node):
    """The ServicePort of one port of a proxied Service, as `node` proxies it; checked."""
    name = service_port_name(svc.get("namespace"), svc.get("name"), port.get("name") or "")
    protocol = _protocol(port.get("protocol", "TCP"), name)
    node_port = port.get("node_port")
    external_ips = tuple(_ipv4(ip, name + " external_ips") for ip in svc.get("external_ips") or [])
    endpoints = _endpoints(port, name)
    here = tuple(ep for ep in endpoints if ep.node is not None and ep.node == node)
    internal_local = svc.get("internal_traffic_policy") == "Local"
    externally_accessible = bool(node_port) or bool(external_ips)
    external_local = svc.get("external_traffic_policy") == "Local" and externally_accessible
    affinity = _affinity(svc.get("session_affinity_timeout"), name)
    return ServicePort(
        name=name, namespace=svc.get("namespace"), service=svc.get("name"), port_name=port.get("name") or "",
        protocol=protocol, l4=PROTOCOLS[protocol], port=_port(port.get("port"), name + " port"),
        cluster_ip=_ipv4(svc["cluster_ip"], name + " cluster_ip"), external_ips=external_ips,
        node_port=None if node_port is None else _port(node_port, name + " node_port"),
        internal_local=internal_local, external_local=external_local,
        affinity_timeout=affinity if endpoints else None,
        endpoints=endpoints, node_endpoints=here,
        # kube-proxy's UsesClusterEndpoints: eTP Local still needs them all for the
        # short-circuit of pods and the node itself.
        cluster_endpoints=endpoints if not internal_local or externally_accessible else (),
        # ... and UsesLocalEndpoints.
        local_endpoints=here if internal_local or external_local else (),
    )


def categorize(model, node):
    """[ServicePort] of every proxied Service port of `model` on `node`, in model order.

    Raises ServiceModelError when the model cannot be proxied (see check_model)."""
    if model.get("cluster_cidr") is not None:
        checked_cluster_cidr(model["cluster_cidr"])
    return [categorize_port(svc, port, node)
            for svc in model.get("services") or [] if proxied(svc) for port in svc["ports"]]


def check_model(model):
    """Raise ServiceModelError unless both backends can render `model`: its protocols, addresses,
    ports and affinity timeouts are what load_services produces."""
    categorize(model, None)

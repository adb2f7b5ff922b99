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
import ipaddress
import re

from ansible_collections.podnet.network.plugins.module_utils.common.protocols import PROTOCOLS

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


# key: "ip:port", as kube-proxy names an endpoint.
Endpoint = collections.namedtuple("Endpoint", "ip port node key")

# One Service port as one node proxies it (a tuple: categorising 10,000 Services must take
# a fraction of a second). Endpoint tuples keep the model's order.
ServicePort = collections.namedtuple("ServicePort", (
    # kube-proxy's ServicePortName ("namespace/name:port", "namespace/name" if unnamed), its parts
    "name", "namespace", "service", "port_name",
    "protocol",  # "TCP"
    "l4",  # the kernel's name for it: "tcp"
    "port", "cluster_ip", "external_ips",
    "node_port",  # int, or None
    "internal_local",  # internalTrafficPolicy: Local
    # As kube-proxy: nodePorts and externalIPs (a ClusterIP Service's too) are reachable from outside ...
    "externally_accessible",
    "external_local",  # ... and externalTrafficPolicy: Local concerns only such a port
    "affinity_timeout",  # seconds of sessionAffinity: ClientIP; None without, or with no endpoint to keep
    "endpoints",  # every ready endpoint, each once
    "node_endpoints",  # those on this node
    "cluster_endpoints",  # kube-proxy's clusterEndpoints: () when no traffic uses them all
    "local_endpoints",  # kube-proxy's localEndpoints: () when no policy is Local
    "reachable_endpoints",  # those some traffic reaches here (kube-proxy's allReachableEndpoints)
    "internal_endpoints",  # where ClusterIP traffic goes
    # Where an outside client's traffic to an externalIP or nodePort goes (pods and the node
    # itself always reach cluster_endpoints: kube-proxy's short-circuit); () for no such port.
    "external_endpoints",
    "hairpin_endpoints",  # only a local endpoint can hairpin: its own node is the one that DNATs it
    "internal_verdict",  # None, or (REJECT or DROP, why) for ClusterIP traffic with nowhere to go
    # None, or (REJECT or DROP, why) for outside traffic to an externalIP or nodePort. A DROP
    # concerns outside clients only: pods and the node itself still reach every endpoint.
    "external_verdict",
    "masquerade",  # why traffic to this port is masqueraded: the MASQ_* reasons that apply
))


def proxied(svc):
    """Is a Service proxied at all? Headless and ExternalName Services get no NAT, as in
    Kubernetes (DNS answers them), nor does one without ports."""
    if svc.get("type") == "ExternalName":
        return False
    if svc.get("cluster_ip") in (None, "", "None"):
        return False
    return bool(svc.get("ports"))


# --- checks ---------------------------------------------------------------------------

# An IPv4 address as load_services writes it (ipaddress refuses leading zeros, so this is
# every valid one): checked without ipaddress, which costs seconds at 50,000 endpoints.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(r"^(%s\.){3}%s$" % (_OCTET, _OCTET))


def _ipv4(value, what):
    if isinstance(value, str) and _DOTTED_QUAD.match(value):
        return value
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
    # Tens of thousands of these: the common case checks inline, _ipv4 and _port say what is wrong.
    for ep in port.get("endpoints") or ():
        ip, number = ep.get("ip"), ep.get("port")
        if not isinstance(ip, str) or not _DOTTED_QUAD.match(ip):
            ip = _ipv4(ip, what + " endpoint")
        # A bool is an int to Python, not a port.
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            _port(number, what + " endpoint " + ip)
        key = "%s:%d" % (ip, number)
        if key not in seen:
            seen.add(key)
            out.append(Endpoint(ip, number, ep.get("node"), key))
    return tuple(out)


def service_port_name(namespace, name, port_name):
    """kube-proxy's ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port."""
    base = "%s/%s" % (namespace, name)
    return "%s:%s" % (base, port_name) if port_name else base


# --- categorisation -------------------------------------------------------------------

def _verdict(name, endpoints, used):
    """REJECT when the port has no endpoint at all; DROP when it has some, but not for this traffic."""
    if used:
        return None
    if not endpoints:
        return REJECT, "%s has no endpoints" % name
    return DROP, "%s has no local endpoints" % name


def _masquerade(endpoints, externally_accessible, external_local, here):
    """A port with endpoints masquerades ClusterIP traffic from outside the cluster CIDR even when
    none of them is here (iTP Local): that traffic is dropped before NAT anyway."""
    if not endpoints:
        return ()
    reasons = (MASQ_OUTSIDE_CLUSTER,)
    if externally_accessible:
        reasons += (MASQ_EXTERNAL_FROM_NODE if external_local else MASQ_EXTERNAL,)
    return reasons + ((MASQ_HAIRPIN,) if here else ())


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
    # kube-proxy's UsesClusterEndpoints: eTP Local still needs them all for the short-circuit
    # of pods and the node itself; and UsesLocalEndpoints.
    cluster = endpoints if not internal_local or externally_accessible else ()
    local = here if internal_local or external_local else ()
    internal = local if internal_local else cluster
    external = (local if external_local else cluster) if externally_accessible else ()
    affinity = _affinity(svc.get("session_affinity_timeout"), name)
    return ServicePort(
        name=name, namespace=svc.get("namespace"), service=svc.get("name"), port_name=port.get("name") or "",
        protocol=protocol, l4=PROTOCOLS[protocol], port=_port(port.get("port"), name + " port"),
        cluster_ip=_ipv4(svc["cluster_ip"], name + " cluster_ip"), external_ips=external_ips,
        node_port=None if node_port is None else _port(node_port, name + " node_port"),
        internal_local=internal_local, externally_accessible=externally_accessible,
        external_local=external_local, affinity_timeout=affinity if endpoints else None,
        endpoints=endpoints, node_endpoints=here, cluster_endpoints=cluster, local_endpoints=local,
        # local is a part of endpoints, in their order
        reachable_endpoints=endpoints if cluster else local,
        internal_endpoints=internal, external_endpoints=external, hairpin_endpoints=here,
        internal_verdict=_verdict(name, endpoints, internal),
        external_verdict=_verdict(name, endpoints, external) if externally_accessible else None,
        masquerade=_masquerade(endpoints, externally_accessible, external_local, here),
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

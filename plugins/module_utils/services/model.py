"""Services: from a file of Kubernetes manifests to the services model (docs/services.md).

Pure logic, no I/O; runs on the Ansible controller. The file holds Service, Endpoints
and EndpointSlice objects as `kubectl apply` would take them. Here they are validated,
the endpoints resolved (from podnet's pods through the Service's selector, or from the
Endpoints / EndpointSlice objects of a selector-less Service), clusterIPs and nodePorts
allocated, and the result returned as the services model. The YAML, the kinds and the
typed-field checks are the manifest reader's (common/manifests.py), shared with NetworkPolicy:

    services.yml + pods (+ previous allocations)  ->  {"services": [...], ...}
"""

import bisect
import ipaddress
import itertools
import json

from ansible_collections.podnet.network.plugins.module_utils.common.manifests import (
    DEFAULT_NAMESPACE,
    PROTOCOLS,
    ManifestError,
    Where,
    check_fields,
    check_name,
    choice,
    chunks,
    documents,
    integer,
    ipv4,
    kind_of,
    metadata,
    objects,
    parse_alone,
    parse_ipv4,
    special,
    string_map,
    typed,
    unicast_ipv4,
)
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact

TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
POLICIES = ("Cluster", "Local")
AFFINITIES = ("None", "ClientIP")
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SPEC_FIELDS = (
    "type", "clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "selector", "ports", "externalIPs",
    "externalName", "externalTrafficPolicy", "internalTrafficPolicy", "sessionAffinity",
    "sessionAffinityConfig", "publishNotReadyAddresses", "allocateLoadBalancerNodePorts",
    # Real Service fields with nothing to do without a load balancer or health checks: accepted, ignored.
    "healthCheckNodePort", "loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass",
    "trafficDistribution",
)
PORT_FIELDS = ("name", "protocol", "port", "targetPort", "nodePort", "appProtocol")
AFFINITY_FIELDS = ("clientIP",)
CLIENT_IP_FIELDS = ("timeoutSeconds",)
SUBSET_FIELDS = ("addresses", "notReadyAddresses", "ports")
ADDRESS_FIELDS = ("ip", "hostname", "nodeName", "targetRef")
ENDPOINT_PORT_FIELDS = ("name", "port", "protocol", "appProtocol")
SLICE_ENDPOINT_FIELDS = ("addresses", "conditions", "hostname", "targetRef", "nodeName", "zone", "hints",
                         "deprecatedTopology")
CONDITION_FIELDS = ("ready", "serving", "terminating")
# What a DNS name may hold (RFC 1035): the DNS serves every Service under names built from it.
DNS_NAME_MAX, DNS_LABEL_MAX = 253, 63
# The longest name the DNS derives from an endpoint address: "255-255-255-255." before the Service's.
DNS_ENDPOINT_PREFIX = len("255-255-255-255.")

# The manifest reader's error: the filter plugin catches this one class for both readers
# (policy's PolicySpecError is one too).
ServiceSpecError = ManifestError

# --- Service --------------------------------------------------------------------------


def _parse_service(where, obj, net, port_range):
    namespace, name, _labels = metadata(where, obj, "a DNS-1035 label")
    spec = typed(where, "spec", obj.get("spec"), dict)
    check_fields(where, "spec", spec, SPEC_FIELDS)
    kind = choice(where, "spec.type", spec.get("type"), TYPES, "ClusterIP")
    external = None
    if kind == "ExternalName":
        external = spec.get("externalName")
        if isinstance(external, str):
            external = external.rstrip(".")  # a fully qualified name is fine, as in Kubernetes
        check_name(where, "spec.externalName", external, "a DNS-1123 subdomain")
    cluster_ip, ip_path, allocate = _cluster_ip(where, spec, kind, net)
    _ip_families(where, spec)
    external_ips = []
    for i, value in enumerate(typed(where, "spec.externalIPs", spec.get("externalIPs"), list)):
        address = unicast_ipv4(where, "spec.externalIPs[%d]" % i, value)
        external_ips += [] if address in external_ips else [address]
    etp = spec.get("externalTrafficPolicy")
    # As Kubernetes: the policy is for traffic from outside, which only these Services receive.
    if etp is not None and kind not in NODE_PORT_TYPES and not external_ips:
        raise where.error("spec.externalTrafficPolicy", "may only be set on a NodePort or LoadBalancer "
                          "Service, or one with externalIPs; this one is %s", kind)
    # With allocateLoadBalancerNodePorts: false a LoadBalancer keeps only the nodePorts it asks for.
    field = "allocateLoadBalancerNodePorts"
    allocate_lb = typed(where, "spec." + field, spec.get(field), bool, True)
    return {
        "where": where, "key": (namespace, name), "namespace": namespace, "name": name, "type": kind,
        "cluster_ip": cluster_ip, "ip_path": ip_path, "allocate": allocate,
        # DNS answers an ExternalName Service with a CNAME to this name.
        "external_name": external,
        # Kubernetes reads an empty selector as no selector: the user supplies the endpoints
        # (Endpoints / EndpointSlice objects). So does podnet: {} never selects every pod.
        "selector": string_map(where, "spec.selector", spec.get("selector")),
        "external_ips": external_ips,
        "external_traffic_policy": choice(where, "spec.externalTrafficPolicy", etp, POLICIES, "Cluster"),
        "internal_traffic_policy": choice(where, "spec.internalTrafficPolicy",
                                          spec.get("internalTrafficPolicy"), POLICIES, "Cluster"),
        "session_affinity_timeout": _affinity_timeout(where, spec),
        "publish_not_ready": typed(where, "spec.publishNotReadyAddresses",
                                   spec.get("publishNotReadyAddresses"), bool, False),
        "ports": _service_ports(where, spec, kind, cluster_ip is None and not allocate, port_range),
        "wants_node_ports": kind == "NodePort" or kind == "LoadBalancer" and allocate_lb,
        "manual": {},
    }


def _cluster_ip(where, spec, kind, net):
    """(address, field, allocate): an explicit address; None for headless and ExternalName Services,
    or with allocate=True for one that needs an address and did not ask for one."""
    value, path = spec.get("clusterIP"), "spec.clusterIP"
    ips = typed(where, "spec.clusterIPs", spec.get("clusterIPs"), list)
    if len(ips) > 1:
        raise where.error("spec.clusterIPs", "podnet is IPv4 single-stack: one address at most, got %r", ips)
    if ips:
        if value not in (None, "") and value != ips[0]:
            raise where.error("spec.clusterIPs[0]", "%r must equal spec.clusterIP %r", ips[0], value)
        value, path = ips[0], "spec.clusterIPs[0]"
    if value is None or value == "":
        return None, path, kind != "ExternalName"
    if kind == "ExternalName":
        raise where.error(path, "must not be set on an ExternalName Service, a DNS alias with no address")
    if value == "None":
        if kind in NODE_PORT_TYPES:
            raise where.error(path, "a %s Service cannot be headless: its nodePorts lead to its clusterIP",
                              kind)
        return None, path, False
    address = ipaddress.IPv4Address(ipv4(where, path, value))
    if address not in net:
        raise where.error(path, "%s is not inside service_cidr %s", address, net)
    if address in (net.network_address, net.broadcast_address):
        raise where.error(path, "%s is the network or broadcast address of service_cidr %s", address, net)
    return str(address), path, False


def _ip_families(where, spec):
    """podnet is IPv4 single-stack. Kubernetes on such a cluster gives PreferDualStack a single
    family and rejects RequireDualStack; so does podnet."""
    families = typed(where, "spec.ipFamilies", spec.get("ipFamilies"), list)
    if families not in ([], ["IPv4"]):
        raise where.error("spec.ipFamilies", "podnet is IPv4 single-stack: only [IPv4], got %r", families)
    if spec.get("ipFamilyPolicy") not in (None, "SingleStack", "PreferDualStack"):
        raise where.error("spec.ipFamilyPolicy", "podnet is IPv4 single-stack: SingleStack (or "
                          "PreferDualStack, single here too), got %r", spec["ipFamilyPolicy"])


def _affinity_timeout(where, spec):
    """Seconds a client keeps its endpoint with sessionAffinity: ClientIP; None without affinity."""
    affinity = choice(where, "spec.sessionAffinity", spec.get("sessionAffinity"), AFFINITIES, "None")
    config = typed(where, "spec.sessionAffinityConfig", spec.get("sessionAffinityConfig"), dict)
    check_fields(where, "spec.sessionAffinityConfig", config, AFFINITY_FIELDS)
    if affinity == "None":
        if config:
            raise where.error("spec.sessionAffinityConfig", "is only allowed with sessionAffinity: ClientIP")
        return None
    path = "spec.sessionAffinityConfig.clientIP"
    client_ip = typed(where, path, config.get("clientIP"), dict)
    check_fields(where, path, client_ip, CLIENT_IP_FIELDS)
    timeout = client_ip.get("timeoutSeconds")
    if timeout is None:
        return DEFAULT_AFFINITY_TIMEOUT
    return integer(where, path + ".timeoutSeconds", timeout, 1, MAX_AFFINITY_TIMEOUT)


def _service_ports(where, spec, kind, headless, port_range):
    ports = typed(where, "spec.ports", spec.get("ports"), list)
    if not ports and kind != "ExternalName" and not headless:
        raise where.error("spec.ports", "a %s Service needs at least one port", kind)
    result, names, numbers = [], {}, {}
    for i, port in enumerate(ports):
        path = "spec.ports[%d]" % i
        if not isinstance(port, dict):
            raise where.error(path, "must be a mapping with at least port, got %r", port)
        check_fields(where, path, port, PORT_FIELDS, "a port has %s" % ", ".join(PORT_FIELDS))
        name = port.get("name")
        if name is not None and name != "":
            check_name(where, path + ".name", name, "a DNS-1123 label")
        elif len(ports) > 1:
            raise where.error(path + ".name", "is required when a Service has more than one port")
        name = name or ""
        if name in names:
            raise where.error(path + ".name", "duplicate port name %r (also spec.ports[%d])",
                              name, names[name])
        names[name] = i
        protocol = choice(where, path + ".protocol", port.get("protocol"), PROTOCOLS, "TCP")
        number = integer(where, path + ".port", port.get("port"), 1, 65535)
        if (number, protocol) in numbers:
            raise where.error(path, "duplicate port %d/%s (also spec.ports[%d])",
                              number, protocol, numbers[number, protocol])
        numbers[number, protocol] = i
        result.append({
            "name": name, "protocol": protocol, "port": number,
            "target_port": _target_port(where, path + ".targetPort", port.get("targetPort"), number),
            "node_port": _node_port(where, path + ".nodePort", port.get("nodePort"), kind, port_range)})
    return result


def _target_port(where, path, value, port):
    if value is None or value == "":
        return port  # Kubernetes' default: the same number as the Service port
    if isinstance(value, str) and not value.isdigit():
        return check_name(where, path, value, "an IANA service name")
    return integer(where, path, value, 1, 65535)


def _node_port(where, path, value, kind, port_range):
    if value is None or value == 0 and not isinstance(value, bool):
        return None  # Kubernetes allocates one, if the type has nodePorts
    if kind not in NODE_PORT_TYPES:
        raise where.error(path, "only a NodePort or LoadBalancer Service has nodePorts; this one is %s", kind)
    number = integer(where, path, value, 1, 65535)
    if not port_range[0] <= number <= port_range[1]:
        raise where.error(path, "%d is outside the NodePort range %d-%d", number, *port_range)
    return number


# --- Endpoints and EndpointSlice ------------------------------------------------------

def _endpoint_ports(where, path, ports):
    """[(name, protocol, port)]: kube-proxy matches them to Service ports by name and protocol."""
    result = []
    for i, port in enumerate(typed(where, path, ports, list)):
        here = "%s[%d]" % (path, i)
        port = typed(where, here, port, dict)
        check_fields(where, here, port, ENDPOINT_PORT_FIELDS)
        if port.get("name"):
            check_name(where, here + ".name", port["name"], "a DNS-1123 label")
        result.append((port.get("name") or "",
                       choice(where, here + ".protocol", port.get("protocol"), PROTOCOLS, "TCP"),
                       integer(where, here + ".port", port.get("port"), 1, 65535)))
    return result


def _entries(ports, ip, node, ready, here):
    """One entry per port: (port name, protocol, endpoint, ready, where the address is written)."""
    return [(name, protocol, {"ip": ip, "port": number, "node": node or None, "pod": None}, ready, here)
            for name, protocol, number in ports]


def _endpoint_ip(where, path, value, net):
    """An endpoint's address: unicast, and no Service's virtual address, which kube-proxy does not
    support as a destination (Kubernetes' documentation of Services without selectors)."""
    address = unicast_ipv4(where, path, value)
    if parse_ipv4(address) in net:
        raise where.error(path, "%s is inside service_cidr %s: an endpoint cannot be a Service's virtual "
                          "address (kube-proxy does not support virtual IPs as a destination)", address, net)
    return address


def _parse_endpoints(where, obj, net):
    namespace, name, _labels = metadata(where, obj, "a DNS-1123 subdomain")
    entries = []
    for s, subset in enumerate(typed(where, "subsets", obj.get("subsets"), list)):
        path = "subsets[%d]" % s
        subset = typed(where, path, subset, dict)
        check_fields(where, path, subset, SUBSET_FIELDS)
        ports = _endpoint_ports(where, path + ".ports", subset.get("ports"))
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for a, address in enumerate(typed(where, "%s.%s" % (path, field), subset.get(field), list)):
                here = "%s.%s[%d]" % (path, field, a)
                address = typed(where, here, address, dict)
                check_fields(where, here, address, ADDRESS_FIELDS)
                node = typed(where, here + ".nodeName", address.get("nodeName"), str)
                entries += _entries(ports, _endpoint_ip(where, here + ".ip", address.get("ip"), net), node,
                                    ready, here)
    return {"where": where, "key": (namespace, name), "service": (namespace, name), "path": "metadata.name",
            "these": "these Endpoints", "entries": entries}


def _parse_slice(where, obj, net):
    namespace, name, labels = metadata(where, obj, "a DNS-1123 subdomain")
    label_path = 'metadata.labels["%s"]' % SERVICE_NAME_LABEL
    if not labels.get(SERVICE_NAME_LABEL):
        raise where.error(label_path, "is required: it names the Service these endpoints belong to")
    if obj.get("addressType") != "IPv4":
        raise where.error("addressType", "must be IPv4 (podnet's Services are IPv4 only), got %r",
                          obj.get("addressType"))
    ports = _endpoint_ports(where, "ports", obj.get("ports"))
    entries = []
    for e, endpoint in enumerate(typed(where, "endpoints", obj.get("endpoints"), list)):
        here = "endpoints[%d]" % e
        endpoint = typed(where, here, endpoint, dict)
        check_fields(where, here, endpoint, SLICE_ENDPOINT_FIELDS)
        addresses = [_endpoint_ip(where, "%s.addresses[%d]" % (here, a), address, net) for a, address
                     in enumerate(typed(where, here + ".addresses", endpoint.get("addresses"), list))]
        if not addresses:
            raise where.error(here + ".addresses", "needs at least one address")
        conditions = typed(where, here + ".conditions", endpoint.get("conditions"), dict)
        check_fields(where, here + ".conditions", conditions, CONDITION_FIELDS)
        # Kubernetes: an unset `ready` means ready.
        ready = typed(where, here + ".conditions.ready", conditions.get("ready"), bool, True)
        # An endpoint's addresses are one backend; kube-proxy uses the first.
        node = typed(where, here + ".nodeName", endpoint.get("nodeName"), str)
        entries += _entries(ports, addresses[0], node, ready, here)
    return {"where": where, "key": (namespace, name), "service": (namespace, labels[SERVICE_NAME_LABEL]),
            "path": label_path, "these": "this EndpointSlice", "entries": entries}


def _attach_endpoints(services, sources, warn):
    """Hand each selector-less Service the endpoints its Endpoints / EndpointSlice objects list."""
    for source in sources:
        where, key, path = source["where"], source["service"], source["path"]
        svc = services.get(key)
        if svc is None:
            raise where.error(path, "no Service %s/%s for %s", *key, source["these"])
        if svc["selector"]:
            raise where.error(path, "Service %s/%s has a selector; podnet computes its endpoints "
                                    "(remove the selector or this object)", *key)
        if svc["type"] == "ExternalName":
            raise where.error(path, "Service %s/%s is type ExternalName, a DNS alias with no endpoints", *key)
        local = svc["external_traffic_policy"] == "Local" and (
            svc["type"] in NODE_PORT_TYPES or svc["external_ips"])
        unplaced = set()
        for name, protocol, endpoint, ready, here in source["entries"]:
            # publishNotReadyAddresses: the Service wants its endpoints before they are ready
            # (peers of a StatefulSet finding each other, say).
            if ready or svc["publish_not_ready"]:
                svc["manual"].setdefault((name, protocol), []).append(endpoint)
            if local and endpoint["node"] is None and here not in unplaced:
                unplaced.add(here)
                # As kube-proxy: an endpoint is local only on the node its nodeName names.
                warn(where.warning(here, "%s has no nodeName, and Service %s/%s has externalTrafficPolicy: "
                                   "Local: it is local to no node, so traffic from outside the cluster to it "
                                   "is dropped on every node (set nodeName, or use externalTrafficPolicy: "
                                   "Cluster)",
                                   endpoint["ip"], *key))


def _pod_endpoints(svc, index, port, pods):
    """Endpoints of one port of a Service with a selector, from the pods it selects.

    A numbered targetPort is that port on every pod, declared or not (as in Kubernetes); a
    named one is the pod's port of that name and protocol, and a pod without one is skipped."""
    target, endpoints, declared = port["target_port"], [], False
    for pod in pods:
        number = target
        if not isinstance(target, int):
            number = next((p["containerPort"] for p in pod.get("ports") or []
                           if p.get("name") == target and p.get("protocol", "TCP") == port["protocol"]), None)
            if number is None:
                continue
        declared = True
        if pod.get("ip"):  # a pod not started yet validates, but has no endpoint
            endpoints.append({"ip": pod["ip"], "port": number, "node": pod.get("node"),
                              "pod": "%s/%s" % (pod["namespace"], pod["name"])})
    if pods and not declared:
        where = Where.restore(svc["where"], ServiceSpecError)
        raise where.error("spec.ports[%d].targetPort" % index,
                          "no pod the selector matches (%s) declares a %s port named %r",
                          ", ".join("%s/%s" % (p["namespace"], p["name"]) for p in pods),
                          port["protocol"], target)
    return endpoints


def _sorted_endpoints(endpoints):
    """Sorted by (address, port); of two for the same address and port, the first listed stays."""
    unique = {}
    for endpoint in sorted(endpoints, key=lambda e: (parse_ipv4(e["ip"]), e["port"])):
        unique.setdefault((endpoint["ip"], endpoint["port"]), endpoint)
    return list(unique.values())


# --- allocation -----------------------------------------------------------------------

def _previous(previous, svc, field):
    entry = previous.get("%s/%s" % svc["key"]) if isinstance(previous, dict) else None
    return entry.get(field) if isinstance(entry, dict) else None


def _free(candidates, taken):
    return (c for c in candidates if c not in taken)


def _held(previous, ordered, field, value, claimer):
    """The Service (still in the file, asking for no address of its own) that `value` was allocated
    to earlier, other than `claimer`; None when nobody holds it."""
    for svc in ordered:
        if svc is not claimer and svc["allocate"] and _previous(previous, svc, field) == value:
            return svc
    return None


def _allocate_cluster_ips(in_file_order, ordered, net, previous, dns_ip=None):
    """Explicit addresses first, then each Service's previous one if still free, then the lowest free.

    Kubernetes gives network+1 (10.96.0.1) to the API server, and network+10 is cluster DNS by
    convention (podnet's default DNS address, dns/records.py cluster_dns_ip): automatic
    allocation skips both (a manifest may still ask for them), starting at network+11 and
    wrapping round to network+2. The cluster DNS address (`dns_ip`, the plan's) is nobody's.

    As the API server: a claim on an address another Service holds is refused, and the other
    Service is never moved to make room."""
    owners = {}
    for svc in in_file_order:
        ip = svc["cluster_ip"]
        if ip in owners:
            other = owners[ip]["where"]
            raise svc["where"].error(svc["ip_path"], "%s is already the clusterIP of %s (%s)",
                                     ip, other.what, other.doc)
        if ip is not None and ip == dns_ip:
            raise svc["where"].error(svc["ip_path"], "%s is the cluster DNS address (podnet_dns_ip), which "
                                     "the DNS answers on: give this Service another clusterIP, or set "
                                     "podnet_dns_ip to another address", ip)
        if ip is not None:
            holder = _held(previous, ordered, "cluster_ip", ip, svc)
            if holder is not None:
                raise svc["where"].error(svc["ip_path"], "%s is the clusterIP allocated earlier to %s (%s); "
                                         "a claim does not move another Service: give this one another "
                                         "address, or move %s first", ip, holder["where"].what,
                                         holder["where"].doc, holder["where"].what)
            owners[ip] = svc
    if dns_ip is not None:
        holder = _held(previous, ordered, "cluster_ip", dns_ip, None)
        if holder is not None:
            raise holder["where"].error("spec.clusterIP", "podnet_dns_ip %s is this Service's clusterIP, "
                                        "allocated earlier: set podnet_dns_ip to another address, or give "
                                        "this Service an explicit clusterIP elsewhere", dns_ip)
        owners[dns_ip] = None
    base, last = int(net.network_address), int(net.broadcast_address) - 1
    automatic = (range(base + 11, last + 1), range(base + 2, min(base + 10, last + 1)))
    pending = []
    for svc in ordered:
        if not svc["allocate"]:
            continue
        try:
            kept = ipaddress.IPv4Address(_previous(previous, svc, "cluster_ip"))
        except ValueError:
            kept = None
        if kept is not None and any(int(kept) in r for r in automatic) and str(kept) not in owners:
            svc["cluster_ip"] = str(kept)
            owners[svc["cluster_ip"]] = svc
        else:
            pending.append(svc)
    free = _free((str(ipaddress.IPv4Address(a)) for a in itertools.chain(*automatic)), owners)
    for svc in pending:
        svc["cluster_ip"] = next(free, None)
        if svc["cluster_ip"] is None:
            raise svc["where"].error("spec.clusterIP", "no free address left in service_cidr %s", net)
        owners[svc["cluster_ip"]] = svc


def _kept_node_port(previous, svc, claim):
    """The nodePort `svc` was allocated earlier for a port of claim's protocol that asks for none."""
    kept = _previous(previous, svc, "node_ports")
    kept = kept if isinstance(kept, dict) else {}
    return next((kept.get("%s/%d" % (p["protocol"], p["port"])) for p in svc["ports"]
                 if p["node_port"] is None and p["protocol"] == claim["protocol"]
                 and kept.get("%s/%d" % (p["protocol"], p["port"])) == claim["node_port"]), None)


def _check_frontends(in_file_order):
    """One Service per address, port and protocol: kube-proxy would install two rules for one
    destination and `nft` refuse the map on every node. A clusterIP's ports and each externalIP's."""
    owners = {}
    for svc in in_file_order:
        frontends = [(svc["cluster_ip"], svc["ip_path"])] if svc["cluster_ip"] else []
        frontends += [(ip, "spec.externalIPs[%d]" % i) for i, ip in enumerate(svc["external_ips"])]
        for ip, path in frontends:
            for port in svc["ports"]:
                key = (ip, port["port"], port["protocol"])
                other = owners.get(key)
                if other is not None and other[0] is not svc:
                    first = other[0]["where"]
                    raise svc["where"].error(path, "%s:%d/%s is already a frontend of %s (%s, %s): one "
                                             "address, port and protocol lead to one Service", ip,
                                             port["port"], port["protocol"], first.what, first.doc, other[1])
                owners[key] = (svc, path)


def _check_dns_names(svc, domain):
    """The names the DNS will serve for this Service fit DNS (253 characters, labels of 63)."""
    base = "%s.%s.svc.%s" % (svc["name"], svc["namespace"], domain)
    longest = len(base) + (DNS_ENDPOINT_PREFIX if svc["cluster_ip"] is None else 0)
    if longest > DNS_NAME_MAX:
        raise svc["where"].error("metadata.name", "the DNS name %s...%s of this Service is %d characters "
                                 "with cluster_domain %s: a DNS name holds at most %d (shorten the name, the "
                                 "namespace or cluster_domain)", base[:20], base[-20:], longest, domain,
                                 DNS_NAME_MAX)
    for i, port in enumerate(svc["ports"]):
        if not port["name"]:
            continue
        label = "_" + port["name"]
        if len(label) > DNS_LABEL_MAX:
            raise svc["where"].error("spec.ports[%d].name" % i, "its SRV record's label %s... is %d "
                                     "characters: a DNS label holds at most %d (a port name of at most %d)",
                                     label[:20], len(label), DNS_LABEL_MAX, DNS_LABEL_MAX - 1)
        srv = "%s._%s.%s" % (label, port["protocol"].lower(), base)
        if len(srv) + (DNS_ENDPOINT_PREFIX if svc["cluster_ip"] is None else 0) > DNS_NAME_MAX:
            raise svc["where"].error("spec.ports[%d].name" % i, "its SRV record's name is longer than %d "
                                     "characters with cluster_domain %s (shorten the port name, the "
                                     "Service's name or cluster_domain)", DNS_NAME_MAX, domain)


def _allocate_node_ports(in_file_order, ordered, port_range, previous):
    """As for clusterIPs: explicit nodePorts, then previous ones, then the lowest free. A nodePort is
    unique per protocol cluster-wide, as in Kubernetes: TCP 30053 and UDP 30053 may coexist."""
    low, high = port_range
    owners = {protocol: {} for protocol in PROTOCOLS}
    for svc in in_file_order:
        for i, port in enumerate(svc["ports"]):
            taken, number = owners[port["protocol"]], port["node_port"]
            if number in taken:
                other, j = taken[number]
                raise svc["where"].error("spec.ports[%d].nodePort" % i,
                                         "%d/%s is already the nodePort of %s, spec.ports[%d] (%s)",
                                         number, port["protocol"], other["where"].what, j, other["where"].doc)
            if number is not None:
                holder = next((other for other in ordered if other is not svc and other["wants_node_ports"]
                               and other["ports"] and _kept_node_port(previous, other, port) == number), None)
                if holder is not None:
                    raise svc["where"].error("spec.ports[%d].nodePort" % i, "%d/%s is the nodePort allocated "
                                             "earlier to %s (%s); a claim does not move another Service: "
                                             "give this one another nodePort, or move %s first", number,
                                             port["protocol"], holder["where"].what, holder["where"].doc,
                                             holder["where"].what)
                taken[number] = (svc, i)
    pending = []
    for svc in ordered:
        kept = _previous(previous, svc, "node_ports")
        kept = kept if isinstance(kept, dict) else {}
        for i, port in enumerate(svc["ports"]):
            if port["node_port"] is not None or not svc["wants_node_ports"]:
                continue
            number, taken = kept.get("%s/%d" % (port["protocol"], port["port"])), owners[port["protocol"]]
            if isinstance(number, int) and not isinstance(number, bool) and low <= number <= high \
                    and number not in taken:
                port["node_port"], taken[number] = number, (svc, i)
            else:
                pending.append((svc, i, port))
    free = {protocol: _free(range(low, high + 1), owners[protocol]) for protocol in PROTOCOLS}
    for svc, i, port in pending:
        port["node_port"] = next(free[port["protocol"]], None)
        if port["node_port"] is None:
            raise svc["where"].error("spec.ports[%d].nodePort" % i, "no free %s NodePort left in %d-%d",
                                     port["protocol"], low, high)
        owners[port["protocol"]][port["node_port"]] = (svc, i)


# --- entry points ---------------------------------------------------------------------

def _network(name, value):
    try:
        net = ipaddress.IPv4Network(value, strict=False) if isinstance(value, str) else None
    except ValueError:
        net = None
    if net is None:
        raise ServiceSpecError("%s: %r is not an IPv4 network such as 10.96.0.0/12" % (name, value))
    # A range of loopback, link-local or multicast addresses cannot carry Services or pods.
    for address in (net.network_address, net.broadcast_address):
        if net.prefixlen and special(address):
            raise ServiceSpecError("%s: %s holds addresses no Service or pod may have: %s is %s"
                                   % (name, net, address, special(address)))
    return net


def _port_range(value):
    """"30000-32767" or [30000, 32767] -> (30000, 32767)."""
    try:
        low, high = (int(p) for p in (value.split("-") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        low = high = 0
    if not 1 <= low <= high <= 65535:
        raise ServiceSpecError("node_port_range: %r is not a port range such as 30000-32767" % (value,))
    return low, high


def _service_model(svc, pods):
    selector = svc["selector"]
    selected = [p for p in pods if selector and p.get("namespace", DEFAULT_NAMESPACE) == svc["namespace"]
                and all((p.get("labels") or {}).get(k) == v for k, v in selector.items())]
    ports = []
    for index, port in enumerate(svc["ports"]):
        if svc["type"] == "ExternalName":
            endpoints = []
        elif selector:
            endpoints = _pod_endpoints(svc, index, port, selected)
        else:
            endpoints = next((found for name, protocol, found in svc["manual"]
                              if (name, protocol) == (port["name"], port["protocol"])), [])
        ports.append({"name": port["name"], "protocol": port["protocol"], "port": port["port"],
                      "node_port": port["node_port"], "target_port": port["target_port"],
                      "endpoints": _sorted_endpoints(endpoints)})
    model = {key: svc[key] for key in ("namespace", "name", "type", "cluster_ip", "external_name",
                                       "external_ips", "external_traffic_policy", "internal_traffic_policy",
                                       "session_affinity_timeout")}
    model["ports"] = ports
    if svc["type"] != "ExternalName" and not svc["cluster_ip"] and not svc["ports"] and selector:
        # A headless Service without ports still names its ready pods (Kubernetes' EndpointSlice
        # controller lists them port-less, CoreDNS answers their A records): the DNS reads these.
        model["addresses"] = sorted({p["ip"] for p in selected if p.get("ip")},
                                    key=ipaddress.IPv4Address)
    return model


def load_services(text, filename, pods, previous=None, service_cidr="10.96.0.0/12",
                  node_port_range="30000-32767", cluster_cidr="10.244.0.0/16", dns_ip=None,
                  cluster_domain=None, warn=None):
    """Parse, validate, resolve and allocate the services file `text`; return the services model.

    `filename` names the file in errors. `pods` are podnet's pods ({namespace, name, labels,
    ports, ip, node}); a pod with ip None validates named targetPorts but gives no endpoint.
    `previous` is allocations() of an earlier model: a Service keeps its clusterIP and
    nodePorts while they stay free and valid. `dns_ip` is the cluster DNS address, which no Service
    may hold; with `cluster_domain` every name the DNS will serve is checked to fit. `warn` is
    called with the message of each legal but surprising input. Raises ServiceSpecError.
    """
    return resolve_services(read_services(text, filename, previous, service_cidr, node_port_range,
                                          cluster_cidr, dns_ip, cluster_domain, warn), pods)


# What a checked Service keeps for resolving: the model's fields, its selector and the
# endpoints its Endpoints / EndpointSlice objects gave.
CHECKED_FIELDS = ("namespace", "name", "type", "cluster_ip", "external_name", "external_ips",
                  "external_traffic_policy", "internal_traffic_policy", "session_affinity_timeout",
                  "selector", "ports")


def _settings(service_cidr, cluster_cidr, node_port_range):
    """(service network, cluster network, (low, high) nodePorts), checked."""
    net = _network("service_cidr", service_cidr)
    cluster = _network("cluster_cidr", cluster_cidr)
    if net.overlaps(cluster):
        raise ServiceSpecError("service_cidr: %s overlaps cluster_cidr %s: a ClusterIP would be a pod's "
                               "address; choose ranges apart (Kubernetes' defaults: 10.96.0.0/12 and "
                               "10.244.0.0/16)"
                               % (net, cluster))
    return net, cluster, _port_range(node_port_range)


def _parse_object(where, kind, obj, net, port_range):
    if kind == "Service":
        return _parse_service(where, obj, net, port_range)
    return (_parse_endpoints if kind == "Endpoints" else _parse_slice)(where, obj, net)


def _checked_entry(svc):
    """A Service as read_services returns it (JSON-safe)."""
    return dict({key: svc[key] for key in CHECKED_FIELDS}, where=svc["where"].state(),
                manual=[[name, protocol, found] for (name, protocol), found in svc["manual"].items()])


def read_services(text, filename, previous=None, service_cidr="10.96.0.0/12",
                  node_port_range="30000-32767", cluster_cidr="10.244.0.0/16", dns_ip=None,
                  cluster_domain=None, warn=None, keep=None):
    """The services file `text` parsed, validated and allocated, endpoints not resolved yet:
    JSON-safe, so the plan reads the file once and the Services resolve this against the
    pods the nodes run (`resolve_services`). Arguments as load_services'. `keep`, a dict, is
    filled with what recheck_services needs to check this file again once only its
    Endpoints and EndpointSlices changed (left empty when the file cannot be split simply)."""
    net, cluster, port_range = _settings(service_cidr, cluster_cidr, node_port_range)
    services, sources, seen = {}, [], {}
    for where, kind, obj in objects(text, filename, "services", ServiceSpecError):
        item = _parse_object(where, kind, obj, net, port_range)
        key = (kind,) + item["key"]
        if key in seen:
            raise where.error("metadata.name", "duplicate %s %s/%s; the first is %s", *key, seen[key])
        seen[key] = where.doc
        if kind == "Service":
            services[item["key"]] = item
        else:
            sources.append(item)
    warn = warn or (lambda message: None)
    said = []  # each source's warnings, in file order, as recheck_services replays them
    for source in sources:
        said.append([])
        _attach_endpoints(services, [source], lambda message: said[-1].append(message) or warn(message))
    tail = []
    for svc in services.values():
        if svc["type"] == "ExternalName":
            # dnsmasq answers the CNAME but does not chase it, where CoreDNS adds the target's
            # addresses (docs/dns.md): say so where the user meets it.
            tail.append(svc["where"].warning("spec.externalName", "answered as a CNAME to %s without its "
                                             "addresses (podnet's DNS does not chase it, CoreDNS does): "
                                             "clients whose resolver does not follow CNAMEs (glibc's "
                                             "getaddrinfo) get no address; see docs/dns.md",
                                             svc["external_name"]))
            warn(tail[-1])
    in_file_order, ordered = list(services.values()), [services[key] for key in sorted(services)]
    _allocate_cluster_ips(in_file_order, ordered, net, previous, dns_ip or None)
    _check_frontends(in_file_order)
    _allocate_node_ports(in_file_order, ordered, port_range, previous)
    for svc in in_file_order if cluster_domain else ():
        _check_dns_names(svc, cluster_domain.rstrip(".").lower())
    checked = {"cluster_cidr": str(cluster), "service_cidr": str(net), "node_port_range": list(port_range),
               "services": [_checked_entry(svc) for svc in ordered]}
    if keep is not None:
        keep.clear()
        keep.update(_recheck_state(text, filename, services, sources, said, tail, checked))
    return checked


# --- checking again when only endpoints changed ---------------------------------------
#
# At 10,000 Services a changed endpoint is one document of 20,000, yet read_services checks
# them all (seconds). recheck_services checks again only what such a change can touch, from
# what read_services kept: each piece of the file (manifests.chunks) by digest, with where
# it starts and what it holds (a Service, or an Endpoints or EndpointSlice and the Service it
# feeds), each source's warnings, and each checked Service's compact text. When every piece
# that came, went or changed is one Endpoints or EndpointSlice object, every other piece
# stands where it stood (so every error and warning would name the same document and line),
# and nothing else differs (the caller's part: the same settings, the same previous
# allocations), the Services are the same, allocated the same, and only the endpoints of the
# Services those objects feed change: those Services' sources are read again, in file order,
# and attached as read_services attaches them. Anything else, or any error, and it says None:
# the caller checks the file whole, which finds the error and says it as it always does.


def _recheck_state(text, filename, services, sources, said, tail, checked):
    pieces = chunks(text)
    if pieces is None or len({piece[0] for piece in pieces}) != len(pieces):
        return {}
    firsts = [piece[2] for piece in pieces]
    counts, numbers = [0] * len(pieces), {}
    for number, line, _data in documents(text, filename, ServiceSpecError):
        at = bisect.bisect_right(firsts, line) - 1
        counts[at] += 1
        numbers[number] = at
    tags = [[] for piece in pieces]
    for items, tag in ((services.values(), lambda item: ["S", *item["key"]]),
                       (sources, lambda item: ["E", item["where"].kind, *item["key"], *item["service"]])):
        for item in items:
            at = numbers[item["where"].number]
            listed = item["where"].item is not None or counts[at] != 1 or tags[at]
            tags[at] = ["X"] if listed else tag(item)
    entries, number = [], 1
    for (digest, _chunk, line), count, tag in zip(pieces, counts, tags, strict=True):
        entries.append([digest, number, line, count, tag])
        number += count
    told = {}
    for source, words in zip(sources, said, strict=True):
        if words:
            told.setdefault(pieces[numbers[source["where"].number]][0], []).extend(words)
    return {"chunks": entries, "said": told, "tail": tail,
            "head": compact(dict(checked, services=[]))[:-2],
            "services": [["%s/%s" % (svc["namespace"], svc["name"]), compact(svc)]
                         for svc in checked["services"]]}


def _read_again(filename, chunk, number, line, net, port_range):
    """The one object of a piece of the file, parsed and checked where it stands; None
    when the piece holds anything else."""
    parsed = parse_alone(chunk)
    if parsed is None or len(parsed) != 1 or not isinstance(parsed[0][1], dict):
        return None
    offset, data = parsed[0]
    where = Where(filename, number, line + offset, error=ServiceSpecError)
    kind = kind_of(where, data)
    if kind == "List":
        return None
    return _parse_object(where, kind, data, net, port_range)


def recheck_services(text, filename, state, service_cidr="10.96.0.0/12", node_port_range="30000-32767",
                     cluster_cidr="10.244.0.0/16"):
    """(compact text of read_services' result, its warnings, the state for the next time) for
    `text`, from `state` (what read_services or this kept for the file as it was, under the
    same settings and previous allocations); None when that cannot be sure (see above)."""
    try:
        return _recheck(text, filename, state, *_settings(service_cidr, cluster_cidr, node_port_range))
    except (ManifestError, LookupError, TypeError, ValueError):
        return None


def _recheck(text, filename, state, net, _cluster, port_range):
    pieces = chunks(text)
    if pieces is None or not state or not state.get("chunks"):
        return None
    before = {entry[0]: entry for entry in state["chunks"]}
    now, fresh, number = [], {}, 1
    for digest, chunk, line in pieces:
        entry = before.get(digest)
        if entry is not None:
            if entry[1:3] != [number, line]:
                return None  # it moved: its errors and warnings would name another place
            now.append(entry)
            number += entry[3]
            continue
        item = _read_again(filename, chunk, number, line, net, port_range)
        if item is None or item["where"].kind not in ("Endpoints", "EndpointSlice"):
            return None
        fresh[digest] = item
        now.append([digest, number, line, 1, ["E", item["where"].kind, *item["key"], *item["service"]]])
        number += 1
    present = {entry[0] for entry in now}
    if len(present) != len(now):
        return None
    gone = [entry for digest, entry in before.items() if digest not in present]
    if any(entry[4][:1] != ["E"] for entry in gone):
        return None
    feeding = [entry for entry in now if entry[4][:1] == ["E"]]
    if len({tuple(entry[4][1:4]) for entry in feeding}) != len(feeding):
        return None  # a duplicate: the whole check names both
    texts = {piece[0]: piece[1] for piece in pieces}
    homes = {tuple(entry[4][1:3]): entry for entry in now if entry[4][:1] == ["S"]}
    said = {digest: words for digest, words in state["said"].items() if digest in texts}
    entries = dict(state["services"])
    fed = {tuple(entry[4][4:6]) for entry in gone} | {item["service"] for item in fresh.values()}
    for key in sorted(fed):
        home = homes.get(key)
        if home is None:
            return None  # no such Service (or one in a List): the whole check says so
        svc = _read_again(filename, texts[home[0]], home[1], home[2], net, port_range)
        if svc is None or svc["where"].kind != "Service" or svc["key"] != key:
            return None
        for entry in feeding:
            if tuple(entry[4][4:6]) != key:
                continue
            source = fresh.get(entry[0]) or _read_again(filename, texts[entry[0]], entry[1], entry[2], net,
                                                        port_range)
            if source is None:
                return None
            told = []
            _attach_endpoints({key: svc}, [source], told.append)
            said.pop(entry[0], None)
            if told:
                said[entry[0]] = told
        name = "%s/%s" % key
        entries[name] = compact(dict(json.loads(entries[name]), manual=_checked_entry(svc)["manual"]))
    order = [entry[0] for entry in state["services"]]
    warnings = [words for entry in now for words in said.get(entry[0], ())] + state["tail"]
    text = state["head"] + ",".join(entries[name] for name in order) + "]}"
    kept = dict(state, chunks=now, said=said, services=[[name, entries[name]] for name in order])
    return text, warnings, kept


def resolve_services(checked, pods):
    """The services model: read_services' Services with their endpoints from `pods` (as
    load_services takes them). Raises ServiceSpecError (a named targetPort no pod declares)."""
    pods = list(pods or [])
    return dict({key: checked[key] for key in ("cluster_cidr", "service_cidr", "node_port_range")},
                services=[_service_model(svc, pods) for svc in checked["services"]])


def resolve_service(svc, pods):
    """One Service of resolve_services' model, from its checked entry."""
    return _service_model(svc, list(pods or []))


def check_allocations(data, path):
    """The allocations a node persisted (what allocations() wrote), checked: a file edited by hand
    into another shape is an error naming the file, never a traceback or a silent reallocation."""
    fix = "fix it, or remove it to let the plan allocate afresh (Services may then move)"
    if not isinstance(data, dict):
        raise ServiceSpecError("%s: must map \"namespace/name\" to {cluster_ip, node_ports}, got a %s; %s"
                               % (path, type(data).__name__, fix))
    for key, entry in data.items():
        namespace, slash, name = key.partition("/")
        if not slash or not namespace or not name or not isinstance(entry, dict):
            raise ServiceSpecError("%s: %s: must be \"namespace/name\": {cluster_ip, node_ports}, got %s; %s"
                                   % (path, bounded_key(key), type(entry).__name__, fix))
        ip, ports = entry.get("cluster_ip"), entry.get("node_ports", {})
        numbers = ports.items() if isinstance(ports, dict) else [(None, None)]
        if ip is not None and not isinstance(ip, str) or not all(
                isinstance(p, str) and isinstance(n, int) and not isinstance(n, bool) for p, n in numbers):
            raise ServiceSpecError("%s: %s: cluster_ip must be an address and node_ports map \"TCP/80\" to a "
                                   "number; %s" % (path, bounded_key(key), fix))
    return data


def bounded_key(key):
    return key if len(key) <= 120 else key[:117] + "..."


def allocations(model):
    """{"ns/name": {"cluster_ip": ..., "node_ports": {"TCP/80": 31380}}}: what load_services keeps
    stable across runs when given back as `previous`."""
    return {"%s/%s" % (svc["namespace"], svc["name"]): {
        "cluster_ip": svc["cluster_ip"],
        "node_ports": {"%s/%d" % (p["protocol"], p["port"]): p["node_port"]
                       for p in svc["ports"] if p["node_port"] is not None},
    } for svc in model["services"]}

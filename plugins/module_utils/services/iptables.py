"""Pure core of podnet_proxy_iptables: one node's Service rules, laid out as kube-proxy lays them.

Input is the services model (docs/services.md); output is a ruleset:

    {"filter": {chain: [rule, ...]}, "nat": {chain: [rule, ...]}, "jumps": [(table, builtin, rule), ...]}

Chains hold only podnet's own chains (all KUBE-*); a rule is the text that follows `-A CHAIN `
in iptables-restore input. The chains and rules are those of kube-proxy's iptables proxier
(pkg/proxy/iptables/proxier.go), so the output can be read against the Kubernetes docs:

nat
  KUBE-SERVICES     per Service port: ClusterIP -> internal chain (KUBE-SVC-, or KUBE-SVL- with
                    internalTrafficPolicy Local); each externalIP -> KUBE-EXT-; last, traffic to
                    this node's own addresses (never 127.0.0.0/8) -> KUBE-NODEPORTS
  KUBE-NODEPORTS    per nodePort -> KUBE-EXT-
  KUBE-EXT-<h>      external destinations: eTP Cluster masquerades, then KUBE-SVC-; eTP Local sends
                    pods and the node itself to KUBE-SVC- (the node masqueraded), anyone else to
                    KUBE-SVL-
  KUBE-SVC-<h>      all ready endpoints, picked with -m statistic (1/n, 1/(n-1), ... 1/2, then
                    the last unconditionally); with internalTrafficPolicy Cluster its first rule
                    masquerades ClusterIP traffic from outside the cluster CIDR
  KUBE-SVL-<h>      the same over this node's endpoints only
  KUBE-SEP-<h>      one endpoint: hairpin masquerade, then DNAT
  KUBE-MARK-MASQ    sets mark bit 0x4000; KUBE-POSTROUTING masquerades what carries it
filter
  KUBE-SERVICES          ClusterIP with no endpoints: REJECT (no local ones, iTP Local: DROP)
  KUBE-EXTERNAL-SERVICES externalIP / nodePort with no endpoints: REJECT; with eTP Local and no
                         endpoint on this node: DROP what the KUBE-EXT- chain did not short-circuit
  KUBE-FORWARD           lets marked (Service) traffic and its replies through FORWARD

Chain names are kube-proxy's: a prefix and the first 16 characters of
base32(sha256(servicePortName + protocol [+ "ip:port"])), servicePortName being
"namespace/name:port" ("namespace/name" for a Service's single unnamed port).

No I/O here: the module runs iptables and iptables-restore and passes text in and out.
"""

import base64
import hashlib
import ipaddress

TABLES = ("filter", "nat")
MASQ_MARK = "0x4000"
LOOPBACK = "127.0.0.0/8"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
CHAIN_PREFIX = "KUBE-"

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
EXT_PREFIX = "KUBE-EXT-"
FW_PREFIX = "KUBE-FW-"
SEP_PREFIX = "KUBE-SEP-"


def _comment(text):
    # Service and port names are DNS labels: never a quote or a backslash inside.
    return '-m comment --comment "%s"' % text


# The rules that hook podnet's chains into the built-in chains: the module adds each one
# (iptables -C, then -I) outside the restore, because a --noflush restore could only append
# them again. Listed in the order they must end up, top to bottom, in each built-in chain:
# kube-proxy prepends every jump, so they sit before anything else in those chains.
JUMPS = (
    ("filter", "INPUT",
     "-m conntrack --ctstate NEW %s -j %s"
     % (_comment("kubernetes externally-visible service portals"), KUBE_EXTERNAL_SERVICES)),
    ("filter", "FORWARD", "%s -j %s" % (_comment("kubernetes forwarding rules"), KUBE_FORWARD)),
    ("filter", "FORWARD",
     "-m conntrack --ctstate NEW %s -j %s" % (_comment("kubernetes service portals"), KUBE_SERVICES)),
    ("filter", "FORWARD",
     "-m conntrack --ctstate NEW %s -j %s"
     % (_comment("kubernetes externally-visible service portals"), KUBE_EXTERNAL_SERVICES)),
    ("filter", "OUTPUT",
     "-m conntrack --ctstate NEW %s -j %s" % (_comment("kubernetes service portals"), KUBE_SERVICES)),
    ("nat", "PREROUTING", "%s -j %s" % (_comment("kubernetes service portals"), KUBE_SERVICES)),
    ("nat", "OUTPUT", "%s -j %s" % (_comment("kubernetes service portals"), KUBE_SERVICES)),
    ("nat", "POSTROUTING", "%s -j %s" % (_comment("kubernetes postrouting rules"), KUBE_POSTROUTING)),
)


class ProxyModelError(ValueError):
    """The services model cannot be rendered (bad protocol, address, duplicate port...)."""


# --- names ----------------------------------------------------------------------------------------


def service_port_name(namespace, name, port_name):
    """kube-proxy's ServicePortName.String(): "ns/name:port", or "ns/name" for an unnamed port."""
    base = "%s/%s" % (namespace, name)
    return "%s:%s" % (base, port_name) if port_name else base


def _hash16(text):
    return base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")[:16]


def service_chain_name(prefix, port_name, protocol):
    """KUBE-SVC-/SVL-/EXT-/FW- chain of a Service port; protocol lowercase ("tcp")."""
    return prefix + _hash16(port_name + protocol)


def endpoint_chain_name(port_name, protocol, endpoint):
    """KUBE-SEP- chain of one endpoint ("ip:port") of a Service port."""
    return SEP_PREFIX + _hash16(port_name + protocol + endpoint)


def probability(n):
    """The -m statistic probability that picks one of n remaining endpoints evenly (kube-proxy's format)."""
    return "%0.10f" % (1.0 / n)


# --- validation -----------------------------------------------------------------------------------


def _ipv4(value, what):
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError) as exc:
        raise ProxyModelError("%s: %r is not an IPv4 address" % (what, value)) from exc


def _cidr(value):
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError) as exc:
        raise ProxyModelError("cluster_cidr: %r is not an IPv4 network" % (value,)) from exc


def _port(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ProxyModelError("%s: %r is not a port number" % (what, value))
    return value


def _protocol(value, what):
    proto = PROTOCOLS.get(str(value).upper())
    if proto is None:
        raise ProxyModelError("%s: protocol %r is not one of TCP, UDP, SCTP" % (what, value))
    return proto


# --- rendering ------------------------------------------------------------------------------------


def _endpoints(port, what):
    """The ready endpoints as (ip, port, node, "ip:port"), once each, in model order."""
    seen = set()
    out = []
    for ep in port.get("endpoints") or []:
        ip = _ipv4(ep.get("ip"), what + " endpoint")
        number = _port(ep.get("port"), what + " endpoint " + ip)
        key = "%s:%d" % (ip, number)
        if key in seen:
            continue
        seen.add(key)
        out.append((ip, number, ep.get("node"), key))
    return out


def _to_endpoint_rules(spn, chain_of, endpoints, affinity):
    """Rules of a KUBE-SVC-/KUBE-SVL- chain: affinity checks, then an even random pick."""
    rules = []
    if affinity is not None:
        for _ip, _port_number, _node, key in endpoints:
            sep = chain_of[key]
            rules.append(
                "%s -m recent --name %s --mask 255.255.255.255 --rsource --rcheck --seconds %d --reap -j %s"
                % (_comment("%s -> %s" % (spn, key)), sep, affinity, sep)
            )
    count = len(endpoints)
    for i, (_ip, _port_number, _node, key) in enumerate(endpoints):
        pick = ""
        if i < count - 1:
            pick = " -m statistic --mode random --probability %s" % probability(count - i)
        rules.append("%s%s -j %s" % (_comment("%s -> %s" % (spn, key)), pick, chain_of[key]))
    return rules


def _add_chain(table, name, rules):
    if name in table:
        raise ProxyModelError("chain %s rendered twice (duplicate Service port?)" % name)
    table[name] = rules


def _render_port(nat, filt, svc, port, node, cluster_cidr):
    namespace, name = svc.get("namespace"), svc.get("name")
    spn = service_port_name(namespace, name, port.get("name") or "")
    proto = _protocol(port.get("protocol", "TCP"), spn)
    number = _port(port.get("port"), spn + " port")
    node_port = port.get("node_port")
    if node_port is not None:
        node_port = _port(node_port, spn + " node_port")
    cluster_ip = _ipv4(svc["cluster_ip"], spn + " cluster_ip")
    external_ips = [_ipv4(ip, spn + " external_ips") for ip in svc.get("external_ips") or []]
    affinity = svc.get("session_affinity_timeout")
    if affinity is not None and (isinstance(affinity, bool) or not isinstance(affinity, int) or affinity < 1):
        raise ProxyModelError("%s: session_affinity_timeout %r is not a number of seconds" % (spn, affinity))

    svc_chain = service_chain_name(SVC_PREFIX, spn, proto)
    svl_chain = service_chain_name(SVL_PREFIX, spn, proto)
    ext_chain = service_chain_name(EXT_PREFIX, spn, proto)

    endpoints = _endpoints(port, spn)
    local = [ep for ep in endpoints if ep[2] is not None and ep[2] == node]
    internal_local = svc.get("internal_traffic_policy") == "Local"
    externally_accessible = bool(node_port) or bool(external_ips)
    # As kube-proxy: the policy applies to whatever is reachable from outside (nodePorts, and
    # externalIPs, a ClusterIP Service's included).
    external_local = svc.get("external_traffic_policy") == "Local" and externally_accessible

    has_endpoints = bool(endpoints)
    # Which endpoint sets the rules use (kube-proxy's CategorizeEndpoints): eTP Local still needs
    # the cluster-wide set for the pod / node short-circuit.
    cluster_endpoints = endpoints if (not internal_local or externally_accessible) else []
    local_endpoints = local if (internal_local or external_local) else []

    internal_chain = svl_chain if internal_local else svc_chain
    has_internal = has_endpoints and (not internal_local or bool(local))
    external_policy_chain = svl_chain if external_local else svc_chain
    has_external = has_endpoints and (not external_local or bool(local))
    uses_ext_chain = has_endpoints and externally_accessible

    if not has_endpoints:
        internal_filter = external_filter = ("REJECT", "%s has no endpoints" % spn)
    else:
        internal_filter = external_filter = ("DROP", "%s has no local endpoints" % spn)
    # A DROP for eTP Local only concerns outside clients: pods and the node itself were sent
    # to all endpoints by KUBE-EXT- (so their packets no longer carry this destination anyway).
    outside_only = ""
    if external_filter[0] == "DROP":
        outside_only = " -m addrtype ! --src-type LOCAL"
        if cluster_cidr:
            outside_only = " ! -s %s%s" % (cluster_cidr, outside_only)

    cluster_ip_match = "-m %s -p %s -d %s --dport %d" % (proto, proto, cluster_ip, number)

    # ClusterIP.
    if has_internal:
        nat[KUBE_SERVICES].append(
            "%s %s -j %s" % (_comment(spn + " cluster IP"), cluster_ip_match, internal_chain))
    else:
        filt[KUBE_SERVICES].append(
            "%s %s -j %s" % (_comment(internal_filter[1]), cluster_ip_match, internal_filter[0]))

    # externalIPs.
    for ip in external_ips:
        match = "-m %s -p %s -d %s --dport %d" % (proto, proto, ip, number)
        if has_endpoints:
            nat[KUBE_SERVICES].append("%s %s -j %s" % (_comment(spn + " external IP"), match, ext_chain))
        if not has_external:
            filt[KUBE_EXTERNAL_SERVICES].append(
                "%s%s %s -j %s" % (_comment(external_filter[1]), outside_only, match, external_filter[0]))

    # nodePort: the node's own addresses only, never loopback (as in KUBE-SERVICES' last rule).
    if node_port:
        if has_endpoints:
            nat[KUBE_NODEPORTS].append(
                "%s -m %s -p %s --dport %d -j %s" % (_comment(spn), proto, proto, node_port, ext_chain))
        if not has_external:
            filt[KUBE_EXTERNAL_SERVICES].append(
                "%s%s -m addrtype --dst-type LOCAL ! -d %s -m %s -p %s --dport %d -j %s"
                % (_comment(external_filter[1]), outside_only, LOOPBACK, proto, proto, node_port,
                   external_filter[0]))

    # Masquerade ClusterIP traffic from outside the pod network, first rule of the internal chain.
    internal_masq = []
    if has_internal and cluster_cidr:
        internal_masq.append("%s %s ! -s %s -j %s" % (
            _comment(spn + " cluster IP"), cluster_ip_match, cluster_cidr, KUBE_MARK_MASQ))

    if uses_ext_chain:
        rules = []
        if not external_local:
            rules.append("%s -j %s" % (
                _comment("masquerade traffic for %s external destinations" % spn), KUBE_MARK_MASQ))
        else:
            if cluster_cidr:
                rules.append("%s -s %s -j %s" % (
                    _comment("pod traffic for %s external destinations" % spn), cluster_cidr, svc_chain))
            rules.append("%s -m addrtype --src-type LOCAL -j %s" % (
                _comment("masquerade LOCAL traffic for %s external destinations" % spn), KUBE_MARK_MASQ))
            rules.append("%s -m addrtype --src-type LOCAL -j %s" % (
                _comment("route LOCAL traffic for %s external destinations" % spn), svc_chain))
        if has_external:
            rules.append("-j %s" % external_policy_chain)
        _add_chain(nat, ext_chain, rules)

    reachable_keys = {ep[3] for ep in cluster_endpoints} | {ep[3] for ep in local_endpoints}
    reachable = [ep for ep in endpoints if ep[3] in reachable_keys]
    chain_of = {ep[3]: endpoint_chain_name(spn, proto, ep[3]) for ep in reachable}

    if cluster_endpoints:
        _add_chain(nat, svc_chain, (internal_masq if internal_chain == svc_chain else [])
                   + _to_endpoint_rules(spn, chain_of, cluster_endpoints, affinity))
    if local_endpoints:
        _add_chain(nat, svl_chain, (internal_masq if internal_chain == svl_chain else [])
                   + _to_endpoint_rules(spn, chain_of, local_endpoints, affinity))

    for ip, ep_port, _node, key in reachable:
        recent = ""
        if affinity is not None:
            recent = " -m recent --name %s --mask 255.255.255.255 --rsource --set" % chain_of[key]
        _add_chain(nat, chain_of[key], [
            "%s -s %s -j %s" % (_comment(spn), ip, KUBE_MARK_MASQ),
            "%s%s -m %s -p %s -j DNAT --to-destination %s:%d"
            % (_comment(spn), recent, proto, proto, ip, ep_port),
        ])


def _proxied(svc):
    """Headless Services, ExternalName and Services without ports get no rules."""
    if svc.get("type") == "ExternalName":
        return False
    cluster_ip = svc.get("cluster_ip")
    if cluster_ip is None or cluster_ip in ("", "None"):
        return False
    return bool(svc.get("ports"))


def render_iptables(model, node, cluster_cidr=None):
    """The iptables ruleset of Service proxying on `node` (see the module docstring)."""
    if cluster_cidr is None:
        cluster_cidr = model.get("cluster_cidr")
    cluster_cidr = _cidr(cluster_cidr) if cluster_cidr else None

    nat = {
        KUBE_SERVICES: [],
        KUBE_NODEPORTS: [],
        KUBE_POSTROUTING: [
            "-m mark ! --mark %s/%s -j RETURN" % (MASQ_MARK, MASQ_MARK),
            "-j MARK --xor-mark %s" % MASQ_MARK,
            "%s -j MASQUERADE --random-fully" % _comment("kubernetes service traffic requiring SNAT"),
        ],
        KUBE_MARK_MASQ: ["-j MARK --or-mark %s" % MASQ_MARK],
    }
    filt = {KUBE_SERVICES: [], KUBE_EXTERNAL_SERVICES: [], KUBE_FORWARD: []}

    for svc in model.get("services") or []:
        if not _proxied(svc):
            continue
        for port in svc["ports"]:
            _render_port(nat, filt, svc, port, node, cluster_cidr)

    nat[KUBE_SERVICES].append(
        "%s -m addrtype --dst-type LOCAL ! -d %s -j %s"
        % (_comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
           LOOPBACK, KUBE_NODEPORTS))
    filt[KUBE_FORWARD] = [
        "-m conntrack --ctstate INVALID -j DROP",
        "%s -m mark --mark %s/%s -j ACCEPT" % (_comment("kubernetes forwarding rules"), MASQ_MARK, MASQ_MARK),
        "%s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        % _comment("kubernetes forwarding conntrack rule"),
    ]
    return {"filter": filt, "nat": nat, "jumps": list(JUMPS)}


# --- iptables-restore input -----------------------------------------------------------------------


def chain_names(ruleset):
    """{table: [chain, ...]} of a ruleset, in its order."""
    return {table: list((ruleset or {}).get(table) or {}) for table in TABLES}


def _checked(chains):
    for chain in chains:
        if not str(chain).startswith(CHAIN_PREFIX):
            # Declaring a built-in chain in a --noflush restore would flush it.
            raise ValueError("refusing to write chain %r: podnet only owns KUBE-* chains" % (chain,))
    return chains


def _chain_line(chain):
    return ":%s - [0:0]" % chain


def restore_text(ruleset, previous=None):
    """iptables-restore --noflush input that turns `previous` (or nothing) into `ruleset`.

    Only chains that are new or whose rules changed are declared (which flushes them) and
    refilled; chains of `previous` that are gone are declared too, so they are empty, and
    deleted with -X after every rewritten chain has dropped its references to them. `previous`
    must describe what the kernel holds. "" when nothing differs.
    """
    out = []
    for table in TABLES:
        new = (ruleset or {}).get(table) or {}
        if previous is None:
            changed, removed = list(new), []
        else:
            old = previous.get(table) or {}
            changed = [c for c in new if c not in old or list(old[c]) != list(new[c])]
            removed = [c for c in old if c not in new]
        if not changed and not removed:
            continue
        _checked(changed + removed)
        out.append("*%s" % table)
        out.extend(_chain_line(c) for c in changed + removed)
        for chain in changed:
            out.extend("-A %s %s" % (chain, rule) for rule in new[chain])
        out.extend("-X %s" % c for c in removed)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def removal_text(previous):
    """iptables-restore --noflush input that flushes and deletes every chain of `previous`.

    The jumps from the built-in chains must be removed first (they reference KUBE-SERVICES...).
    """
    out = []
    for table in TABLES:
        chains = _checked(list((previous or {}).get(table) or {}))
        if not chains:
            continue
        out.append("*%s" % table)
        out.extend(_chain_line(c) for c in chains)
        out.extend("-X %s" % c for c in chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""

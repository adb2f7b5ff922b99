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

What each Service port gets (which endpoints, what is masqueraded, REJECT or DROP) is decided
by services/categorize.py, for both backends; this file spells those decisions as chains.

No I/O here: the module runs iptables and iptables-restore and passes text in and out.
"""

import base64
import hashlib

from ansible_collections.podnet.network.plugins.module_utils.services.categorize import (  # pylint: disable=unused-import
    DROP,
    MASQ_EXTERNAL,
    MASQ_OUTSIDE_CLUSTER,
    ServiceModelError,
    categorize,
    checked_cluster_cidr,
    service_port_name,  # noqa: F401 - part of this module's API: the chain names are made from it
)

TABLES = ("filter", "nat")
MASQ_MARK = "0x4000"
LOOPBACK = "127.0.0.0/8"
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


# The model's checks are the categorisation's, the same for both backends.
ProxyModelError = ServiceModelError


# --- names ----------------------------------------------------------------------------------------


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


# --- rendering ------------------------------------------------------------------------------------


class _Chains:
    """The chain names of one Service port."""

    def __init__(self, port):
        self.svc = service_chain_name(SVC_PREFIX, port.name, port.l4)
        self.svl = service_chain_name(SVL_PREFIX, port.name, port.l4)
        self.ext = service_chain_name(EXT_PREFIX, port.name, port.l4)
        self.internal = self.svl if port.internal_local else self.svc
        self.external = self.svl if port.external_local else self.svc
        self.endpoint = {ep.key: endpoint_chain_name(port.name, port.l4, ep.key)
                         for ep in port.reachable_endpoints}


def _to_endpoint_rules(port, chains, endpoints):
    """Rules of a KUBE-SVC-/KUBE-SVL- chain: affinity checks, then an even random pick."""
    rules = []
    if port.affinity_timeout is not None:
        for ep in endpoints:
            sep = chains.endpoint[ep.key]
            rules.append(
                "%s -m recent --name %s --mask 255.255.255.255 --rsource --rcheck --seconds %d --reap -j %s"
                % (_comment("%s -> %s" % (port.name, ep.key)), sep, port.affinity_timeout, sep)
            )
    count = len(endpoints)
    for i, ep in enumerate(endpoints):
        pick = ""
        if i < count - 1:
            pick = " -m statistic --mode random --probability %s" % probability(count - i)
        rules.append("%s%s -j %s" % (_comment("%s -> %s" % (port.name, ep.key)), pick,
                                     chains.endpoint[ep.key]))
    return rules


def _add_chain(table, name, rules):
    if name in table:
        raise ProxyModelError("chain %s rendered twice (duplicate Service port?)" % name)
    table[name] = rules


def _filter_rule(verdict, match, cluster_cidr):
    """A REJECT or DROP of the categorisation. A DROP of external traffic concerns outside
    clients only: pods and the node itself were sent to every endpoint by KUBE-EXT- (so their
    packets no longer carry this destination anyway)."""
    target, why = verdict
    outside_only = ""
    if target == DROP:
        outside_only = " -m addrtype ! --src-type LOCAL"
        if cluster_cidr:
            outside_only = " ! -s %s%s" % (cluster_cidr, outside_only)
    return "%s%s %s -j %s" % (_comment(why), outside_only, match, target)


def _portal_rules(nat, filt, port, chains, cluster_cidr):
    """KUBE-SERVICES and KUBE-NODEPORTS: each destination of the port to its chain, or its verdict."""
    cluster_ip_match = "-m %s -p %s -d %s --dport %d" % (port.l4, port.l4, port.cluster_ip, port.port)
    if port.internal_verdict:
        filt[KUBE_SERVICES].append("%s %s -j %s" % (_comment(port.internal_verdict[1]), cluster_ip_match,
                                                    port.internal_verdict[0]))
    else:
        nat[KUBE_SERVICES].append(
            "%s %s -j %s" % (_comment(port.name + " cluster IP"), cluster_ip_match, chains.internal))
    for ip in port.external_ips:
        match = "-m %s -p %s -d %s --dport %d" % (port.l4, port.l4, ip, port.port)
        if port.endpoints:
            nat[KUBE_SERVICES].append("%s %s -j %s" % (_comment(port.name + " external IP"), match,
                                                       chains.ext))
        if port.external_verdict:
            filt[KUBE_EXTERNAL_SERVICES].append(_filter_rule(port.external_verdict, match, cluster_cidr))
    # nodePort: the node's own addresses only, never loopback (as in KUBE-SERVICES' last rule).
    if port.node_port:
        if port.endpoints:
            nat[KUBE_NODEPORTS].append("%s -m %s -p %s --dport %d -j %s"
                                       % (_comment(port.name), port.l4, port.l4, port.node_port, chains.ext))
        if port.external_verdict:
            match = "-m addrtype --dst-type LOCAL ! -d %s -m %s -p %s --dport %d" % (
                LOOPBACK, port.l4, port.l4, port.node_port)
            filt[KUBE_EXTERNAL_SERVICES].append(_filter_rule(port.external_verdict, match, cluster_cidr))


def _external_chain_rules(port, chains, cluster_cidr):
    """KUBE-EXT-: what reaches an externalIP or nodePort, masqueraded as the categorisation says."""
    rules = []
    if MASQ_EXTERNAL in port.masquerade:
        rules.append("%s -j %s" % (
            _comment("masquerade traffic for %s external destinations" % port.name), KUBE_MARK_MASQ))
    else:  # MASQ_EXTERNAL_FROM_NODE: pods and the node itself reach every endpoint
        if cluster_cidr:
            rules.append("%s -s %s -j %s" % (
                _comment("pod traffic for %s external destinations" % port.name), cluster_cidr, chains.svc))
        rules.append("%s -m addrtype --src-type LOCAL -j %s" % (
            _comment("masquerade LOCAL traffic for %s external destinations" % port.name), KUBE_MARK_MASQ))
        rules.append("%s -m addrtype --src-type LOCAL -j %s" % (
            _comment("route LOCAL traffic for %s external destinations" % port.name), chains.svc))
    if not port.external_verdict:
        rules.append("-j %s" % chains.external)
    return rules


def _endpoint_chains(nat, port, chains, cluster_cidr):
    """KUBE-SVC- (cluster endpoints), KUBE-SVL- (local ones) and a KUBE-SEP- per reachable endpoint."""
    # Masquerade ClusterIP traffic from outside the pod network, first rule of the internal chain.
    internal_masq = []
    if MASQ_OUTSIDE_CLUSTER in port.masquerade and not port.internal_verdict and cluster_cidr:
        internal_masq.append("%s -m %s -p %s -d %s --dport %d ! -s %s -j %s" % (
            _comment(port.name + " cluster IP"), port.l4, port.l4, port.cluster_ip, port.port, cluster_cidr,
            KUBE_MARK_MASQ))
    for chain, endpoints in ((chains.svc, port.cluster_endpoints), (chains.svl, port.local_endpoints)):
        if endpoints:
            _add_chain(nat, chain, (internal_masq if chains.internal == chain else [])
                       + _to_endpoint_rules(port, chains, endpoints))
    for ep in port.reachable_endpoints:
        sep = chains.endpoint[ep.key]
        recent = ""
        if port.affinity_timeout is not None:
            recent = " -m recent --name %s --mask 255.255.255.255 --rsource --set" % sep
        # kube-proxy's layout: every endpoint chain checks for hairpin (MASQ_HAIRPIN); only this
        # node's endpoints can ever match it.
        _add_chain(nat, sep, [
            "%s -s %s -j %s" % (_comment(port.name), ep.ip, KUBE_MARK_MASQ),
            "%s%s -m %s -p %s -j DNAT --to-destination %s"
            % (_comment(port.name), recent, port.l4, port.l4, ep.key),
        ])


def _render_port(nat, filt, port, cluster_cidr):
    chains = _Chains(port)
    _portal_rules(nat, filt, port, chains, cluster_cidr)
    if port.endpoints and port.externally_accessible:
        _add_chain(nat, chains.ext, _external_chain_rules(port, chains, cluster_cidr))
    _endpoint_chains(nat, port, chains, cluster_cidr)


def render_iptables(model, node, cluster_cidr=None):
    """The iptables ruleset of Service proxying on `node` (see the module docstring)."""
    if cluster_cidr is None:
        cluster_cidr = model.get("cluster_cidr")
    cluster_cidr = checked_cluster_cidr(cluster_cidr) if cluster_cidr else None

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

    for port in categorize(model, node):
        _render_port(nat, filt, port, cluster_cidr)

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

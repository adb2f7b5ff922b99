"""podCIDR allocation: which slice of the cluster CIDR each node owns.

Pure: the caller passes what the inventory says and what each node has
persisted; nothing here reads a file or a host.

The rules, in the order they are applied:
1. a host variable ``pod_cidr`` wins (it must lie inside the cluster CIDR and
   overlap no other node's podCIDR);
2. otherwise the podCIDR a node already holds (persisted on the node at its
   first allocation) is kept, so adding or removing a node never moves another
   node's pods;
3. remaining nodes get the lowest free subnet of the node mask size, in
   inventory order.
Any conflict is an error before anything is changed anywhere: overlapping podCIDRs, a
podCIDR too small for host-local (which needs the gateway and one pod), and a cluster CIDR
or podCIDR that covers a node's own LAN (its node IP's network), where pod and node
addresses would collide.
"""

import ipaddress


class PodCIDRError(ValueError):
    """A podCIDR that cannot be honoured; the message names the node and field."""


def parse_network(value, what):
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise PodCIDRError("%s: %r is not a valid network CIDR (%s)" % (what, value, exc)) from None
    if network.version != 4:
        raise PodCIDRError("%s: %s is not IPv4; podnet is IPv4 only" % (what, value))
    return network


# host-local hands out a podCIDR's addresses but the network, the broadcast and the bridge's
# gateway: a /30 holds one pod, a /31 or /32 none.
LONGEST_POD_PREFIX = 30
PERSISTED_FILE = "/etc/podnet/node.json"


def _lans(nodes):
    """[(node, LAN network, node IP)] of the nodes that reported theirs ("192.168.56.11/24")."""
    lans = []
    for node in nodes:
        if node.get("node_network"):
            try:
                interface = ipaddress.ip_interface(str(node["node_network"]))
            except ValueError:
                continue
            if interface.version == 4:
                lans.append((node["name"], interface.network, interface.ip))
    return lans


def _check_lans(what, network, lans, hint):
    for name, lan, ip in lans:
        if network.overlaps(lan):
            raise PodCIDRError("%s %s overlaps node %s's LAN %s (its node IP %s): pods and the nodes' own "
                               "network would share addresses; %s" % (what, network, name, lan, ip, hint))


def allocate_pod_cidrs(cluster_cidr, node_cidr_mask_size, nodes):
    """Return {node: {"pod_cidr": str, "source": inventory|persisted|allocated}}.

    ``nodes`` is a list of dicts in inventory order:
    ``{"name": str, "pod_cidr": str or None, "persisted": str or None, "node_network": str or None}``
    (``node_network``: the node IP with its prefix, as the node reports it).
    """
    cluster = parse_network(cluster_cidr, "cluster_cidr")
    lans = _lans(nodes)
    _check_lans("cluster_cidr:", cluster, lans, "choose a cluster_cidr outside every node's LAN")
    try:
        mask = int(node_cidr_mask_size)
    except (TypeError, ValueError):
        raise PodCIDRError("node_cidr_mask_size: %r is not a number" % (node_cidr_mask_size,)) from None
    if not cluster.prefixlen <= mask <= LONGEST_POD_PREFIX:
        raise PodCIDRError(
            "node_cidr_mask_size: /%d must be between the cluster CIDR's /%d and /%d (host-local needs room "
            "for the gateway and a pod)" % (mask, cluster.prefixlen, LONGEST_POD_PREFIX))

    taken = {}  # network -> (node, how it was chosen)
    result = {}

    def claim(name, network, source, where):
        for other, (owner, owner_source) in taken.items():
            if network.overlaps(other):
                raise PodCIDRError(
                    "node %s: %s %s overlaps node %s's podCIDR %s (%s)"
                    % (name, where, network, owner, other, owner_source))
        taken[network] = (name, source)
        result[name] = {"pod_cidr": str(network), "source": source}

    names = [node["name"] for node in nodes]
    if len(set(names)) != len(names):
        raise PodCIDRError("nodes: duplicate node names in %s" % names)

    for node in nodes:
        if node.get("pod_cidr"):
            network = parse_network(node["pod_cidr"], "node %s: pod_cidr" % node["name"])
            if not network.subnet_of(cluster):
                raise PodCIDRError("node %s: pod_cidr %s is outside cluster_cidr %s"
                                   % (node["name"], network, cluster))
            if network.prefixlen > LONGEST_POD_PREFIX:
                raise PodCIDRError("node %s: pod_cidr %s is a /%d: host-local needs at least a /%d (the "
                                   "gateway and one pod)"
                                   % (node["name"], network, network.prefixlen, LONGEST_POD_PREFIX))
            claim(node["name"], network, "inventory", "pod_cidr")

    for node in nodes:
        if node["name"] in result or not node.get("persisted"):
            continue
        # A record podnet wrote is a network; anything else was edited by hand, and guessing
        # would move the node's pods: refused, saying how to start afresh.
        network = parse_network(node["persisted"], "node %s: the podCIDR persisted in %s (remove the file to "
                                "allocate afresh)" % (node["name"], PERSISTED_FILE))
        if not network.subnet_of(cluster) or network.prefixlen > LONGEST_POD_PREFIX:
            continue  # the cluster CIDR or mask changed: the old slice no longer exists
        claim(node["name"], network, "persisted", "persisted podCIDR")

    candidates = cluster.subnets(new_prefix=mask)
    for node in nodes:
        if node["name"] in result:
            continue
        for candidate in candidates:
            if not any(candidate.overlaps(other) for other in taken):
                claim(node["name"], candidate, "allocated", "podCIDR")
                break
        else:
            raise PodCIDRError(
                "node %s: cluster_cidr %s has no free /%d left for this node (%d nodes)"
                % (node["name"], cluster, mask, len(nodes)))
    return result

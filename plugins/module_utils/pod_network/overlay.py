"""Which road a packet takes to another node's pods: a direct route, or VXLAN.

A podCIDR route via a node's IP only works when that IP is a direct next hop: both nodes on
one L2 segment. Across a router (another subnet, a VLAN, a VPS) the router knows nothing of
podCIDRs, so podnet wraps pod traffic for those peers in VXLAN, node IP to node IP, and keeps
direct routes for the peers it can reach directly (flannel's "DirectRouting").

The layout is flannel's vxlan backend's, so flannel's documentation reads for podnet too:

- one device per node, ``podnet.1``: VNI 1, UDP port 8472, local address the node IP,
  learning off (every entry is programmed, nothing is flooded), MTU the underlay's minus
  VXLAN_OVERHEAD;
- its VTEP address is the podCIDR's network address (10.244.3.0 for 10.244.3.0/24), /32 on
  the device; its MAC is derived from that address (``0a:58:`` and the address's four
  octets), so no control plane has to publish it;
- per peer reached by VXLAN: a route ``<podCIDR> via <peer VTEP> dev podnet.1 onlink``, a
  permanent neighbour ``<peer VTEP> lladdr <peer MAC>`` and a permanent FDB entry
  ``<peer MAC> dst <peer node IP>``.

The choice is made per pair of nodes and is the same from both ends: direct only when each
node's IP is on a subnet the other is connected to. A node answering over VXLAN a peer that
sends directly (or the reverse) would need the device anyway, and one road per pair is what
a reader expects to see.

No I/O here: the plan passes the nodes' facts in.
"""

# Annotations stay text: `X | None` must not be evaluated on a node's Python older than 3.10.
from __future__ import annotations

import ipaddress

MODES = ("auto", "vxlan", "none")
# What VXLAN adds to every inner IPv4 packet: outer IPv4 header 20 + UDP 8 + VXLAN 8 + the
# inner Ethernet header 14. A pod's MTU is the underlay's minus this when any peer is VXLAN.
VXLAN_OVERHEAD = 50
DEFAULT_DEVICE = "podnet.1"
DEFAULT_VNI = 1
DEFAULT_PORT = 8472


class OverlayError(ValueError):
    """The nodes cannot reach each other's pods the way the inventory asks."""


def vtep_address(pod_cidr) -> str:
    return str(ipaddress.IPv4Network(pod_cidr, strict=True).network_address)


def vtep_mac(pod_cidr) -> str:
    """A locally administered unicast MAC derived from the VTEP address (0a:58:a:b:c:d)."""
    octets = ipaddress.IPv4Address(vtep_address(pod_cidr)).packed
    return "0a:58:" + ":".join("%02x" % octet for octet in octets)


def vtep(pod_cidr, underlay_mtu) -> dict:
    """This node's VXLAN endpoint: address, MAC, and the device's MTU."""
    return {"ip": vtep_address(pod_cidr), "mac": vtep_mac(pod_cidr),
            "mtu": int(underlay_mtu) - VXLAN_OVERHEAD}


def _networks(node, cluster):
    """The subnets a node is connected to, without podnet's own (cbr0, podnet.1: inside the
    cluster CIDR) and host routes."""
    networks = []
    for cidr in node.get("networks") or []:
        network = ipaddress.IPv4Network(str(cidr), strict=False)
        if network.overlaps(cluster) or network.prefixlen >= 32:
            continue
        networks.append(network)
    return networks


def _connected(node, other_ip, cluster):
    address = ipaddress.IPv4Address(str(other_ip))
    return any(address in network for network in _networks(node, cluster))


def plan_peers(nodes, this_node, mode="auto", cluster_cidr="10.244.0.0/16") -> list:
    """Every other node, with the road to its pods.

    ``nodes`` maps node name to {"node_ip", "pod_cidr", "networks": [CIDR of each IPv4 address
    the node has]}. Returns, sorted by name, one dict per peer: name, node_ip, pod_cidr, via
    ("direct" or "vxlan"), vtep_ip, vtep_mac. ``mode`` is podnet_overlay: ``auto`` picks per
    pair, ``vxlan`` carries every peer over VXLAN, ``none`` allows direct routes only and
    raises OverlayError naming the first peer that is not directly reachable.
    """
    if mode not in MODES:
        raise OverlayError("podnet_overlay: %r is not one of %s" % (mode, ", ".join(MODES)))
    if this_node not in nodes:
        raise OverlayError("%s is not one of the nodes" % this_node)
    cluster = ipaddress.IPv4Network(cluster_cidr, strict=True)
    me = nodes[this_node]
    peers = []
    for name in sorted(nodes):
        if name == this_node:
            continue
        peer = nodes[name]
        there = _connected(me, peer["node_ip"], cluster)
        back = _connected(peer, me["node_ip"], cluster)
        direct = there and back
        if mode == "none" and not direct:
            if not there:
                why = "%s's node_ip %s is on none of %s's subnets (%s)" % (
                    name, peer["node_ip"], this_node, _subnets(me, cluster))
            else:
                why = "%s's node_ip %s is on none of %s's subnets (%s)" % (
                    this_node, me["node_ip"], name, _subnets(peer, cluster))
            raise OverlayError(
                "podnet_overlay is none, but %s cannot route %s's podCIDR %s directly: %s. "
                "Set podnet_overlay: auto to reach it over VXLAN, or put both nodes on one subnet"
                % (this_node, name, peer["pod_cidr"], why))
        peers.append({
            "name": name,
            "node_ip": str(peer["node_ip"]),
            "pod_cidr": str(peer["pod_cidr"]),
            "via": "direct" if direct and mode != "vxlan" else "vxlan",
            "vtep_ip": vtep_address(peer["pod_cidr"]),
            "vtep_mac": vtep_mac(peer["pod_cidr"]),
        })
    return peers


def _subnets(node, cluster):
    return ", ".join(str(n) for n in _networks(node, cluster)) or "no subnet"


def uses_vxlan(peers) -> bool:
    return any(peer["via"] == "vxlan" for peer in peers)


def pod_mtu(underlay_mtu, peers) -> int:
    """A pod's MTU: the underlay's, less VXLAN_OVERHEAD when any peer is reached by VXLAN
    (a pod cannot know which peer a packet goes to, so the smallest road sets it)."""
    mtu = int(underlay_mtu)
    return mtu - VXLAN_OVERHEAD if uses_vxlan(peers) else mtu


def peer_routes(peers, device=DEFAULT_DEVICE) -> list:
    """The routes module's input: a direct route via the node IP, or onlink via the VTEP."""
    routes = []
    for peer in peers:
        if peer["via"] == "direct":
            routes.append({"dest": peer["pod_cidr"], "gateway": peer["node_ip"]})
        else:
            routes.append({"dest": peer["pod_cidr"], "gateway": peer["vtep_ip"], "dev": device,
                           "onlink": True})
    return routes


def vxlan_peers(peers) -> list:
    """The FDB and neighbour entries of the VXLAN peers: {node_ip, vtep_ip, vtep_mac}."""
    return [{"node_ip": p["node_ip"], "vtep_ip": p["vtep_ip"], "vtep_mac": p["vtep_mac"]}
            for p in peers if p["via"] == "vxlan"]

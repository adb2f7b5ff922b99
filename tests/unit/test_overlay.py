"""The pure planning of the overlay: which road each peer takes, the pod MTU, and what the
VXLAN device must hold (overlay.py, vxlan.py)."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pod_network.overlay import (
    VXLAN_OVERHEAD,
    OverlayError,
    peer_routes,
    plan_peers,
    pod_mtu,
    vtep_address,
    vtep_mac,
    vxlan_peers,
)
from ansible_collections.podnet.network.plugins.module_utils.pod_network.vxlan import (
    Device,
    Overlay,
    VxlanError,
    parse_overlay,
    plan_vxlan,
    render_overlay,
)

CLUSTER = "10.244.0.0/16"


def node(ip, pod_cidr, *networks):
    # cbr0's and podnet.1's own addresses are among a node's networks: the plan ignores them.
    return {"node_ip": ip, "pod_cidr": pod_cidr,
            "networks": list(networks) + [pod_cidr.replace(".0/24", ".1/24"), pod_cidr.replace("/24", "/32")]}


# node1-3 on 192.168.56.0/24, node4 behind the router on 192.168.57.0/24 (the lab's shape).
LAB = {
    "node1": node("192.168.56.11", "10.244.0.0/24", "192.168.56.11/24"),
    "node2": node("192.168.56.12", "10.244.1.0/24", "192.168.56.12/24"),
    "node3": node("192.168.56.13", "10.244.2.0/24", "192.168.56.13/24"),
    "node4": node("192.168.57.14", "10.244.3.0/24", "192.168.57.14/24"),
}


def roads(nodes, this, mode="auto"):
    return {p["name"]: p["via"] for p in plan_peers(nodes, this, mode, CLUSTER)}


# --- which road -------------------------------------------------------------------------------

@pytest.mark.parametrize("this, expected", [
    ("node1", {"node2": "direct", "node3": "direct", "node4": "vxlan"}),
    ("node2", {"node1": "direct", "node3": "direct", "node4": "vxlan"}),
    ("node4", {"node1": "vxlan", "node2": "vxlan", "node3": "vxlan"}),
])
def test_auto_routes_directly_on_the_same_subnet_and_over_vxlan_across_the_router(this, expected):
    assert roads(LAB, this) == expected


def test_vxlan_mode_carries_every_peer_over_vxlan():
    assert set(roads(LAB, "node1", "vxlan").values()) == {"vxlan"}


def test_none_mode_on_one_subnet_is_todays_direct_routes():
    three = {k: v for k, v in LAB.items() if k != "node4"}
    assert roads(three, "node1", "none") == {"node2": "direct", "node3": "direct"}


def test_none_mode_names_the_unreachable_peer_and_the_subnets():
    with pytest.raises(OverlayError) as err:
        plan_peers(LAB, "node1", "none", CLUSTER)
    message = str(err.value)
    assert "node4" in message and "192.168.57.14" in message and "192.168.56.0/24" in message
    assert "podnet_overlay" in message


def test_the_choice_is_the_same_from_both_ends():
    # node5 has a /16 that holds node1's address, but node1's /24 does not hold node5's.
    nodes = dict(LAB, node5=node("192.168.60.15", "10.244.4.0/24", "192.168.60.15/16"))
    assert roads(nodes, "node5")["node1"] == "vxlan"
    assert roads(nodes, "node1")["node5"] == "vxlan"
    with pytest.raises(OverlayError, match="node5's node_ip 192.168.60.15 is on none of node1's subnets"):
        plan_peers(nodes, "node5", "none", CLUSTER)


def test_pod_network_addresses_never_count_as_a_shared_subnet():
    # Both nodes hold addresses in the cluster CIDR (cbr0, podnet.1): not an underlay.
    nodes = {"a": node("192.168.56.11", "10.244.0.0/24", "192.168.56.11/24", "10.244.0.0/16"),
             "b": node("10.244.9.9", "10.244.1.0/24", "10.244.9.9/16")}
    assert roads(nodes, "a") == {"b": "vxlan"}


def test_a_node_moved_onto_the_first_segment_switches_to_direct():
    moved = dict(LAB, node4=node("192.168.56.14", "10.244.3.0/24", "192.168.56.14/24"))
    assert roads(moved, "node1")["node4"] == "direct"
    assert roads(moved, "node4") == {"node1": "direct", "node2": "direct", "node3": "direct"}


def test_unknown_mode_is_refused():
    with pytest.raises(OverlayError, match="podnet_overlay: 'wireguard'"):
        plan_peers(LAB, "node1", "wireguard", CLUSTER)


# --- addresses, routes, MTU ---------------------------------------------------------------------

def test_vtep_is_the_pod_cidr_network_address_and_a_mac_derived_from_it():
    assert vtep_address("10.244.3.0/24") == "10.244.3.0"
    assert vtep_mac("10.244.3.0/24") == "0a:58:0a:f4:03:00"
    assert int(vtep_mac("10.244.3.0/24").split(":")[0], 16) & 0b11 == 0b10  # local, unicast


def test_routes_direct_via_node_ip_and_onlink_via_the_vtep():
    assert peer_routes(plan_peers(LAB, "node1", "auto", CLUSTER)) == [
        {"dest": "10.244.1.0/24", "gateway": "192.168.56.12"},
        {"dest": "10.244.2.0/24", "gateway": "192.168.56.13"},
        {"dest": "10.244.3.0/24", "gateway": "10.244.3.0", "dev": "podnet.1", "onlink": True},
    ]
    assert vxlan_peers(plan_peers(LAB, "node1", "auto", CLUSTER)) == [
        {"node_ip": "192.168.57.14", "vtep_ip": "10.244.3.0", "vtep_mac": "0a:58:0a:f4:03:00"}]


def test_pod_mtu_is_the_underlay_less_50_only_with_a_vxlan_peer():
    assert VXLAN_OVERHEAD == 50
    assert pod_mtu(1500, plan_peers(LAB, "node1", "auto", CLUSTER)) == 1450
    three = {k: v for k, v in LAB.items() if k != "node4"}
    assert pod_mtu(1500, plan_peers(three, "node1", "auto", CLUSTER)) == 1500
    assert pod_mtu(9000, plan_peers(three, "node1", "vxlan", CLUSTER)) == 8950


# --- the device ---------------------------------------------------------------------------------

PEER4 = {"node_ip": "192.168.57.14", "vtep_ip": "10.244.3.0", "vtep_mac": "0a:58:0a:f4:03:00"}
PEER5 = {"node_ip": "192.168.58.15", "vtep_ip": "10.244.4.0", "vtep_mac": "0a:58:0a:f4:04:00"}


def spec(*peers, **over):
    raw = {"device": "podnet.1", "vni": 1, "port": 8472, "local": "192.168.56.11",
           "address": "10.244.0.0", "mac": "0a:58:0a:f4:00:00", "mtu": 1450, "peers": list(peers)}
    raw.update(over)
    return raw


def test_a_fresh_node_gets_the_device_and_one_entry_per_peer():
    want = parse_overlay(spec(PEER4, PEER5))
    plan = plan_vxlan(want, Overlay(device=None, tx_checksum=None), None)
    assert plan.create_device and not plan.delete_device
    assert plan.address_add == ["10.244.0.0/32"]
    assert plan.fdb_add == [("0a:58:0a:f4:03:00", "192.168.57.14"), ("0a:58:0a:f4:04:00", "192.168.58.15")]
    assert plan.neigh_add == [("10.244.3.0", "0a:58:0a:f4:03:00"), ("10.244.4.0", "0a:58:0a:f4:04:00")]
    assert plan.tx_checksum_off


def test_the_device_as_wanted_is_no_change():
    want = parse_overlay(spec(PEER4))
    assert not plan_vxlan(want, want, "vxlan").changed


def test_a_removed_peer_leaves_no_fdb_or_neighbour_entry():
    plan = plan_vxlan(parse_overlay(spec(PEER4)), parse_overlay(spec(PEER4, PEER5)), "vxlan")
    assert plan.fdb_del == [("0a:58:0a:f4:04:00", "192.168.58.15")]
    assert plan.neigh_del == [("10.244.4.0", "0a:58:0a:f4:04:00")]
    assert not (plan.fdb_add or plan.neigh_add or plan.create_device or plan.delete_device)


def test_a_moved_peer_gets_its_fdb_entry_rewritten():
    moved = dict(PEER4, node_ip="192.168.56.14")
    plan = plan_vxlan(parse_overlay(spec(moved, PEER5)), parse_overlay(spec(PEER4, PEER5)), "vxlan")
    assert plan.fdb_add == [("0a:58:0a:f4:03:00", "192.168.56.14")]
    assert plan.fdb_del == [("0a:58:0a:f4:03:00", "192.168.57.14")]


def test_no_vxlan_peer_left_deletes_the_device():
    plan = plan_vxlan(parse_overlay(spec()), parse_overlay(spec(PEER4)), "vxlan")
    assert plan.delete_device and not plan.create_device
    assert render_overlay(parse_overlay(spec())) == ""


def test_attributes_fixed_at_creation_make_the_device_anew_mtu_does_not():
    live = parse_overlay(spec(PEER4))
    plan = plan_vxlan(parse_overlay(spec(PEER4, local="192.168.56.99")), live, "vxlan")
    assert plan.delete_device and plan.create_device and plan.fdb_add
    plan = plan_vxlan(parse_overlay(spec(PEER4, mtu=8950)), live, "vxlan")
    assert plan.set_link == {"mtu": 8950} and not plan.create_device


def test_a_foreign_device_of_that_name_is_refused():
    live = Overlay(device=Device("podnet.1", 0, 0, "", "", 0))
    with pytest.raises(VxlanError, match="podnet.1 exists and is a bridge device"):
        plan_vxlan(parse_overlay(spec(PEER4)), live, "bridge")


@pytest.mark.parametrize("raw, message", [
    (spec(dict(PEER4, vtep_mac="zz")), r"vxlan.peers\[0\].vtep_mac: 'zz' is not a MAC address"),
    (spec(PEER4, dict(PEER5, vtep_ip="10.244.3.0")), r"vxlan.peers\[1\]: 10.244.3.0 is already used"),
    (spec(PEER4, vni=1 << 24), r"vxlan.vni: 16777216 is outside"),
    (spec(PEER4, device="a-name-longer-than-15"), r"vxlan.device"),
])
def test_bad_overlay_input_names_the_field(raw, message):
    with pytest.raises(VxlanError, match=message):
        parse_overlay(raw)


def test_diff_shows_what_the_device_holds():
    text = render_overlay(parse_overlay(spec(PEER4)))
    assert "podnet.1 vxlan id 1 dstport 8472 local 192.168.56.11 nolearning" in text
    assert "fdb 0a:58:0a:f4:03:00 dev podnet.1 dst 192.168.57.14 self permanent" in text
    assert "neigh 10.244.3.0 dev podnet.1 lladdr 0a:58:0a:f4:03:00 PERMANENT" in text

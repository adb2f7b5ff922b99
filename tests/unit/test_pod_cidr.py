"""podCIDR allocation: inventory wins, persisted stays, new nodes get the lowest free slice."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.pod_network.cidr import (
    PodCIDRError,
    allocate_pod_cidrs,
)


def nodes(*specs):
    return [{"name": name, "pod_cidr": explicit, "persisted": persisted}
            for name, explicit, persisted in specs]


def cidrs(result):
    return {name: entry["pod_cidr"] for name, entry in result.items()}


def test_fresh_cluster_gets_consecutive_slices_in_inventory_order():
    result = allocate_pod_cidrs("10.244.0.0/16", 24, nodes(("n1", None, None), ("n2", None, None)))
    assert cidrs(result) == {"n1": "10.244.0.0/24", "n2": "10.244.1.0/24"}
    assert {e["source"] for e in result.values()} == {"allocated"}


def test_inventory_pod_cidr_wins_and_is_skipped_by_allocation():
    result = allocate_pod_cidrs("10.244.0.0/16", 24,
                                nodes(("n1", None, None), ("n2", "10.244.0.0/24", None)))
    assert cidrs(result) == {"n1": "10.244.1.0/24", "n2": "10.244.0.0/24"}
    assert result["n2"]["source"] == "inventory"


def test_removing_a_node_keeps_the_others():
    before = allocate_pod_cidrs("10.244.0.0/16", 24,
                                nodes(("n1", None, None), ("n2", None, None), ("n3", None, None)))
    persisted = cidrs(before)
    after = allocate_pod_cidrs("10.244.0.0/16", 24,
                               nodes(("n1", None, persisted["n1"]), ("n3", None, persisted["n3"])))
    assert cidrs(after) == {"n1": persisted["n1"], "n3": persisted["n3"]}


def test_adding_a_node_first_in_inventory_moves_nobody():
    after = allocate_pod_cidrs("10.244.0.0/16", 24, nodes(
        ("n0", None, None), ("n1", None, "10.244.0.0/24"), ("n2", None, "10.244.1.0/24")))
    assert cidrs(after) == {"n0": "10.244.2.0/24", "n1": "10.244.0.0/24", "n2": "10.244.1.0/24"}
    assert after["n1"]["source"] == "persisted"


def test_a_freed_slice_is_reused():
    after = allocate_pod_cidrs("10.244.0.0/16", 24, nodes(
        ("n1", None, "10.244.0.0/24"), ("n3", None, "10.244.2.0/24"), ("n4", None, None)))
    assert after["n4"]["pod_cidr"] == "10.244.1.0/24"


def test_persisted_slice_outside_a_changed_cluster_cidr_is_reallocated():
    after = allocate_pod_cidrs("10.200.0.0/16", 24, nodes(("n1", None, "10.244.0.0/24")))
    assert cidrs(after) == {"n1": "10.200.0.0/24"}


@pytest.mark.parametrize("cluster, mask, specs, message", [
    ("10.244.0.0/16", 24, [("n1", "10.244.0.0/24", None), ("n2", "10.244.0.0/23", None)],
     "node n2: pod_cidr 10.244.0.0/23 overlaps node n1's podCIDR 10.244.0.0/24"),
    ("10.244.0.0/16", 24, [("n1", "10.245.0.0/24", None)],
     "node n1: pod_cidr 10.245.0.0/24 is outside cluster_cidr 10.244.0.0/16"),
    ("10.244.0.0/16", 24, [("n1", "10.244.0.1/24", None)],
     "node n1: pod_cidr: '10.244.0.1/24' is not a valid network CIDR"),
    ("10.244.0.0/23", 24, [("n1", None, None), ("n2", None, None), ("n3", None, None)],
     "node n3: cluster_cidr 10.244.0.0/23 has no free /24 left"),
    ("10.244.0.0/16", 24, [("n1", None, "10.244.3.0/24"), ("n2", "10.244.3.0/24", None)],
     "node n1: persisted podCIDR 10.244.3.0/24 overlaps node n2's podCIDR 10.244.3.0/24 (inventory)"),
    ("10.244.0.0/33", 24, [("n1", None, None)], "cluster_cidr: '10.244.0.0/33' is not a valid"),
    ("10.244.0.0/16", 8, [("n1", None, None)], "node_cidr_mask_size: /8 must be between"),
    ("fd00::/48", 64, [("n1", None, None)], "cluster_cidr: fd00::/48 is not IPv4"),
])
def test_bad_input_is_a_clear_error(cluster, mask, specs, message):
    with pytest.raises(PodCIDRError) as excinfo:
        allocate_pod_cidrs(cluster, mask, nodes(*specs))
    assert message in str(excinfo.value)

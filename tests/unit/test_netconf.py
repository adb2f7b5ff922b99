"""The node's CNI conflist and egress table, rendered from values."""

import json

from ansible_collections.podnet.network.plugins.module_utils.pod_network.netconf import (
    render_conflist,
    render_egress_table,
    render_loopback,
)


def test_conflist_is_a_cni_1_0_bridge_on_the_node_pod_cidr():
    conflist = render_conflist("10.244.2.0/24", 1450)
    json.dumps(conflist)  # must be plain JSON
    assert conflist["cniVersion"] == "1.0.0"  # CNI plugins 1.1.1 refuse 1.1.0
    bridge, portmap = conflist["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "cbr0"
    assert bridge["isGateway"] is True and bridge["hairpinMode"] is True
    assert bridge["ipMasq"] is False, "masquerade is the node's egress rule, not the plugin's"
    assert "isDefaultGateway" not in bridge, "with an IPAM default route ADD fails with 'file exists'"
    assert bridge["mtu"] == 1450
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24", "gateway": "10.244.2.1"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def test_loopback_config():
    assert render_loopback() == {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


def test_egress_masquerades_only_traffic_leaving_the_cluster_cidr():
    table = render_egress_table("10.244.0.0/16")
    assert table.startswith("table ip podnet {")
    assert "type nat hook postrouting priority srcnat;" in table
    assert "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade" in table

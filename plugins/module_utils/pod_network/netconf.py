"""What the node's pod network configuration holds: the CNI conflist and the
egress NAT table. Pure renderers: values in, text or data out."""

import ipaddress

# CNI plugins 1.1.1 (Debian 12) speak spec versions up to 1.0.0 and refuse 1.1.0.
CNI_VERSION = "1.0.0"


def render_conflist(pod_cidr, mtu, bridge="cbr0", network_name="podnet", data_dir=None):
    """The bridge CNI network of one node, as a conflist dict.

    No ``ipMasq``: the bridge plugin would masquerade pod traffic to other
    nodes' pods too, and Kubernetes keeps the pod IP across nodes. Egress NAT
    is the node's own rule (render_egress_table). The default route is an IPAM
    route, not ``isDefaultGateway`` (both together fail ADD with "file exists").
    """
    subnet = ipaddress.ip_network(pod_cidr, strict=True)
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": str(subnet), "gateway": str(subnet.network_address + 1)}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    if data_dir:
        ipam["dataDir"] = data_dir
    return {
        "cniVersion": CNI_VERSION,
        "name": network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "mtu": int(mtu),
                "ipam": ipam,
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def render_loopback():
    return {"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"}


def render_egress_table(cluster_cidr, table="podnet"):
    """podnet's own nftables table for pod egress.

    Pods keep their IP inside the cluster CIDR (pod to pod, on this node or
    another); anything else leaving the node from a pod is masqueraded to the
    address of the interface it leaves by, so the outside world can answer.
    """
    cluster = ipaddress.ip_network(cluster_cidr, strict=True)
    return (
        "table ip {table} {{\n"
        "\tchain postrouting {{\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t\tip saddr {cidr} ip daddr != {cidr} masquerade comment \"pod egress\"\n"
        "\t}}\n"
        "}}\n"
    ).format(table=table, cidr=cluster)

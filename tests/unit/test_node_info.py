"""node_info's report of the Service proxies' records: a backend's removal runs only on a node
that holds its record."""

from ansible_collections.podnet.network.plugins.modules.node_info import proxy_records


def test_the_proxy_records_present_are_named(tmp_path):
    for name in ("proxy-iptables.json", "proxy-nftables-podnet-services.json",
                 "proxy-nftables-podnet-services.model.json", "nft-ip-podnet.json"):
        (tmp_path / name).write_text("{}")
    assert proxy_records(str(tmp_path)) == ["proxy-iptables.json", "proxy-nftables-podnet-services.json",
                                            "proxy-nftables-podnet-services.model.json"]
    assert proxy_records(str(tmp_path / "missing")) == []

"""node_info's report of the Service proxies' records: a backend's removal runs only on a node
that holds its record."""

from ansible_collections.podnet.network.plugins.modules.node_info import parse_units, proxy_records


def test_the_proxy_records_present_are_named(tmp_path):
    for name in ("proxy-iptables.json", "proxy-nftables-podnet-services.json",
                 "proxy-nftables-podnet-services.model.json", "nft-ip-podnet.json"):
        (tmp_path / name).write_text("{}")
    assert proxy_records(str(tmp_path)) == ["proxy-iptables.json", "proxy-nftables-podnet-services.json",
                                            "proxy-nftables-podnet-services.model.json"]
    assert proxy_records(str(tmp_path / "missing")) == []


def test_podnet_units_are_read_as_systemctl_lists_them():
    unit_files = ("podnet-heal.service    enabled enabled\n"
                  "podnet-restore.service disabled enabled\n")
    units = ("podnet-heal.service loaded active running podnet self-repair\n"
             "podnet-restore.service loaded inactive dead Restore podnet at boot\n"
             "podnet-gone.service not-found inactive dead podnet-gone.service\n")
    assert parse_units(unit_files, units) == {
        "podnet-heal.service": {"enabled": "enabled", "active": "active"},
        "podnet-restore.service": {"enabled": "disabled", "active": "inactive"},
        "podnet-gone.service": {"active": "inactive"},
    }
    assert parse_units("", "") == {}

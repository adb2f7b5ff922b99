"""node_info's report of the boot-time entries: what a role's entry task compares with, so a
run whose entry is already on the node writes nothing."""

import os

from ansible_collections.podnet.network.plugins.modules.node_info import (
    MAX_ENTRY_BYTES,
    proxy_records,
    restore_entries,
)


def test_the_entries_are_reported_as_written_and_nothing_podnet_did_not_write(tmp_path):
    (tmp_path / "10-podnet_node.json").write_text('{\n    "steps": []\n}\n')
    (tmp_path / "50-podnet_services.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not an entry")
    (tmp_path / "90-big.json").write_bytes(b" " * (MAX_ENTRY_BYTES + 1))
    (tmp_path / "91-latin1.json").write_bytes(b"\xe9")
    (tmp_path / "92-dir.json").mkdir()
    os.symlink(tmp_path / "50-podnet_services.json", tmp_path / "93-link.json")
    assert restore_entries(str(tmp_path)) == {"10-podnet_node": '{\n    "steps": []\n}\n',
                                              "50-podnet_services": "{}\n"}
    assert restore_entries(str(tmp_path / "missing")) == {}


def test_the_proxy_records_present_are_named(tmp_path):
    for name in ("proxy-iptables.json", "proxy-nftables-podnet-services.json",
                 "proxy-nftables-podnet-services.model.json", "nft-ip-podnet.json"):
        (tmp_path / name).write_text("{}")
    assert proxy_records(str(tmp_path)) == ["proxy-iptables.json", "proxy-nftables-podnet-services.json",
                                            "proxy-nftables-podnet-services.model.json"]
    assert proxy_records(str(tmp_path / "missing")) == []

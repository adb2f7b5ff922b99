"""Faults a node can meet, each mended and pinned here (issue 12): two runs at once, a power
cut after a write, conntrack entries that outlive an endpoint. Hermetic: files in tmp_path,
the modules' AnsibleModule stand-in, no root."""

import os

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import module_io
from ansible_collections.podnet.network.plugins.module_utils.services.proxy import udp_flows_to_clear

from tests.unit.test_nft_modules import Failed, Module


def entry(protocol, endpoints, node_port=None):
    return {"protocol": protocol, "port": 5000, "addresses": ["10.96.0.20"], "node_port": node_port,
            "endpoints": endpoints}


# --- one lock per node ---------------------------------------------------------------------------

def test_a_second_run_waits_then_fails_naming_the_holder(tmp_path):
    path = str(tmp_path / "run" / "podnet" / "node.lock")
    module = Module(tmp_path, {})
    first = module_io.node_lock(module, "podnet.network.dns", path=path, wait=0)
    with pytest.raises(Failed) as refused:
        module_io.node_lock(module, "podnet.network.proxy_nftables", path=path, wait=0)
    message = str(refused.value)
    assert "another podnet run holds this node's lock %s (pid %d, podnet.network.dns, since " % (
        path, os.getpid()) in message
    assert "podnet.network.proxy_nftables waited 0 s and changed nothing" in message
    os.close(first)  # the first run ends: the next one goes ahead
    os.close(module_io.node_lock(module, "podnet.network.proxy_nftables", path=path, wait=0))


def test_every_module_that_applies_state_takes_the_lock():
    modules = os.path.join(os.path.dirname(module_io.__file__), "..", "..", "modules")
    for name in ("proxy_nftables", "proxy_iptables", "dns", "nftables", "routes", "pods", "sysctl"):
        with open(os.path.join(modules, name + ".py"), encoding="utf-8") as handle:
            assert 'node_lock(module, "podnet.network.%s")' % name in handle.read(), name


# --- durability ----------------------------------------------------------------------------------

def test_records_are_on_disk_before_they_are_trusted(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink("/proc/self/fd/%d" % fd))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "state" / "proxy-nft.json"
    module_io.write_file(Module(tmp_path, {}), str(path), "{}\n")
    assert path.read_text() == "{}\n"
    # the data (under its temporary name, before the rename), then the directory holding the rename
    assert len(synced) == 2
    assert os.path.basename(synced[0]).startswith(".proxy-nft.json.")
    assert synced[1] == str(tmp_path / "state")


def test_files_written_after_are_in_place_only_when_the_body_succeeds(tmp_path):
    module = Module(tmp_path, {})
    old, new = tmp_path / "services.nft", tmp_path / "state" / "proxy.json"
    old.write_text("old script\n")
    with module_io.written_after(module, [(str(old), "new script\n"), (str(new), "{}\n")]):
        # staged beside their places, not in them yet: the body (the apply) runs with the old files
        assert old.read_text() == "old script\n" and not new.exists()
        assert len(list(tmp_path.glob(".services.nft.*"))) == 1
    assert old.read_text() == "new script\n" and new.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["proxy.json", "services.nft", "state"]


def test_a_failed_body_leaves_the_files_as_they_were(tmp_path):
    module = Module(tmp_path, {})
    old = tmp_path / "services.nft"
    old.write_text("old script\n")
    with pytest.raises(Failed, match="nft refused"):
        with module_io.written_after(module, [(str(old), "new script\n")]):
            module.fail_json("nft refused the table")
    assert [p.name for p in tmp_path.iterdir()] == ["services.nft"] and old.read_text() == "old script\n"


def test_a_full_disk_fails_before_the_body_runs(tmp_path, monkeypatch):
    module = Module(tmp_path, {})
    ran = []
    real_fdopen = os.fdopen
    written = []

    def full_after_one(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if written:
            handle.write = lambda text: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        written.append(fd)
        return handle

    monkeypatch.setattr(os, "fdopen", full_after_one)
    with pytest.raises(Failed, match=r"cannot write .*proxy\.json: .*No space left on device"):
        with module_io.written_after(module, [(str(tmp_path / "a.rules"), "x\n"),
                                               (str(tmp_path / "proxy.json"), "{}\n")]):
            ran.append(True)
    assert not ran
    assert list(tmp_path.iterdir()) == []  # the first file's staged copy is gone too


# --- conntrack -----------------------------------------------------------------------------------

def test_sctp_flows_to_a_gone_endpoint_are_cleared_as_udp_ones_are():
    old = {"default/sig:5000/SCTP": entry("SCTP", ["10.244.1.5:5000", "10.244.2.5:5000"], 30500)}
    new = {"default/sig:5000/SCTP": entry("SCTP", ["10.244.2.5:5000"], 30500)}
    assert udp_flows_to_clear(old, new) == [
        ["-D", "-p", "sctp", "--orig-dst", "10.96.0.20", "--orig-port-dst", "5000",
         "--dst-nat", "10.244.1.5"],
        ["-D", "-p", "sctp", "--orig-port-dst", "30500", "--dst-nat", "10.244.1.5"],
    ]


def test_tcp_flows_are_left_to_end_by_themselves():
    old = {"default/web:5000/TCP": entry("TCP", ["10.244.1.5:5000"])}
    assert udp_flows_to_clear(old, {}) == []


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_first_endpoints_clear_the_unnated_flows_to_the_node_port_too(protocol):
    """Before its first endpoint a Service's nodePort flows were created un-NATed (REJECT): kube-proxy
    clears them for the nodePort as for the clusterIP, or they keep bypassing the DNAT."""
    old = {"default/dns:5000/%s" % protocol: entry(protocol, [], 30053)}
    new = {"default/dns:5000/%s" % protocol: entry(protocol, ["10.244.1.5:5000"], 30053)}
    flag = ["-D", "-p", protocol.lower()]
    assert udp_flows_to_clear(old, new) == [
        flag + ["--orig-dst", "10.96.0.20", "--orig-port-dst", "5000"],
        flag + ["--orig-port-dst", "30053"],
    ]

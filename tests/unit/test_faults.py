"""Faults a node can meet, each mended and pinned here (issue 12): two runs at once, a power
cut after a write, conntrack entries that outlive an endpoint. Hermetic: files in tmp_path,
the modules' AnsibleModule stand-in, no root."""

import os

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import module_io
from ansible_collections.podnet.network.plugins.module_utils.services import proxy
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


# A node's `conntrack -L -p udp` and `-p sctp` as conntrack-tools 1.4.7 prints them (the summary
# goes to stderr). Service web-udp 10.96.0.20:5000 now has endpoints 10.244.2.5:5353 only.
LISTING = (
    "udp      17 28 src=10.244.1.9 dst=10.96.0.20 sport=40404 dport=5000 [UNREPLIED]"
    " src=10.244.1.5 dst=10.244.1.9 sport=5353 dport=40404 mark=0 use=2\n"
    "udp      17 27 src=10.244.1.9 dst=10.96.0.20 sport=40405 dport=5000"
    " src=10.244.2.5 dst=10.244.1.9 sport=5353 dport=40405 [ASSURED] mark=0 use=1\n"
    "udp      17 26 src=10.244.1.9 dst=10.96.0.20 sport=40406 dport=5000 [UNREPLIED]"
    " src=10.96.0.20 dst=10.244.1.9 sport=5000 dport=40406 mark=0 use=1\n"
    "udp      17 25 src=10.244.1.9 dst=10.96.0.30 sport=40407 dport=53"
    " src=10.244.3.7 dst=10.244.1.9 sport=53 dport=40407 mark=0 use=1\n"
    "udp      17 24 src=10.244.1.9 dst=10.96.0.31 sport=40408 dport=53 [UNREPLIED]"
    " src=10.96.0.31 dst=10.244.1.9 sport=53 dport=40408 mark=0 use=1\n"
    "udp      17 23 src=10.244.1.9 dst=192.0.2.53 sport=40409 dport=53"
    " src=192.0.2.53 dst=192.168.1.10 sport=53 dport=40409 mark=0 use=1\n"
    "udp      17 22 src=192.168.1.20 dst=192.168.1.10 sport=40410 dport=30053"
    " src=10.244.1.5 dst=10.244.1.1 sport=5353 dport=40410 mark=0 use=1\n"
    "udp      17 21 src=10.244.1.9 dst=10.96.0.10 sport=40412 dport=53"
    " src=10.96.0.10 dst=10.244.1.9 sport=10053 dport=40412 mark=0 use=1\n"
    "sctp     132 431999 ESTABLISHED src=10.244.1.9 dst=10.96.0.20 sport=40411 dport=5000"
    " src=10.244.1.5 dst=10.244.1.9 sport=5000 dport=40411 [ASSURED] mark=0 use=1\n"
)


def flow(protocol, src, dst, sport, dport):
    return ["-D", "-p", protocol, "--orig-src", src, "--orig-dst", dst, "--orig-port-src", str(sport),
            "--orig-port-dst", str(dport)]


def test_conntrack_lines_are_read_as_two_directions():
    icmp = ("icmp     1 29 src=10.244.1.9 dst=10.96.0.20 type=8 code=0 id=7 src=10.96.0.20 "
            "dst=10.244.1.9 type=0 code=0 id=7 mark=0 use=1\n")
    summary = "conntrack v1.4.7 (conntrack-tools): 9 flow entries have been shown.\n"
    flows = proxy.conntrack_flows(LISTING + summary + icmp)
    assert len(flows) == 9
    assert flows[0] == ("UDP", {"src": "10.244.1.9", "dst": "10.96.0.20", "sport": "40404", "dport": "5000"},
                        {"src": "10.244.1.5", "dst": "10.244.1.9", "sport": "5353", "dport": "40404"})
    assert flows[-1][0] == "SCTP" and flows[-1][2]["src"] == "10.244.1.5"


def test_without_a_record_the_flows_the_rules_would_not_make_are_found_in_the_table():
    """The record of the last apply is lost, so there is no old view to diff: the kernel's own
    table says which flows are pinned where the rules no longer lead (kube-proxy's reconciler)."""
    view = {"default/web-udp:5000/UDP": dict(entry("UDP", ["10.244.2.5:5353"], 30053)),
            "default/web-sctp:5000/SCTP": dict(entry("SCTP", ["10.244.2.5:5000"])),
            "kube-system/no-eps:53/UDP": dict(entry("UDP", []), addresses=["10.96.0.31"], port=53)}
    assert proxy.stale_flows(LISTING, view, "10.96.0.0/12") == [
        flow("udp", "10.244.1.9", "10.96.0.20", 40404, 5000),  # DNATed to an endpoint that left
        flow("udp", "10.244.1.9", "10.96.0.20", 40406, 5000),  # made un-NATed, before the endpoints
        flow("udp", "10.244.1.9", "10.96.0.30", 40407, 53),    # DNATed, its Service gone
        flow("sctp", "10.244.1.9", "10.96.0.20", 40411, 5000),
    ]
    # kept: the flow on a current endpoint, the REJECTed flow to a Service without endpoints, DNS
    # outside the cluster, the nodePort flow (not told from forwarded traffic by the table alone),
    # and a query to the cluster DNS address, redirected to the local dnsmasq's port
    everywhere = proxy.stale_flows(LISTING, view, "10.96.0.0/12")
    assert proxy.stale_flows(LISTING, view) == [cmd for cmd in everywhere if "10.96.0.30" not in cmd]


class Conntrack(Module):
    """The module stand-in with a conntrack that lists LISTING and records what it is told."""

    def __init__(self, tmp_path, check_mode=False):
        super().__init__(tmp_path, {"flush_conntrack": True}, check_mode)
        self.ran = []
        self.warned = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return "/usr/sbin/conntrack"

    def run_command(self, args, **kwargs):
        self.ran.append(args[1:])
        if args[1] == "-L":
            return 0, LISTING if args[3] == "udp" else "", ""
        return 1, "", ""

    def warn(self, msg):
        self.warned.append(msg)


def test_the_proxies_read_the_table_only_when_the_record_is_missing(tmp_path):
    view = {"default/web-udp:5000/UDP": entry("UDP", ["10.244.2.5:5353"])}
    module = Conntrack(tmp_path)
    cleared = module_io.clear_flows(module, None, view, "10.96.0.0/12", rules_changed=False)
    assert module.ran[:2] == [["-L", "-p", "udp"], ["-L", "-p", "sctp"]]
    assert cleared == module.ran[2:] and flow("udp", "10.244.1.9", "10.96.0.20", 40404, 5000) in cleared
    module = Conntrack(tmp_path)
    assert module_io.clear_flows(module, view, view, "10.96.0.0/12", rules_changed=True) == module.ran == []
    module = Conntrack(tmp_path, check_mode=True)
    assert module_io.clear_flows(module, None, view, "10.96.0.0/12", rules_changed=True) == module.ran == []

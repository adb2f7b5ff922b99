"""The glance's two halves: what node_info reads on the node (an index, files, packages) and
what an action plugin decides on the controller from it. Temporary files only."""

import json
import os
import struct

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.module_utils.common.sysctl import render
from ansible_collections.podnet.network.plugins.modules.node_info import installed_packages


class Module:
    """What module_io asks of an AnsibleModule when writing a file."""

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs["msg"])

    @staticmethod
    def atomic_move(source, dest):
        os.replace(source, dest)

    @staticmethod
    def set_mode_if_different(path, mode, changed):
        os.chmod(path, int(mode, 8))
        return changed


def test_a_file_is_known_by_its_content_and_mode_and_anything_else_is_not_vouched_for(tmp_path):
    path = tmp_path / "a.conf"
    path.write_text("a = 1\n")
    os.chmod(path, 0o600)
    assert glance.file_state(str(path)) == glance.digest("a = 1\n", 0o600)
    assert glance.file_state(str(path)) != glance.digest("a = 1\n", 0o644)
    assert glance.file_state(str(tmp_path / "missing")) is None
    assert glance.file_state(str(tmp_path)) == "other"
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    assert glance.file_state(str(tmp_path / "dangling")) == "other"  # node_files would remove it
    big = tmp_path / "big"
    big.write_bytes(b"x" * (glance.MAX_FILE_BYTES + 1))
    assert glance.file_state(str(big)) == "other"


def test_the_index_grows_only_and_is_written_only_when_it_grows(tmp_path):
    index = str(tmp_path / "glance.json")
    glance.remember(Module(), index, files=["/b", "/a"])
    glance.remember(Module(), index, sysctls=["net.ipv4.ip_forward"], files=["/a"])
    assert json.loads(open(index).read()) == {"files": ["/a", "/b"], "sysctls": ["net.ipv4.ip_forward"]}
    before = os.stat(index).st_mtime_ns
    glance.remember(Module(), index, files=["/b"], sysctls=[])
    assert os.stat(index).st_mtime_ns == before


def test_an_index_podnet_did_not_write_is_an_empty_one(tmp_path):
    index = tmp_path / "glance.json"
    for text in ("not json", "[1, 2]", '{"files": "/etc/passwd"}'):
        index.write_text(text)
        assert glance.read_index(str(index)) == {"files": [], "sysctls": []}
    index.write_text('{"files": ["/b", "/a", 3], "sysctls": [1, "net.x"]}')
    assert glance.read_index(str(index)) == {"files": ["/a", "/b"], "sysctls": ["net.x"]}
    assert glance.read_index(str(tmp_path / "missing")) == {"files": [], "sysctls": []}


def test_the_snapshot_reads_what_the_index_lists(tmp_path):
    kept = tmp_path / "kept"
    kept.write_text("k\n")
    os.chmod(kept, 0o644)
    index = str(tmp_path / "glance.json")
    glance.remember(Module(), index, files=[str(kept), str(tmp_path / "gone")], sysctls=["no.such.sysctl"])
    files = {str(kept): glance.digest("k\n", 0o644), str(tmp_path / "gone"): None}
    assert glance.look(index) == {"index": index, "files": files, "sysctls": {"no.such.sysctl": None},
                                  "settled": {}}


def snapshot(files=None, sysctls=None, index=glance.INDEX):
    return {"index": index, "files": files or {}, "sysctls": sysctls or {}}


def test_a_node_files_task_is_vouched_for_only_when_every_file_and_removal_is_as_wanted():
    seen = snapshot({"/etc/x/a.conf": glance.digest("a\n", 0o644), "/etc/x/run": glance.digest("r\n", 0o755),
                     "/etc/x/old": None})
    wanted = {"a.conf": "a\n", "run": "r\n"}
    assert glance.files_unchanged(seen, "/etc/x", wanted, {"run": "0755"}, ["old"])
    assert glance.files_unchanged(seen, "/etc/x/", {"a.conf": "a\n"})
    assert not glance.files_unchanged(seen, "/etc/x", wanted)  # run's mode
    assert not glance.files_unchanged(seen, "/etc/x", {"a.conf": "b\n"})
    assert not glance.files_unchanged(seen, "/etc/x", {"new.conf": "a\n"})  # not in the index
    assert not glance.files_unchanged(seen, "/etc/x", {}, absent=["a.conf"])  # still there
    assert not glance.files_unchanged(seen, "/etc/x", {}, absent=["never-seen"])
    assert not glance.files_unchanged(seen, "/etc/x", {"../x/a.conf": "a\n"})
    assert not glance.files_unchanged(seen, "/etc/x", {"a.conf": "a\n"}, {"a.conf": "rw"})
    assert not glance.files_unchanged(seen, "etc/x", {"a.conf": "a\n"})
    assert not glance.files_unchanged(None, "/etc/x", {"a.conf": "a\n"})


def test_a_sysctl_task_is_vouched_for_when_values_and_file_are_as_the_module_would_leave_them():
    wanted = {"net.ipv4.ip_forward": 1, "net.ipv4.ping_group_range": "0 2147483647"}
    text = render({"net.ipv4.ip_forward": "1", "net.ipv4.ping_group_range": "0 2147483647"})
    seen = snapshot({"/etc/sysctl.d/90-podnet.conf": glance.digest(text, 0o644)},
                    {"net.ipv4.ip_forward": "1", "net.ipv4.ping_group_range": "0\t2147483647"})
    assert glance.sysctls_unchanged(seen, wanted, "/etc/sysctl.d/90-podnet.conf")
    assert not glance.sysctls_unchanged(seen, dict(wanted, **{"net.ipv4.ip_forward": 0}),
                                        "/etc/sysctl.d/90-podnet.conf")
    assert not glance.sysctls_unchanged(seen, dict(wanted, **{"net.core.somaxconn": 4096}),
                                        "/etc/sysctl.d/90-podnet.conf")
    assert not glance.sysctls_unchanged(seen, wanted, "/etc/sysctl.d/91-other.conf")
    stale = snapshot({"/etc/sysctl.d/90-podnet.conf": glance.digest(text + "# edited\n", 0o644)},
                     seen["sysctls"])
    assert not glance.sysctls_unchanged(stale, wanted, "/etc/sysctl.d/90-podnet.conf")


@pytest.mark.parametrize("podnet_node", [None, {}, {"glance": "x"},
                                         {"glance": snapshot(index="/elsewhere.json")}])
def test_without_this_index_s_snapshot_nothing_is_vouched_for(podnet_node):
    assert glance.snapshot_of(podnet_node) is None


def test_dpkg_s_database_says_what_is_installed(tmp_path):
    status = tmp_path / "status"
    status.write_text("Package: nftables\nStatus: install ok installed\nVersion: 1.0.6\n\n"
                      "Package: iperf3\nStatus: deinstall ok config-files\n\n"
                      "Package: dnsmasq-base\nStatus: install ok half-configured\n\n"
                      "Package: conntrack\nStatus: hold ok installed\n")
    assert installed_packages(str(status)) == ["conntrack", "nftables"]
    assert installed_packages(str(tmp_path / "missing")) == []


def test_a_settled_state_is_vouched_for_while_its_fingerprint_holds_and_for_its_own_task_only(tmp_path,
                                                                                               monkeypatch):
    # A stand-in kernel: the fingerprint of a file's text.
    monkeypatch.setitem(glance.FINGERPRINTS, "test", lambda path: open(path).read() or None)
    live, index = tmp_path / "live", str(tmp_path / "glance.json")
    live.write_text("state 1")
    task = glance.inputs_digest("podnet.network.test", {"table": 1, "glance_file": index})
    assert task == glance.inputs_digest("podnet.network.test", {"table": 1, "glance_inputs": "x"})
    assert task != glance.inputs_digest("podnet.network.test", {"table": 2})
    assert task != glance.inputs_digest("podnet.network.other", {"table": 1})

    glance.settle(Module(), "test", {"path": str(live)}, task, index, replay={"pods": {"a": 1}})
    assert glance.settled(glance.look(index), task) == {"pods": {"a": 1}}
    assert glance.settled(glance.look(index), "another task") is None

    live.write_text("state 2")  # moved since: not vouched for
    assert glance.settled(glance.look(index), task) is None

    # The next run of another task on the same thing replaces the record.
    glance.settle(Module(), "test", {"path": str(live)}, "task 2", index)
    assert glance.look(index)["settled"] == {"task 2": {}}
    glance.settle(Module(), "test", {"path": str(tmp_path / "unreadable")}, "task 3", index)
    assert len(json.loads(open(index).read())["states"]) == 1  # no fingerprint, no record
    (tmp_path / "other").write_text("other state")
    glance.settle(Module(), "test", {"path": str(tmp_path / "other")}, "task 3", index)
    assert glance.look(index)["settled"] == {"task 2": {}, "task 3": {}}
    # Without inputs (the module run without its action plugin) nothing is recorded.
    glance.settle(Module(), "test", {"path": str(live)}, None, index)
    assert glance.look(index)["settled"] == {"task 2": {}, "task 3": {}}


CHAINS = {"nftables": [{"metainfo": {}},
                       {"chain": {"family": "ip", "table": "podnet-services", "name": "services"}},
                       {"chain": {"family": "ip", "table": "podnet", "name": "policy", "handle": 1}},
                       {"chain": {"family": "ip", "table": "mine", "name": "forward", "handle": 1,
                                  "hook": "forward", "policy": "accept"}}]}


@pytest.fixture
def stand_in_nft(monkeypatch):
    """nft's listings and the kernel's rule dump, canned; every command run is counted."""
    ran, rules = [], {("ip", "podnet-services"): {"services": 3}, ("ip", "podnet"): {"policy": 2}}

    def output(argv):
        ran.append(" ".join(argv[:4]))
        if argv[:4] == ["nft", "-j", "list", "chains"]:
            return json.dumps(CHAINS)
        if argv[:4] == ["nft", "-j", "list", "set"]:
            return json.dumps({"nftables": [{"set": {"name": argv[6], "elem": [7]}}]})
        return None

    monkeypatch.setattr(glance, "output", output)
    monkeypatch.setattr(glance.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(glance, "rule_counts", lambda family, table: dict(rules.get((family, table), {})))
    return ran, rules


def test_the_nft_fingerprint_sees_a_flushed_table(stand_in_nft):
    """`nft flush table` keeps the generation set and the chains: the rule counts show it."""
    _ran, rules = stand_in_nft
    args = {"family": "ip", "table": "podnet-services", "generation_set": "generation", "files": []}
    before = glance.fingerprint("nft", args)
    assert before is not None and glance.fingerprint("nft", args) == before
    rules[("ip", "podnet-services")] = {}
    assert glance.fingerprint("nft", args) not in (before, None)
    rules[("ip", "podnet-services")] = {"services": 4}
    assert glance.fingerprint("nft", args) not in (before, None)


def test_one_reading_of_the_chains_serves_every_table_and_the_firewall(stand_in_nft, monkeypatch, tmp_path):
    """node_info lists nft's chains once, for the firewall's survey and fingerprint and for
    every settled table (each still reads its own generation set)."""
    from ansible_collections.podnet.network.plugins.module_utils.firewall import apply

    ran, _rules = stand_in_nft
    monkeypatch.setattr(apply.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(apply, "_run", lambda argv, **kwargs: pytest.fail("read again: %s" % argv))
    index = str(tmp_path / "glance.json")
    for table, generation_set in (("podnet-services", "generation"), ("podnet", "podnet_generation")):
        args = {"family": "ip", "table": table, "generation_set": generation_set, "files": []}
        glance.settle(Module(), "nft", args, "task " + table, index)
    firewall = {"state_file": str(tmp_path / "firewall.json")}
    record = json.loads(open(index).read())
    record["states"].append({"kind": "firewall", "args": firewall, "inputs": "task firewall", "replay": {},
                             "live": glance.fingerprint("firewall", firewall, glance.Reading())})
    with open(index, "w") as handle:
        json.dump(record, handle)
    ran.clear()

    reading = glance.Reading()
    snapshot = glance.look(index, reading)
    assert sorted(snapshot["settled"]) == ["task firewall", "task podnet", "task podnet-services"]
    assert apply.survey(reading.firewall_ruleset()) == []
    assert sorted(ran) == ["nft -j list chains", "nft -j list set", "nft -j list set"]


class FakeNetlink:
    """A netlink socket that answers a rule dump with canned messages."""

    def __init__(self, messages):
        self.messages, self.sent = messages, []

    def __call__(self, *args):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def settimeout(self, timeout):
        pass

    def sendto(self, data, address):
        self.sent.append(data)

    def recv(self, size):
        seq = struct.unpack_from("=IHHII", self.sent[0])[3]
        return b"".join(message(seq) for message in self.messages)


def rule_message(chain):
    def build(seq):
        attribute = struct.pack("=HH", 4 + len(chain) + 1, 2) + chain.encode() + b"\0"
        attribute += b"\0" * (-len(attribute) % 4)
        body = struct.pack("=BBH", 2, 0, 0) + attribute
        return struct.pack("=IHHII", 16 + len(body), (10 << 8) | 6, 2, seq, 0) + body
    return build


def end_message(kind, error=0):
    def build(seq):
        body = struct.pack("=i", error) + b"\0" * 16 if kind == 2 else struct.pack("=i", 0)
        return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body
    return build


@pytest.mark.parametrize(("messages", "counts"), [
    ([rule_message("services"), rule_message("services"), rule_message("nat_output"), end_message(3)],
     {"services": 2, "nat_output": 1}),
    ([end_message(3)], {}),
    ([end_message(2, -2)], {}),  # ENOENT: no such table
    ([end_message(2, -1)], None),  # EPERM: cannot be asked
])
def test_the_kernel_s_rule_dump_is_counted_per_chain(monkeypatch, messages, counts):
    from ansible_collections.podnet.network.plugins.module_utils.common import nft_rules

    fake = FakeNetlink(messages)
    monkeypatch.setattr(nft_rules.socket, "socket", fake)
    assert nft_rules.rule_counts("ip", "podnet-services") == counts
    request = fake.sent[0]
    assert struct.unpack_from("=IHHII", request)[1:3] == ((10 << 8) | 7, 0x301)  # GETRULE, a dump
    assert b"podnet-services\0" in request
    assert nft_rules.rule_counts("nope", "podnet-services") is None

"""The one nft runner and its transaction object (common/nft_runner.py), without nft.

The transaction is tested as the script it renders; the runner against a fake module that
records every command, so what check mode runs (and never runs) is a table too.
"""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import HEADER_LINES, build_script
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import (
    ELEMENTS_PER_STATEMENT,
    FakeNft,
    FakeNftRefused,
    NftRunner,
    Transaction,
)

P = pytest.param
TABLE = "table ip t {\n\tchain c {\n\t\tcounter\n\t}\n}\n"


@pytest.mark.parametrize(("build", "script"), [
    P(lambda tx: tx, "", id="empty"),
    P(lambda tx: tx.add_table(), "add table ip t\n", id="add table"),
    P(lambda tx: tx.flush_table().delete_table(), "flush table ip t\ndelete table ip t\n",
      id="flush, delete"),
    P(lambda tx: tx.add_chain("c", "type nat hook output priority -100;"),
      "add chain ip t c { type nat hook output priority -100; }\n", id="base chain"),
    P(lambda tx: tx.add_chain("c").flush_chain("c").delete_chain("c"),
      "add chain ip t c\nflush chain ip t c\ndelete chain ip t c\n", id="regular chain"),
    P(lambda tx: tx.add_set("s", "type ipv4_addr;").flush_set("s").delete_set("s"),
      "add set ip t s { type ipv4_addr; }\nflush set ip t s\ndelete set ip t s\n", id="set"),
    P(lambda tx: tx.add_map("m", "type ipv4_addr : verdict;").flush_map("m").delete_map("m"),
      "add map ip t m { type ipv4_addr : verdict; }\nflush map ip t m\ndelete map ip t m\n", id="map"),
    P(lambda tx: tx.add_element("s", ["10.0.0.1", "10.0.0.2"]).delete_element("s", ["10.0.0.3"]),
      "add element ip t s { 10.0.0.1, 10.0.0.2 }\ndelete element ip t s { 10.0.0.3 }\n", id="elements"),
    P(lambda tx: tx.add_element("s", []), "", id="no elements, no statement"),
    P(lambda tx: tx.add_rule("c", "ip daddr 10.0.0.1 accept"), "add rule ip t c ip daddr 10.0.0.1 accept\n",
      id="rule"),
    P(lambda tx: tx.raw("add element ip t s { 1.2.3.4 }\n").raw(""), "add element ip t s { 1.2.3.4 }\n",
      id="raw text"),
])
def test_transaction_script(build, script):
    assert build(Transaction("ip", "t")).script() == script


def test_elements_are_sent_in_chunks_nft_accepts():
    elements = [f"10.0.{i // 256}.{i % 256}" for i in range(ELEMENTS_PER_STATEMENT * 2 + 1)]
    lines = Transaction("ip", "t").add_element("s", elements).script().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("add element ip t s { ") for line in lines)
    assert sum(line.count(",") + 1 for line in lines) == len(elements)


def test_replace_table_is_podnets_self_replacing_script_and_comes_first():
    tx = Transaction("ip", "t").replace_table(TABLE).add_element("s", ["1.2.3.4"])
    script = tx.script()
    assert script.startswith(build_script("ip", "t", TABLE))
    # nft's error positions are mapped to content lines by the header's length.
    assert script.splitlines()[HEADER_LINES:HEADER_LINES + 1] == ["table ip t {"]
    with pytest.raises(ValueError, match="first operation"):
        Transaction("ip", "t").add_table().replace_table(TABLE)


class Failed(Exception):
    pass


class Module:
    """AnsibleModule as far as the runner uses it: run_command answers from a table."""

    def __init__(self, tmp_path, check_mode=False, answers=None):
        self.check_mode = check_mode
        self.tmpdir = str(tmp_path)
        self.answers = answers or {}
        self.commands = []
        self.scripts = []

    def run_command(self, args):
        self.commands.append(args[1:])
        if "-f" in args:
            with open(args[-1], encoding="utf-8") as handle:
                self.scripts.append(handle.read())
        return self.answers.get(args[1], (0, "", ""))

    def fail_json(self, msg, **kwargs):
        raise Failed(msg)


MISSING = (1, "", "Error: No such file or directory; did you mean table 'x' in family ip?")


@pytest.mark.parametrize(("check_mode", "operation", "answers", "commands", "result"), [
    P(False, "load", {}, [["-f"]], True, id="load"),
    P(True, "load", {}, [["-c", "-f"]], True, id="check mode checks the load with nft -c"),
    P(False, "empty load", {}, [], True, id="an empty transaction runs nothing"),
    P(False, "delete", {}, [["list", "table", "ip", "t"], ["delete", "table", "ip", "t"]], True, id="delete"),
    P(True, "delete", {}, [["list", "table", "ip", "t"]], True, id="check mode only looks before a delete"),
    P(False, "delete", {"list": MISSING}, [["list", "table", "ip", "t"]], False,
      id="delete of a missing table"),
    P(False, "list", {}, [["list", "table", "ip", "t"]], "", id="list"),
    P(True, "list -j -s", {}, [["-j", "-s", "list", "table", "ip", "t"]], "", id="listing flags"),
    P(False, "list map", {}, [["list", "map", "ip", "t", "affinity"]], "", id="list a map of the table"),
    P(False, "list", {"list": MISSING}, [["list", "table", "ip", "t"]], None,
      id="a missing table lists as None"),
])
def test_runner_commands(tmp_path, check_mode, operation, answers, commands, result):
    module = Module(tmp_path, check_mode, answers)
    runner = NftRunner(module, nft="/usr/sbin/nft")
    assert runner.check_mode is check_mode
    if operation == "load":
        got = runner.load(Transaction("ip", "t").replace_table(TABLE))
    elif operation == "empty load":
        got = runner.load(Transaction("ip", "t"))
    elif operation == "delete":
        got = runner.delete_table("ip", "t")
    elif operation == "list -j -s":
        got = runner.list("ip", "t", json=True, stateless=True)
    elif operation == "list map":
        got = runner.list("ip", "t", obj=("map", "affinity"))
    else:
        got = runner.list("ip", "t")
    assert [c[:-1] if "-f" in c else c for c in module.commands] == commands
    assert got == result


def test_runner_load_sends_one_script_and_leaves_no_temp_file(tmp_path):
    module = Module(tmp_path)
    transaction = Transaction("ip", "t").replace_table(TABLE).add_element("s", ["1.2.3.4"])
    NftRunner(module, nft="nft").load(transaction)
    assert module.scripts == [build_script("ip", "t", TABLE) + "add element ip t s { 1.2.3.4 }\n"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("check_mode", "message"), [
    P(False, "nft refused the table ip t; the live table is unchanged: "),
    P(True, "nft refused the check of table ip t; the live table is unchanged: "),
])
def test_runner_refusal_fails_with_content_lines(tmp_path, check_mode, message):
    module = Module(tmp_path, check_mode)

    def refuse(args):
        Module.run_command(module, args)
        return 1, "", f"{args[-1]}:{HEADER_LINES + 2}:3-5: Error: syntax error"

    module.run_command = refuse
    with pytest.raises(Failed) as failed:
        NftRunner(module, nft="nft").load(Transaction("ip", "t").replace_table(TABLE))
    assert str(failed.value) == message + "content line 2, column 3-5: Error: syntax error"
    assert NftRunner(module, nft="nft").load(Transaction("ip", "t").add_table(), may_fail=True) is False
    with pytest.raises(Failed) as failed:
        NftRunner(module, nft="nft").load(Transaction("ip", "t").add_element("s", ["1.2.3.4"]), "update of t")
    assert str(failed.value) == (message.replace("table ip t", "update of t")
                                 + f"transaction line {HEADER_LINES + 2}:3-5: Error: syntax error")


@pytest.mark.parametrize(("answer", "message"), [
    P((1, "", "Error: Could not process rule: Operation not permitted"), "nft list table ip t failed"),
])
def test_runner_other_listing_errors_fail(tmp_path, answer, message):
    module = Module(tmp_path, answers={"list": answer})
    with pytest.raises(Failed, match=message):
        NftRunner(module, nft="nft").list("ip", "t")


def test_fake_runner_serves_listings_and_records_operations():
    fake = FakeNft({("ip", "t"): "table ip t {\n}\n", ("ip", "m"): {None: "table", ("map", "a"): "map"}})
    assert fake.list("ip", "t") == "table ip t {\n}\n"
    assert fake.list("ip", "m", obj=("map", "a")) == "map"
    assert fake.list("ip", "nothing") is None
    assert fake.load(Transaction("ip", "t").add_table())
    assert fake.loaded == ["add table ip t\n"]
    assert fake.delete_table("ip", "t") is True
    assert fake.delete_table("ip", "t") is False
    assert [call[0] for call in fake.calls] == ["list", "list", "list", "load", "delete", "delete"]


def test_fake_runner_in_check_mode_changes_nothing():
    fake = FakeNft({("ip", "t"): "x"}, check_mode=True, refuse={("ip", "r")})
    assert fake.load(Transaction("ip", "t").add_table())
    assert fake.delete_table("ip", "t") is True
    assert fake.loaded == [] and fake.tables == {("ip", "t"): "x"}
    assert fake.load(Transaction("ip", "r").add_table(), may_fail=True) is False
    with pytest.raises(FakeNftRefused):
        fake.load(Transaction("ip", "r").add_table())

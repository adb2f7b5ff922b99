"""The nftables-writing modules' logic with the fake nft runner: no nft, no root, no namespace.

Each test runs a module's ensure_* the way main() does, against FakeNft and a stand-in
for AnsibleModule (files in tmp_path), and checks what the module did and reported:
idempotence, the reaction to a hand edit, and that check mode only checks.
"""

import json
import os

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script, sha256
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import FakeNft
from ansible_collections.podnet.network.plugins.module_utils.services.sync import generation
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import (
    compact,
    delta,
    kept_text,
    read_kept,
)
from ansible_collections.podnet.network.plugins.modules import dns, nftables, proxy_nftables

from tests.unit.test_dns_update import NEW_MODEL, desired, serving
from tests.unit.test_transfer import base_of

CONTENT = ("table ip podnet {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; "
           "policy accept;\n\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade\n\t}\n}\n")


class Failed(Exception):
    pass


class Module:
    """AnsibleModule as far as the modules and common/module_io use it."""

    def __init__(self, tmp_path, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.tmpdir = str(tmp_path)
        self.commands = []

    def fail_json(self, msg, **kwargs):
        raise Failed(msg)

    def atomic_move(self, src, dest):
        os.replace(src, dest)

    def set_mode_if_different(self, path, mode, changed):
        return changed

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return None  # no conntrack here: nothing to clear

    def warn(self, msg):
        pass


@pytest.fixture
def paths(tmp_path):
    return {"path": str(tmp_path / "boot" / "podnet.nft"), "state_file": str(tmp_path / "state" / "nft.json")}


def present(module, nft, paths, content=CONTENT, verify_live=False):
    return nftables.ensure_present(module, nft, "ip", "podnet", content, paths["path"], paths["state_file"],
                                   verify_live)


def loaded(content=CONTENT, table="podnet"):
    """The table as the module loads it: the content and its generation set."""
    value = generation(sha256(build_script("ip", table, content)))
    return content + (f"add set ip {table} podnet_generation {{ typeof meta mark; elements = {{ {value} }} }}"
                      "\n")


def test_nftables_loads_once_then_knows_at_a_glance(tmp_path, paths):
    nft = FakeNft()
    live, actions, verified = present(Module(tmp_path, {}), nft, paths)
    assert (live, verified) == (None, "none")
    assert actions == ["load table ip podnet", f"write {paths['path']}"]
    assert nft.loaded == [build_script("ip", "podnet", loaded())]
    with open(paths["path"], encoding="utf-8") as handle:
        assert handle.read() == build_script("ip", "podnet", loaded())
    nft.calls.clear()
    # Nothing changed: the generation set and the chain names, never the table.
    assert present(Module(tmp_path, {}), nft, paths) == (None, [], "generation")
    assert nft.calls == [("list", "ip", "podnet", ("set", "podnet_generation")), ("chains", "ip", "podnet"),
                         ("rules", "ip", "podnet")]
    assert len(nft.loaded) == 1


@pytest.mark.parametrize(("name", "live"), [
    ("deleted", None),
    ("reloaded by someone else", CONTENT),
    ("another generation", loaded(CONTENT.replace("10.244.0.0/16", "10.245.0.0/16"))),
    ("a chain added by hand", loaded() + "add chain ip podnet mine\n"),
])
def test_nftables_loads_whole_a_table_the_glance_does_not_recognise(tmp_path, paths, name, live):
    nft = FakeNft()
    present(Module(tmp_path, {}), nft, paths)
    if live is None:
        del nft.tables[("ip", "podnet")]
    else:
        nft.tables[("ip", "podnet")] = live
    _live, actions, verified = present(Module(tmp_path, {}), nft, paths)
    assert (actions, verified) == (["replace table ip podnet"], "none"), name
    assert nft.tables[("ip", "podnet")] == loaded()
    assert present(Module(tmp_path, {}), nft, paths)[1:] == ([], "generation")


def test_nftables_answers_a_digest_alone_and_changes_nothing(tmp_path, paths):
    """The action plugin asks with the content's sha256 before it sends a megabyte."""
    nft = FakeNft()
    bare = CONTENT.rstrip("\n")

    def ask(content=CONTENT):
        return nftables.runs(Module(tmp_path, {}), nft, "ip", "podnet", sha256(content), paths["path"],
                             paths["state_file"])

    assert not ask()  # nothing recorded
    present(Module(tmp_path, {}), nft, paths)
    nft.calls.clear()
    assert ask()
    assert nft.calls == [("list", "ip", "podnet", ("set", "podnet_generation")), ("chains", "ip", "podnet"),
                         ("rules", "ip", "podnet")]
    assert not ask(bare)  # the same table from other text (no last newline): sent, found current, learned
    assert present(Module(tmp_path, {}), nft, paths, content=bare)[1:] == ([], "generation")
    assert ask(bare)
    # A boot script changed by hand, or a table deleted: not current (the content is sent).
    with open(paths["path"], "a", encoding="utf-8") as handle:
        handle.write("# mine\n")
    assert not ask(bare)
    present(Module(tmp_path, {}), nft, paths, content=bare)
    del nft.tables[("ip", "podnet")]
    assert not ask(bare)


def test_nftables_with_verify_live_sees_a_hand_edit_inside_a_chain(tmp_path, paths):
    nft = FakeNft()
    present(Module(tmp_path, {}), nft, paths, verify_live=True)
    assert present(Module(tmp_path, {}), nft, paths, verify_live=True) == (loaded(), [], "listing")
    nft.tables[("ip", "podnet")] = loaded().replace("masquerade", "masquerade\n\t\tcounter")
    # The glance cannot see it (same generation, same chains) ...
    assert present(Module(tmp_path, {}), nft, paths)[1:] == ([], "generation")
    # ... a listing does, and loads the table whole.
    _live, actions, verified = present(Module(tmp_path, {}), nft, paths, verify_live=True)
    assert (actions, verified) == (["replace table ip podnet"], "none")
    assert nft.tables[("ip", "podnet")] == loaded()


POLICY = """table ip podnet-policy {
\tset p0_pods {
\t\ttypeof ip daddr
\t\telements = { 10.244.1.2, 10.244.1.3 }
\t}
\tset p0_ports {
\t\ttypeof meta l4proto . th dport
\t\tflags interval
\t\telements = { tcp . 80, tcp . 8000-8100 }
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip daddr @p0_pods jump pod_ingress
\t}
\tchain pod_ingress {
\t\tip daddr @p0_pods meta l4proto . th dport @p0_ports accept comment "default/web ingress[0]"
\t\tcounter drop
\t}
}
add element ip podnet-policy p0_pods { 10.244.1.4 }
"""
CHANGED = (POLICY.replace("tcp . 80,", "tcp . 81,").replace("10.244.1.3 }", "10.244.1.5 }")
           .replace("\t\tcounter drop", "\t\tip daddr @p1_pods accept\n\t\tcounter drop")
           .replace("\tchain forward", "\tset p1_pods {\n\t\ttypeof ip daddr\n"
                    "\t\telements = { 10.244.1.9 }\n\t}\n\tchain forward"))


def policy(module, nft, paths, content):
    return nftables.ensure_present(module, nft, "ip", "podnet-policy", content, paths["path"],
                                   paths["state_file"])


def test_nftables_sends_a_changed_table_as_one_transaction_of_what_changed(tmp_path, paths):
    nft = FakeNft()
    policy(Module(tmp_path, {}), nft, paths, POLICY)
    _live, actions, verified = policy(Module(tmp_path, {}), nft, paths, CHANGED)
    assert verified == "generation"
    assert actions == ["update table ip podnet-policy: 1 chains changed, 1 sets added, 5 elements",
                       f"write {paths['path']}"]
    old, new = (generation(sha256(build_script("ip", "podnet-policy", c))) for c in (POLICY, CHANGED))
    assert nft.loaded[-1] == (
        "flush chain ip podnet-policy pod_ingress\n"
        "flush set ip podnet-policy p0_pods\n"
        "flush set ip podnet-policy p0_ports\n"
        "table ip podnet-policy {\n"
        "\tset p1_pods {\n\t\ttypeof ip daddr;\n\t}\n"
        "\tchain pod_ingress {\n"
        '\t\tip daddr @p0_pods meta l4proto . th dport @p0_ports accept comment "default/web ingress[0]"\n'
        "\t\tip daddr @p1_pods accept\n\t\tcounter drop\n\t}\n"
        "}\n"
        "add set ip podnet-policy p0_pods { typeof ip daddr; elements = { 10.244.1.2, 10.244.1.5, "
        "10.244.1.4 } }\n"
        "add set ip podnet-policy p0_ports { typeof meta l4proto . th dport; flags interval; "
        "elements = { tcp . 81, tcp . 8000-8100 } }\n"
        "add set ip podnet-policy p1_pods { typeof ip daddr; elements = { 10.244.1.9 } }\n"
        "flush set ip podnet-policy podnet_generation\n"
        f"add set ip podnet-policy podnet_generation {{ typeof meta mark; elements = {{ {new} }} }}\n")
    # The record follows: the same content again is known at a glance (the fake's listing
    # stays the first load's, so the glance is told the new generation by hand).
    nft.tables[("ip", "podnet-policy")] = loaded(CHANGED, "podnet-policy")
    assert policy(Module(tmp_path, {}), nft, paths, CHANGED)[1:] == ([], "generation")
    # Back again: the set that came goes (its elements with it), the others' come back.
    _live, actions, _verified = policy(Module(tmp_path, {}), nft, paths, POLICY)
    assert actions[0] == "update table ip podnet-policy: 1 chains changed, 1 sets deleted, 4 elements"
    assert "delete set ip podnet-policy p1_pods\n" in nft.loaded[-1]


def test_nftables_loads_whole_when_nft_refuses_the_update(tmp_path, paths):
    class Refusing(FakeNft):
        def load(self, transaction, what=None, may_fail=False):
            if not transaction.replaces():
                assert may_fail
                return False
            return super().load(transaction, what, may_fail)

    nft = Refusing()
    policy(Module(tmp_path, {}), nft, paths, POLICY)
    _live, actions, _verified = policy(Module(tmp_path, {}), nft, paths, CHANGED)
    assert actions[0] == "replace table ip podnet-policy"
    assert nft.tables[("ip", "podnet-policy")] == loaded(CHANGED, "podnet-policy")


def test_nftables_check_mode_only_checks(tmp_path, paths):
    nft = FakeNft(check_mode=True)
    live, actions, _verified = present(Module(tmp_path, {}, check_mode=True), nft, paths)
    assert actions == ["load table ip podnet", f"write {paths['path']}"]
    assert [call[0] for call in nft.calls] == ["check"]
    assert nft.loaded == [] and nft.tables == {}
    assert not os.path.exists(paths["path"]) and not os.path.exists(paths["state_file"])


def test_nftables_refused_content_changes_nothing(tmp_path, paths):
    nft = FakeNft()
    with pytest.raises(Failed, match="touches table ip other"):
        present(Module(tmp_path, {}), nft, paths, content=CONTENT + "add table ip other\n")
    assert nft.calls == []


@pytest.mark.parametrize("check_mode", [False, True])
def test_nftables_absent(tmp_path, paths, check_mode):
    nft = FakeNft()
    present(Module(tmp_path, {}), nft, paths)
    nft.check_mode = check_mode
    module = Module(tmp_path, {}, check_mode)
    live, actions = nftables.ensure_absent(module, nft, "ip", "podnet", paths["path"], paths["state_file"])
    assert live == loaded()
    assert actions == ["delete table ip podnet", f"remove {paths['path']}", f"remove {paths['state_file']}"]
    assert (("ip", "podnet") in nft.tables) is check_mode
    assert os.path.exists(paths["path"]) is check_mode


def services_model(*endpoints):
    return {"cluster_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
            "node_port_range": [30000, 32767], "services": [{
                "namespace": "default", "name": "web", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
                "external_ips": [], "external_traffic_policy": "Cluster",
                "internal_traffic_policy": "Cluster",
                "session_affinity_timeout": None,
                "ports": [{"name": "", "protocol": "TCP", "port": 80, "node_port": None, "target_port": 8080,
                           "endpoints": [{"ip": ip, "port": 8080, "node": "node1", "pod": None}
                                         for ip in endpoints]}]}]}


def proxy(tmp_path, nft, model, check_mode=False):
    params = {"model": compact(model), "model_sha256": None, "model_delta": None, "node": "node1",
              "verify_live": False, "flush_conntrack": True}
    return proxy_nftables.ensure_present(Module(tmp_path, params, check_mode), nft, "podnet-services",
                                         str(tmp_path / "proxy.json"), str(tmp_path / "services.nft"))


def test_proxy_nftables_with_a_trusted_record_sends_only_deltas(tmp_path):
    nft = FakeNft()
    actions = proxy(tmp_path, nft, services_model("10.244.1.5", "10.244.2.5"))[0]
    assert actions[0] == "load table ip podnet-services whole: it does not exist"
    assert [call[0] for call in nft.calls] == ["list", "load"]
    # The same inputs again: the module asks the kernel only for the generation and the chain
    # names, renders nothing and lists nothing else.
    actions, *_, extra = proxy(tmp_path, nft, services_model("10.244.1.5", "10.244.2.5"))
    assert (actions, extra) == ([], {"current": True, "verified": "generation"})
    assert nft.calls[2:] == [("list", "ip", "podnet-services", ("set", "generation")),
                             ("chains", "ip", "podnet-services"), ("rules", "ip", "podnet-services")]
    # Other inputs: the same glance, then, trusting its record, the module does not list the
    # table; it sends deltas, the new generation among them (bookkeeping, not counted). (An
    # endpoint went away: the affinity map, and only it, is listed for the pins to it.)
    actions, _old, _view, _cleared, extra = proxy(tmp_path, nft, services_model("10.244.1.5"))
    assert extra == {"current": False, "verified": "record", "model_from": "whole"}
    assert [call[:4] if call[0] != "load" else "load" for call in nft.calls[5:]] == [
        ("list", "ip", "podnet-services", ("set", "generation")), ("chains", "ip", "podnet-services"),
        ("rules", "ip", "podnet-services"), ("list", "ip", "podnet-services", ("map", "affinity")), "load"]
    assert actions[0] == ("update table ip podnet-services: 3 elements deleted, 1 added, "
                          "0 pick chains added, 0 deleted")
    update = nft.loaded[-1]
    assert "delete element ip podnet-services service_endpoints" in update and "table ip" not in update
    assert "add element ip podnet-services generation" in update


def test_proxy_nftables_sees_a_table_that_is_not_the_recorded_one(tmp_path):
    """The glance (generation and chain names) catches a table deleted, reloaded by someone
    else or given another chain: the module lists it and loads it again. A boot script
    edited is written again, the table being the recorded one."""
    nft = FakeNft()
    model = services_model("10.244.1.5", "10.244.2.5")
    proxy(tmp_path, nft, model)
    key = ("ip", "podnet-services")
    loaded = nft.tables[key]
    recorded = json.loads((tmp_path / "proxy.json").read_text())
    names = set(recorded["chains"])

    def generation_set(value):
        return json.dumps({"nftables": [{"set": {"name": "generation", "elem": [value]}}]})

    ours = generation(recorded["inputs"])
    for name, live, verified, action in [
        ("deleted", None, "listing", "load table ip podnet-services whole: it does not exist"),
        ("another generation", {("set", "generation"): generation_set(ours ^ 1), "chains": names,
                                None: '{"nftables": []}'}, "listing", "load table"),
        ("a chain more", {("set", "generation"): generation_set(ours), "chains": names | {"mine"},
                          None: '{"nftables": []}'}, "listing", "load table"),
        # `flush table`: the generation set and every chain stay, their rules are gone.
        ("flushed", {("set", "generation"): generation_set(ours), "chains": names, "rules": {},
                     None: '{"nftables": []}'}, "listing", "load table"),
        ("boot script edited", loaded, "record", f"write {tmp_path / 'services.nft'}"),
    ]:
        if live is None:
            nft.tables.pop(key)
        else:
            nft.tables[key] = live
        if name == "boot script edited":
            (tmp_path / "services.nft").write_text("# mine\n")
        actions, _old, _view, _cleared, extra = proxy(tmp_path, nft, model)
        assert extra["verified"] == verified, name
        assert actions[0].startswith(action), (name, actions)
        assert nft.tables[key] == loaded, name
        assert proxy(tmp_path, nft, model)[4]["verified"] == "generation", name


def test_proxy_nftables_with_verify_live_lists_the_table_every_run(tmp_path):
    nft = FakeNft()
    model = services_model("10.244.1.5")
    proxy(tmp_path, nft, model)
    calls = len(nft.calls)
    nft.tables[("ip", "podnet-services")] = {None: '{"nftables": []}'}  # emptied by hand
    params = {"model": compact(model), "model_sha256": None, "model_delta": None, "node": "node1",
              "verify_live": True, "flush_conntrack": True}
    result = proxy_nftables.ensure_present(Module(tmp_path, params), nft, "podnet-services",
                                           str(tmp_path / "proxy.json"), str(tmp_path / "services.nft"))
    assert result[4]["verified"] == "listing"
    assert result[0] == ["load table ip podnet-services whole: its chains or rules differ from podnet's"]
    assert nft.calls[calls] == ("list", "ip", "podnet-services", None)


def test_proxy_nftables_reloads_when_nft_refuses_the_update(tmp_path):
    nft = FakeNft()
    proxy(tmp_path, nft, services_model("10.244.1.5", "10.244.2.5"))
    nft.refuse = {("ip", "podnet-services")}
    # The record is trusted; the table was changed behind its back, so nft refuses the delta.
    with pytest.raises(Exception, match="nft refused"):
        proxy(tmp_path, nft, services_model("10.244.1.5"))
    loads = [call for call in nft.calls if call[0] == "load"]
    assert "delete element" in loads[-2][3] and loads[-1][3].startswith("#!/usr/sbin/nft -f")


def test_proxy_nftables_on_a_full_disk_fails_before_the_table_changes(tmp_path, monkeypatch):
    """The boot script and the record are written (staged) before the table changes: a full
    disk fails the run naming the file, with the live rules, script and record as they were."""
    nft = FakeNft()
    proxy(tmp_path, nft, services_model("10.244.1.5", "10.244.2.5"))
    before = {path.name: path.read_text() for path in tmp_path.iterdir()}
    loads = len(nft.loaded)
    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        handle.write = lambda text: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        return handle

    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(Failed, match="cannot write .*services.nft: .*No space left on device"):
        proxy(tmp_path, nft, services_model("10.244.1.5"))
    monkeypatch.undo()
    assert len(nft.loaded) == loads
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == before  # no staged leftovers


def test_proxy_nftables_refused_by_nft_leaves_script_and_record_as_they_were(tmp_path):
    nft = FakeNft()
    proxy(tmp_path, nft, services_model("10.244.1.5", "10.244.2.5"))
    before = {path.name: path.read_text() for path in tmp_path.iterdir()}
    nft.refuse = {("ip", "podnet-services")}
    with pytest.raises(Exception, match="nft refused"):
        proxy(tmp_path, nft, services_model("10.244.1.5"))
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == before


def test_proxy_nftables_check_mode_only_checks(tmp_path):
    nft = FakeNft(check_mode=True)
    actions = proxy(tmp_path, nft, services_model("10.244.1.5"), check_mode=True)[0]
    assert actions == ["load table ip podnet-services whole: it does not exist",
                       f"write {tmp_path / 'services.nft'}"]
    assert [call[0] for call in nft.calls] == ["list", "check"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("check_mode", [False, True])
def test_proxy_nftables_absent(tmp_path, check_mode):
    nft = FakeNft()
    proxy(tmp_path, nft, services_model("10.244.1.5"))
    nft.check_mode = check_mode
    module = Module(tmp_path, {}, check_mode)
    actions = proxy_nftables.ensure_absent(module, nft, "podnet-services", str(tmp_path / "proxy.json"),
                                           str(tmp_path / "services.nft"))[0]
    assert actions == ["delete table ip podnet-services", f"remove {tmp_path / 'services.nft'}",
                       f"remove {tmp_path / 'proxy.json'}", f"remove {tmp_path / 'proxy.model.jsonl'}"]
    assert (("ip", "podnet-services") in nft.tables) is check_mode


def test_dns_check_mode_runs_only_the_checks_of_a_blue_green_update(tmp_path):
    """The plan of a records change, executed in check mode: two `dnsmasq --test`, one `nft -c`,
    nothing started, stopped, written or swapped; every action still reported."""
    plan = dns.plan_dns_update(serving(), desired(NEW_MODEL))
    module = Module(tmp_path, {}, check_mode=True)
    ran = []
    module.run_command = lambda args, **kwargs: ran.append(args[:2]) or (0, "", "")
    nft = FakeNft(check_mode=True)
    actions = dns.execute(module, nft, "/usr/sbin/dnsmasq", plan["steps"], "podnet-dns", str(tmp_path), 1.0)
    assert actions == [s["action"] for s in plan["steps"] if s["action"]]
    assert ran == [["/usr/sbin/dnsmasq", "--test"]] * 2
    assert [call[0] for call in nft.calls] == ["check"]
    assert list(tmp_path.iterdir()) == []


def test_proxy_nftables_answers_a_digest_alone_and_changes_nothing(tmp_path):
    """A playbook asks with the model's sha256 first: the megabytes go only when the answer is
    no, and then the answer says which model the node keeps, Service by Service."""
    nft = FakeNft()
    model = services_model("10.244.1.5")
    proxy(tmp_path, nft, model)
    loads = len(nft.loaded)

    actions, _old, _view, _cleared, extra = ask(tmp_path, nft, sha256(compact(model)))
    assert (actions, extra) == ([], {"current": True, "verified": "generation"})
    other = sha256(compact(services_model("10.244.1.6")))
    actions, _old, _view, _cleared, extra = ask(tmp_path, nft, other)
    assert (actions, extra) == ([], {"current": False, "model_base": base_of(compact(model))})
    assert len(nft.loaded) == loads


def ask(tmp_path, nft, model_sha256, model_delta=None):
    params = {"model": None, "model_sha256": model_sha256, "model_delta": model_delta, "node": "node1",
              "verify_live": False, "flush_conntrack": True}
    return proxy_nftables.ensure_present(Module(tmp_path, params), nft, "podnet-services",
                                         str(tmp_path / "proxy.json"), str(tmp_path / "services.nft"))


def test_proxy_nftables_rebuilds_the_model_from_a_delta_or_asks_for_it_whole(tmp_path):
    """Given only what changed since the model it keeps, the node applies what the model
    whole would have given; a delta from another base, or one that rebuilds other text,
    changes nothing and says so (no model_from), and the controller then sends it whole."""
    nft, whole = FakeNft(), FakeNft()
    old, new = services_model("10.244.1.5", "10.244.2.5"), services_model("10.244.1.5")
    (tmp_path / "whole").mkdir()
    proxy(tmp_path / "whole", whole, old)
    proxy(tmp_path / "whole", whole, new)
    proxy(tmp_path, nft, old)
    base = ask(tmp_path, nft, sha256(compact(new)))[4]["model_base"]
    loads = len(nft.loaded)

    target, change = sha256(compact(new)), compact(delta(new, base))
    wrong = compact(dict(delta(new, base), base_sha256=sha256("another model")))
    assert ask(tmp_path, nft, target, wrong)[4] == {"current": False, "model_base": base}
    assert ask(tmp_path, nft, sha256(json.dumps(new)), change)[4]["model_base"] == base
    assert len(nft.loaded) == loads

    actions, _old, _view, _cleared, extra = ask(tmp_path, nft, target, change)
    assert extra == {"current": False, "verified": "record", "model_from": "delta"}
    assert actions[0].startswith("update table ip podnet-services: 3 elements deleted, 1 added")
    # The same table as the model whole gave (but for the generation: other inputs, other paths).
    records = [json.loads((where / "proxy.json").read_text()) for where in (tmp_path, tmp_path / "whole")]
    assert [dict(r["elements"], generation=None) for r in records] == [
        dict(records[1]["elements"], generation=None)] * 2
    assert records[0]["view"] == records[1]["view"]
    # The node keeps the new model: the base of the next delta.
    assert kept_text(read_kept((tmp_path / "proxy.model.jsonl").read_text())) == compact(new)


def test_proxy_nftables_keeps_a_model_sent_in_another_form_compact(tmp_path):
    """A model's text in any JSON form applies; the node keeps it compact (the form deltas
    are made from), and takes the place of the file earlier podnet kept it in."""
    nft, old, new = FakeNft(), services_model("10.244.1.5", "10.244.2.5"), services_model("10.244.1.5")
    (tmp_path / "proxy.model.json").write_text(json.dumps(old))
    params = {"model": json.dumps(old, indent=1), "model_sha256": None, "model_delta": None, "node": "node1",
              "verify_live": False, "flush_conntrack": True}
    actions = proxy_nftables.ensure_present(Module(tmp_path, params), nft, "podnet-services",
                                            str(tmp_path / "proxy.json"), str(tmp_path / "services.nft"))[0]
    assert actions[-1] == f"remove {tmp_path / 'proxy.model.json'}"
    assert not (tmp_path / "proxy.model.json").exists()
    base = ask(tmp_path, nft, sha256(compact(new)))[4]["model_base"]
    assert base == base_of(compact(old))
    actions, *_, extra = ask(tmp_path, nft, sha256(compact(new)), compact(delta(new, base)))
    assert extra["model_from"] == "delta" and actions
    assert kept_text(read_kept((tmp_path / "proxy.model.jsonl").read_text())) == compact(new)


def test_proxy_nftables_renders_only_the_services_of_a_delta(tmp_path, monkeypatch):
    """A delta from the model the node rendered last renders only its own Services (not the
    model whole), and the record, the table's update and the boot script are what the model
    whole gives: the same elements, shared counts and view; the same script but for the
    generation."""
    from tests.unit.test_proxy_nft import MODEL
    old = MODEL
    new = json.loads(json.dumps(MODEL))
    web = next(svc for svc in new["services"] if svc["name"] == "web")
    web["ports"][0]["endpoints"].pop(0)
    new["services"] = [svc for svc in new["services"] if svc["name"] != "sctp"]
    nft, whole = FakeNft(), FakeNft()
    (tmp_path / "whole").mkdir()
    proxy(tmp_path / "whole", whole, old)
    whole_actions = proxy(tmp_path / "whole", whole, new)[0]
    proxy(tmp_path, nft, old)
    base = ask(tmp_path, nft, sha256(compact(new)))[4]["model_base"]

    def whole_render(*args, **kwargs):
        raise AssertionError("the model was rendered whole")

    with monkeypatch.context() as patch:
        patch.setattr(proxy_nftables, "render_counted", whole_render)
        actions, *_, extra = ask(tmp_path, nft, sha256(compact(new)), compact(delta(new, base)))
    assert extra["model_from"] == "delta"
    records = [json.loads((where / "proxy.json").read_text()) for where in (tmp_path, tmp_path / "whole")]
    assert [dict(r["elements"], generation=None) for r in records] == [
        dict(records[1]["elements"], generation=None)] * 2
    assert records[0]["shared"] == records[1]["shared"] != {}
    assert records[0]["view"] == records[1]["view"]
    scripts = [(where / "services.nft").read_text() for where in (tmp_path, tmp_path / "whole")]
    generations = [r["elements"]["generation"][0] for r in records]
    assert scripts[0].replace(generations[0], "GEN") == scripts[1].replace(generations[1], "GEN")
    # The kernel got the same element changes as the whole render's update.
    assert [line for line in nft.loaded[-1].splitlines() if "generation" not in line] == [
        line for line in whole.loaded[-1].splitlines() if "generation" not in line]
    assert actions[0] == whole_actions[0]


def test_proxy_nftables_trusts_the_recorded_base_only_for_the_kept_file_it_names(tmp_path):
    """The record names the kept model by its file's digest: that file, the node tells the
    recorded base without joining the model's text; a kept file changed behind the record's
    back (a Service's line edited), the base is worked out from the file as it is, and a
    delta from the recorded base is refused (the model is then sent whole)."""
    nft, old, new = FakeNft(), services_model("10.244.1.5", "10.244.2.5"), services_model("10.244.1.5")
    proxy(tmp_path, nft, old)
    kept_file = tmp_path / "proxy.model.jsonl"
    record = json.loads((tmp_path / "proxy.json").read_text())
    assert record["kept_sha256"] == sha256(kept_file.read_text())
    base = ask(tmp_path, nft, sha256(compact(new)))[4]["model_base"]
    assert base == record["model_base"] == base_of(compact(old))
    lines = kept_file.read_text().split("\n")
    lines[1] = lines[1].replace('"port":80', '"port":81', 1)
    assert lines[1] != kept_file.read_text().split("\n")[1]
    kept_file.write_text("\n".join(lines))
    edited = ask(tmp_path, nft, sha256(compact(new)))[4]["model_base"]
    assert edited != base and edited == base_of(kept_text(read_kept(kept_file.read_text())))
    assert ask(tmp_path, nft, sha256(compact(new)), compact(delta(new, base)))[4] == {
        "current": False, "model_base": edited}

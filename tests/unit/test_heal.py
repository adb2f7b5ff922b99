"""podnet-heal: puts back only what is missing (hermetic: commands recorded, not run)."""

import importlib.machinery
import importlib.util
import json
import subprocess
import sys

import pytest

from tests.unit.test_restore import REPO, shipped_package

HEAL = REPO / "roles" / "podnet_restore" / "files" / "podnet-heal"


def listed(routes, argv):
    """What `ip -j route show [table T] [exact DEST] [proto P]` prints of `routes` (each with
    its "protocol", 158 unless said): filtered as asked, the protocol left out when filtered
    by it, as iproute2 does."""
    args = dict(zip(argv[4::2], argv[5::2], strict=False))
    out = []
    for route in routes:
        protocol = route.get("protocol", "158")
        if "exact" in args and route["dst"] != args["exact"] or "proto" in args and protocol != args["proto"]:
            continue
        out.append({k: v for k, v in dict(route, protocol=protocol).items()
                    if k != "protocol" or "proto" not in args})
    return out


@pytest.fixture
def heal(monkeypatch):
    loader = importlib.machinery.SourceFileLoader("podnet_heal_under_test", str(HEAL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    # `nft -j list chains` as nft prints it: podnet's table with its chain, a foreign one.
    chains = {"nftables": [{"metainfo": {"version": "1.0.6"}},
                           {"chain": {"family": "ip", "table": "podnet", "name": "postrouting", "handle": 1}},
                           {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1}}]}
    calls, live = [], {"chains": json.dumps(chains), "routes": []}

    def fake_run(argv, stdin=None):
        calls.append(list(argv))
        out = ""
        if argv[:4] == ["nft", "-j", "list", "chains"]:
            out = live["chains"]
        elif argv[:4] == ["ip", "-j", "route", "show"]:
            out = json.dumps(listed(live["routes"], argv))
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(module.R, "run", fake_run)
    return module, calls, live


def script(tmp_path, family, table):
    path = tmp_path / ("%s.nft" % table)
    path.write_text("#!/usr/sbin/nft -f\ntable %s %s {}\ndelete table %s %s\ntable %s %s { }\n"
                    % ((family, table) * 3))
    return str(path)


def test_a_present_table_is_not_reloaded_a_flushed_one_is(heal, tmp_path):
    module, calls, _live = heal
    tables = module.live_tables()
    assert tables == {("ip", "podnet"), ("inet", "filter")}
    assert module.heal_nft_file(script(tmp_path, "ip", "podnet"), tables) == []
    assert module.heal_nft_file(script(tmp_path, "ip", "podnet-dns"), tables)
    loads = [c for c in calls if c[:2] == ["nft", "-f"]]
    assert loads == [["nft", "-f", str(tmp_path / "podnet-dns.nft")]]


def test_only_missing_routes_are_added(heal):
    module, calls, live = heal
    live["routes"] = [{"dst": "10.244.1.0/24", "gateway": "192.168.56.12"}]
    spec = {"protocol": 158, "table": 254, "routes": [
        {"dest": "10.244.1.0/24", "gateway": "192.168.56.12"},
        {"dest": "10.244.2.0/24", "gateway": "192.168.56.13"}]}
    assert module.heal_routes(spec) == ["added 1 podCIDR routes: 10.244.2.0/24"]
    assert [c for c in calls if "replace" in c] == [
        ["ip", "route", "replace", "10.244.2.0/24", "via", "192.168.56.13", "proto", "158", "table", "254"]]
    live["routes"].append({"dst": "10.244.2.0/24", "gateway": "192.168.56.13"})
    assert module.heal_routes(spec) == []


def test_a_destination_another_route_holds_is_left_alone_quietly(heal):
    """networkd's static route to a podCIDR: the routes module refuses to take it over, so the
    heal does not either, nor log every round (the boot reported it)."""
    module, calls, live = heal
    live["routes"] = [{"dst": "10.244.2.0/24", "gateway": "192.168.56.1", "dev": "eth0",
                       "protocol": "static"}]
    spec = {"protocol": 158, "table": 254, "routes": [{"dest": "10.244.2.0/24", "gateway": "192.168.56.13"}]}
    assert module.heal_routes(spec) == []
    assert [c for c in calls if "replace" in c] == []


def test_steps_without_a_heal_are_left_to_the_boot(heal):
    module, calls, _live = heal
    assert module.heal_step({"call": "podnet_node.pods.lifecycle.restore_at_boot"}, set()) == []
    assert module.heal_step({"kernel_modules": ["br_netfilter"]}, set()) == []
    assert calls == []


def test_the_shipped_package_has_the_heal_functions(tmp_path):
    lib = shipped_package(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from podnet_node.firewall import apply; from podnet_node.pods import lifecycle;"
            "assert callable(apply.heal) and callable(apply.restore_at_boot) and callable(lifecycle.heal);"
            "assert not [m for m in sys.modules if m.startswith('ansible')], 'Ansible was imported'")
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(lib)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_round_waits_for_no_one_and_skips_while_a_podnet_run_holds_the_node_lock(tmp_path):
    """A module holds the node lock while it changes the node; a heal round then is skipped,
    not run halfway through the module's change; free, the round runs (and holds it)."""
    import fcntl
    import os

    lib = shipped_package(tmp_path / "lib")
    lock = tmp_path / "node.lock"
    code = ("import sys, importlib.machinery, importlib.util; sys.path.insert(0, sys.argv[1]);"
            "loader = importlib.machinery.SourceFileLoader('heal', sys.argv[1] + '/podnet-heal');"
            "spec = importlib.util.spec_from_loader('heal', loader);"
            "m = importlib.util.module_from_spec(spec);"
            "loader.exec_module(m); print(m.heal_round(sys.argv[2], sys.argv[3]))")
    argv = [sys.executable, "-S", "-I", "-c", code, str(lib), str(tmp_path / "no-entries"), str(lock)]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as module_io.node_lock holds it
    try:
        held = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    finally:
        os.close(fd)
    free = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert (held.stdout, held.returncode) == ("None\n", 0), held.stderr
    assert (free.stdout, free.returncode) == ("(0, 0)\n", 0), free.stderr

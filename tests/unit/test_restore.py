"""The boot-time restore: the runner of the roles' entries, and the podnet_node package it ships.

Hermetic: commands are recorded, not run; the package is imported from a copy made
the way the podnet_restore role ships it, by a Python without Ansible on its path.
"""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "roles" / "podnet_restore" / "files" / "podnet-restore"


@pytest.fixture
def runner(monkeypatch):
    loader = importlib.machinery.SourceFileLoader("podnet_restore_runner", str(RUNNER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    calls = []

    def fake_run(argv, stdin=None):
        calls.append(list(argv))
        if any(os.path.basename(arg).startswith("fail") for arg in argv):
            raise RuntimeError("%s failed: no luck" % " ".join(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(module, "run", fake_run)
    return module, calls


def write_entries(directory, entries):
    directory.mkdir(exist_ok=True)
    for name, steps in entries.items():
        (directory / ("%s.json" % name)).write_text(json.dumps({"steps": steps}))


def test_entries_run_in_name_order_and_each_step_is_reported(runner, tmp_path, capsys):
    module, calls = runner
    nft = tmp_path / "podnet.nft"
    nft.write_text("table ip podnet {}\n")
    write_entries(tmp_path / "restore.d", {
        "30-podnet_egress": [{"name": "egress masquerade", "nft_file": str(nft)}],
        "20-podnet_routes": [{"name": "podCIDR routes", "routes": {
            "protocol": 158, "table": 254, "routes": [{"dest": "10.244.2.0/24", "gateway": "10.0.0.12"}]}}],
        "60-podnet_dns": [{"name": "Service DNS address", "address": {
            "address": "10.96.0.10/32", "dev": "lo", "label": "lo:podnet"}}],
    })
    assert module.restore(str(tmp_path / "restore.d")) == 0
    assert [c for c in calls if c[:2] != ["ip", "-j"]] == [
        ["ip", "route", "replace", "10.244.2.0/24", "via", "10.0.0.12", "proto", "158", "table", "254"],
        ["nft", "-f", str(nft)],
        ["ip", "address", "replace", "10.96.0.10/32", "dev", "lo", "label", "lo:podnet"],
    ]
    out = capsys.readouterr().out
    assert "podnet-restore: 20-podnet_routes: podCIDR routes: 1 podCIDR routes" in out
    assert "podnet-restore: 30-podnet_egress: egress masquerade: ok" in out


def test_a_route_of_another_protocol_at_a_podcidr_is_kept_and_reported(runner, monkeypatch):
    """The boot keeps the routes module's rule: a foreign route holding a podCIDR is never
    replaced (`ip route replace` would overwrite it); podnet's own and free ones are put."""
    module, calls = runner
    foreign = {"dst": "10.244.2.0/24", "gateway": "192.168.56.1", "dev": "eth0", "protocol": "static"}
    ours = {"dst": "10.244.3.0/24", "gateway": "192.168.56.13", "dev": "eth0"}
    recorded = module.run

    def run(argv, stdin=None):
        if argv[:4] == ["ip", "-j", "route", "show"]:
            dest, by_proto = argv[argv.index("exact") + 1], "proto" in argv
            live = [ours] if by_proto else [foreign, dict(ours, protocol="158")]
            held = [r for r in live if r["dst"] == dest]
            return subprocess.CompletedProcess(argv, 0, json.dumps(held), "")
        return recorded(argv, stdin)

    monkeypatch.setattr(module, "run", run)
    lines = module.routes({"protocol": 158, "table": 254, "routes": [
        {"dest": "10.244.2.0/24", "gateway": "192.168.56.12"},
        {"dest": "10.244.3.0/24", "gateway": "192.168.56.13"},
        {"dest": "10.244.4.0/24", "gateway": "192.168.56.14"}]})
    assert [c[3] for c in calls if c[:3] == ["ip", "route", "replace"]] == ["10.244.3.0/24", "10.244.4.0/24"]
    assert lines == ["2 podCIDR routes",
                     "kept a route podnet does not own: 10.244.2.0/24 via 192.168.56.1 dev eth0 proto static"]


def test_a_failing_step_is_reported_and_the_rest_still_runs(runner, tmp_path, capsys):
    module, calls = runner
    good, bad = tmp_path / "good.nft", tmp_path / "fail.nft"
    good.write_text("")
    bad.write_text("")
    write_entries(tmp_path / "restore.d", {
        "10-a": [{"name": "first", "nft_file": str(bad)}, {"name": "second", "nft_file": str(good)}],
        "20-b": [{"name": "third", "sysctl_file": str(tmp_path / "absent.conf")}],
        "30-c": "not a list",
        "40-d": [{"name": "no kind"}, {"name": "fourth", "nft_file": str(good)}],
    })
    (tmp_path / "restore.d" / "35-broken.json").write_text("{")
    assert module.restore(str(tmp_path / "restore.d")) == 4
    assert calls == [["nft", "-f", str(bad)], ["nft", "-f", str(good)], ["nft", "-f", str(good)]]
    out = capsys.readouterr().out
    assert "10-a: first: FAILED: nft -f %s failed: no luck" % bad in out
    assert "10-a: second: ok" in out
    assert "20-b: third: skipped (%s is absent)" % (tmp_path / "absent.conf") in out
    assert "30-c: FAILED: unreadable entry" in out
    assert "35-broken: FAILED: unreadable entry" in out
    assert "40-d: no kind: FAILED: a step needs exactly one of" in out
    assert "40-d: fourth: ok" in out


def test_main_exits_non_zero_when_a_step_failed(runner, tmp_path, monkeypatch, capsys):
    module, _ = runner
    write_entries(tmp_path / "restore.d", {"10-a": [{"name": "x", "routes": {"routes": [{"dest": "fail"}]}}]})
    monkeypatch.setattr(module, "ENTRIES_DIR", str(tmp_path / "restore.d"))
    assert module.main() == 1
    assert "FAILED: 1 step(s) did not restore" in capsys.readouterr().out
    monkeypatch.setattr(module, "ENTRIES_DIR", str(tmp_path / "never-set-up"))
    assert module.main() == 0


def test_call_reaches_only_the_podnet_node_package(runner):
    module, _ = runner
    with pytest.raises(RuntimeError, match="not a function of the podnet_node package"):
        module.call("os.system", {"command": "true"})


def shipped_package(tmp_path):
    """Copy what the podnet_restore role ships, as its install task lists it."""
    tasks = yaml.safe_load((REPO / "roles" / "podnet_restore" / "tasks" / "main.yml").read_text())
    install = next(t for t in tasks if "Install the restore runner" in t["name"])
    module_utils = REPO / "plugins" / "module_utils"
    for item in install["vars"]["podnet_restore_program"]:
        src = item["src"].replace("{{ podnet_restore_module_utils }}", str(module_utils))
        source = Path(src) if src.startswith("/") else REPO / "roles" / "podnet_restore" / "files" / src
        dest = tmp_path / item["dest"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source.read_bytes())
    return tmp_path


def test_the_shipped_package_imports_without_ansible(tmp_path):
    lib = shipped_package(tmp_path)
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from podnet_node.pods import lifecycle; from podnet_node.common import process;"
            "assert callable(lifecycle.restore_at_boot) and callable(process.find);"
            "assert not [m for m in sys.modules if m.startswith('ansible')], 'Ansible was imported'")
    # -S -I: no site-packages and no PYTHONPATH, as on a node without Ansible.
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(lib)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_restore_at_boot_without_recorded_pods(tmp_path):
    from ansible_collections.podnet.network.plugins.module_utils.pods.lifecycle import restore_at_boot

    assert restore_at_boot(str(tmp_path / "pods")) == ["no test pods recorded in %s" % (tmp_path / "pods")]
    (tmp_path / "pods").mkdir()
    assert restore_at_boot(str(tmp_path / "pods"), str(tmp_path / "absent.conflist")) == ["0 test pods"]


def test_every_role_declares_its_entry_through_the_restore_role():
    """No role writes into restore.d by itself, and the restore role lists no one's files."""
    entries = {}
    for restore_yml in sorted(REPO.glob("roles/*/tasks/restore.yml")):
        for task in yaml.safe_load(restore_yml.read_text()):
            include = task.get("ansible.builtin.import_role")
            if include:
                assert include == {"name": "podnet.network.podnet_restore", "tasks_from": "entry"}
                entries[task["vars"]["podnet_restore_entry"]] = restore_yml.parts[-3]
    assert entries == {
        "10-podnet_node": "podnet_node",
        "20-podnet_routes": "podnet_routes",
        "30-podnet_egress": "podnet_egress",
        "40-podnet_network_policy": "podnet_network_policy",
        "50-podnet_services": "podnet_services",
        "60-podnet_dns": "podnet_dns",
        "70-podnet_test_pods": "podnet_test_pods",
    }
    tasks = (REPO / "roles" / "podnet_restore" / "tasks").glob("*.yml")
    restore_role = " ".join(p.read_text() for p in tasks)
    for other in ("sysctl", "routes.json", "nftables", "iptables", "active.json", "/var/lib/cni"):
        assert other not in restore_role

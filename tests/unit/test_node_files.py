"""podnet.network.node_files on a scratch directory: writes what differs, in one run.

Hermetic: the module runs as Ansible runs it (its arguments as JSON on stdin) in a temporary
directory; no root needed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# This checkout's collection first (the venv's .pth may name another worktree's).
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / ".collections"),
                                                   os.environ.get("PYTHONPATH", "")]))
MODULE = "ansible_collections.podnet.network.plugins.modules.node_files"


def run(dest, files, modes=None, check=False, diff=False):
    args = {"ANSIBLE_MODULE_ARGS": {"dest": str(dest), "files": files, "modes": modes or {},
                                    "_ansible_check_mode": check, "_ansible_diff": diff}}
    proc = subprocess.run([sys.executable, "-m", MODULE], input=json.dumps(args), capture_output=True,
                          text=True, timeout=60, env=ENV)
    return json.loads(proc.stdout)


def test_writes_what_differs_and_then_nothing(tmp_path):
    files = {"podnet-restore": "#!/usr/bin/python3\nprint()\n", "podnet_node/pods/state.py": "X = 1\n"}
    first = run(tmp_path, files, {"podnet-restore": "0755"})
    assert first["changed"] and sorted(first["written"]) == sorted(files)
    assert (tmp_path / "podnet_node/pods/state.py").read_text() == "X = 1\n"
    assert oct(os.stat(tmp_path / "podnet-restore").st_mode & 0o777) == "0o755"
    assert oct(os.stat(tmp_path / "podnet_node/pods/state.py").st_mode & 0o777) == "0o644"
    again = run(tmp_path, files, {"podnet-restore": "0755"})
    assert not again["changed"] and again["written"] == []


def test_a_changed_content_or_mode_is_written_alone_and_check_mode_writes_nothing(tmp_path):
    files = {"a": "one\n", "b": "two\n"}
    run(tmp_path, files)
    (tmp_path / "other").write_text("not podnet's\n")
    checked = run(tmp_path, dict(files, a="ONE\n"), {"b": "0755"}, check=True)
    assert checked["changed"] and checked["written"] == ["a", "b"]
    assert (tmp_path / "a").read_text() == "one\n"
    done = run(tmp_path, dict(files, a="ONE\n"), {"b": "0755"})
    assert done["written"] == ["a", "b"] and (tmp_path / "a").read_text() == "ONE\n"
    assert (tmp_path / "other").read_text() == "not podnet's\n"


def test_a_path_outside_dest_is_refused(tmp_path):
    for path in ("/etc/passwd", "../escape", "a/../../b"):
        result = run(tmp_path, {path: "x"})
        assert result.get("failed") and "relative path inside dest" in result["msg"], result


def test_diff_mode_shows_each_file_written_before_and_after(tmp_path):
    run(tmp_path, {"a": "one\n", "b": "two\n"})
    result = run(tmp_path, {"a": "ONE\n", "b": "two\n", "c": "new\n"}, check=True, diff=True)
    assert [(d["before_header"], d["before"], d["after"]) for d in result["diff"]] == [
        (str(tmp_path / "a"), "one\n", "ONE\n"), ("%s (absent)" % (tmp_path / "c"), "", "new\n")]
    assert "diff" not in run(tmp_path, {"a": "one\n"}, diff=True)

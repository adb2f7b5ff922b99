"""The one /proc reader: finding processes by namespace and command line, and stopping only ours."""

import os
import subprocess
import sys
import time

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import process


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "podnet-unit-sleeper"])
    # Until the child has exec'd, /proc shows the parent's command line.
    end = time.monotonic() + 5
    while "podnet-unit-sleeper" not in (process.cmdline(proc.pid) or []) and time.monotonic() < end:
        time.sleep(0.01)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def is_sleeper(argv):
    return "podnet-unit-sleeper" in argv


def test_find_by_cmdline_and_namespace(sleeper):
    net, mnt = process.own_ns_inode("net"), process.own_ns_inode("mnt")
    assert net and mnt
    assert process.find(is_sleeper) == [sleeper.pid]
    assert process.find(is_sleeper, net=net, mnt=mnt) == [sleeper.pid]
    assert process.find(is_sleeper, net=net + 1) == []  # another network namespace
    assert process.pid_ns_inode(sleeper.pid, "net") == net
    assert process.cmdline(sleeper.pid)[-1] == "podnet-unit-sleeper"


@pytest.mark.parametrize("pid", [None, 0, -1, True, "1"])
def test_nonsense_pids_match_nothing(pid):
    assert not process.matches(pid)


def test_pidfile(sleeper, tmp_path):
    pidfile = tmp_path / "pid"
    assert process.from_pidfile(str(pidfile)) is None
    pidfile.write_text("%d\n" % sleeper.pid)
    assert process.from_pidfile(str(pidfile), is_sleeper) == sleeper.pid
    assert process.from_pidfile(str(pidfile), process.argv_is(["something", "else"])) is None
    pidfile.write_text("garbage")
    assert process.from_pidfile(str(pidfile)) is None


def test_terminate_stops_ours_and_never_signals_a_stranger(sleeper):
    assert process.terminate(os.getpid(), lambda pid: process.matches(pid, is_sleeper)) is False
    assert process.terminate(sleeper.pid, lambda pid: process.matches(pid, is_sleeper)) is True
    sleeper.wait(timeout=5)  # reaped here; until then it was a zombie, which counts as gone
    assert process.is_zombie(sleeper.pid)  # gone altogether now
    assert process.find(is_sleeper) == []


def test_a_zombie_is_not_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass", "podnet-unit-sleeper"])
    for _ in range(500):
        if process.is_zombie(proc.pid):
            break
        time.sleep(0.01)
    assert not process.matches(proc.pid)  # exited, not reaped yet: a zombie
    proc.wait()


def test_terminate_gives_up_loudly(monkeypatch):
    monkeypatch.setattr(process.os, "kill", lambda pid, sig: None)  # a process that ignores everything
    with pytest.raises(process.ProcessError, match="did not stop"):
        process.terminate(12345, lambda pid: True, timeout=0.05, kill_timeout=0.05)

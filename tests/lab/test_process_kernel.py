"""The one /proc reader on real processes: finding them by namespace and command line, stopping only
ours (common/process.py), and the DNS module finding its dnsmasq through it. Real processes and
the kernel's namespace links, so a lab test; no root needed."""

import os
import subprocess
import sys
import time

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import process
from ansible_collections.podnet.network.plugins.modules import dns


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


# --- the DNS module's dnsmasq processes ----------------------------------------------

CONF_DIR = "/etc/podnet/dns"


class Module:
    def fail_json(self, **kwargs):
        raise AssertionError(kwargs["msg"])


def fake_dnsmasq(*args):
    """A process that looks like dnsmasq to /proc: argv[0] is dnsmasq, then `args`."""
    proc = subprocess.Popen(["bash", "-c", 'exec -a dnsmasq "$0" -c "import time; time.sleep(60)" "$@"',
                             sys.executable, *args])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
                if handle.read().startswith(b"dnsmasq\0"):
                    return proc
        except OSError:
            pass
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError("the fake dnsmasq did not start")


def test_find_and_stop_only_ours():
    ours = fake_dnsmasq(f"--conf-file={CONF_DIR}/front-10053.conf")
    other = fake_dnsmasq(f"--conf-file={CONF_DIR}/auth-10054.conf")
    foreign = fake_dnsmasq("--conf-file=/etc/dnsmasq.conf")
    try:
        found = dns.find_processes(CONF_DIR)
        assert found.get(f"{CONF_DIR}/front-10053.conf") == [ours.pid]
        assert found.get(f"{CONF_DIR}/auth-10054.conf") == [other.pid]
        assert foreign.pid not in [pid for pids in found.values() for pid in pids]
        dns.stop_processes(Module(), CONF_DIR, [f"{CONF_DIR}/front-10053.conf"], timeout=5)
        assert ours.wait(timeout=5) is not None
        assert other.poll() is None and foreign.poll() is None
        assert f"{CONF_DIR}/front-10053.conf" not in dns.find_processes(CONF_DIR)
    finally:
        for proc in (ours, other, foreign):
            proc.kill()
            proc.wait()

"""The DNS module finds and stops its dnsmasq processes by command line and namespace,
through common/process.py: real processes whose argv[0] is dnsmasq (no root needed)."""

import subprocess
import sys
import time

import pytest
from ansible_collections.podnet.network.plugins.modules import dns

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


@pytest.mark.parametrize("argv, conf", [
    (["dnsmasq", f"--conf-file={CONF_DIR}/front-10053.conf", "--keep-in-foreground"],
     f"{CONF_DIR}/front-10053.conf"),
    (["/usr/sbin/dnsmasq", f"--conf-file={CONF_DIR}/auth-10054.conf"], f"{CONF_DIR}/auth-10054.conf"),
    (["dnsmasq", "--conf-file=/etc/dnsmasq.conf"], None),            # the distribution's
    (["dnsmasq"], None),
    (["python3", f"--conf-file={CONF_DIR}/front-10053.conf"], None),  # not dnsmasq
    (["dnsmasq", f"--conf-file={CONF_DIR}/a.conf", f"--conf-file={CONF_DIR}/b.conf"], None),
    ([], None),
    (None, None),
])
def test_conf_of(argv, conf):
    assert dns.conf_of(argv, CONF_DIR) == conf


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

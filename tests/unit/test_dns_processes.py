"""Which command lines are podnet's dnsmasq (the DNS module's conf_of). Finding and stopping
real processes with it is in tests/lab/test_process_kernel.py."""

import pytest
from ansible_collections.podnet.network.plugins.modules import dns

CONF_DIR = "/etc/podnet/dns"


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


class Conntrack:
    """A module whose `conntrack -L` shows the old port owing replies `owed` more times."""

    def __init__(self, owed):
        self.owed, self.commands = owed, []

    def get_bin_path(self, name):
        return "/usr/sbin/" + name

    def run_command(self, argv):
        self.commands.append(argv[1])
        if argv[1] == "-L":
            self.owed -= 1
            line = ("udp 17 29 src=10.244.1.5 dst=10.96.0.10 sport=40000 dport=53 %s"
                    "src=127.0.0.1 dst=10.244.1.5 sport=10053 dport=40000 mark=0 use=1")
            return 0, line % ("[UNREPLIED] " if self.owed >= 0 else ""), ""
        return 0, "", ""

    def warn(self, msg):
        raise AssertionError(msg)


def test_drain_waits_for_the_replies_the_old_instance_owes_then_clears():
    module = Conntrack(owed=2)
    dns.drain(module, "10.96.0.10", 10053, seconds=0)
    assert module.commands == ["-L", "-L", "-L", "-D"]


def test_drain_waits_a_bounded_time_for_replies_that_never_come():
    module = Conntrack(owed=10**6)
    dns.drain(module, "10.96.0.10", 10053, seconds=0, wait_max=0.3)
    assert module.commands[-1] == "-D" and 2 <= module.commands.count("-L") <= 5

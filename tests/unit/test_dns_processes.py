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

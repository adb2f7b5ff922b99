"""A lost record still leaves no UDP client pinned to a gone endpoint, and spares the rest.

The Service proxy clears conntrack entries by comparing the Services it applied last (its
record) with the new ones. Without the record (a wiped state directory, a reinstalled node),
there is nothing to compare: the module then reads the kernel's conntrack table itself, as
kube-proxy's reconciler does, and deletes only the flows the new rules would not have made.
Here the real module runs in a scratch network namespace, real UDP flows are DNATed by its
rules to the three endpoints of a Service, the record is removed and one endpoint leaves.

Needs root, ip, nft and conntrack; a throwaway namespace, never the lab's or the root one.
"""

import os
import shutil
import subprocess

import pytest
from ansible_collections.podnet.network.plugins.module_utils.services.proxy import conntrack_flows

from tests.lab.test_proxy_iptables_atomic import apply
from tests.unit.test_proxy_iptables import changed_model, service, sport, web_endpoints

VIP, PORT = "10.96.0.20", 8125
SOURCE_PORTS = range(41000, 41030)

# 30 datagrams from 30 source ports of the namespace's own address: each a conntrack entry,
# DNATed by the output chain to one of the endpoints (unanswered: there is no pod behind them).
SEND = """import socket
for port in range({first}, {last}):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("192.168.50.1", port))
        sock.sendto(b"podnet", ("{vip}", {port}))
"""


def _available():
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("ip", "nft", "conntrack"))


@pytest.fixture
def scratch():
    netns = "podnet-scratch-ct-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
    try:
        for command in ("ip link set lo up", "ip link add pn0 type veth peer name pn1",
                        "ip link set pn0 up", "ip link set pn1 up", "ip addr add 192.168.50.1/24 dev pn0",
                        "ip route add 10.96.0.0/12 dev pn0", "ip route add 10.244.0.0/16 dev pn0"):
            subprocess.run(["ip", "netns", "exec", netns, *command.split()], check=True, capture_output=True,
                           timeout=30)
        yield netns
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=30)


def pinned(netns):
    """{source port: endpoint} of the namespace's UDP flows to the Service port."""
    done = subprocess.run(["ip", "netns", "exec", netns, "conntrack", "-L", "-p", "udp"], capture_output=True,
                          text=True, check=True, timeout=60)
    return {int(original["sport"]): "%s:%s" % (reply["src"], reply["sport"])
            for _protocol, original, reply in conntrack_flows(done.stdout)
            if (original["dst"], original["dport"]) == (VIP, str(PORT))}


@pytest.mark.skipif(not _available(), reason="needs root, ip, nft and conntrack")
def test_without_the_record_only_the_flows_on_a_gone_endpoint_are_deleted(scratch, tmp_path):
    run = apply(scratch, tmp_path, changed_model(), module="proxy_nftables")
    assert run.returncode == 0, run.stdout[-3000:]
    send = SEND.format(first=SOURCE_PORTS.start, last=SOURCE_PORTS.stop, vip=VIP, port=PORT)
    subprocess.run(["ip", "netns", "exec", scratch, "python3", "-c", send], check=True, timeout=60)
    before = pinned(scratch)
    assert sorted(before) == list(SOURCE_PORTS)
    gone = "10.244.1.5:%d" % PORT
    assert gone in before.values() and len(set(before.values())) > 1, before  # spread over the endpoints

    for record in (tmp_path / "state").glob("*.json"):
        record.unlink()
    web = service("web", VIP, [sport("http", "TCP", 80, web_endpoints(8080), target_port=8080),
                               sport("stats", "UDP", PORT, web_endpoints(PORT)[1:])])
    run = apply(scratch, tmp_path, changed_model(web=web), module="proxy_nftables")
    assert run.returncode == 0, run.stdout[-3000:]

    after = pinned(scratch)
    assert after == {port: endpoint for port, endpoint in before.items() if endpoint != gone}

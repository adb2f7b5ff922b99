"""The DNS table reads the same whichever nft lists it (Debian 12's 1.0.6, Debian 13's 1.1)."""

import pytest
from ansible_collections.podnet.network.plugins.module_utils.dns.records import same_listing

WRITTEN = """table ip podnet-dns {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 10.96.0.10 udp dport 53 dnat to 10.96.0.10:10053
\t}
}
"""


@pytest.mark.parametrize("listed, same", [
    # nft 1.0.6 lists what it was given
    (WRITTEN, True),
    # nft 1.1 names -100 in a nat output chain
    (WRITTEN.replace("priority -100", "priority dstnat"), True),
    (WRITTEN.replace("\t", "    "), True),
    # a real difference is still one
    (WRITTEN.replace("priority -100", "priority srcnat"), False),
    (WRITTEN.replace("10053", "10054"), False),
    (None, False),
])
def test_priorities_compare_as_numbers(listed, same):
    assert same_listing(listed, WRITTEN) is same

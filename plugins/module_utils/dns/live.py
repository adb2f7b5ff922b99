"""What a node serves for Service DNS, read without Ansible: podnet's dnsmasq processes, the
instance's answer, lo's addresses, and the fingerprint the glance keeps of all of it.

Shared by the dns module (which reads them to plan) and node_info (which fingerprints them
at the start of a run, common/glance.py), so both read the node the same way.
"""

import hashlib
import json
import os
import socket

from ansible_collections.podnet.network.plugins.module_utils.common import process
from ansible_collections.podnet.network.plugins.module_utils.common.glance import digests
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    FAMILY,
    decode_response,
    encode_query,
)
from ansible_collections.podnet.network.plugins.module_utils.dns.update import (
    STATE_FILE,
    active_port,
    instance_confs,
)

# --- our dnsmasq processes ---------------------------------------------------------
# Found the way every podnet process is (common/process.py): by namespace and command
# line, never by name alone, and checked again right before each signal.


def conf_of(argv, conf_dir):
    """The podnet configuration file a dnsmasq command line runs with, or None when it is
    not podnet's dnsmasq (the distribution's, another program, a reused PID)."""
    if not argv or os.path.basename(argv[0]) != "dnsmasq":
        return None
    prefix = "--conf-file=" + conf_dir.rstrip("/") + "/"
    confs = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith(prefix)]
    return confs[0] if len(confs) == 1 else None


def find_processes(conf_dir):
    """{configuration file: [pids]} of podnet's dnsmasq processes in this network namespace
    (another lab node's share /proc), TCP children included."""
    found = {}
    for pid in process.find(argv_match=lambda argv: conf_of(argv, conf_dir) is not None,
                            net=process.own_ns_inode("net")):
        conf = conf_of(process.cmdline(pid), conf_dir)
        if conf:  # None: it ended between the two reads
            found.setdefault(conf, []).append(pid)
    return found


def answers(dns_ip, port, domain, timeout=0.5):
    """Does the instance on `port` answer the SOA of the cluster zone (front and auth both)?"""
    query = encode_query(domain, "SOA", qid=os.getpid() & 0xFFFF)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, (dns_ip, port))
            reply = decode_response(sock.recv(4096))
    except (OSError, ValueError, IndexError):
        return False
    return reply["rcode"] == 0 and reply["aa"] and any(a[1] == "SOA" for a in reply["answers"])


def lo_addresses(listing):
    """[(address, prefixlen, label)] of lo's IPv4 addresses, from `ip -j -4 addr show dev lo`."""
    return [(a["local"], a["prefixlen"], a.get("label", "lo")) for link in json.loads(listing or "[]")
            for a in link.get("addr_info", [])]


def answering(conf_dir, state, running, addresses, dns_ip, domain):
    """Whether the recorded instance for `dns_ip` serves: its processes run, lo has the
    address, and it answers. Asked only when the rest holds (a no would cost the timeout)."""
    active = active_port(state, dns_ip)
    return (bool(active) and all(c in running for c in instance_confs(conf_dir, active))
            and any(ip == dns_ip for ip, _prefixlen, _label in addresses)
            and answers(dns_ip, active, domain))


def fingerprint(conf_dir, table, table_path, dns_ip, domain, resolv_conf=None):
    """A digest of what the dns module plans from: its files (configurations, record, the
    table's boot file, the node's `resolv_conf` when it names the upstreams), its running
    instances, lo's addresses, the table as nft lists it, and whether the instance answers."""
    names = sorted(os.listdir(conf_dir)) if os.path.isdir(conf_dir) else []
    files = {}
    paths = [os.path.join(conf_dir, n) for n in names if n.endswith(".conf") or n == STATE_FILE]
    files = digests(paths + [table_path] + ([resolv_conf] if resolv_conf else []))
    try:
        with open(os.path.join(conf_dir, STATE_FILE), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = {}
    running = sorted(find_processes(conf_dir))
    addresses = lo_addresses(process.output(["ip", "-j", "-4", "addr", "show", "dev", "lo"]))
    state = state if isinstance(state, dict) else {}
    parts = [files, running, addresses, process.output(["nft", "list", "table", FAMILY, table]),
             answering(conf_dir, state, running, addresses, dns_ip, domain)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()

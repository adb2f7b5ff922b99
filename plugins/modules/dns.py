#!/usr/bin/python
"""Ansible module: the node's Service DNS (what CoreDNS does in a cluster), served by dnsmasq."""

DOCUMENTATION = r"""
---
module: dns
short_description: Serve the cluster's Service DNS records on this node with dnsmasq
description:
  - Renders the services model (docs/services.md) into the records CoreDNS would answer
    (A, SRV, PTR, CNAME for ExternalName) and serves them at O(dns_ip) port 53 on this node,
    with dnsmasq; other names are forwarded to O(upstreams).
  - An instance is two dnsmasq processes on one port number P, a recursive front on
    O(dns_ip)#P and an authoritative server for the cluster zone on 127.0.0.1#P; port 53 is
    DNATed to the active P by podnet's own nftables table O(table). See docs/dns.md.
  - A change starts a new instance on the other of O(ports), waits until it answers, swaps
    the table in one transaction, lets O(drain_seconds) pass (and then waits, up to 5 s more,
    while conntrack shows queries the old instance has not answered yet), deletes the UDP
    conntrack entries that still lead to the old port and stops the old instance. Queries never find
    nobody answering. If the new instance does not start, the old one keeps serving and the
    module fails with dnsmasq's message.
  - O(dns_ip) lives on C(lo) as a /32 labelled C(lo:podnet); only addresses with that label
    are ever removed. Only dnsmasq processes of this network namespace whose configuration
    file is in O(conf_dir) are ever stopped.
  - A dead or changed instance, a missing address or a table edited by hand is put right;
    when all is as wanted nothing changes.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of what it plans from (its files, running instances, lo's addresses, the
    table, whether the instance answers, the node's resolv.conf without O(upstreams)).
options:
  model:
    description:
      - The services model as JSON text (C(to_json)), as podnet_proxy_nftables takes it.
        Required when O(state=present).
    type: str
  cluster_domain:
    description: The cluster's DNS domain.
    type: str
    default: cluster.local
  dns_ip:
    description:
      - The cluster DNS address pods use; inside the model's service CIDR.
      - Without it, the tenth address of the model's service CIDR, as kubeadm chooses it (the
        C(podnet_plan) role decides the same address once, as C(podnet_plan_cluster_dns_ip)).
    type: str
  upstreams:
    description:
      - Where other names are forwarded (C(IP) or C(IP#port)). Empty, the nameservers of
        O(resolv_conf) are used, read on every run.
    type: list
    elements: str
    default: []
  ttl:
    description: TTL of every answer, positive and negative (the SOA minimum), in seconds.
    type: int
    default: 5
  ports:
    description: The two ports instances alternate between (blue/green).
    type: list
    elements: int
    default: [10053, 10054]
  state:
    description: Whether the node serves DNS.
    type: str
    default: present
    choices: [present, absent]
  conf_dir:
    description: Directory of the instances' dnsmasq configuration and of C(active.json).
    type: path
    default: /etc/podnet/dns
  table:
    description: The C(ip) nftables table this module owns.
    type: str
    default: podnet-dns
  table_path:
    description: Where the table's self-replacing script is persisted for boot.
    type: path
    default: /etc/podnet/nftables/podnet-dns.nft
  resolv_conf:
    description: The node's resolver configuration, read when O(upstreams) is empty.
    type: path
    default: /etc/resolv.conf
  drain_seconds:
    description: How long the old instance keeps answering the queries it already has, after the swap.
    type: float
    default: 1.0
  start_timeout:
    description: How long a new instance has to answer before the update is abandoned.
    type: float
    default: 5.0
notes:
  - Supports check mode (the new configuration is checked with C(dnsmasq --test), the table
    with C(nft -c); nothing is started, stopped or written) and diff mode (the records, as
    zone-file lines, before and after).
requirements:
  - dnsmasq (Debian C(dnsmasq-base)), nft, ip, conntrack
extends_documentation_fragment:
  - podnet.network.glance
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Service DNS on this node
  podnet.network.dns:
    model: "{{ podnet_services_model | to_json }}"
    cluster_domain: cluster.local
    dns_ip: "{{ podnet_plan_cluster_dns_ip }}"
    upstreams: [192.168.56.1]
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample:
    - start instance on port 10054 (records or settings changed)
    - "load table ip podnet-dns: port 53 of 10.96.0.10 to port 10054"
    - stop /etc/podnet/dns/10053-auth.conf, /etc/podnet/dns/10053-front.conf
port:
  description: The port of the active instance.
  returned: always
  type: int
records:
  description: How many records the cluster zone has (zone-file lines).
  returned: always
  type: int
active:
  description:
    - The active instance's record (C(active.json) in O(conf_dir)) as the run leaves it, without
      its zone, what the boot-time entry is written from; empty when there is none.
  returned: always
  type: dict
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance, process
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    clear_conntrack,
    node_lock,
    read_file,
    remove_files,
    write_file,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft import parse_state
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import NftRunner, Transaction
from ansible_collections.podnet.network.plugins.module_utils.dns.live import (
    answering,
    answers,
    conf_of,
    find_processes,
    lo_addresses,
)
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    ADDRESS_LABEL,
    FAMILY,
    DnsConfigError,
    check_ports,
    conf_path,
    settings_from,
    upstream_servers,
    zone_text,
)
from ansible_collections.podnet.network.plugins.module_utils.dns.update import (
    CHECKED,
    ROLES,
    STATE_FILE,
    plan_dns_removal,
    plan_dns_update,
)

# --- our dnsmasq processes (found as dns/live.py finds them) ------------------------


def stop_processes(module, conf_dir, confs, timeout=3.0):
    """SIGTERM, then SIGKILL, every process of ours running one of `confs`."""
    net = process.own_ns_inode("net")

    def ours(pid):
        return process.matches(pid, lambda argv: conf_of(argv, conf_dir) in confs, net=net)

    try:
        for conf, pids in sorted(find_processes(conf_dir).items()):
            if conf in confs:
                for pid in pids:
                    process.terminate(pid, ours, timeout=timeout)
    except process.ProcessError:
        module.fail_json(msg=f"dnsmasq with {', '.join(confs)} would not stop")


# --- DNS -----------------------------------------------------------------------------

def wait_answers(dns_ip, port, domain, timeout):
    end = time.monotonic() + timeout
    while True:
        if answers(dns_ip, port, domain):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


# --- the address ---------------------------------------------------------------------

def read_lo_addresses(module):
    """[(address, prefixlen, label)] of lo's IPv4 addresses."""
    rc, out, err = module.run_command(["ip", "-j", "-4", "addr", "show", "dev", "lo"])
    if rc != 0:
        module.fail_json(msg=f"ip addr show dev lo failed: {err.strip()}")
    return lo_addresses(out)


def add_address(module, ip):
    rc, _out, err = module.run_command(["ip", "addr", "add", f"{ip}/32", "dev", "lo", "label", ADDRESS_LABEL])
    if rc != 0:
        module.fail_json(msg=f"cannot add {ip}/32 to lo: {err.strip()}")


def remove_address(module, ip, prefixlen):
    rc, _out, err = module.run_command(["ip", "addr", "del", f"{ip}/{prefixlen}", "dev", "lo"])
    if rc != 0:
        module.fail_json(msg=f"cannot remove {ip}/{prefixlen} from lo: {err.strip()}")


# --- instances -----------------------------------------------------------------------

def test_conf(module, dnsmasq, text, what):
    """`dnsmasq --test` of the configuration, before anything is written or started."""
    fd, tmp = tempfile.mkstemp(dir=module.tmpdir, prefix="podnet-dns.", suffix=".conf")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    try:
        rc, out, err = module.run_command([dnsmasq, "--test", f"--conf-file={tmp}"])
    finally:
        os.unlink(tmp)
    if rc != 0:
        module.fail_json(msg=f"dnsmasq refuses the {what} configuration: {(err or out).strip()}")


def start_instance(module, dnsmasq, conf_dir, port, settings, timeout):
    """Start auth, then front, on `port`; False with dnsmasq's words when it does not serve."""
    for role in ROLES:
        # dnsmasq reports its start-up errors from the first process, then daemonizes.
        rc, out, err = module.run_command([dnsmasq, f"--conf-file={conf_path(conf_dir, port, role)}"])
        if rc != 0:
            return f"dnsmasq ({role}, port {port}) did not start: {(err or out).strip()}"
    if not wait_answers(settings["dns_ip"], port, settings["domain"], timeout):
        return f"dnsmasq on port {port} does not answer for {settings['domain']} within {timeout} s"
    return None


# How long a drain waits, beyond drain_seconds, for queries the old instance has not
# answered yet (on a loaded machine a reply can take longer than the drain).
DRAIN_WAIT_MAX = 5.0


def unanswered(module, dns_ip, old_port):
    """UDP queries to the DNS address that were sent to the old port and have no reply yet
    (conntrack's [UNREPLIED]); None when conntrack cannot say."""
    conntrack = module.get_bin_path("conntrack")
    if not conntrack:
        return None
    rc, out, _err = module.run_command([conntrack, "-L", "-p", "udp", "--orig-dst", dns_ip,
                                        "--orig-port-dst", "53", "--reply-port-src", str(old_port)])
    if rc != 0:
        return None
    return sum("[UNREPLIED]" in line for line in out.splitlines())


def drain(module, dns_ip, old_port, seconds, wait_max=DRAIN_WAIT_MAX):
    """Let the old instance finish: drain_seconds, then as long as it still owes replies
    (bounded by wait_max), so deleting its flows never drops a reply on its way back."""
    time.sleep(seconds)
    deadline = time.monotonic() + wait_max
    while unanswered(module, dns_ip, old_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    forget_old_port(module, dns_ip, old_port)


def forget_old_port(module, dns_ip, old_port):
    """UDP entries still leading to the old port: a client that reuses its socket would keep
    reaching the old instance (it would be stopped) until its entry timed out."""
    if not module.get_bin_path("conntrack"):
        module.warn("conntrack is not installed: UDP flows to the old DNS instance stay until they time out")
        return
    clear_conntrack(module, [["-D", "-p", "udp", "--orig-dst", dns_ip, "--orig-port-dst", "53",
                              "--reply-port-src", str(old_port)]])


def read_live(module, nft, conf_dir, table, table_path, settings=None):
    """What the plan needs to know of the node (see dns/update.plan_dns_update)."""
    names = sorted(os.listdir(conf_dir)) if os.path.isdir(conf_dir) else []
    files = {os.path.join(conf_dir, name): read_file(module, os.path.join(conf_dir, name))
             for name in names if name.endswith(".conf") or name == STATE_FILE}
    state = parse_state(files.get(os.path.join(conf_dir, STATE_FILE))) or {}
    running = set(find_processes(conf_dir))
    addresses = read_lo_addresses(module)
    return {
        "state": state,
        "addresses": addresses,
        "running": running,
        "answering": bool(settings) and answering(conf_dir, state, running, addresses, settings["dns_ip"],
                                                  settings["domain"]),
        "files": files,
        "table": nft.list(FAMILY, table),
        "table_file": read_file(module, table_path),
    }


def execute(module, nft, dnsmasq, steps, table, conf_dir, start_timeout, settings=None):
    """Run the plan's steps in order; in check mode only the checking ones. The actions reported."""
    actions = []
    for s in steps:
        if s["action"]:
            actions.append(s["action"])
        if module.check_mode and s["do"] not in CHECKED:
            continue
        do = s["do"]
        if do == "add_address":
            add_address(module, s["ip"])
        elif do == "remove_address":
            remove_address(module, s["ip"], s["prefixlen"])
        elif do == "test_conf":
            test_conf(module, dnsmasq, s["text"], s["role"])
        elif do == "stop":
            stop_processes(module, conf_dir, s["confs"])
        elif do == "write":
            write_file(module, s["path"], s["text"])
        elif do == "start":
            error = start_instance(module, dnsmasq, conf_dir, s["port"], settings, start_timeout)
            if error:
                stop_processes(module, conf_dir, s["confs"])
                remove_files(module, s["confs"])
                serving = s["keeps_serving"]
                module.fail_json(msg=f"podnet_dns: {error}; the instance on port {serving} keeps serving"
                                 if serving else f"podnet_dns: {error}")
        elif do == "load_table":
            nft.load(Transaction(FAMILY, table).replace_table(s["content"]))
        elif do == "drain":
            drain(module, s["dns_ip"], s["port"], s["seconds"])
        elif do == "remove":
            remove_files(module, [s["path"]])
        elif do == "delete_table":
            nft.delete_table(FAMILY, table)
        else:
            module.fail_json(msg=f"podnet_dns: unknown step {do!r}")
    return actions


def ensure_present(module, dnsmasq, nft):
    p = module.params
    if not p["model"]:
        module.fail_json(msg="model is required when state=present")
    try:
        model = json.loads(p["model"])
    except ValueError as exc:
        module.fail_json(msg=f"model is not JSON: {exc}")
    try:
        settings = settings_from(model, p["cluster_domain"], p["dns_ip"], p["ttl"])
        ports = check_ports(p["ports"])
        resolv = read_file(module, p["resolv_conf"]) if not p["upstreams"] else None
        upstreams = upstream_servers(p["upstreams"], resolv, settings["dns_ip"])
    except DnsConfigError as exc:
        module.fail_json(msg=f"podnet_dns: {exc}")
    live = read_live(module, nft, p["conf_dir"], p["table"], p["table_path"], settings)
    desired = {"model": model, "settings": settings, "ports": ports, "upstreams": upstreams,
               "conf_dir": p["conf_dir"], "table": p["table"], "table_path": p["table_path"],
               "dnsmasq": dnsmasq, "drain_seconds": p["drain_seconds"]}
    try:
        plan = plan_dns_update(live, desired)
    except (DnsConfigError, KeyError, TypeError, ValueError) as exc:
        module.fail_json(msg=f"podnet_dns: cannot render the services model: {exc!r}")
    actions = execute(module, nft, dnsmasq, plan["steps"], p["table"], p["conf_dir"], p["start_timeout"],
                      settings)
    return actions, plan["old_zone"], plan["zone"], plan["port"], settings


def ensure_absent(module, dnsmasq, nft):
    p = module.params
    live = read_live(module, nft, p["conf_dir"], p["table"], p["table_path"])
    plan = plan_dns_removal(live, p["conf_dir"], p["table"], p["table_path"])
    actions = execute(module, nft, dnsmasq, plan["steps"], p["table"], p["conf_dir"], p["start_timeout"])
    return actions, plan["old_zone"], plan["zone"], plan["port"], {}


def active_record(module, conf_dir):
    """The active instance's record as the run leaves it, without its zone (the records,
    which the boot-time entry does not need); {} when there is none."""
    record = parse_state(read_file(module, os.path.join(conf_dir, STATE_FILE))) or {}
    return {key: value for key, value in record.items() if key != "zone"}


def main():
    module = AnsibleModule(
        argument_spec={
            # Not a secret: no_log spares logging and echoing a large model.
            "model": {"type": "str", "no_log": True},
            "cluster_domain": {"type": "str", "default": "cluster.local"},
            "dns_ip": {"type": "str"},
            "upstreams": {"type": "list", "elements": "str", "default": []},
            "ttl": {"type": "int", "default": 5},
            "ports": {"type": "list", "elements": "int", "default": [10053, 10054]},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "conf_dir": {"type": "path", "default": "/etc/podnet/dns"},
            "table": {"type": "str", "default": "podnet-dns"},
            "table_path": {"type": "path", "default": "/etc/podnet/nftables/podnet-dns.nft"},
            "resolv_conf": {"type": "path", "default": "/etc/resolv.conf"},
            "drain_seconds": {"type": "float", "default": 1.0},
            "start_timeout": {"type": "float", "default": 5.0},
            "glance_inputs": {"type": "str"},
            "glance_file": {"type": "path", "default": glance.INDEX},
        },
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.dns")
    # dnsmasq and ip live in /usr/sbin, which a non-login PATH may lack.
    dnsmasq = module.get_bin_path("dnsmasq", required=module.params["state"] == "present",
                                  opt_dirs=["/usr/sbin", "/sbin"])
    nft = NftRunner(module)
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    ensure = ensure_absent if module.params["state"] == "absent" else ensure_present
    actions, old_zone, zone, port, settings = ensure(module, dnsmasq, nft)
    result = {
        "changed": bool(actions),
        "actions": actions,
        "port": port,
        "records": len(zone),
        "active": active_record(module, module.params["conf_dir"]),
        "invocation": {"module_args": {k: v for k, v in module.params.items() if k != "model"}},
    }
    if not module.check_mode:
        p = module.params
        # Without upstreams the node's resolv.conf names them: it is part of what is settled.
        owned = {"conf_dir": p["conf_dir"], "table": p["table"], "table_path": p["table_path"],
                 "dns_ip": settings.get("dns_ip"), "domain": settings.get("domain"),
                 "resolv_conf": None if p["upstreams"] else p["resolv_conf"]}
        glance.settle(module, "dns", owned,
                      p["glance_inputs"], p["glance_file"],
                      replay={key: result[key] for key in ("port", "records", "active")})
    if module._diff and old_zone != zone:
        result["diff"] = {"before": zone_text(old_zone), "after": zone_text(zone),
                          "before_header": f"{module.params['cluster_domain']} (last served)",
                          "after_header": f"{module.params['cluster_domain']} (now)"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

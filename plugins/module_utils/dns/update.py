"""The DNS blue/green update as a pure plan: what the node holds in, the steps out.

An instance is two dnsmasq processes on one port (docs/dns.md); port 53 of the DNS address
is DNATed to the active one. A change never leaves port 53 unanswered:

  check the new configuration -> start the new instance on the other port -> wait until it
  answers -> swap the DNAT (one nft transaction) -> let the old one drain -> clear the UDP
  flows still pinned to it -> stop it.

If the new instance fails to start, it is stopped and its files go; the active one keeps
serving and the module fails. A dead active instance (or a missing address) is treated
like a change: a new instance is started beside it.

`plan_dns_update(live, desired)` decides; plugins/modules/dns.py reads `live` from the node
and only executes the steps. No I/O here.

A step is a dict: {"do": kind, "action": the line reported (or None), ...arguments}.
Kinds and what the module does (in check mode only the kinds in CHECKED run, checked):
  add_address {ip}, remove_address {ip, prefixlen}, test_conf {role, text},
  stop {confs}, write {path, text}, start {port, confs, keeps_serving},
  load_table {content}, drain {dns_ip, port, seconds}, remove {path}, delete_table {}.
"""

import json
import os

from ansible_collections.podnet.network.plugins.module_utils.common.nft import build_script
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    ADDRESS_LABEL,
    FAMILY,
    conf_path,
    render_instance,
    render_table,
    same_listing,
)

ROLES = ("auth", "front")
STATE_FILE = "active.json"
# Steps that run in check mode too, where they only check or look (dnsmasq --test; the nft
# runner's check mode: nft -c, a listing).
CHECKED = frozenset(("test_conf", "load_table", "delete_table"))


def step(do, action=None, **arguments):
    return {"do": do, "action": action, **arguments}


def active_port(state, dns_ip):
    """The port of the serving instance per the record, or None (none yet, or another address)."""
    return state.get("port") if state.get("dns_ip") == dns_ip else None


def instance_confs(conf_dir, port):
    return [conf_path(conf_dir, port, role) for role in ROLES]


def plan_address(addresses, dns_ip):
    """dns_ip/32 on lo, labelled podnet's; other addresses with podnet's label go (an old
    dns_ip). An address podnet did not label is never touched."""
    steps = []
    if not any(ip == dns_ip for ip, _prefixlen, _label in addresses):
        steps.append(step("add_address", f"add {dns_ip}/32 to lo as {ADDRESS_LABEL}", ip=dns_ip))
    for ip, prefixlen, label in addresses:
        if label == ADDRESS_LABEL and ip != dns_ip:
            steps.append(step("remove_address", f"remove {ip}/{prefixlen} ({ADDRESS_LABEL}) from lo",
                              ip=ip, prefixlen=prefixlen))
    return steps


def plan_dns_update(live, desired):
    """The steps that make the node serve `desired`, given `live`.

    live: {"state": the record (active.json) or {}, "addresses": [(ip, prefixlen, label)] on lo,
           "running": set of configuration files our dnsmasq processes run with,
           "answering": whether the recorded active instance answers its SOA,
           "files": {path: text} of the files in conf_dir (*.conf and active.json),
           "table": `nft list table` of the DNS table or None, "table_file": its boot script or None}
    desired: {"model", "settings" (settings_from), "ports" (check_ports), "upstreams",
              "conf_dir", "table", "table_path", "dnsmasq", "drain_seconds"}
    Returns {"steps": [...], "port": the port that serves afterwards, "zone": its records,
             "old_zone": the records last served}.
    """
    settings, conf_dir, ports = desired["settings"], desired["conf_dir"], desired["ports"]
    dns_ip = settings["dns_ip"]
    state = live["state"]
    files = live["files"]
    active = active_port(state, dns_ip)
    steps = plan_address(live["addresses"], dns_ip)

    current = render_instance(desired["model"], settings, active, desired["upstreams"]) if active else None
    active_confs = instance_confs(conf_dir, active) if active else []
    same_files = bool(current) and all(files.get(conf_path(conf_dir, active, role)) == current[role]
                                       for role in ROLES)
    running = bool(active) and all(conf in live["running"] for conf in active_confs)
    healthy = same_files and not steps and running and live["answering"]

    port = active
    if healthy:
        zone = current["zone"]
    else:
        port = ports[1] if active == ports[0] else ports[0]
        instance = render_instance(desired["model"], settings, port, desired["upstreams"])
        zone = instance["zone"]
        why = ("no instance yet" if not active else "the address was missing" if steps
               else "records or settings changed" if current["zone"] != zone or not same_files
               else "the instance is not answering")
        new_confs = instance_confs(conf_dir, port)
        steps += [step("test_conf", role=role, text=instance[role]) for role in ROLES]
        # Whatever still runs on the new port is a leftover of ours (a failed update).
        steps.append(step("stop", confs=new_confs))
        steps += [step("write", path=conf_path(conf_dir, port, role), text=instance[role]) for role in ROLES]
        steps.append(step("start", f"start instance on port {port} ({why})", port=port, confs=new_confs,
                          keeps_serving=active))

    content = render_table(desired["table"], dns_ip, port)
    script = build_script(FAMILY, desired["table"], content)
    swapped = not same_listing(live["table"], content)
    if swapped:
        load = f"load table {FAMILY} {desired['table']}: port 53 of {dns_ip} to port {port}"
        steps.append(step("load_table", load, content=content))
    if live["table_file"] != script:
        steps.append(step("write", f"write {desired['table_path']}", path=desired["table_path"], text=script))

    confs = instance_confs(conf_dir, port)
    new_state = {"port": port, "dns_ip": dns_ip, "label": ADDRESS_LABEL, "dnsmasq": desired["dnsmasq"],
                 "confs": confs, "zone": zone}
    if new_state != state:
        state_path = os.path.join(conf_dir, STATE_FILE)
        quiet = any(s["action"] for s in steps)
        steps.append(step("write", None if quiet else f"write {state_path}", path=state_path,
                          text=json.dumps(new_state, indent=1, sort_keys=True) + "\n"))

    # The old instance finishes what it has, then its flows and processes go; so does
    # anything else of ours (a crashed update's leftovers).
    stale = sorted(set(live["running"]) - set(confs))
    if swapped and active and active != port and any(c in stale for c in active_confs):
        steps.append(step("drain", dns_ip=dns_ip, port=active, seconds=desired["drain_seconds"]))
    if stale:
        steps.append(step("stop", f"stop {', '.join(stale)}", confs=stale))
    steps += [step("remove", f"remove {path}", path=path) for path in sorted(files)
              if path.endswith(".conf") and path not in confs]
    return {"steps": steps, "port": port, "zone": zone, "old_zone": state.get("zone", [])}


def plan_dns_removal(live, conf_dir, table, table_path):
    """The steps that stop serving DNS: the table, our processes, our address, our files.

    live: as for plan_dns_update ("answering" is not needed).
    """
    steps = []
    if live["table"] is not None:
        steps.append(step("delete_table", f"delete table {FAMILY} {table}"))
    running = sorted(live["running"])
    if running:
        steps.append(step("stop", f"stop {', '.join(running)}", confs=running))
    steps += [step("remove_address", f"remove {ip}/{prefixlen} ({ADDRESS_LABEL}) from lo",
                   ip=ip, prefixlen=prefixlen)
              for ip, prefixlen, label in live["addresses"] if label == ADDRESS_LABEL]
    files = [path for path in sorted(live["files"])
             if path.endswith(".conf") or os.path.basename(path) == STATE_FILE]
    if live["table_file"] is not None:
        files.append(table_path)
    steps += [step("remove", f"remove {path}", path=path) for path in files]
    return {"steps": steps, "port": None, "zone": [], "old_zone": live["state"].get("zone", [])}

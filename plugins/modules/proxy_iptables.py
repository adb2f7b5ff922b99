#!/usr/bin/python
"""Ansible module: a node's Service NAT (kube-proxy's job) as kube-proxy's iptables chains."""

DOCUMENTATION = r"""
---
module: proxy_iptables
short_description: Apply Kubernetes Service NAT for one node in kube-proxy's iptables layout
description:
  - Renders the services model (see docs/services.md) for O(node) into kube-proxy's chains
    (C(KUBE-SERVICES), C(KUBE-SVC-*), C(KUBE-SEP-*), C(KUBE-NODEPORTS), C(KUBE-MARK-MASQ),
    C(KUBE-POSTROUTING), ...) and applies them with C(iptables-restore --noflush), which
    rewrites only the chains that changed and leaves every other chain alone.
  - The jumps from the built-in chains (C(PREROUTING -j KUBE-SERVICES), ...) that are missing
    (C(iptables -C)) are inserted by the same C(iptables-restore) input, so the chains and
    their jumps go in together.
  - podnet owns only the C(KUBE-*) chains it recorded; on a node with other C(KUBE-*) chains
    (kube-proxy, k3s, a kubelet) it fails, naming them, and changes nothing.
  - The restore input is first tested with C(iptables-restore --test); if it is refused,
    nothing changes. iptables-restore commits each table on its own, so if a later table
    fails after an earlier one was committed, the module puts podnet's chains and jumps back
    as they were (the last applied record, or none) before failing.
  - The boot file and the record are written (and fsynced) beside their places before the chains
    change, and renamed into place after, so a full disk fails the run naming the file, with the
    node's rules, boot file and record as they were.
  - When a UDP or SCTP endpoint goes away, or such a Service gets its first endpoints, the
    conntrack entries that would keep clients on the old path are deleted.
options:
  model:
    description:
      - The services model (docs/services.md) as JSON text (C(to_json)). Required when O(state=present).
      - Text rather than a dict, and not logged, because at 10,000 Services it is megabytes
        that Ansible would otherwise validate, log and echo back element by element (seconds).
    type: str
  node:
    description: The inventory name of this node, as endpoints name it. Required when O(state=present).
    type: str
  path:
    description: Where to persist the full restore file for boot (C(iptables-restore --noflush PATH)).
    type: path
  state:
    description: Whether podnet's chains should exist.
    type: str
    default: present
    choices: [present, absent]
  state_dir:
    description: Directory for the record of what was applied (C(proxy-iptables.json)).
    type: path
    default: /var/lib/podnet
  verify_live:
    description:
      - Check the live chains (C(iptables-save)) against the record of the last apply, and
        rewrite any chain whose rules were changed by hand.
    type: bool
    default: true
  flush_conntrack:
    description: Delete the UDP conntrack entries of endpoints that went away.
    type: bool
    default: true
notes:
  - Supports check mode and diff mode (the Service ports whose frontends or endpoints change).
  - podnet owns the C(KUBE-*) chains of the nat and filter tables on the node, as kube-proxy
    would; do not run it beside a real kube-proxy in iptables mode.
requirements:
  - iptables, iptables-restore, conntrack
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Service NAT for this node, iptables mode
  podnet.network.proxy_iptables:
    model: "{{ podnet_services_model | to_json }}"
    node: "{{ inventory_hostname }}"
    path: /etc/podnet/iptables/podnet-services.rules
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["rewrite 3 chains, delete 1 (nat, filter)"]
services_changed:
  description: The Service ports (C(ns/name:port/PROTOCOL)) whose frontends or endpoints changed.
  returned: always
  type: list
  elements: str
conntrack_cleared:
  description: The conntrack deletions run (their arguments).
  returned: always
  type: list
  elements: list
"""

import json
import os
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    clear_flows,
    exit_proxy,
    node_lock,
    read_file,
    remove_files,
    written_after,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft import parse_state
from ansible_collections.podnet.network.plugins.module_utils.services.iptables import (
    TABLES,
    chain_names,
    removal_text,
    render_iptables,
    restore_text,
)
from ansible_collections.podnet.network.plugins.module_utils.services.proxy import (
    service_view,
    view_diff,
)
from ansible_collections.podnet.network.plugins.module_utils.services.sync import (
    iptables_drift,
    parse_iptables_save,
)

RECORD = "proxy-iptables.json"


def live_chains(module, iptables_save):
    """{table: {chain: [rule text]}} of the live KUBE-* chains, from iptables-save."""
    live = {}
    for table in TABLES:
        rc, out, err = module.run_command([iptables_save, "-t", table])
        if rc != 0:
            module.fail_json(msg=f"iptables-save -t {table} failed: {err.strip()}")
        live[table] = parse_iptables_save(out)
    return live


def restore(module, restore_bin, text, test):
    args = [restore_bin, "--noflush", "-w"] + (["--test"] if test else [])
    rc, _out, err = module.run_command(args, data=text, binary_data=True)
    if rc != 0:
        what = "refused" if test else "failed on"
        module.fail_json(msg=f"iptables-restore {what} podnet's chains; the live rules are unchanged: "
                         f"{err.strip()}", restore_input=text)


def jump_present(module, iptables, table, chain, rule):
    rc, _out, _err = module.run_command([iptables, "-w", "-t", table, "-C", chain, *shlex.split(rule)])
    return rc == 0


def refuse_foreign_chains(module, live, recorded):
    """podnet owns the KUBE-* chains it recorded, and no other: a KUBE-* chain it did not create
    is kube-proxy's, k3s's or the kubelet's, and declaring it in a restore would flush it. So
    podnet's iptables backend refuses to run beside them, changing nothing."""
    mine = chain_names(recorded or {})
    foreign = [f"{table} {chain}" for table in TABLES for chain in sorted(live[table])
               if chain not in mine[table]]
    if foreign:
        shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        module.fail_json(msg=f"this node has KUBE-* chains podnet did not create ({shown}): another Service "
                         "proxy (kube-proxy, k3s, a kubelet) runs here, and podnet's iptables backend would "
                         "take its chains over. Nothing was changed: remove the other proxy, or use "
                         "podnet_proxy_backend: nftables, whose table is podnet's own")


def missing_jumps(module, iptables, jumps):
    """The jumps from built-in chains that are not in the kernel, in the order given."""
    return [jump for jump in jumps if not jump_present(module, iptables, *jump)]


def with_jumps(text, jumps):
    """The restore input plus `-I CHAIN 1` lines for the jumps, in their table's section, so one
    iptables-restore puts in the chains and what leads to them. Inserted at the top in reverse,
    so they end up in the order given."""
    sections = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            sections[table] = []
        elif line != "COMMIT":
            sections[table].append(line)
    for table, chain, rule in reversed(jumps):
        sections.setdefault(table, []).append(f"-I {chain} 1 {rule}")
    out = []
    for table in TABLES:
        if table in sections:
            out += [f"*{table}", *sections[table], "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def apply_or_roll_back(module, bins, text, ruleset, recorded, added):
    """One iptables-restore of `text`. It commits table by table: when a later table fails, what
    an earlier one committed is undone, back to `recorded` (the last applied ruleset, or none),
    and the module fails saying so. Only podnet's chains (this ruleset's and the record's) and
    the jumps this run added are touched."""
    args = [bins["iptables-restore"], "--noflush", "-w"]
    rc, _out, err = module.run_command(args, data=text, binary_data=True)
    if rc == 0:
        return
    failed = err.strip()
    leftovers = []
    for table, chain, rule in added:
        while jump_present(module, bins["iptables"], table, chain, rule):
            rc, _out, err = module.run_command([bins["iptables"], "-w", "-t", table, "-D", chain,
                                                *shlex.split(rule)])
            if rc != 0:
                leftovers.append(f"iptables -t {table} -D {chain} {rule}: {err.strip()}")
                break
    live = live_chains(module, bins["iptables-save"])
    mine = {table: set((ruleset or {}).get(table) or {}) | set((recorded or {}).get(table) or {})
            for table in TABLES}
    now = {table: {c: r for c, r in live[table].items() if c in mine[table]} for table in TABLES}
    back = restore_text(recorded or {table: {} for table in TABLES}, now)
    if back:
        rc, _out, err = module.run_command(args, data=back, binary_data=True)
        if rc != 0:
            leftovers.append(f"iptables-restore of the previous chains: {err.strip()}")
    if leftovers:
        module.fail_json(msg=f"iptables-restore failed on podnet's chains: {failed}; rolling back also "
                         f"failed, the next run rewrites them: {'; '.join(leftovers)}", restore_input=text)
    module.fail_json(msg=f"iptables-restore failed on podnet's chains: {failed}; what it had committed was "
                     "rolled back, the live rules are as before", restore_input=text)


def remove_jumps(module, iptables, jumps):
    actions = []
    for table, chain, rule in jumps:
        while jump_present(module, iptables, table, chain, rule):
            actions.append(f"delete {table} {chain} {rule}")
            if module.check_mode:
                break
            rc, _out, err = module.run_command([iptables, "-w", "-t", table, "-D", chain, *shlex.split(rule)])
            if rc != 0:
                module.fail_json(msg=f"iptables -t {table} -D {chain} {rule} failed: {err.strip()}")
    return actions


def boot_file(ruleset):
    """The full restore input plus the jumps, for a boot where podnet's chains are empty.

    The jumps go at the top of the built-in chains, as a run puts them (with_jumps): by boot
    time ufw or dockerd may have filled FORWARD and INPUT, and podnet's firewall step has put
    its accept chain first; appended after those, the proxy's filter verdicts (DROP for no
    local endpoint, REJECT for none) would never be reached by traffic they accept."""
    return ("# Managed by podnet (podnet_proxy_iptables): iptables-restore --noflush at boot.\n"
            + with_jumps(restore_text(ruleset, None), ruleset["jumps"]))


def _jumps(ruleset):
    return [tuple(jump) for jump in (ruleset or {}).get("jumps") or []]


def ensure_present(module, bins, state_file, path):
    params = module.params
    if not params["model"] or not params["node"]:
        module.fail_json(msg="model and node are required when state=present")
    try:
        model = json.loads(params["model"])
    except ValueError as exc:
        module.fail_json(msg=f"model is not JSON: {exc}")
    try:
        ruleset = render_iptables(model, params["node"])
    except (KeyError, TypeError, ValueError) as exc:
        module.fail_json(msg=f"cannot render the services model for node {params['node']}: {exc!r}")
    ruleset["jumps"] = _jumps(ruleset)
    record = parse_state(read_file(module, state_file))
    previous = record.get("ruleset") if record else None
    view = service_view(model)
    actions = []

    live = live_chains(module, bins["iptables-save"]) if previous is None or params["verify_live"] else None
    if live is not None:
        refuse_foreign_chains(module, live, previous)
    if previous is not None and params["verify_live"]:
        previous, marks = iptables_drift(previous, live)
        if marks:
            actions.append(f"rewrite chains changed outside podnet: {', '.join(marks)}")
    chains = restore_text(ruleset, previous)
    if chains:
        declared = sum(1 for line in chains.splitlines() if line.startswith(":"))
        deleted = sum(1 for line in chains.splitlines() if line.startswith("-X "))
        actions.append(f"rewrite {declared - deleted} chains, delete {deleted}")
    added = missing_jumps(module, bins["iptables"], ruleset["jumps"])
    actions += [f"insert {table} {chain} {rule}" for table, chain, rule in added]
    text = with_jumps(chains, added)
    if text:
        restore(module, bins["iptables-restore"], text, test=True)
    old_view = record.get("view") if record else None
    rules_change = bool(actions)
    full = boot_file(ruleset)
    write = bool(path) and read_file(module, path) != full
    if write:
        actions.append(f"write {path}")
    new_record = {"node": params["node"], "ruleset": ruleset, "view": view}
    cleared = []
    if module.check_mode:
        return actions, old_view, view, cleared
    files = []
    if json.loads(json.dumps(new_record)) != record:
        files.append((state_file, json.dumps(new_record, sort_keys=True) + "\n"))
    files += [(path, full)] if write else []
    # The boot file and the record are on disk before the chains change, put in place (a
    # rename) after: a full disk fails the run with the node's rules as they were. The record
    # first: a boot file never stands without it (node_info's proxy_records tell a play
    # whether there is anything of this backend to remove).
    with written_after(module, files):
        if text:
            apply_or_roll_back(module, bins, text, ruleset, record.get("ruleset") if record else None, added)
        cleared = clear_flows(module, old_view, view, model.get("service_cidr"), rules_change)
    return actions, old_view, view, cleared


def ensure_absent(module, bins, state_file, path):
    record = parse_state(read_file(module, state_file))
    previous = (record or {}).get("ruleset")
    actions = []
    if previous:
        actions += remove_jumps(module, bins["iptables"], _jumps(previous))
        live = live_chains(module, bins["iptables-save"])
        present = {table: {c: r for c, r in previous.get(table, {}).items() if c in live[table]}
                   for table in TABLES}
        text = removal_text(present)
        if text:
            actions.append("delete podnet's KUBE-* chains")
            restore(module, bins["iptables-restore"], text, test=True)
            if not module.check_mode:
                restore(module, bins["iptables-restore"], text, test=False)
    actions += remove_files(module, (path, state_file))
    return actions, (record or {}).get("view"), {}, []


def main():
    module = AnsibleModule(
        argument_spec={
            # Not a secret: no_log spares logging and echoing megabytes (see DOCUMENTATION).
            "model": {"type": "str", "no_log": True},
            "node": {"type": "str"},
            "path": {"type": "path"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_dir": {"type": "path", "default": "/var/lib/podnet"},
            "verify_live": {"type": "bool", "default": True},
            "flush_conntrack": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.proxy_iptables")
    bins = {name: module.get_bin_path(name, required=True)
            for name in ("iptables", "iptables-save", "iptables-restore")}
    state_file = os.path.join(module.params["state_dir"], RECORD)
    ensure = ensure_absent if module.params["state"] == "absent" else ensure_present
    actions, old_view, view, cleared = ensure(module, bins, state_file, module.params["path"])
    exit_proxy(module, actions, view_diff(old_view, view), cleared)


if __name__ == "__main__":
    main()

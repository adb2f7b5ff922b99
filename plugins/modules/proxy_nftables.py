#!/usr/bin/python
"""Ansible module: a node's Service NAT (kube-proxy's job) in podnet's own nftables table."""

DOCUMENTATION = r"""
---
module: proxy_nftables
short_description: Apply Kubernetes Service NAT for one node as one nftables table
description:
  - Renders the services model (see docs/services.md) for O(node) into podnet's own table
    (O(table)), a fixed set of chains whose per-Service content is all set and map elements.
  - A first load, or a table whose chains or sets were changed by hand, is loaded whole in
    one transaction that replaces the table. Otherwise only the elements that differ are
    added and deleted, again in one transaction. Either way, if nft refuses, nothing changes.
  - Other tables are never touched.
  - When a UDP endpoint goes away, or a UDP Service gets its first endpoints, the conntrack
    entries that would keep clients on the old path are deleted.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of the table's generation set, its chains with their rule counts and its
    files.
options:
  model:
    description:
      - The services model (docs/services.md) as JSON text (C(to_json)). Required when O(state=present).
      - Text rather than a dict, and not logged, because at 10,000 Services it is megabytes
        that Ansible would otherwise validate, log and echo back element by element (seconds).
    type: str
  model_sha256:
    description:
      - The sha256 of O(model) as the controller has it (C(hash('sha256'))), given without
        O(model) to ask whether the node already runs exactly that. The module then changes
        nothing and returns RV(current). A playbook sends the megabytes of O(model) only
        when the answer is no.
      - The module's action plugin asks this way by itself whenever it is given O(model)
        (and not O(verify_live)), then sends O(model_delta) when the node keeps a model
        to rebuild from, else O(model) whole.
    type: str
  model_delta:
    description:
      - The Services that changed since the model the node keeps (beside the record, the
        last model applied), as JSON text, with O(model_sha256) the sha256 of the model it
        rebuilds. A node that keeps another model, or rebuilds other text, changes nothing
        and returns RV(current) false without RV(model_from); the model is then sent whole.
      - Built by the action plugin from RV(model_base); not meant to be written by hand.
      - Given together with O(model) (filter C(services_delta), from the model the controller
        resolved last), the action plugin sends it in its first ask; the module itself then
        ignores it. A node that keeps that model applies it in one module run.
    type: str
  node:
    description: The inventory name of this node, as endpoints name it. Required when O(state=present).
    type: str
  table:
    description: Name of the C(ip) table this module owns.
    type: str
    default: podnet-services
  path:
    description: Where to persist the full self-replacing script for boot (C(nft -f PATH)).
    type: path
  state:
    description: Whether the table should exist.
    type: str
    default: present
    choices: [present, absent]
  state_dir:
    description: Directory for the record of what was applied (C(proxy-nftables-TABLE.json)).
    type: path
    default: /var/lib/podnet
  verify_live:
    description:
      - Compare with the whole live table (C(nft -j list table)) on every run. Catches hand
        edits inside podnet's sets and chains; costs about 2 s at 10,000 Services x 5 endpoints.
      - When false, a run whose inputs (model, node, table, path, podnet's renderer) are the
        ones recorded checks only the table's generation set, chain names and each chain's
        number of rules (milliseconds) and the boot script, and does nothing more when they
        match; any other run computes its element deltas from the record. A deleted, flushed
        (C(flush ruleset) or C(flush table)) or reloaded table, a chain added or removed, or
        a rule added or deleted is still seen and repaired.
    type: bool
    default: false
  flush_conntrack:
    description: Delete the UDP conntrack entries of endpoints that went away.
    type: bool
    default: true
notes:
  - Supports check mode (the change is checked with C(nft -c)) and diff mode (the Service
    ports whose frontends or endpoints change, before and after).
requirements:
  - nft (nftables), conntrack
extends_documentation_fragment:
  - podnet.network.glance
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Service NAT for this node
  podnet.network.proxy_nftables:
    model: "{{ podnet_services_model | to_json }}"
    node: "{{ inventory_hostname }}"
    path: /etc/podnet/nftables/podnet-services.nft
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["update table ip podnet-services: 3 elements deleted, 2 added"]
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
nft_seconds:
  description: Seconds nft took to load this run's transactions (0 when nothing was sent).
  returned: always
  type: float
  sample: 0.012
current:
  description:
    - Whether the node runs the table of exactly these inputs, known at a glance (see
      O(verify_live)). Given only O(model_sha256), nothing else is done.
  returned: when O(state=present)
  type: bool
verified:
  description:
    - How the live table was known. C(generation) means the inputs were the recorded ones
      and the kernel showed the recorded generation, so nothing was rendered. C(record)
      means the record was trusted and the deltas computed from it. C(listing) means the
      table was listed whole.
  returned: when O(state=present)
  type: str
  sample: generation
model_from:
  description: How this run got the model it applied, C(whole) or C(delta) (O(model_delta)).
  returned: when a model was applied
  type: str
  sample: delta
model_base:
  description:
    - The model the node keeps, as the sha256 of its text and a short digest per Service
      (C(namespace/name)), for the controller to send only what changed. Null when the node
      keeps none.
  returned: when only O(model_sha256) was given and the node does not run that model
  type: dict
"""

import inspect
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common import nft as common_nft
from ansible_collections.podnet.network.plugins.module_utils.common.glance import INDEX as GLANCE_INDEX
from ansible_collections.podnet.network.plugins.module_utils.common.glance import settle
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    clear_flows,
    exit_proxy,
    node_lock,
    read_file,
    remove_files,
    written_after,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    build_script,
    parse_state,
    sha256,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import NftRunner, Transaction
from ansible_collections.podnet.network.plugins.module_utils.services import categorize
from ansible_collections.podnet.network.plugins.module_utils.services import nft as services_nft
from ansible_collections.podnet.network.plugins.module_utils.services.nft import (
    AFFINITY_MAP,
    FAMILY,
    GENERATION_SET,
    NftProxyError,
    full_content,
    parse_listing,
    render_counted,
    render_update,
    shape,
    stale_affinity,
    update_script,
)
from ansible_collections.podnet.network.plugins.module_utils.services.proxy import (
    service_view,
    view_diff,
)
from ansible_collections.podnet.network.plugins.module_utils.services.sync import (
    generation,
    inputs_digest,
    kernel_matches,
    plan_nft_update,
    trusted_live,
    update_summary,
)
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import (
    bulk,
    kept_base,
    kept_file,
    kept_of,
    kept_text,
    read_kept,
    rebased,
    rebuild_kept,
)

# The record's own shape; a new one makes every node render once more.
RECORD_VERSION = "3"


def renderer():
    """The digest of the code a table and its boot script are rendered by (so a new podnet
    renders again), or None when its source cannot be read (then every run renders)."""
    try:
        return sha256(RECORD_VERSION + "".join(
            inspect.getsource(code) for code in (services_nft, categorize, common_nft)))
    except (OSError, TypeError):
        return None


def parsed(module, nft, table, obj=None):
    """The live table (or map `obj` in it), parsed, or None when the table does not exist."""
    out = nft.list(FAMILY, table, json=True, obj=obj)
    if out is None:
        return None
    try:
        return parse_listing(json.loads(out))
    except (ValueError, NftProxyError) as exc:
        module.fail_json(msg=f"cannot read nft's listing of table {FAMILY} {table}: {exc}")


def ensure_present(module, nft, table, state_file, path):
    """(actions, old view, view, flows cleared, extra return values)."""
    params = module.params
    if not (params["model"] or params["model_sha256"]) or not params["node"]:
        module.fail_json(msg="model (or model_sha256) and node are required when state=present")
    if params["model_delta"] and not (params["model_sha256"] or params["model"]):
        module.fail_json(msg="model_delta needs model_sha256, the sha256 of the model it rebuilds")
    record = parse_state(read_file(module, state_file))
    model_sha256 = sha256(params["model"]) if params["model"] else params["model_sha256"]
    digest = inputs_digest(model_sha256, params["node"], table, path, renderer())
    boot = read_file(module, path) if path else None
    # The record stands for the live table when a glance at the kernel agrees with it (unless
    # verify_live); then the same inputs, and the boot script as recorded, leave nothing to do.
    trusted = not params["verify_live"] and glance(nft, table, record)
    if trusted and record["inputs"] == digest and record.get("boot_sha256") == sha256(boot):
        return [], record["view"], record["view"], [], {"current": True, "verified": "generation"}
    model_file = model_path(state_file)
    kept_before = read_file(module, model_file)
    kept = read_kept(kept_before)
    # The kept model's digests, as recorded (computing them is a digest per Service) when the
    # record names this very file (its digest: no join of the model's text to check).
    base = (record or {}).get("model_base")
    if kept is not None and not (isinstance(base, dict) and (
            record.get("kept_sha256") == sha256(kept_before)
            or base.get("sha256") == sha256(kept_text(kept)))):
        base = kept_base(kept)
    text, model, source, replaced = params["model"], None, "whole", None
    if not text and params["model_delta"]:
        try:
            change = json.loads(params["model_delta"])
        except ValueError as exc:
            module.fail_json(msg=f"model_delta is not JSON: {exc}")
        rebuilt = rebuild_kept(kept, change, model_sha256, base["sha256"]) if base else None
        if rebuilt:
            # The model's other fields only: its Services stay text unless rendered whole.
            (text, kept, replaced), model, source = rebuilt, dict(rebuilt[1][0]), "delta"
    if not text:
        # Not current: the caller sends the model, whole or as a delta from the one kept here.
        return [], {}, {}, [], {"current": False, "model_base": base if kept is not None else None}
    if model is None:
        model = whole_model(module, text)
    number = generation(digest) if digest else None
    try:
        # A delta's Services alone, from the record of its base, when that record is this
        # node's render of the base by this very renderer; else the model whole.
        rendered = source == "delta" and rendered_from(
            record, replaced, change, model, params["node"], number,
            inputs_digest(change["base_sha256"], params["node"], table, path, renderer()))
        if not rendered:
            model = model if "services" in model else whole_model(module, text)
            ruleset, shared = render_counted(model, params["node"], table, number)
            rendered = ruleset, shared, service_view(model)
        if source == "whole" and (kept is None or kept_text(kept) != text):
            kept = kept_of(model)
    except (NftProxyError, KeyError, TypeError, ValueError) as exc:
        module.fail_json(msg=f"cannot render the services model for node {params['node']}: {exc!r}")
    ruleset, shared, view = rendered
    content = full_content(ruleset)
    full = build_script(FAMILY, table, content)
    actions = []

    new_record = {
        "table": table,
        "node": params["node"],
        "inputs": digest,
        "boot_sha256": sha256(full) if path else None,
        "skeleton_sha256": sha256(ruleset["skeleton"]),
        "chains": shape(ruleset)["chains"],
        "elements": ruleset["elements"],
        "shared": shared,
        "view": view,
        "model_base": rebased(base, change, model_sha256) if source == "delta" else kept_base(kept),
    }
    old_view = record.get("view") if record else None
    write = bool(path) and boot != full
    files = []
    if not module.check_mode:
        files = [(path, full)] if write else []
        kept_after = kept_file(kept)
        new_record["kept_sha256"] = sha256(kept_after)
        if not record or new_record["inputs"] != record.get("inputs") or new_record != record:
            files.append((state_file, json.dumps(new_record, sort_keys=True) + "\n"))
        if kept_after != kept_before:
            files.append((model_file, kept_after))
    # The boot-time script and the record are on disk before the table changes, put in place
    # (a rename) after: a full disk fails the run with the node's rules as they were.
    with written_after(module, files):
        rules_change, verified = apply_rules(module, nft, table, ruleset, content, record, actions, trusted)
        cleared = clear_flows(module, old_view, view, model.get("service_cidr"), rules_change)
    if write:
        actions.append(f"write {path}")
    # The model as earlier podnet kept it (its text whole), gone once a run applies one.
    actions += remove_files(module, (legacy_model_path(state_file),))
    extra = {"current": not actions, "verified": verified, "model_from": source}
    return actions, old_view, view, cleared, extra


def rendered_from(record, replaced, change, model, node, number, base_inputs):
    """(ruleset, shared, view) of `model`, from the record of its base (`base_inputs`: the
    digest a run that applied the base recorded) and the Services a delta `change` replaced:
    what render_counted and service_view give for the whole model, computed from those
    Services alone. None when the record is not the base's, or the change is more than
    Services (then the model is rendered whole)."""
    if (replaced is None or not record or not base_inputs or record.get("inputs") != base_inputs
            or not isinstance(record.get("shared"), dict)):
        return None
    before, after = list(replaced.values()), list(change["services"].values())
    # "ns/name:" starts every view entry of a Service, and of no other one.
    if any("/" in str(svc.get("namespace")) or ":" in str(svc.get("name")) or "/" in str(svc.get("name"))
           for svc in before + after):
        return None
    updated = render_update({"table": record["table"], "elements": record["elements"]}, record["shared"],
                            before, after, model, node, number)
    if updated is None:
        return None
    view = dict(record["view"])
    for name in service_view({"services": before}):
        view.pop(name, None)
    view.update(service_view({"services": after}))
    return (*updated, view)


def model_path(state_file):
    """The model as last applied, kept beside the record (transfer.kept_file, JSON Lines):
    the base of the next delta."""
    return state_file[:-len(".json")] + ".model.jsonl"


def legacy_model_path(state_file):
    """Where podnet 0.2.0 and before kept the model (its compact text)."""
    return state_file[:-len(".json")] + ".model.json"


def whole_model(module, text):
    try:
        return json.loads(text)
    except ValueError as exc:
        module.fail_json(msg=f"model is not JSON: {exc}")


def glance(nft, table, record):
    """sync.kernel_matches, asking the kernel only what it answers in milliseconds."""
    if not record or not record.get("inputs"):
        return False
    listing = nft.list(FAMILY, table, json=True, obj=("set", GENERATION_SET))
    try:
        live = parse_listing(json.loads(listing)) if listing else {"elements": {}}
    except (ValueError, NftProxyError):
        return False
    live_generation = live["elements"].get(GENERATION_SET)
    return kernel_matches(record, live_generation, nft.chain_names(FAMILY, table),
                          nft.rule_counts(FAMILY, table))


def apply_rules(module, nft, table, ruleset, content, record, actions, trusted):
    """The live table made equal to the ruleset: an update when the live table is close (the
    record, when `trusted`, else a listing), else a whole reload. Appends to `actions`;
    (whether the rules changed, how the live table was known: "record" or "listing")."""
    live = trusted_live(record, not trusted)
    verified = "record"
    if live is None:
        live = parsed(module, nft, table)
        verified = "listing"
    plan = plan_nft_update(ruleset, live, record, not trusted)
    reload = plan["reload"]
    first = len(actions)
    if not reload:
        update = Transaction(FAMILY, table).raw(update_script(ruleset, plan["diff"]))
        summary = update_summary(f"{FAMILY} {table}", plan["diff"])
        if summary:
            actions.append(summary)
        if plan["forget_affinity"]:
            pins = live if plan["affinity_from_live"] else parsed(module, nft, table, ("map", AFFINITY_MAP))
            entries = (pins or {"elements": {}})["elements"].get(AFFINITY_MAP)
            stale = stale_affinity(entries or (), ruleset)
            if stale:
                actions.append(f"forget {len(stale)} session affinity entries")
                update.delete_element(AFFINITY_MAP, stale)
        if not nft.load(update, f"update of table {FAMILY} {table}", may_fail=plan["fallback"]):
            reload = "the live table is not what was recorded"
    if reload:
        actions.append(f"load table {FAMILY} {table} whole: {reload}")
        # One `nft -f` is one transaction: refused, it changes nothing, so no dry run first.
        nft.load(Transaction(FAMILY, table).replace_table(content))
    return len(actions) > first, verified


def ensure_absent(module, nft, table, state_file, path):
    record = parse_state(read_file(module, state_file))
    actions = []
    if nft.delete_table(FAMILY, table):
        actions.append(f"delete table {FAMILY} {table}")
    actions += remove_files(module, (path, state_file, model_path(state_file), legacy_model_path(state_file)))
    return actions, (record or {}).get("view"), {}, [], {}


@bulk
def main():
    module = AnsibleModule(
        argument_spec={
            # Not a secret: no_log spares logging and echoing megabytes (see DOCUMENTATION).
            "model": {"type": "str", "no_log": True},
            "model_sha256": {"type": "str"},
            "model_delta": {"type": "str", "no_log": True},
            "node": {"type": "str"},
            "table": {"type": "str", "default": "podnet-services"},
            "path": {"type": "path"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_dir": {"type": "path", "default": "/var/lib/podnet"},
            "verify_live": {"type": "bool", "default": False},
            "flush_conntrack": {"type": "bool", "default": True},
            "glance_inputs": {"type": "str"},
            "glance_file": {"type": "path", "default": GLANCE_INDEX},
        },
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.proxy_nftables")
    nft = NftRunner(module)
    table = module.params["table"]
    state_file = os.path.join(module.params["state_dir"], f"proxy-nftables-{table}.json")
    ensure = ensure_absent if module.params["state"] == "absent" else ensure_present
    actions, old_view, view, cleared, extra = ensure(module, nft, table, state_file, module.params["path"])
    # The table holds the task's model (or is gone, as asked) unless the node asked for it.
    if not module.check_mode and "model_base" not in extra:
        files = [state_file, model_path(state_file)] + [path for path in [module.params["path"]] if path]
        owned = {"family": FAMILY, "table": table, "generation_set": GENERATION_SET, "files": files}
        settle(module, "nft", owned, module.params["glance_inputs"], module.params["glance_file"],
               replay={"current": True, "verified": "glance"})
    exit_proxy(module, actions, view_diff(old_view, view), cleared, nft_seconds=round(nft.load_seconds, 4),
               **extra)


if __name__ == "__main__":
    main()

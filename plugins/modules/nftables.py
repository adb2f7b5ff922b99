#!/usr/bin/python
"""Ansible module: own one nftables table and replace it atomically."""

DOCUMENTATION = r"""
---
module: nftables
short_description: Own exactly one nftables table and load it atomically
description:
  - Loads O(content), the full definition of one table, with a single C(nft -f) transaction
    that first deletes the table, so the result is exactly O(content), with rules added by hand
    removed, and other tables untouched. If nft refuses the content the previous table stays.
  - Refuses content with any top-level statement that names another table (or the whole
    ruleset, such as C(flush ruleset)), and C(include) anywhere.
  - In check mode the content is checked with C(nft -c -f); a real run loads it with one
    C(nft -f), a single kernel transaction that applies whole or not at all.
  - Idempotent by digest, without listing the table. The table carries a one-element set,
    C(podnet_generation), whose value follows from the digest of the script; the module
    records the digest, the chains' names and rule counts and, per chain and set, what it
    loaded. A run whose script is the recorded one asks the kernel only for that set, the
    chain names and each chain's number of rules (the kernel's rule dump of the table,
    milliseconds at any size) and is unchanged when they are the recorded ones. A deleted,
    reloaded or flushed (C(nft flush table)) table, a chain added or removed, or a rule
    added or deleted by hand is seen and the table loaded whole again; a rule edited in
    place or a set's element changed is seen only with O(verify_live).
  - A changed script whose table the glance confirms is applied as one transaction of only
    what changed (chains flushed and refilled, added or deleted; a set that gained elements
    declared again with them, one that lost some flushed and declared again with all it
    holds, not C(add element) or C(delete element), before which nft 1.0.6 reads every
    interval set in the ruleset; sets added or deleted), computed from the record; the
    result is the table a
    whole load gives. A change it cannot spell that way (a set's type or flags, a table
    property) and an update nft refuses are loaded whole, still in one transaction.
  - For the run's glance it records, with its task's digest (O(glance_inputs)), a
    fingerprint of the table's generation set, its chains with their rule counts and its
    files.
options:
  family:
    description: Address family of the table.
    type: str
    default: ip
    choices: [ip, ip6, inet, arp, bridge, netdev]
  table:
    description: Name of the table this task owns.
    type: str
    required: true
  content:
    description:
      - Full nft definition of the table, for example C(table ip podnet { chain postrouting { ... } }).
      - Required when O(state=present), unless O(content_sha256) is given alone.
    type: str
  content_sha256:
    description:
      - The sha256 of O(content) as the controller has it, given without O(content) to ask
        whether the node already runs exactly that (the glance, and the boot script as
        recorded). The module then changes nothing and returns RV(current). A playbook sends
        the content (a megabyte at 1,000 policies) only when the answer is no.
      - The module's action plugin asks this way by itself when given O(content) over
        256 KB (and not O(verify_live)) without the run's glance, or once another task has
        changed the node in this run, then sends O(content) if the node does not run it.
    type: str
  path:
    description:
      - Where to persist the self-replacing script, so boot can restore it with C(nft -f PATH).
      - Written atomically with mode 0644; its directory is created if missing. Removed when
        O(state=absent).
    type: path
  state:
    description: Whether the table should exist.
    type: str
    default: present
    choices: [present, absent]
  state_dir:
    description: Directory for the record of what was applied (C(nft-FAMILY-TABLE.json)).
    type: path
    default: /var/lib/podnet
  verify_live:
    description:
      - List the whole live table (C(nft -s list table)) on every run and compare it with
        the listing recorded after the last load, instead of the glance. Catches hand edits
        inside the table's chains and sets (rules flushed by hand too); costs seconds at
        1,000 NetworkPolicies.
      - After a load it lists the table to record it, so the first such run after runs
        without it loads the table whole once.
    type: bool
    default: false
notes:
  - Supports check mode and diff mode. The diff shows the live table as nft lists it
    (without counters) before, and O(content) after.
  - The set name C(podnet_generation) is the module's own; the content must not declare it.
  - With O(verify_live), stateful values (counters, quotas) are left out of the hash so
    traffic does not make the task report changes; elements a rule adds to a set at run time
    (C(update @set)) are not, and would make every such run reload the table.
requirements:
  - nft (nftables)
extends_documentation_fragment:
  - podnet.network.glance
author: podnet developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Masquerade pod traffic that leaves the cluster
  podnet.network.nftables:
    family: ip
    table: podnet
    path: /etc/podnet/podnet.nft
    content: |
      table ip podnet {
        chain postrouting {
          type nat hook postrouting priority srcnat; policy accept;
          ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade
        }
      }

- name: Remove the table and its boot script
  podnet.network.nftables:
    table: podnet
    path: /etc/podnet/podnet.nft
    state: absent
"""

RETURN = r"""
table:
  description: The table this task owns, as C(family name).
  returned: always
  type: str
  sample: ip podnet
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["load table ip podnet", "write /etc/podnet/podnet.nft"]
verified:
  description:
    - How the live table was known. C(generation) means the kernel showed the recorded
      generation and chains, so the record was trusted. C(listing) means the table was
      listed whole (O(verify_live)). C(none) means neither held (no record, or a table not
      the recorded one), so it was loaded whole.
  returned: when O(state=present)
  type: str
  sample: generation
current:
  description:
    - Whether the node runs the table of exactly this content, known at a glance (see
      O(verify_live)). Given only O(content_sha256), nothing else is done.
  returned: when O(state=present)
  type: bool
nft_seconds:
  description: Seconds nft took to load this run's transactions (0 when nothing was sent).
  returned: always
  type: float
  sample: 0.012
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common.glance import INDEX as GLANCE_INDEX
from ansible_collections.podnet.network.plugins.module_utils.common.glance import settle
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    node_lock,
    read_file,
    remove_files,
    write_file,
    written_after,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    FAMILIES,
    GENERATION_SPEC,
    NFTABLES_GENERATION_SET,
    NftContentError,
    build_script,
    generation,
    generation_statements,
    kernel_shows,
    parse_state,
    scope_errors,
    sha256,
    validate_table_name,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import (
    NftRunner,
    Transaction,
    set_elements,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft_update import (
    parse_table,
    refilled,
    table_record,
    update_script,
)

# The module's own set in the table it owns (see common/nft.generation).
GENERATION_SET = NFTABLES_GENERATION_SET
# The record's own shape; another one makes the next run load the table whole once.
RECORD_VERSION = 2


def ensure_absent(module, nft, family, table, path, state_file):
    # Without counters, like the listing the record hashes: the diff shows rules, not traffic.
    live = nft.list(family, table, stateless=True)
    actions = []
    if live is not None and nft.delete_table(family, table):
        actions.append(f"delete table {family} {table}")
    actions += remove_files(module, (path, state_file))
    return live, actions


def glance(nft, family, table, record):
    """Does the kernel show the table `record` describes? (common/nft.kernel_shows: the
    generation set, the chain names and their rule counts, milliseconds at any size.)"""
    if not record or record.get("version") != RECORD_VERSION:
        return False
    live_generation = set_elements(nft, family, table, GENERATION_SET)
    return kernel_shows(record.get("generation"), record.get("chains"), live_generation,
                        nft.chain_names(family, table), nft.rule_counts(family, table))


def runs(module, nft, family, table, content_sha256, path, state_file):
    """Does the node run the table of the content whose sha256 this is, as recorded and as a
    glance at the kernel shows, with the boot script as recorded? Nothing is changed."""
    record = parse_state(read_file(module, state_file))
    if not (record and record.get("content_sha256") == content_sha256 and glance(nft, family, table, record)):
        return False
    return not path or record.get("boot_sha256") == sha256(read_file(module, path))


def ensure_present(module, nft, family, table, content, path, state_file, verify_live=False):
    """(live listing for the diff, or None when not listed; actions; how the live table was known)."""
    digest = sha256(build_script(family, table, content))
    record = parse_state(read_file(module, state_file))
    if record and record.get("version") != RECORD_VERSION:
        record = None
    # A content this module loaded before passed this check then (a second at 1,000 policies).
    if not (record and record.get("script_sha256") == digest):
        errors = scope_errors(family, table, content)
        if errors:
            module.fail_json(msg="content refused, nothing changed: " + "; ".join(errors))
    value = generation(digest)
    body = content if content.endswith("\n") else content + "\n"
    body += generation_statements(family, table, GENERATION_SET, value)
    script = build_script(family, table, body)
    # Listed only when asked to compare (verify_live) or to show (diff mode): seconds at scale.
    live = nft.list(family, table, stateless=True) if verify_live or getattr(module, "_diff", False) else None
    if verify_live:
        trusted = bool(record and live is not None and record.get("live_sha256") == sha256(live))
        verified = "listing" if trusted else "none"
    else:
        trusted = glance(nft, family, table, record)
        verified = "generation" if trusted else "none"
    actions = []

    write = bool(path) and read_file(module, path) != script
    current = trusted and record.get("script_sha256") == digest
    if not current:
        objects = parse_table(family, table, content)
        new_record = {"version": RECORD_VERSION, "family": family, "table": table, "script_sha256": digest,
                      "content_sha256": sha256(content), "boot_sha256": sha256(script),
                      "generation": value, "objects": table_record(objects) if objects else None}
    # The boot script is on disk before the table changes (a full disk fails the run with the
    # table as it was), renamed into place after. The record describes the loaded table, so it
    # can only follow the load; a lost record only makes the next run load the table whole.
    with written_after(module, [(path, script)] if write and not module.check_mode else []):
        if not current:
            update = update_script(family, table, record.get("objects"), objects) if trusted else None
            loaded = False
            if update is not None:
                text, summary = update
                transaction = Transaction(family, table).raw(text).raw("\n".join(refilled(
                    family, table, "set", GENERATION_SET, [GENERATION_SPEC], [str(value)])) + "\n")
                # Refused (the table is not what was recorded after all), it changed nothing:
                # the whole load below then makes it so.
                loaded = nft.load(transaction, f"update of table {family} {table}", may_fail=True)
                if loaded:
                    actions.append(f"update table {family} {table}: " + (", ".join(
                        f"{count} {what.replace('_', ' ')}" for what, count in summary.items() if count)
                        or "its generation only"))
            if not loaded:
                actions.append(f"{'load' if record is None else 'replace'} table {family} {table}")
                # One `nft -f` is one kernel transaction, applied whole or not at all: a separate
                # `nft -c` pass first would only double the cost (seconds for a large table).
                nft.load(Transaction(family, table).replace_table(body))
            if not nft.check_mode:
                # With each chain's rule count, so a `flush table` fails the next glance (names
                # only when the kernel's rule dump cannot be read, and then compared by name).
                names, rules = sorted(nft.chain_names(family, table)), nft.rule_counts(family, table)
                new_record["chains"] = names if rules is None else {
                    name: rules.get(name, 0) for name in names}
                if verify_live:
                    listed = nft.list(family, table, stateless=True)
                    if listed is None:
                        module.fail_json(msg=f"table {family} {table} is missing right after nft loaded it")
                    new_record["live_sha256"] = sha256(listed)
                write_file(module, state_file, json.dumps(new_record, sort_keys=True) + "\n")
        elif (record.get("content_sha256"), record.get("boot_sha256")) != (sha256(content), sha256(script)):
            # The same table from other text (a newline more): the record learns the text the
            # controller asks about next time (content_sha256).
            if not module.check_mode:
                learned = dict(record, content_sha256=sha256(content), boot_sha256=sha256(script))
                write_file(module, state_file, json.dumps(learned, sort_keys=True) + "\n")
    if write:
        actions.append(f"write {path}")
    return live, actions, verified


def settled(module, family, table, path, state_file):
    """The table is the task's (or gone, as asked): record so for the next run's glance."""
    if not module.check_mode:
        owned = {"family": family, "table": table, "generation_set": GENERATION_SET,
                 "files": [state_file] + [p for p in [path] if p]}
        settle(module, "nft", owned, module.params["glance_inputs"], module.params["glance_file"],
               replay={"table": f"{family} {table}", "actions": [], "current": True, "verified": "glance"})


def run_module():
    module = AnsibleModule(
        argument_spec={
            "family": {"type": "str", "default": "ip", "choices": list(FAMILIES)},
            "table": {"type": "str", "required": True},
            "content": {"type": "str"},
            "content_sha256": {"type": "str"},
            "path": {"type": "path"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_dir": {"type": "path", "default": "/var/lib/podnet"},
            "verify_live": {"type": "bool", "default": False},
            "glance_inputs": {"type": "str"},
            "glance_file": {"type": "path", "default": GLANCE_INDEX},
        },
        required_if=[("state", "present", ["content", "content_sha256"], True)],
        supports_check_mode=True,
    )
    node_lock(module, "podnet.network.nftables")
    family = module.params["family"]
    table = module.params["table"]
    path = module.params["path"]
    try:
        validate_table_name(family, table)
    except NftContentError as exc:
        module.fail_json(msg=str(exc))
    nft = NftRunner(module)
    state_file = os.path.join(module.params["state_dir"], f"nft-{family}-{table}.json")

    if module.params["state"] == "absent":
        live, actions = ensure_absent(module, nft, family, table, path, state_file)
        after, after_header, extra = "", f"table {family} {table} (absent)", {}
    elif module.params["content"] is None:
        current = runs(module, nft, family, table, module.params["content_sha256"], path, state_file)
        if current:
            settled(module, family, table, path, state_file)
        module.exit_json(changed=False, table=f"{family} {table}", actions=[], nft_seconds=0.0,
                         current=current, verified="generation" if current else "none")
    else:
        content = module.params["content"]
        live, actions, verified = ensure_present(module, nft, family, table, content, path, state_file,
                                                 module.params["verify_live"])
        after = content if content.endswith("\n") else content + "\n"
        after_header = f"table {family} {table} (content)"
        extra = {"verified": verified, "current": not actions}

    settled(module, family, table, path, state_file)
    result = {"changed": bool(actions), "table": f"{family} {table}", "actions": actions,
              "nft_seconds": round(nft.load_seconds, 4), **extra}
    if module._diff and actions:
        result["diff"] = {
            "before": live or "",
            "after": after,
            "before_header": f"nft list table {family} {table} (live)",
            "after_header": after_header,
        }
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()

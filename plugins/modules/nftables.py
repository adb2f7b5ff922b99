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
  - Idempotent by hash. The run is unchanged when the script, the live table (as listed by
    C(nft -s list table)) and O(path) all match what the previous run recorded in O(state_dir).
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
      - Required when O(state=present).
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
notes:
  - Supports check mode and diff mode. The diff shows the live table as nft lists it
    (without counters) before, and O(content) after.
  - Stateful values (counters, quotas) are left out of the hash so traffic does not make the
    task report changes; elements a rule adds to a set at run time (C(update @set)) are not,
    and would make every run reload the table.
requirements:
  - nft (nftables)
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
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.podnet.network.plugins.module_utils.common.module_io import (
    node_lock,
    read_file,
    remove_files,
    write_file,
    written_after,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    FAMILIES,
    NftContentError,
    build_script,
    parse_state,
    scope_errors,
    state_record,
    table_is_current,
    validate_table_name,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft_runner import NftRunner, Transaction


def ensure_absent(module, nft, family, table, path, state_file):
    # Without counters, like the listing the record hashes: the diff shows rules, not traffic.
    live = nft.list(family, table, stateless=True)
    actions = []
    if live is not None and nft.delete_table(family, table):
        actions.append(f"delete table {family} {table}")
    actions += remove_files(module, (path, state_file))
    return live, actions


def ensure_present(module, nft, family, table, content, path, state_file):
    errors = scope_errors(family, table, content)
    if errors:
        module.fail_json(msg="content refused, nothing changed: " + "; ".join(errors))
    script = build_script(family, table, content)
    live = nft.list(family, table, stateless=True)
    record = parse_state(read_file(module, state_file))
    actions = []

    write = bool(path) and read_file(module, path) != script
    # The boot script is on disk before the table changes (a full disk fails the run with the
    # table as it was), renamed into place after. The record lists the loaded table, so it
    # can only follow the load; a lost record only makes the next run reload.
    with written_after(module, [(path, script)] if write and not module.check_mode else []):
        if not table_is_current(record, script, live):
            actions.append(f"{'load' if live is None else 'replace'} table {family} {table}")
            # One `nft -f` is one kernel transaction, applied whole or not at all: a separate
            # `nft -c` pass first would only double the cost (seconds for a large table).
            nft.load(Transaction(family, table).replace_table(content))
            if not nft.check_mode:
                loaded = nft.list(family, table, stateless=True)
                if loaded is None:
                    module.fail_json(msg=f"table {family} {table} is missing right after nft loaded it")
                write_file(module, state_file, state_record(family, table, script, loaded))
    if write:
        actions.append(f"write {path}")
    return live, actions


def run_module():
    module = AnsibleModule(
        argument_spec={
            "family": {"type": "str", "default": "ip", "choices": list(FAMILIES)},
            "table": {"type": "str", "required": True},
            "content": {"type": "str"},
            "path": {"type": "path"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "state_dir": {"type": "path", "default": "/var/lib/podnet"},
        },
        required_if=[("state", "present", ["content"])],
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
        after, after_header = "", f"table {family} {table} (absent)"
    else:
        content = module.params["content"]
        live, actions = ensure_present(module, nft, family, table, content, path, state_file)
        after = content if content.endswith("\n") else content + "\n"
        after_header = f"table {family} {table} (content)"

    result = {"changed": bool(actions), "table": f"{family} {table}", "actions": actions}
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

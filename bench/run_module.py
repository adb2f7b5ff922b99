#!/usr/bin/env python3
"""Run one of podnet's modules in this process, as Ansible would on a node, without a playbook.

    python bench/run_module.py proxy_nftables ARGS.json [--check] [--diff]

ARGS.json holds the module's arguments. The result JSON goes to stdout. The benchmark runs
modules this way inside a scratch network namespace, so its times are the module's own
(no SSH, no AnsiballZ packing of a multi-megabyte model).
"""

import importlib
import json
import pathlib
import sys

from ansible.module_utils import basic

MODULES = "ansible_collections.podnet.network.plugins.modules."


def main():
    name, args_file, *flags = sys.argv[1:]
    args = json.loads(pathlib.Path(args_file).read_text())
    args["_ansible_check_mode"] = "--check" in flags
    args["_ansible_diff"] = "--diff" in flags
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    importlib.import_module(MODULES + name).main()


if __name__ == "__main__":
    main()

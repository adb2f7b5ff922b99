"""Action plugin for podnet.network.nftables: the content goes to a node only when needed.

Given O(content) over 256 KB, the node is first asked with the content's sha256 alone
whether it already runs it (the module's glance: milliseconds, nothing sent). Only if not
does the content go, a megabyte at 1,000 NetworkPolicies that Ansible would otherwise pack,
send and echo back on every run. A smaller content goes with the first ask: one module run
either way. With O(verify_live), without O(content), or for O(state=absent), the module runs
as it is called.

Before any of that, the run's glance (plugin_utils/glanced.py): when the module settled this
very task and node_info found the table's generation, chains, rule counts and files still as
it left them, the node is not asked at all. With O(verify_live) it always is.
"""

import hashlib

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.podnet.network.plugins.plugin_utils.glanced import SettledAction


class ActionModule(SettledAction):
    MODULE = "podnet.network.nftables"

    def _apply(self, args, task_vars):
        text = args.get("content")
        if (not isinstance(text, str) or not text or args.get("state", "present") != "present"
                or boolean(args.get("verify_live", False), strict=False)):
            return self._module(args, task_vars)
        if len(text) <= self.PIPELINED_ARGS_MAX:
            # Small enough to go with the module anyway: the node answers `current` from the
            # content itself as from its digest, and applies it in the same run otherwise.
            return self._module(args, task_vars)
        asked = {key: value for key, value in args.items() if key != "content"}
        asked["content_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        answer = self._module(asked, task_vars)
        if answer.get("failed") or answer.get("current"):
            return answer
        return self._module(args, task_vars)

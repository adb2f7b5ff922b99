"""Action plugin for podnet.network.nftables: the content goes to a node only when needed.

First the run's glance (plugin_utils/glanced.py): when the module settled this very task
and node_info found the table's generation, chains, rule counts and files still as it left
them, the node is not asked at all. With O(verify_live) it always is.

Otherwise, given O(content) over 256 KB when the run takes no glance, or after another task
changed this node in this run (which a glance no longer vouches for), the node is first
asked with the content's sha256 alone whether it already runs it (the module's glance:
milliseconds, nothing sent). Only if not does the content go, a megabyte at 1,000
NetworkPolicies. When the run's glance has just found the node's table not as this task
would leave it, the content goes at once: a first ask would only be answered no, at the
cost of a module run. A smaller content always goes with the first ask. With
O(verify_live), without O(content), or for O(state=absent), the module runs as it is
called.
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
        # Small enough to go with the module anyway (the node answers `current` from the
        # content itself as from its digest, and applies it in the same run otherwise); or
        # the run's glance did not vouch for this task on a node no task has changed yet, so
        # the node does not run it as settled and would answer a first ask no.
        if len(text) <= self.PIPELINED_ARGS_MAX or (
                args.get("glance_inputs") and not task_vars.get("podnet_node_moved")):
            return self._module(args, task_vars)
        asked = {key: value for key, value in args.items() if key != "content"}
        asked["content_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        answer = self._module(asked, task_vars)
        if answer.get("failed") or answer.get("current"):
            return answer
        return self._module(args, task_vars)

"""Action plugin for podnet.network.nftables: the content goes to a node only when needed.

Given O(content), the node is first asked with the content's sha256 alone whether it already
runs it (the module's glance: milliseconds, nothing sent). Only if not does the content go, a
megabyte at 1,000 NetworkPolicies that Ansible would otherwise pack, send and echo back on
every run. With O(verify_live), without O(content), or for O(state=absent), the module runs as
it is called.
"""

import hashlib

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

MODULE = "podnet.network.nftables"


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            return merge_hash(result, self._apply(dict(self._task.args), task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _module(self, args, task_vars):
        return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)

    def _apply(self, args, task_vars):
        text = args.get("content")
        if (not isinstance(text, str) or not text or args.get("state", "present") != "present"
                or boolean(args.get("verify_live", False), strict=False)):
            return self._module(args, task_vars)
        asked = {key: value for key, value in args.items() if key != "content"}
        asked["content_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        answer = self._module(asked, task_vars)
        if answer.get("failed") or answer.get("current"):
            return answer
        return self._module(args, task_vars)

"""Action plugin for podnet.network.node_files: no round trip when the glance vouches for it.

node_info's snapshot of the node's glance index (podnet_node.glance, taken at the start of
the run; module_utils/common/glance.py) holds the digest and mode of every file podnet wrote
there. When each file of the task is in it exactly as wanted, and each path to remove is
known to be absent, the task is unchanged without asking the node. Otherwise, or without
a snapshot, the module runs on the node as it always did.
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.podnet.network.plugins.module_utils.common import glance

MODULE = "podnet.network.node_files"


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        snapshot = glance.snapshot_of((task_vars or {}).get("podnet_node"),
                                      args.get("glance_file", glance.INDEX))
        if glance.files_unchanged(snapshot, args.get("dest"), args.get("files"), args.get("modes"),
                                  args.get("absent") or ()):
            return merge_hash(result, {"changed": False, "written": [], "removed": [], "glanced": True})
        try:
            return merge_hash(result, self._execute_module(module_name=MODULE, module_args=dict(args),
                                                           task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

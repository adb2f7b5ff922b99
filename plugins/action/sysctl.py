"""Action plugin for podnet.network.sysctl: no round trip when the glance vouches for it.

node_info's snapshot of the node's glance index (podnet_node.glance; see
module_utils/common/glance.py) holds the live value of every sysctl podnet set and the
digest of its persisted file. When each sysctl of the task already has its value and the
file is the one the module would write, the task is unchanged without asking the node.
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.podnet.network.plugins.module_utils.common import glance

MODULE = "podnet.network.sysctl"
DEFAULT_PATH = "/etc/sysctl.d/90-podnet.conf"


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        snapshot = glance.snapshot_of((task_vars or {}).get("podnet_node"),
                                      args.get("glance_file", glance.INDEX))
        if glance.sysctls_unchanged(snapshot, args.get("sysctls"), args.get("path", DEFAULT_PATH)):
            return merge_hash(result, {"changed": False, "set": [], "file_changed": False, "glanced": True})
        try:
            return merge_hash(result, self._execute_module(module_name=MODULE, module_args=dict(args),
                                                           task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

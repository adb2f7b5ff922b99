"""The action plugins that spare a round trip when the run's glance vouches for the task.

node_info took a snapshot of the node at the start of the run (podnet_node.glance; see
module_utils/common/glance.py). An action whose task the snapshot shows already done returns
unchanged without asking the node; otherwise the module runs on the node as it always did.
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.podnet.network.plugins.module_utils.common import glance


class GlancedAction(ActionBase):
    """Subclasses name their MODULE and say what the snapshot vouches for (`vouched`)."""

    MODULE = None
    _supports_check_mode = True
    _supports_async = False

    def vouched(self, snapshot, args):
        """The result to return without asking the node (changed=False), or None."""
        raise NotImplementedError

    def module_args(self, args):
        """The module's arguments when the node is asked."""
        return args

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        snapshot = glance.snapshot_of((task_vars or {}).get("podnet_node"),
                                      args.get("glance_file", glance.INDEX))
        known = self.vouched(snapshot, args) if snapshot else None
        if known is not None:
            return merge_hash(result, dict(known, changed=False, glanced=True))
        try:
            return merge_hash(result, self._execute_module(module_name=self.MODULE,
                                                           module_args=self.module_args(args),
                                                           task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)


class SettledAction(GlancedAction):
    """A module whose state is the kernel's: the same task on a live state still as its last
    run left it (glance.settle) has nothing to do. `unchanged` is its result then."""

    unchanged = {}

    def _inputs(self, args):
        return glance.inputs_digest(self.MODULE, args)

    def vouched(self, snapshot, args):
        return dict(self.unchanged) if glance.settled(snapshot, self._inputs(args)) else None

    def module_args(self, args):
        return dict(args, glance_inputs=self._inputs(args))

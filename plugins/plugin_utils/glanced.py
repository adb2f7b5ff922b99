"""The action plugins that spare a round trip when the run's glance vouches for the task.

node_info took a snapshot of the node at the start of the run (podnet_node.glance; see
module_utils/common/glance.py). An action whose task the snapshot shows already done returns
unchanged without asking the node; otherwise the module runs on the node as it always did.

A snapshot is of the start of the run: once a glanced task has changed the node in this run
(a new CNI conflist, say), a settled state's fingerprint may no longer be what the snapshot
saw, so no settled state is vouched for on that node for the rest of the run
(`podnet_node_moved`, which node_info resets).
"""

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.podnet.network.plugins.module_utils.common import glance


def snapshot(args, task_vars):
    """This run's snapshot of the node the task goes to, or None."""
    return glance.snapshot_of((task_vars or {}).get("podnet_node"), args.get("glance_file", glance.INDEX))


def replay(snapshot_, inputs, task_vars):
    """What a settled task returns without asking the node, or None: not settled, or the node
    already moved in this run (see the module's docstring)."""
    if not snapshot_ or (task_vars or {}).get("podnet_node_moved"):
        return None
    return glance.settled(snapshot_, inputs)


class GlancedAction(ActionBase):
    """Subclasses name their MODULE and say what the snapshot vouches for (`vouched`)."""

    MODULE = None
    _supports_check_mode = True
    _supports_async = False

    def vouched(self, snapshot, args, task_vars):
        """The result to return without asking the node (changed=False), or None."""
        raise NotImplementedError

    def module_args(self, args, snapshot):
        """The module's arguments when the node is asked (`snapshot`: this run's, or None)."""
        return args

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        seen = snapshot(args, task_vars)
        known = self.vouched(seen, args, task_vars) if seen else None
        if known is not None:
            return merge_hash(result, dict(known, changed=False, glanced=True))
        try:
            done = self._execute_module(module_name=self.MODULE, module_args=self.module_args(args, seen),
                                        task_vars=task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if done.get("changed") and not done.get("failed"):
            done = dict(done, ansible_facts=dict(done.get("ansible_facts") or {}, podnet_node_moved=True))
        return merge_hash(result, done)


class SettledAction(GlancedAction):
    """A module whose state is the kernel's: the same task on a live state still as its last
    run left it (glance.settle) has nothing to do. `unchanged` is its result then."""

    unchanged = {}

    def _inputs(self, args):
        return glance.inputs_digest(self.MODULE, args)

    def vouched(self, snapshot_, args, task_vars):
        known = replay(snapshot_, self._inputs(args), task_vars)
        return None if known is None else dict(self.unchanged, **known)

    def module_args(self, args, snapshot_):
        # A run that takes no glance (reset, which removes the index) records none either.
        return dict(args, glance_inputs=self._inputs(args)) if snapshot_ else args

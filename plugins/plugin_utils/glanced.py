"""The action plugins that spare a round trip when the run's glance vouches for the task.

node_info took a snapshot of the node at the start of the run (podnet_node.glance; see
module_utils/common/glance.py). An action whose task the snapshot shows already done returns
unchanged without asking the node; otherwise the module runs on the node as it always did.

A snapshot is of the start of the run: once a glanced task has changed the node in this run
(a new CNI conflist, say), a settled state's fingerprint may no longer be what the snapshot
saw, so no settled state is vouched for on that node for the rest of the run
(`podnet_node_moved`, which node_info resets).
"""

import json

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.plugin_utils import memo_ref


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

    # Python reads a pipelined module from its stdin line by line, and a module whose
    # arguments are megabytes is one such line: the whole model at 10,000 Services took
    # 7.2 s to start and run on a lab node that runs the same file in 2.7 s. A module run
    # with arguments over this many bytes goes as a file, as without pipelining.
    PIPELINED_ARGS_MAX = 256 << 10
    _as_file = False

    def _module(self, args, task_vars):
        self._as_file = len(json.dumps(args, default=str)) > self.PIPELINED_ARGS_MAX
        try:
            return self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars)
        finally:
            self._as_file = False

    def _is_pipelining_enabled(self, module_style, wrap_async=False):
        return not self._as_file and super()._is_pipelining_enabled(module_style, wrap_async)

    def _apply(self, args, task_vars):
        """The node asked: one module run, unless a subclass asks in steps."""
        return self._module(args, task_vars)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        snapshot = glance.snapshot_of((task_vars or {}).get("podnet_node"),
                                      args.get("glance_file", glance.INDEX))
        known = self.vouched(snapshot, args, task_vars or {}) if snapshot else None
        if known is not None:
            return merge_hash(result, dict(known, changed=False, glanced=True))
        try:
            # A model the plan kept in its memo comes as a reference (memo_ref.py): the task's
            # digest takes the text's sha256 from it (memo_ref.identity), the module the text.
            asked = {key: memo_ref.text_of(value) for key, value in self.module_args(args, snapshot).items()}
        except memo_ref.MemoReferenceError as exc:
            return merge_hash(result, {"failed": True, "msg": str(exc)})
        try:
            done = self._apply(asked, task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if done.get("changed") and not done.get("failed"):
            done = dict(done, ansible_facts=dict(done.get("ansible_facts") or {}, podnet_node_moved=True))
        return merge_hash(result, done)


class SettledAction(GlancedAction):
    """A module whose state is the kernel's: the same task on a live state still as its last
    run left it (glance.settle) has nothing to do, and returns `unchanged` with what the
    module recorded to replay. TRANSPORT: arguments that only carry the task (a delta of
    the model), left out of its digest. With verify_live the node is always asked."""

    unchanged = {}
    TRANSPORT = ()

    def _inputs(self, args):
        return glance.inputs_digest(self.MODULE, {key: memo_ref.identity(value) for key, value in args.items()
                                                  if key not in self.TRANSPORT})

    def vouched(self, snapshot, args, task_vars):
        if task_vars.get("podnet_node_moved") or boolean(args.get("verify_live", False), strict=False):
            return None
        known = glance.settled(snapshot, self._inputs(args))
        return None if known is None else dict(self.unchanged, **known)

    def module_args(self, args, snapshot):
        # A run that takes no glance (reset, which removes the index) records none either.
        return dict(args, glance_inputs=self._inputs(args)) if snapshot else args

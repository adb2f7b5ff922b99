"""A notification callback for the lab tests: every task result of a run, one JSON line each,
to the file PODNET_RESULTS_FILE names: {"host", "task", "action", "changed", "glanced",
"failed", "skipped"}. How a test sees which tasks the run's glance answered (a result marked
`glanced`) and which asked the node, per node. Not part of the collection (tests/ is left
out of its build); tests point Ansible at it with ANSIBLE_CALLBACK_PLUGINS and
ANSIBLE_CALLBACKS_ENABLED=podnet_results.
"""

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: podnet_results
type: notification
short_description: every task result as a JSON line, for the lab tests
description: Writes host, task, action, changed, glanced, failed and skipped of each result
  to the file PODNET_RESULTS_FILE names (nothing when it is unset).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "podnet_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.path = os.environ.get("PODNET_RESULTS_FILE")

    def _record(self, result, failed=False, skipped=False):
        if not self.path:
            return
        data = result._result
        line = {"host": result._host.get_name(), "task": result._task.get_name(),
                "action": result._task.action, "changed": bool(data.get("changed")),
                "glanced": bool(data.get("glanced")), "failed": failed, "skipped": skipped}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, failed=True)

"""The benchmark's stdout callback: one JSON line at the end, what bench_playbook.py reads.

{"nft_seconds": the longest `nft_seconds` any task reported, "changed": changed task results,
 "glanced": results the run's glance answered without asking the node, "failed": failed or
 unreachable results with their messages, "tasks": {task name: longest seconds on a host}}.
Not part of the collection: the benchmark points Ansible at it.
"""

import json
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: podnet_bench
type: stdout
short_description: one JSON summary line for bench/bench_playbook.py
description: Collects nft_seconds, changed and failed results and task times.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "podnet_bench"

    def __init__(self):
        super().__init__()
        self.summary = {"nft_seconds": 0.0, "changed": 0, "glanced": 0, "failed": [], "tasks": {}}
        self.started = {}

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.started[task._uuid] = time.monotonic()

    def _done(self, result):
        name = result._task.get_name()
        seconds = time.monotonic() - self.started.get(result._task._uuid, time.monotonic())
        self.summary["tasks"][name] = max(self.summary["tasks"].get(name, 0.0), round(seconds, 3))
        return result._result

    def v2_runner_on_ok(self, result):
        data = self._done(result)
        self.summary["changed"] += bool(data.get("changed"))
        self.summary["glanced"] += bool(data.get("glanced"))
        self.summary["nft_seconds"] = max(self.summary["nft_seconds"], data.get("nft_seconds") or 0.0)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        data = self._done(result)
        if not ignore_errors:
            self.summary["failed"].append("%s: %s" % (result._host.get_name(), data.get("msg")))

    def v2_runner_on_unreachable(self, result):
        message = self._done(result).get("msg")
        self.summary["failed"].append("%s: unreachable: %s" % (result._host.get_name(), message))

    def v2_runner_on_skipped(self, result):
        self._done(result)

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps(self.summary))

"""Wall time of each task of a playbook run, for bench/fleet.py's breakdown: from the task's
start to its last host's result. Written as JSON lines to $FLEET_TASK_TIMES (nothing without it)."""
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fleet_task_times
type: aggregate
short_description: wall time per task, for the fleet benchmark
description: Writes each task's wall time (start to last host result) to $FLEET_TASK_TIMES.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("FLEET_TASK_TIMES")
        self._task = None
        self._start = 0.0
        self._last = 0.0

    def _flush(self):
        if self._task and self._path:
            with open(self._path, "a") as out:
                out.write(json.dumps({"task": self._task,
                                      "s": round(max(self._last, self._start) - self._start, 3)})
                          + "\n")
        self._task = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._flush()
        self._task, self._start, self._last = task.get_name(), time.monotonic(), 0.0

    def _result(self, *args, **kwargs):
        self._last = time.monotonic()

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = _result
    v2_runner_on_unreachable = _result

    def v2_playbook_on_stats(self, stats):
        self._flush()

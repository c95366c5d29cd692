# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.report: a check on the controller that fails with its problems or shows
what it found, in one task, each argument templated once.

    pipfeed.feed.report:
      problems: "{{ report.problems }}"   # when any, fail with them (each made one line)
      lines: "{{ report.lines }}"         # otherwise show these, as an assert's success_msg

ansible.builtin.assert renders its condition, its fail_msg and its success_msg (and quiet)
each on its own, so a report that all of them read is computed three or four times per host;
here each argument is templated once by Ansible before the action runs.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_run


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("problems", "lines"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        said = host_run.problems_message("pipfeed.feed.report",
                                         self._task.args.get("problems") or [])
        lines = self._task.args.get("lines") or []
        if isinstance(lines, str) or not isinstance(lines, list):
            raise AnsibleActionFail("pipfeed.feed.report: lines must be a list of lines")
        result["changed"] = False
        if said:
            result.update(failed=True, msg=said)
        elif lines:
            result.update(msg=str(lines[0]) if len(lines) == 1 else [str(x) for x in lines],
                          _ansible_verbose_always=True)
        return result

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.publish: the controller side of the publish playbook
(plugins/plugin_utils/publish.py), run in the controller's Ansible process.

    pipfeed.feed.publish:
      command: check | run
      spec: {packages, requirements, platforms_given, platforms_probed, upstream_url, ...}
      token: the feed's token, for run (the task is no_log)

check normalises and checks the inputs (no network); run resolves, downloads, reads the feed's
index and uploads what it lacks, and returns the per-file report. An error's message has the
token scrubbed out, whatever tool printed it.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import publish


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("command", "spec", "token"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        command = self._task.args.get("command")
        spec = self._task.args.get("spec")
        if command not in ("check", "run") or not isinstance(spec, dict):
            raise AnsibleActionFail("pipfeed.feed.publish needs command (check or run) and "
                                    "spec (a mapping)")
        token = str(self._task.args.get("token") or "")
        try:
            if command == "check":
                outcome = publish.command_check(spec)
            else:
                outcome = publish.command_run(spec, token)
        except publish.ERRORS as error:
            message = publish.scrub(f"publish: {error}", token, spec.get("username") or "pipfeed")
            # error as well as msg: a no_log task that registers this with failed_when: false
            # keeps what went wrong (its msg holds no token) for a task that shows it.
            result.update(failed=True, msg=message, error=message)
            return result
        changed = command == "run" and outcome.get("counts", {}).get("uploaded", 0) > 0
        result.update(changed=changed, result=outcome)
        return result

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.report: a check on the controller that fails with its problems or shows
what it found, in one task, each argument templated once.

    pipfeed.feed.report:
      options_of:                         # first: these roles' options against their specs
        - {role: pipfeed_common, entry: shared}
      problems: "{{ report.problems }}"   # when any, fail with them (each made one line)
      lines: "{{ report.lines }}"         # otherwise show these, as an assert's success_msg

ansible.builtin.assert renders its condition, its fail_msg and its success_msg (and quiet)
each on its own, so a report that all of them read is computed three or four times per host;
here each argument is templated once by Ansible before the action runs.

options_of checks the play's variables against argument specs of the collection's roles as
ansible.builtin.validate_argument_spec does (the same validator and message), so that a role's
options and its other checks cost one task, not one each.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_run, role_specs


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("options_of", "problems", "lines"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result["changed"] = False
        wrong = self._check_options(self._task.args.get("options_of") or [], task_vars or {})
        if wrong:
            result.update(wrong)
            return result
        said = host_run.problems_message("pipfeed.feed.report",
                                         self._task.args.get("problems") or [])
        lines = self._task.args.get("lines") or []
        if isinstance(lines, str) or not isinstance(lines, list):
            raise AnsibleActionFail("pipfeed.feed.report: lines must be a list of lines")
        if said:
            result.update(failed=True, msg=said)
        elif lines:
            result.update(msg=str(lines[0]) if len(lines) == 1 else [str(x) for x in lines],
                          _ansible_verbose_always=True)
        return result

    def _check_options(self, options_of, task_vars: dict) -> dict:
        """The failed result of the options of these roles' entry points, checked against
        their specs with the play's values; empty when they pass."""
        if not isinstance(options_of, list) or not all(
                isinstance(item, dict) and set(item) == {"role", "entry"} for item in options_of):
            raise AnsibleActionFail("pipfeed.feed.report: options_of must be a list of "
                                    "{role: NAME, entry: ENTRY POINT}")
        if not options_of:
            return {}
        spec: dict = {}
        for item in options_of:
            spec.update(role_specs.options(item["role"], item["entry"]))
        # Only the variables the specs name, templated as Ansible templates them for a role.
        values = self._templar.template({name: task_vars[name] for name in spec
                                         if name in task_vars})
        errors = ArgumentSpecValidator(spec).validate(
            values, validate_role_argument_spec=True).error_messages
        if not errors:
            return {}
        context = {"type": "role",
                   "name": ", ".join(dict.fromkeys(item["role"] for item in options_of)),
                   "argument_spec_name": ", ".join(dict.fromkeys(item["entry"]
                                                                 for item in options_of))}
        return {"failed": True, "msg": "Validation of arguments failed:\n" + "\n".join(errors),
                "argument_errors": errors, "validate_args_context": context}

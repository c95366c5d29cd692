# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.host_apply: bring files, directories, links, a group and a dpkg
diversion to the state a role wants, in one call to the host, and only where they differ.

    pipfeed.feed.host_apply:
      python: /usr/bin/python3
      current: "{{ probe.probe }}"     # a pipfeed.feed.host_probe result; optional
      items:
        - {kind: directory, path: /etc/uv, owner: root, group: root, mode: "0755"}
        - {kind: file, path: /etc/uv/uv.toml, content: "...", owner: root, group: root,
           mode: "0644", backup: true, validate: "python3 -c '...' %s"}
        - {kind: file, path: /etc/pipfeed/tokens/a.token, content: "...", secret: true, ...}
        - {kind: file, path: /usr/local/lib/pipfeed/pipfeed-keyring, program: pipfeed-keyring,
           owner: root, group: root, mode: "0755"}     # one of the collection's host programs
        - {kind: file, path: /usr/local/bin/uv, src: /home/me/.cache/pipfeed/uv/.../uv,
           owner: root, group: root, mode: "0755"}     # a file of the controller, as it is
        - {kind: link, path: /usr/local/bin/keyring, src: /usr/local/lib/pipfeed/pipfeed-keyring}
        - {kind: absent, path: /etc/pipfeed/tokens/gone.token}
        - {kind: group, name: pipfeed, members: [deploy]}
        - {kind: divert, path: /usr/bin/keyring, to: /usr/bin/keyring.distrib}
      verify: [[/usr/local/lib/pipfeed/pipfeed-keyring, --check]]   # after a change only
      fail_msg: what to say when the change fails
      problems: "{{ earlier_step_failed }}"   # optional: when any, fail with them; nothing changes

With ``current`` the decision is made on the controller from the probe, and a host where
nothing differs is not contacted at all: a run that changes nothing costs no round trip here.
Without it (or when it lacks an item) the action probes first, in one call. What differs goes
in one call: the items' new content follows the program on its standard input; each file is
written beside its place, checked (``validate``, or ``parse`` in the call's own Python), and
renamed over the old one, so a run that dies leaves the old file or the new one, never a part.

Check mode and --diff are honest: in check mode nothing is sent and the result says what would
change, with a diff per file (a secret file's diff says only that it changes). ``changes`` in
the result lists each item that changed and why. A task whose items hold a secret must be
no_log; this action never puts content in its result or its message.
"""
from __future__ import annotations

import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_plan, host_run
from ansible_collections.pipfeed.feed.plugins.plugin_utils.host_programs import installable


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("python", "current", "items", "verify", "fail_msg", "problems"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        said = host_run.problems_message("pipfeed.feed.host_apply", args.get("problems") or [])
        if said:
            result.update(failed=True, msg=said)
            return result
        python = str(args.get("python") or "/usr/bin/python3")
        items = args.get("items") or []
        verify = args.get("verify") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise AnsibleActionFail("pipfeed.feed.host_apply: items must be a list of mappings")
        # A file whose content is one of the collection's host programs, by name, or a file
        # on the controller (src: a binary such as uv's, sent as it is).
        try:
            items = [self._resolve(i) for i in items]
        except (KeyError, OSError) as err:
            raise AnsibleActionFail(f"pipfeed.feed.host_apply: {err}") from None
        diff_mode = bool(self._task.diff)
        current = args.get("current")
        if not host_plan.known(items, current, diff_mode):
            spec = host_plan.probe_spec(items, diff_mode)
            done = host_run.run(self, python, "host_state.py",
                                ["probe", json.dumps(spec, sort_keys=True)])
            try:
                if done["rc"] != 0:
                    raise ValueError(host_run.failure(
                        done, args.get("fail_msg") or f"{python} could not read the host's state"))
                current = json.loads(done["stdout"].strip().splitlines()[-1])
            except (ValueError, IndexError) as err:
                message = str(err) if done["rc"] != 0 else (
                    f"the probe on the host said something that is not JSON: "
                    f"{done['stdout'][-300:]!r}")
                result.update(failed=True, msg=message, error=message)
                return result

        try:
            changes = host_plan.decide(items, current)
        except host_plan.PlanError as err:
            result.update(failed=True, msg=str(err), error=str(err))
            return result

        result["changes"] = [host_plan.summary(change) for change in changes]
        result["changed"] = bool(changes)
        if diff_mode and changes:
            result["diff"] = [change["diff"] for change in changes]
        if not changes or self._task.check_mode:
            return result

        spec, contents = host_plan.apply_spec(changes, verify)
        blocks = host_plan.bundle(contents)
        done = host_run.run(self, python, "host_state.py",
                            ["apply", json.dumps(spec, sort_keys=True)],
                            blocks, sum(len(b) for b in blocks))
        if done["rc"] != 0:
            first = args.get("fail_msg") or "The change was not made; what was there stays"
            message = host_run.failure(done, str(first))
            result.update(failed=True, msg=message, error=message)
            try:
                applied = json.loads(done["stdout"].strip().splitlines()[0])["done"]
                result["applied"] = [result["changes"][i]["path"] for i in applied]
            except (ValueError, IndexError, KeyError, TypeError):
                pass
        return result

    @staticmethod
    def _resolve(item: dict) -> dict:
        if item.get("program"):
            rest = {k: v for k, v in item.items() if k != "program"}
            return dict(rest, content=installable(item["program"]).decode("utf-8"))
        if item.get("kind") == "file" and item.get("src"):
            with open(item["src"], "rb") as handle:
                data = handle.read()
            return dict({k: v for k, v in item.items() if k != "src"}, content=data)
        return item

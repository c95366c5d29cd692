# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.host_probe: everything a role decides on, read from the host in one
call (plugins/module_utils/host_state.py, command probe), changing nothing, in check mode too.

    pipfeed.feed.host_probe:
      python: /usr/bin/python3       # the host's Python that runs the probe
      spec:                          # what to read; see host_state.py
        paths: [{path: /etc/pip.conf, content: true}, {path: /etc/pipfeed/tokens/a.token,
                secret: true}]
        pythons: [python3]
        groups: [pipfeed]
        users: [deploy]
        diversions: [/usr/bin/keyring]
        writable: [/etc]
        os: true
      fail_msg: what to say when the host's Python cannot run it

The result's ``probe`` is what pipfeed.feed.host_apply takes as ``current``: a role that
registers one probe decides every change from it, and a host where nothing differs is not
contacted again. No secret is in it: a secret file is reported by an HMAC under a one-time
salt.
"""
from __future__ import annotations

import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_run


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("python", "spec", "fail_msg"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        python = self._task.args.get("python") or "/usr/bin/python3"
        spec = self._task.args.get("spec") or {}
        if not isinstance(spec, dict):
            raise AnsibleActionFail("pipfeed.feed.host_probe: spec must be a mapping")
        done = host_run.run(self, str(python), "host_state.py",
                            ["probe", json.dumps(spec, sort_keys=True)])
        if done["rc"] != 0:
            first = self._task.args.get("fail_msg") or (
                f"{python} could not read the host's state; install python3 there, or point "
                "the role's python variable at it")
            result.update(failed=True, msg=host_run.failure(done, str(first)))
            return result
        try:
            result["probe"] = json.loads(done["stdout"].strip().splitlines()[-1])
        except (ValueError, IndexError):
            result.update(failed=True, msg=f"the probe on the host said something that is not "
                                           f"JSON: {done['stdout'][-300:]!r}")
            return result
        result["changed"] = False
        return result

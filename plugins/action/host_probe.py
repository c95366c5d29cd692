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
        wheelhouse: /var/lib/pipfeed/wheelhouse   # what wheelhouse_host.py's probe reports
      fail_msg: what to say when the host's Python cannot run it
      also: {name: spec}             # optional: other specs read in the same call
      read: "{{ earlier.also.name }}"  # optional: a read an earlier call made for this spec
      problems: "{{ settings_problems }}"  # optional: when any, fail with them; nothing is read

The result's ``probe`` is what pipfeed.feed.host_apply takes as ``current``: a role that
registers one probe decides every change from it, and a host where nothing differs is not
contacted again. No secret is in it: a secret file is reported by an HMAC under a one-time
salt.

Plays that run several roles' checks one after the other read each host once for all of them:
the first role's probe reads the others' specs as ``also`` (each answer under ``also.<name>``,
with the identity of the spec it answers), and each later role's probe takes that answer as
``read``: when it answers the same spec, it is the result, and the host is not contacted again.
Nothing changes a host between the checks, so the answer is as fresh as a second read.

``problems`` are what a role's checks of its settings found on the controller: when there are
any, the task fails with them (each on one line, in order) and the host is not read, so that a
role checks its settings and reads its host in one task (each task costs every host a worker).
"""
from __future__ import annotations

import hashlib
import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_run


def spec_id(spec: dict) -> str:
    """The identity of a spec: what a read made with ``also`` answers."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("python", "spec", "fail_msg", "also", "read", "problems"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        said = host_run.problems_message("pipfeed.feed.host_probe",
                                         self._task.args.get("problems") or [])
        if said:
            result.update(failed=True, msg=said)
            return result
        python = self._task.args.get("python") or "/usr/bin/python3"
        spec = self._task.args.get("spec") or {}
        also = self._task.args.get("also") or {}
        read = self._task.args.get("read")
        if not isinstance(spec, dict) or "also" in spec:
            raise AnsibleActionFail("pipfeed.feed.host_probe: spec must be a mapping (other "
                                    "specs go in also)")
        if not isinstance(also, dict) or not all(isinstance(v, dict) for v in also.values()):
            raise AnsibleActionFail("pipfeed.feed.host_probe: also must map names to specs")
        if isinstance(read, dict) and read.get("spec_id") == spec_id(spec) \
                and isinstance(read.get("probe"), dict):
            result.update(probe=read["probe"], changed=False, read_before=True)
            return result
        asked = dict(spec, also=also) if also else spec
        wheelhouse = any(one.get("wheelhouse") for one in (spec, *also.values()))
        done = host_run.run(self, str(python), "host_state.py",
                            ["probe", json.dumps(asked, sort_keys=True)],
                            modules=("wheelhouse_host.py",) if wheelhouse else ())
        if done["rc"] != 0:
            first = self._task.args.get("fail_msg") or (
                f"{python} could not read the host's state; install python3 there, or point "
                "the role's python variable at it")
            result.update(failed=True, msg=host_run.failure(done, str(first)))
            return result
        try:
            result["probe"] = json.loads(done["stdout"].strip().splitlines()[-1])
            answers = result["probe"].pop("also", {})
        except (ValueError, IndexError, AttributeError):
            result.update(failed=True, msg=f"the probe on the host said something that is not "
                                           f"JSON: {done['stdout'][-300:]!r}")
            return result
        if also:
            result["also"] = {name: {"spec_id": spec_id(other), "probe": answers.get(name)}
                              for name, other in also.items()}
        result["changed"] = False
        return result

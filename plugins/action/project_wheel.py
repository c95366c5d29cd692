# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.project_wheel: the collection as a wheel for a VM's first boot
(plugins/plugin_utils/project_wheel.py), built and uploaded in the controller's Ansible process.

    pipfeed.feed.project_wheel:
      command: build
      dest: build/cloud-init            # where the wheel is written
      requires: [ansible-core==2.19.14] # what it depends on

    pipfeed.feed.project_wheel:
      command: upload
      wheel: "{{ built.result }}"       # what build returned
      url: https://.../pypi/upload/
      ca: ""                            # CA bundle for the upload ("" for the system's)
      username: pipfeed
      token: "{{ lookup('pipfeed.feed.token', feed) }}"   # the task is no_log

build writes the wheel on the controller only (in check mode too: the user-data pins its
hash), and a wheel of the same content keeps its name and bytes, so it reports no change.
upload reports changed when the feed took the file; 409 (the feed has this version, so this
very file) is not a change; in check mode it sends nothing and reports that it would upload.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import project_wheel


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("command", "dest", "requires", "wheel", "url", "ca", "username",
                             "token"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        command = args.get("command")
        try:
            if command == "build":
                if not args.get("dest"):
                    raise AnsibleActionFail("pipfeed.feed.project_wheel build needs dest")
                outcome = project_wheel.build(str(args["dest"]), list(args.get("requires") or []))
                result.update(changed=False, result=outcome)
            elif command == "upload":
                for key in ("wheel", "url", "token"):
                    if not args.get(key):
                        raise AnsibleActionFail(f"pipfeed.feed.project_wheel upload needs {key}")
                if self._task.check_mode:
                    # Nothing is sent in check mode; the run would upload (or find it there).
                    result.update(changed=True, result={"uploaded": None, "check_mode": True})
                    return result
                outcome = project_wheel.upload(str(args["url"]), dict(args["wheel"]),
                                               str(args.get("ca") or ""),
                                               str(args.get("username") or "pipfeed"),
                                               str(args["token"]))
                result.update(changed=bool(outcome["uploaded"]), result=outcome)
            else:
                raise AnsibleActionFail("pipfeed.feed.project_wheel needs command: build or "
                                        "upload")
        except (project_wheel.ProjectWheelError, OSError, KeyError, TypeError) as error:
            # error as well as msg: a no_log task that registers this with failed_when: false
            # keeps what went wrong (it never holds the token) for a task that shows it.
            result.update(failed=True, msg=str(error), error=str(error))
        return result

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.host_script: run one of the collection's host scripts
(plugins/module_utils, standard library only) on the host.

    pipfeed.feed.host_script:
      script: wheelhouse_host.py      # the host script (plugins/plugin_utils/host_programs.py)
      python: /usr/bin/python3        # the host's Python
      args: [probe, /var/lib/pipfeed/wheelhouse]
      fail_msg: what to tell the user when the script fails (its stderr follows)
      send: [[name, controller path], ...]   # optional: files to hand the script as a bundle
      stream_max_bytes: 134217728             # optional: the most that goes on stdin
      problems: "{{ checks }}"                 # optional: when any, fail with them; nothing runs
      report: true                            # optional: show the script's msg, as assert does

The script goes to the host's Python on stdin, in the one command the connection runs: no
module is sent and no second Python starts (ansible.builtin.command with stdin would start the
module's Python, which then starts the script's). The probe runs on every host in every run,
so this is most of what a re-run with nothing to do costs on the host.

With send, the files go to the script as one bundle (a line of JSON naming each file and its
size, then the files' bytes; the script's `unpack` reads it) and the bundle's place is added
as the script's last argument: "-" when the bundle follows the script on stdin, so that the
host writes and hashes the wheels as they arrive, with no archive on either end and no
second command; or a file's path. It goes as a file where Ansible would not pipeline
(pipelining off in ansible.cfg, or a connection or become method that cannot pass stdin), and
where it is larger than stream_max_bytes: what goes on stdin is held in the controller's
memory while it is sent, once per host being sent to at the same time (up to `forks` hosts).
As a file, the bundle is written in the controller's temporary directory, sent with the
script into the remote temporary directory (sftp or scp with SSH), and both are removed after.

The result has rc, stdout and stderr, as from ansible.builtin.command, and fails when rc is not
0 (failed_when may say otherwise), with fail_msg and the script's stderr as its message: one
task where a command and an assert would be two, on every host in every run. Like every
action that changes a host, it does nothing in check mode unless the task sets
check_mode: false; the role does so only for the script's
read-only commands (probe, plan, venv-plan) and for apply outside check mode.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_run

SCRIPT = "wheelhouse_host.py"
# Kept here for the tests that run the bootstrap as the action sends it.
BOOTSTRAP = host_run.BOOTSTRAP
BLOCK = 1 << 20


def bundle(send: list) -> Iterator[bytes]:
    """The bundle of these files, in blocks: its first line names each file and its size, in
    the order of their bytes, which follow."""
    yield (json.dumps({"files": [[name, os.path.getsize(path)] for name, path in send]},
                      separators=(",", ":")) + "\n").encode()
    for _, path in send:
        with open(path, "rb") as source:
            while block := source.read(BLOCK):
                yield block


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("script", "python", "args", "fail_msg", "send", "stream_max_bytes",
                             "report", "problems"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        said = host_run.problems_message("pipfeed.feed.host_script",
                                         self._task.args.get("problems") or [])
        if said:
            result.update(failed=True, msg=said)
            return result
        python = self._task.args.get("python")
        args = self._task.args.get("args") or []
        send = self._task.args.get("send") or []
        if not python or not isinstance(args, list):
            raise AnsibleActionFail("pipfeed.feed.host_script needs python (the host's Python) "
                                    "and args (a list of the script's arguments)")
        if not isinstance(send, list) or not all(
                isinstance(item, (list, tuple)) and len(item) == 2 for item in send):
            raise AnsibleActionFail("pipfeed.feed.host_script: send must be a list of "
                                    "[name, controller path] pairs")
        if self._task.check_mode:
            result.update(skipped=True, msg="not run in check mode")
            return result
        try:
            limit = int(self._task.args.get("stream_max_bytes", host_run.STREAM_MAX_BYTES))
        except (TypeError, ValueError):
            raise AnsibleActionFail("pipfeed.feed.host_script: stream_max_bytes must be a "
                                    "number of bytes")
        for name, path in send:
            if not os.path.isfile(path):
                raise AnsibleActionFail(f"pipfeed.feed.host_script: {path} ({name}) is not a "
                                        "file on the controller")
        name = str(self._task.args.get("script") or SCRIPT)
        size = sum(os.path.getsize(path) for _, path in send)
        try:
            done = host_run.run(self, str(python), name, list(args),
                                bundle(send) if send else (), size, limit)
        except (KeyError, FileNotFoundError) as err:
            raise AnsibleActionFail(f"pipfeed.feed.host_script: {err}") from None
        result.update(rc=done["rc"], stdout=done["stdout"], stderr=done["stderr"],
                      cmd=done["cmd"], stdout_lines=done["stdout"].splitlines(),
                      stderr_lines=done["stderr"].splitlines(), changed=True)
        if send:
            result.update(sent_files=len(send), sent_bytes=size, sent_by=done["sent_by"])
        if done["rc"] != 0:
            first = self._task.args.get("fail_msg") or f"{name} {' '.join(map(str, args[:1]))} failed"
            result.update(failed=True, msg=host_run.failure(done, str(first)))
        elif boolean(self._task.args.get("report", False), strict=False):
            return self._report(result, name, done)
        return result

    @staticmethod
    def _report(result: dict, name: str, done: dict) -> dict:
        """What a checking program found, shown as an assert's success message is."""
        for key in ("rc", "stdout", "stderr", "cmd", "stdout_lines", "stderr_lines"):
            result.pop(key, None)
        try:
            said = json.loads(done["stdout"].strip().splitlines()[-1])["msg"]
        except (ValueError, IndexError, KeyError, TypeError):
            result.update(failed=True, msg=f"{name} said nothing that reads as its report: "
                                           f"{done['stdout'][-300:]!r}")
            return result
        result.update(changed=False, msg=said, _ansible_verbose_always=True)
        return result

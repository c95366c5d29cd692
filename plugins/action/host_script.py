# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action pipfeed.feed.host_script: run one of the collection's host scripts
(plugins/module_utils, standard library only) on the host.

    pipfeed.feed.host_script:
      script: wheelhouse_host.py      # the host script (plugins/plugin_utils/host_programs.py)
      python: /usr/bin/python3        # the host's Python
      args: [probe, /var/lib/pipfeed/wheelhouse]
      fail_msg: what to tell the user when the script fails (its stderr follows)
      send: [[name, controller path], ...]   # optional: files to hand the script as a bundle
      stream_max_bytes: 134217728             # optional: the most that goes on stdin

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
import shlex
import tempfile
from collections.abc import Iterator

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils.host_programs import source

SCRIPT = "wheelhouse_host.py"
# Reads the script's own length of stdin and runs it as __main__ with the arguments after the
# length: whatever follows the script on stdin is left for it to read. {name} is the script's
# name, for its tracebacks.
BOOTSTRAP = ("import sys;n=int(sys.argv.pop(1));"
             "exec(compile(sys.stdin.buffer.read(n),{name!r},'exec'))")
STREAM_MAX_BYTES = 128 << 20
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
    _VALID_ARGS = frozenset(("script", "python", "args", "fail_msg", "send", "stream_max_bytes"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        python = self._task.args.get("python")
        args = self._task.args.get("args") or []
        send = self._task.args.get("send") or []
        if not python or not isinstance(args, list):
            raise AnsibleActionFail("pipfeed.feed.host_script needs python (the host's Python) and "
                                    "args (a list of the script's arguments)")
        if not isinstance(send, list) or not all(
                isinstance(item, (list, tuple)) and len(item) == 2 for item in send):
            raise AnsibleActionFail("pipfeed.feed.host_script: send must be a list of "
                                    "[name, controller path] pairs")
        if self._task.check_mode:
            result.update(skipped=True, msg="not run in check mode")
            return result
        try:
            limit = int(self._task.args.get("stream_max_bytes", STREAM_MAX_BYTES))
        except (TypeError, ValueError):
            raise AnsibleActionFail("pipfeed.feed.host_script: stream_max_bytes must be a number "
                                    "of bytes")
        for name, path in send:
            if not os.path.isfile(path):
                raise AnsibleActionFail(f"pipfeed.feed.host_script: {path} ({name}) is not a file "
                                        "on the controller")
        name = str(self._task.args.get("script") or SCRIPT)
        try:
            script = source(name)
        except (KeyError, FileNotFoundError) as err:
            raise AnsibleActionFail(f"pipfeed.feed.host_script: {err}") from None
        args = [str(arg) for arg in args]
        size = sum(os.path.getsize(path) for _, path in send)
        pipelined = self._is_pipelining_enabled("new")
        if pipelined and (not send or size <= limit):
            data = script
            if send:
                args.append("-")
                data = b"".join([script, *bundle(send)])
            command = shlex.join([str(python), "-c", BOOTSTRAP.format(name=name),
                                  str(len(script))] + args)
            done = self._low_level_execute_command(command, sudoable=True, in_data=data)
            sent_by = "stdin"
        else:
            command, done = self._run_from_files(str(python), name, script, args, send)
            sent_by = "file"
        stdout = to_text(done.get("stdout", ""), errors="surrogate_or_strict")
        stderr = to_text(done.get("stderr", ""), errors="surrogate_or_strict")
        result.update(rc=done["rc"], stdout=stdout, stderr=stderr, cmd=command,
                      stdout_lines=stdout.splitlines(), stderr_lines=stderr.splitlines(),
                      changed=True)
        if send:
            result.update(sent_files=len(send), sent_bytes=size, sent_by=sent_by)
        if done["rc"] != 0:
            # With become over SSH a command without stdin runs on a terminal (-tt), which
            # merges its stderr into stdout (the script writes nothing else there when it
            # fails); stderr then holds only the connection's own messages.
            said = " ".join(line.strip() for line in (stdout + "\n" + stderr).splitlines()
                            if line.strip() and not line.startswith("Shared connection to "))
            first = self._task.args.get("fail_msg") or f"{name} {' '.join(args[:1])} failed"
            result.update(failed=True, msg=f"{str(first).strip()} (exit code {done['rc']}: "
                                           f"{said or 'no message'})")
        return result

    def _run_from_files(self, python: str, name: str, script: bytes, args: list, send: list):
        """The script, and the bundle if any, sent as files into the remote temporary
        directory first, then run from there; the directory is removed after."""
        local = None
        remote_tmp = self._make_tmp_path()
        try:
            remote = self._connection._shell.join_path(remote_tmp, name)
            self._transfer_data(remote, script)
            paths = [remote_tmp, remote]
            if send:
                handle, local = tempfile.mkstemp(prefix="pip-wheelhouse-", suffix=".bundle",
                                                 dir=C.DEFAULT_LOCAL_TMP)
                with os.fdopen(handle, "wb") as out:
                    out.writelines(bundle(send))
                sent = self._connection._shell.join_path(remote_tmp, "wheels.bundle")
                self._transfer_file(local, sent)
                paths.append(sent)
                args = args + [sent]
            self._fixup_perms2(paths, execute=False)
            command = shlex.join([python, remote] + args)
            return command, self._low_level_execute_command(command, sudoable=True)
        finally:
            if local:
                os.unlink(local)
            self._remove_tmp_path(remote_tmp)

"""Action pip_wheelhouse_host: run the role's host script (files/wheelhouse_host.py) on the host.

    pip_wheelhouse_host:
      python: /usr/bin/python3        # the host's Python
      args: [probe, /var/lib/pipfeed/wheelhouse]
      fail_msg: what to tell the user when the script fails (its stderr follows)

The script goes to `<python> - <args>` on stdin, in the one command the connection runs: no
module is sent and no second Python starts (ansible.builtin.command with stdin would start the
module's Python, which then starts the script's). The probe runs on every host in every run,
so this is most of what a re-run with nothing to do costs on the host. Where Ansible would not
pipeline (pipelining off in ansible.cfg, or a connection that cannot), the script is sent as a
file into the remote temporary directory first and run from there.

The result has rc, stdout and stderr, as from ansible.builtin.command, and fails when rc is not
0 (failed_when may say otherwise), with fail_msg and the script's stderr as its message: one
task where a command and an assert would be two, on every host in every run. Like every
action that changes a host, it does nothing in check mode unless the task sets
check_mode: false; the role does so only for the script's
read-only commands (probe, plan, venv-plan) and for apply outside check mode.
"""
from __future__ import annotations

import shlex

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

SCRIPT = "wheelhouse_host.py"


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("python", "args", "fail_msg"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        python = self._task.args.get("python")
        args = self._task.args.get("args") or []
        if not python or not isinstance(args, list):
            raise AnsibleActionFail("pip_wheelhouse_host needs python (the host's Python) and "
                                    "args (a list of the script's arguments)")
        if self._task.check_mode:
            result.update(skipped=True, msg="not run in check mode")
            return result
        path = self._find_needle("files", SCRIPT)
        with open(path, "rb") as handle:
            script = handle.read()
        args = [str(arg) for arg in args]
        if self._is_pipelining_enabled("new"):
            command = shlex.join([str(python), "-"] + args)
            done = self._low_level_execute_command(command, sudoable=True, in_data=script)
        else:
            # Where Ansible would not pipeline a module either (pipelining off, or a connection
            # or become method that cannot pass stdin), the script goes as a file first.
            remote_tmp = self._make_tmp_path()
            try:
                remote = self._connection._shell.join_path(remote_tmp, SCRIPT)
                self._transfer_data(remote, script)
                self._fixup_perms2((remote_tmp, remote), execute=False)
                command = shlex.join([str(python), remote] + args)
                done = self._low_level_execute_command(command, sudoable=True)
            finally:
                self._remove_tmp_path(remote_tmp)
        stdout = to_text(done.get("stdout", ""), errors="surrogate_or_strict")
        stderr = to_text(done.get("stderr", ""), errors="surrogate_or_strict")
        result.update(rc=done["rc"], stdout=stdout, stderr=stderr, cmd=command,
                      stdout_lines=stdout.splitlines(), stderr_lines=stderr.splitlines(),
                      changed=True)
        if done["rc"] != 0:
            said = " ".join(line.strip() for line in stderr.splitlines()
                            if line.strip() and not line.startswith("Shared connection to "))
            first = self._task.args.get("fail_msg") or f"{SCRIPT} {' '.join(args[:1])} failed"
            result.update(failed=True, msg=f"{str(first).strip()} (exit code {done['rc']}: "
                                           f"{said or 'no message'})")
        return result

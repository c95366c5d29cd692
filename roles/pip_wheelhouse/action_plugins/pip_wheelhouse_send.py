"""Action pip_wheelhouse_send: put one controller file on the host, as root, mode 0600.

Why not ansible.builtin.copy: copy checksums the file on the controller, stats the destination
on the host, transfers, then runs a module on the host that checksums the file again before it
moves it. The wheelhouse's archive is made afresh for what the host lacks and every wheel in it
is checked against the manifest's SHA-256 when it is unpacked, so those checks only cost time
(about a second per host for tens of megabytes). This action transfers the file over the
connection (sftp or scp with SSH; a plain copy with a local connection) into the remote
temporary directory and moves it into place with one shell command: no module runs on the host.

Arguments: src (a file on the controller) and dest (the file's path on the host; its
directory is made, mode 0755, when missing). Always changed, except in check mode, where
nothing is sent and the result says what would have been.
"""
from __future__ import annotations

import os
import shlex

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("src", "dest"))

    def run(self, tmp=None, task_vars=None):
        # TRANSFERS_FILES: ActionBase.run makes the remote temporary directory, removed below.
        result = super().run(tmp, task_vars)
        del tmp
        try:
            return self._send(result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _send(self, result: dict) -> dict:
        src = self._task.args.get("src")
        dest = self._task.args.get("dest")
        if not src or not dest or not os.path.isabs(dest) or dest.endswith("/"):
            raise AnsibleActionFail("pip_wheelhouse_send needs src (a file on the controller) "
                                    "and dest (an absolute file path on the host)")
        if not os.path.isfile(src):
            raise AnsibleActionFail(f"pip_wheelhouse_send: {src} is not a file on the controller")
        size = os.path.getsize(src)
        result.update(changed=True, src=src, dest=dest, size=size)
        if self._task.check_mode:
            result["msg"] = f"would send {size} bytes to {dest}"
            return result

        remote_tmp = self._connection._shell.tmpdir or self._make_tmp_path()
        staged = self._connection._shell.join_path(remote_tmp, os.path.basename(dest))
        self._transfer_file(src, staged)
        directory = os.path.dirname(dest)
        # umask 022: directories made here are 0755, as the role's store must be. The file
        # becomes root's (or the become user's) before anyone else could read it. The temporary
        # directory may be on another file system: the file is moved next to dest first, then
        # renamed, so dest is never a partial file.
        part = shlex.quote(dest + ".part")
        command = (f"umask 022 && mkdir -p {shlex.quote(directory)} && "
                   f"chmod 0600 {shlex.quote(staged)} && mv -f {shlex.quote(staged)} {part} && "
                   f"chown \"$(id -u):$(id -g)\" {part} && mv -f {part} {shlex.quote(dest)}")
        done = self._low_level_execute_command(command, sudoable=True)
        if done["rc"] != 0:
            # With become over SSH the command runs on a terminal (-tt), which merges its
            # stderr into stdout; stderr then holds only the connection's own messages.
            said = [line.strip() for line in
                    (done.get("stdout", "") + "\n" + done.get("stderr", "")).splitlines()
                    if line.strip() and not line.startswith("Shared connection to ")]
            raise AnsibleActionFail(f"could not move the archive into {dest} (exit code "
                                    f"{done['rc']}): {' '.join(said) or 'no message'}")
        return result

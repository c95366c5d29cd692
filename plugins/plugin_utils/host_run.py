# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run one of the collection's host programs (plugins/module_utils, standard library only) on
the host of an action, in one command: the program goes to the host's Python on its standard
input, and whatever data the program reads follows it on the same stream. No module is sent
and no second Python starts (ansible.builtin.command with stdin would start the module's
Python, which then starts the program's), so a call is one pipelined SSH round trip.

Where Ansible would not pipeline (pipelining off in ansible.cfg, or a connection or become
method that cannot pass stdin), or the data is larger than ``stream_max_bytes`` (what goes on
stdin is held in the controller's memory while it is sent, once per host being sent to at the
same time), the program and its data go as files into the remote temporary directory first
(sftp or scp with SSH), and both are removed after.
"""
from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Iterable

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.pipfeed.feed.plugins.plugin_utils.host_programs import source

# Reads the program's own length of stdin and runs it as __main__ with the arguments after
# the length: whatever follows the program on stdin is left for it to read. {name} is the
# program's name, for its tracebacks.
BOOTSTRAP = ("import sys;n=int(sys.argv.pop(1));"
             "exec(compile(sys.stdin.buffer.read(n),{name!r},'exec'))")
# The same, for a program that imports other host programs: their sources come first on stdin,
# each made a module (under its name, without .py) before the program runs; the first argument
# lists them as name:length,...
BOOTSTRAP_MODULES = ("import sys,types;a=sys.argv;r=sys.stdin.buffer.read\n"
                     "for m in a.pop(1).split(','):\n"
                     " k,s=m.split(':');o=sys.modules[k]=types.ModuleType(k)\n"
                     " exec(compile(r(int(s)),k+'.py','exec'),o.__dict__)\n"
                     "n=int(a.pop(1));exec(compile(r(n),{name!r},'exec'))")
STREAM_MAX_BYTES = 128 << 20


def run(action, python: str, name: str, args: list, data: Iterable[bytes] = (),
        size: int = 0, stream_max_bytes: int = STREAM_MAX_BYTES, modules: tuple = ()) -> dict:
    """Run program ``name`` with ``python`` on the action's host, ``data`` (blocks, ``size``
    bytes in all) after it on its stdin, or, with ``data``, as a file whose path is added as
    the last argument ("-" when it follows on stdin). ``modules`` names other host programs
    that the program imports (wheelhouse_host.py is imported as wheelhouse_host). Returns rc,
    stdout, stderr, cmd and sent_by (stdin or file)."""
    script = source(name)
    imported = {program[:-3]: source(program) for program in modules}
    args = [str(arg) for arg in args]
    blocks = list(data) if size <= stream_max_bytes else data
    has_data = size > 0 or bool(blocks)
    if action._is_pipelining_enabled("new") and size <= stream_max_bytes:
        if has_data:
            args.append("-")
        if imported:
            listed = ",".join(f"{module}:{len(text)}" for module, text in imported.items())
            start = [BOOTSTRAP_MODULES.format(name=name), listed]
        else:
            start = [BOOTSTRAP.format(name=name)]
        command = shlex.join([str(python), "-c", *start, str(len(script))] + args)
        done = action._low_level_execute_command(
            command, sudoable=True, in_data=b"".join([*imported.values(), script, *blocks]))
        sent_by = "stdin"
    else:
        command, done = _run_from_files(action, str(python), name, script, args,
                                        blocks if has_data else None, imported)
        sent_by = "file"
    return {"rc": done["rc"], "cmd": command, "sent_by": sent_by,
            "stdout": to_text(done.get("stdout", ""), errors="surrogate_or_strict"),
            "stderr": to_text(done.get("stderr", ""), errors="surrogate_or_strict")}


def _run_from_files(action, python: str, name: str, script: bytes, args: list, data,
                    imported: dict | None = None):
    """The program, the programs it imports (beside it, where Python looks first) and the
    data if any, sent as files into the remote temporary directory first, then run from
    there; the directory is removed after."""
    local = None
    shell = action._connection._shell
    remote_tmp = action._make_tmp_path()
    try:
        remote = shell.join_path(remote_tmp, name)
        action._transfer_data(remote, script)
        paths = [remote_tmp, remote]
        for module, text in (imported or {}).items():
            paths.append(shell.join_path(remote_tmp, module + ".py"))
            action._transfer_data(paths[-1], text)
        if data is not None:
            handle, local = tempfile.mkstemp(prefix="pipfeed-", suffix=".data",
                                             dir=C.DEFAULT_LOCAL_TMP)
            with os.fdopen(handle, "wb") as out:
                out.writelines(data)
            sent = shell.join_path(remote_tmp, "data")
            action._transfer_file(local, sent)
            paths.append(sent)
            args = args + [sent]
        action._fixup_perms2(paths, execute=False)
        # -B: an import beside the program writes no __pycache__ there, which the connection's
        # user could not remove after a program run with become.
        command = shlex.join([python] + (["-B"] if imported else []) + [remote] + args)
        return command, action._low_level_execute_command(command, sudoable=True)
    finally:
        if local:
            os.unlink(local)
        action._remove_tmp_path(remote_tmp)


def problems_message(action: str, problems) -> str:
    """The message a task fails with, before it calls the host, when the controller's checks
    found ``problems`` (a list of messages, each made one line, in order); empty when there
    are none."""
    if isinstance(problems, str) or not isinstance(problems, list):
        raise AnsibleActionFail(f"{action}: problems must be a list of messages")
    return " ".join(" ".join(str(problem).split()) for problem in problems)


def failure(done: dict, first: str) -> str:
    """The message of a failed run: what the caller says, then what the program said. With
    become over SSH a command without stdin runs on a terminal (-tt), which merges its stderr
    into stdout (the programs write nothing else there when they fail); stderr then holds only
    the connection's own messages."""
    said = " ".join(line.strip() for line in (done["stdout"] + "\n" + done["stderr"]).splitlines()
                    if line.strip() and not line.startswith("Shared connection to ")
                    and not line.startswith("{\"done\""))
    return f"{first.strip()} (exit code {done['rc']}: {said or 'no message'})"

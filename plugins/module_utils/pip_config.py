# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What pip makes of the host's configuration, asked of pip itself, as the user who runs this
(pipfeed_config's verify step runs it as the login user). Standard library only, Python 3.9 or
later, as every program the collection runs on a host; the action pipfeed.feed.host_script
sends it to the host's Python on stdin (no module, no second Python for the system's pip).

Prints one line of JSON: {"pip": who answered, "debug": [...], "list": [...]}, where debug
holds the lines `pip config debug` prints for the files pip looks for ("  <path>, exists:
True|False") and list the settings pip uses, as `pip config list` prints them (key='value';
pip 26 lists each file's values, of which the last file's is the one used: list holds that
one); {"pip": null} when nothing on the host can answer yet (no pip, and no venv module to
make one).

With one argument, a JSON object {"path": the file written, "expect": [lines pip config list
must print], "mode": the role's pipfeed_mode, "host": the inventory name}, it also checks the
answer: pip must read the file and use every expected setting (nothing else overrides it). The
JSON then has "msg" (what pip reads, said for the run's output); when the check fails, the
reason goes to standard error and the exit code is 1.

pip's own configuration loader (pip._internal.configuration.Configuration, what both commands
print from) answers in one process: starting pip's command line twice costs Debian 11's pip
over a second. A pip whose loader is elsewhere (pip 20.3 to 26 keep it there) is asked through
its command line. The system's pip answers when this Python has one; otherwise the pip of a
throwaway venv (the pip the host's venvs get), made and removed here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile


# Run in this Python (the system's pip), or with a venv's Python as its own program: it must
# not need this file, which reaches the host on stdin.
LOADER = """
import json, os


def loader_answer():
    try:
        import pip
    except ImportError:
        return {"pip": None}
    try:
        from pip._internal.configuration import Configuration
        conf = Configuration(isolated=False)
        conf.load()
        debug = ["  %s, exists: %r" % (name, os.path.exists(name))
                 for _, names in conf.iter_config_files() for name in names]
        used = {}
        for key, value in conf.items():
            if isinstance(value, dict):  # pip 26: one mapping per file, the later ones win
                used.update(value)
            else:
                used[key] = value
        listed = ["%s=%r" % item for item in sorted(used.items())]
    except Exception as error:  # pip's internals moved: its command line answers instead
        return {"pip": pip.__version__, "loader": repr(error)}
    return {"pip": pip.__version__, "debug": debug, "list": listed}


if __name__ == "__main__":
    print(json.dumps(loader_answer()))
"""


def loader_answer() -> dict:
    """The answer of the pip this Python imports, through pip's configuration loader."""
    namespace = {"__name__": "pip_config_loader"}
    exec(compile(LOADER, "pip_config_loader", "exec"), namespace)
    return namespace["loader_answer"]()


def command_answer(python: str, answer: dict) -> dict:
    """The answer completed by pip's command line, where its loader could not give it."""
    if answer.get("pip") is not None and "list" not in answer:
        def run(*args: str) -> list:
            return subprocess.run([python, "-m", "pip", "config", *args,
                                   "--disable-pip-version-check"],
                                  capture_output=True, text=True).stdout.splitlines()
        answer.update(debug=run("debug"), list=run("list"))
    return answer


def venv_answer() -> dict:
    """The answer of a throwaway venv's pip, or {"pip": None} when no venv can be made."""
    scratch = tempfile.mkdtemp(prefix="pipfeed-verify-")
    try:
        made = subprocess.run([sys.executable, "-m", "venv", scratch + "/venv"],
                              capture_output=True, text=True)
        if made.returncode != 0:
            return {"pip": None}
        python = scratch + "/venv/bin/python"
        done = subprocess.run([python, "-c", LOADER], capture_output=True, text=True)
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            answer = {"pip": "?", "loader": done.stderr[-300:]}
        return dict(command_answer(python, answer),
                    pip="the pip of a throwaway venv (ensurepip)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check(answer: dict, want: dict) -> str:
    """What is wrong with pip's answer for the file want["path"] (empty when nothing is);
    sets answer["msg"] when nothing is."""
    path = want["path"]
    if answer["pip"] is None:
        answer["msg"] = ("no pip on %s can read %s yet (no pip, no venv module)"
                         % (want.get("host", "this host"), path))
        return ""
    missing = [line for line in want.get("expect", []) if line not in answer.get("list", [])]
    if "  %s, exists: True" % path in answer.get("debug", []) and not missing:
        answer["msg"] = "pip reads %s (mode %s; asked %s)" % (path, want.get("mode"),
                                                             answer["pip"])
        return ""
    return ("pip on %s does not use %s as written: expected %r in `pip config list`. Another "
            "file or PIP_* variable overrides it; `pip config debug` shows which: %r"
            % (want.get("host", "this host"), path, missing, answer.get("debug", [])))


def main(argv: list) -> int:
    answer = command_answer(sys.executable, loader_answer())
    if answer["pip"] is not None:
        answer["pip"] = "the system's pip"
    else:
        answer = venv_answer()
    wrong = check(answer, json.loads(argv[0])) if argv else ""
    if wrong:
        sys.stderr.write(wrong + "\n")
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

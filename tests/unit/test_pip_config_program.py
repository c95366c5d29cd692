"""pipfeed_config's verify step: the host program pip_config.py asks pip itself which files it
reads and which settings it uses, run here as the action sends it (on stdin, with the
bootstrap), against a configuration file of the test's own (PIP_CONFIG_FILE)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.files import plugin

pytestmark = pytest.mark.unit
host_run = plugin("plugin_utils.host_run")
SOURCE = plugin("plugin_utils.host_programs").source("pip_config.py")


def run(python: str, config, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(config), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([python, "-c", host_run.BOOTSTRAP.format(name="pip_config.py"),
                           str(len(SOURCE)), *args], input=SOURCE, capture_output=True,
                          env=env, timeout=300)


def ask(python: str, config, *args: str) -> dict:
    done = run(python, config, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "pip.conf"
    path.write_text("[global]\nindex-url = https://feed.example/simple/\ntimeout = 30\n")
    return path


def test_the_system_pip_answers_with_the_files_it_reads_and_the_settings_it_uses(config):
    answer = ask(sys.executable, config)
    assert answer["pip"] == "the system's pip"
    assert f"  {config}, exists: True" in answer["debug"]
    assert "global.index-url='https://feed.example/simple/'" in answer["list"]
    assert "global.timeout='30'" in answer["list"]


def test_a_python_without_pip_is_answered_by_a_throwaway_venvs_pip(tmp_path, config):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    answer = ask(str(bare / "bin" / "python"), config)
    assert answer["pip"] == "the pip of a throwaway venv (ensurepip)"
    assert f"  {config}, exists: True" in answer["debug"]
    assert "global.index-url='https://feed.example/simple/'" in answer["list"]
    assert not list(tmp_path.glob("pipfeed-verify-*"))


def test_a_setting_another_file_overrides_is_listed_with_the_value_pip_uses(tmp_path, config):
    """pip 26 keeps one mapping per file (Configuration.items); the program lists what pip
    uses: the value of the file pip reads last (PIP_CONFIG_FILE's, over the site file's), as
    pip 20.3 to 25 list it. The pip is this interpreter's, in a venv of its own (so that the
    site file is the test's)."""
    import pip
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*")) / "site-packages"
    (site / "pip-of-the-tests.pth").write_text(os.path.dirname(os.path.dirname(pip.__file__)) + "\n")
    (venv / "pip.conf").write_text("[global]\nindex-url = https://site.example/simple/\n")
    answer = ask(str(venv / "bin" / "python"), config)
    assert answer["pip"] == "the system's pip"
    assert f"  {venv / 'pip.conf'}, exists: True" in answer["debug"]
    assert "global.index-url='https://feed.example/simple/'" in answer["list"]
    assert "global.index-url='https://site.example/simple/'" not in answer["list"]


def test_the_check_passes_when_pip_reads_the_file_and_uses_its_settings(config):
    want = {"path": str(config), "mode": "primary", "host": "h1",
            "expect": ["global.index-url='https://feed.example/simple/'"]}
    answer = ask(sys.executable, config, json.dumps(want))
    assert answer["msg"] == f"pip reads {config} (mode primary; asked the system's pip)"


@pytest.mark.parametrize("wrong", ["path", "setting"])
def test_the_check_fails_naming_what_pip_does_not_read_or_use(tmp_path, config, wrong):
    """A file pip does not read, or a setting pip does not use as written (another file or a
    PIP_* variable wins): exit 1, the reason on stderr with pip config debug's lines."""
    want = {"path": str(config), "mode": "extra", "host": "h1",
            "expect": ["global.index-url='https://feed.example/simple/'"]}
    if wrong == "path":
        want["path"] = str(tmp_path / "elsewhere.conf")
    else:
        want["expect"] = ["global.index-url='https://other.example/simple/'"]
    done = run(sys.executable, config, json.dumps(want))
    assert done.returncode == 1
    said = done.stderr.decode()
    assert said.startswith(f"pip on h1 does not use {want['path']} as written: expected ")
    assert "Another file or PIP_* variable overrides it; `pip config debug` shows which" in said
    assert f"  {config}, exists: True" in said
    if wrong == "setting":
        assert "other.example" in said
    assert done.stdout.decode().strip() == ""


def test_the_action_shows_a_report_as_an_assert_shows_its_success_message():
    """pipfeed.feed.host_script with report: the program's msg, shown on success (Ansible's
    default callback prints a result marked verbose-always), none of its raw output."""
    action = plugin("action.host_script").ActionModule
    done = {"rc": 0, "stdout": 'noise\n{"pip": "x", "msg": "pip reads /etc/pip.conf"}\n',
            "stderr": "", "cmd": "python3 -c ..."}
    shown = action._report({"rc": 0, "stdout": done["stdout"], "cmd": "c", "changed": True},
                           "pip_config.py", done)
    assert shown == {"changed": False, "msg": "pip reads /etc/pip.conf",
                     "_ansible_verbose_always": True}
    unreadable = action._report({}, "pip_config.py", dict(done, stdout="not json\n"))
    assert unreadable["failed"] and "said nothing that reads as its report" in unreadable["msg"]

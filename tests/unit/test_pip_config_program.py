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


def ask(python: str, config) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(config), PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([python, "-c", host_run.BOOTSTRAP.format(name="pip_config.py"),
                           str(len(SOURCE))], input=SOURCE, capture_output=True, env=env,
                          timeout=300)
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

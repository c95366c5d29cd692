"""ansible-lint (production profile) and yamllint, as tests rather than advice."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str, **extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1", **extra)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_yamllint_passes_on_every_yaml_file():
    result = _run(str(BIN / "yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_passes(tmp_path):
    # ansible-lint puts ~/.ansible/collections before the project's collections/ link: with
    # its own home, no copy of pipfeed.feed installed there is linted instead of this checkout.
    result = _run(str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor",
                  HOME=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_site_playbook_parses():
    result = _run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", "site.yml")
    assert result.returncode == 0, result.stdout + result.stderr

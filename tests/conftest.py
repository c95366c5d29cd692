"""Fixtures shared by the test suite.

Integration tests share one lab per session: it is brought up on first use and removed at the
end, whatever happened. Set PIPFEED_LAB=<name> to run them against a lab that is already up
(`make lab-up`), which then is left running.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab.lab import reused_or_running

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def lab():
    with reused_or_running("PIPFEED_LAB") as lab_:
        yield lab_


@pytest.fixture(scope="session")
def release_tarball(tmp_path_factory) -> Path:
    """The collection's release tarball, built once per run as `make dist` builds it (with the
    project's ansible.cfg); the tests that read or install it share it and must not change it."""
    dest = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(ROOT), "--output-path", str(dest)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1",
                 PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"))
    assert result.returncode == 0, result.stdout + result.stderr
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarballs = list(dest.glob("pipfeed-feed-*.tar.gz"))
    assert [t.name for t in tarballs] == [f"pipfeed-feed-{version}.tar.gz"], tarballs
    return tarballs[0]

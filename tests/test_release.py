"""The release: the changelog passes antsibull-changelog's lint, the tarball that `make dist`
builds holds the collection and nothing of the lab, the tests or the checkout, and galaxy.yml's
version is the latest release the changelog describes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
SPDX = "# SPDX-License-Identifier: GPL-3.0-or-later"
# What a controller needs: the tarball must hold these (and every file of every role).
REQUIRED = ("LICENSE", "CHANGELOG.md", "README.md", "MANIFEST.json", "FILES.json",
            "meta/runtime.yml", "site.yml", "playbooks/site.yml", "playbooks/verify.yml",
            "inventory/sample/hosts.yml", "requirements/controller.txt",
            "changelogs/changelog.yaml")
# The lab, the tests, the benchmarks and the checkout's own machinery stay out.
FORBIDDEN_TOP = {"tests", "bench", "scripts", "collections", "dist", "build", "reports",
                 ".lab", ".venv", ".cache", ".git", ".github", ".ci", ".config",
                 ".pytest_cache", "Makefile", "ansible.cfg", "pytest.ini"}


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tarball(release_tarball) -> tarfile.TarFile:
    with tarfile.open(release_tarball) as archive:
        yield archive


def _role_files() -> set[str]:
    """Every file of every role, as the tarball must hold it, but the molecule scenarios."""
    found = set()
    for path in (ROOT / "roles").rglob("*"):
        relative = path.relative_to(ROOT)
        if (path.is_file() and "molecule" not in relative.parts[2:3]
                and "__pycache__" not in relative.parts and path.suffix != ".pyc"):
            found.add(relative.as_posix())
    return found


def test_changelog_fragments_and_changelog_yaml_pass_antsibull_changelog_lint():
    fragments = _run(str(BIN / "antsibull-changelog"), "lint")
    assert fragments.returncode == 0 and not fragments.stdout.strip(), \
        fragments.stdout + fragments.stderr
    changelog = _run(str(BIN / "antsibull-changelog"), "lint-changelog-yaml",
                     "changelogs/changelog.yaml")
    assert changelog.returncode == 0 and not changelog.stdout.strip(), \
        changelog.stdout + changelog.stderr


def test_galaxy_version_is_the_latest_release_in_the_changelog():
    changelog = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())
    latest = max(changelog["releases"], key=Version)
    assert GALAXY["version"] == latest, \
        f"galaxy.yml says {GALAXY['version']}, changelogs/changelog.yaml's latest is {latest}"
    assert f"v{latest}" in (ROOT / "CHANGELOG.md").read_text().replace("\\.", "."), \
        "CHANGELOG.md lacks the latest release: antsibull-changelog generate"


def test_galaxy_yml_sets_the_licence_once_and_the_licence_file_is_gplv3():
    # ansible-galaxy refuses license and license_file together.
    assert GALAXY["license"] == ["GPL-3.0-or-later"] and "license_file" not in GALAXY
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version"]
    assert "Version 3, 29 June 2007" in text


def test_every_python_file_of_the_plugins_carries_the_licence_header():
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "plugins").rglob("*.py"))
               if SPDX not in p.read_text().splitlines()[:5]]
    assert missing == [], f"no '{SPDX}' in the first lines of {missing}"


def test_tarball_holds_the_collection_and_no_lab_tests_or_links(tarball):
    members = tarball.getmembers()
    names = {m.name for m in members}
    assert sorted(set(REQUIRED) - names) == []
    assert sorted({m.name for m in members if m.issym() or m.islnk()}) == []
    assert sorted(n for n in names if n.split("/")[0] in FORBIDDEN_TOP) == []
    assert sorted(n for n in names if "__pycache__" in n.split("/") or n.endswith(".pyc")
                  or "/molecule" in n or ".plugin-cache" in n) == []
    assert sorted(_role_files() - names) == [], "role files missing from the tarball"
    plugins = {p.relative_to(ROOT).as_posix() for p in (ROOT / "plugins").rglob("*.py")}
    assert sorted(plugins - names) == []
    manifest = json.load(tarball.extractfile("MANIFEST.json"))["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == \
        ("pipfeed", "feed", GALAXY["version"])
    assert manifest["license"] == ["GPL-3.0-or-later"] and not manifest["license_file"]

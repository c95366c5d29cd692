"""The collection as a user gets it: the tarball that `make dist` builds, installed offline into
an empty collections path, run from a project of the user's own that holds only an inventory
and a one-line playbook importing pipfeed.feed.site. Nothing of this checkout is on the way:
not its ansible.cfg, not its collections/ link, not Galaxy. The run converges the lab's hosts,
a second run changes nothing, and real pip on every host then installs a package that only the
feed has."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from tests.integration.support import BIN, recap, unprovision

pytestmark = pytest.mark.integration
HOSTS = ("deb11-1", "deb12-1", "deb13-1")
VENV = "/tmp/collection-venv"
# A Galaxy server that cannot answer: if any step asked one, it would fail at once.
NO_GALAXY = "http://127.0.0.1:9/"


@pytest.fixture(scope="module")
def fresh(lab):
    for host in HOSTS:
        unprovision(lab, host)
    yield
    # The lab's hosts are shared by the modules that follow: leave them as they came.
    for host in HOSTS:
        unprovision(lab, host)
        lab.ssh(host, f"rm -rf {VENV}")


@pytest.fixture(scope="module")
def project(tmp_path_factory, lab):
    """The user's project (inventory, ansible.cfg, site.yml) and the environment its runs use:
    the scratch collections path only, no proxy, no setting of this checkout."""
    base = tmp_path_factory.mktemp("collection")
    collections, project = base / "collections", base / "project"
    collections.mkdir()
    (project / "inventory").mkdir(parents=True)
    shutil.copy(lab.inventory, project / "inventory" / "hosts.yml")
    (project / "site.yml").write_text("---\n- ansible.builtin.import_playbook: pipfeed.feed.site\n")
    (project / "ansible.cfg").write_text(
        "[defaults]\n"
        "inventory = inventory/hosts.yml\n"
        f"collections_path = {collections}\n"
        "interpreter_python = auto_silent\n"
        "host_key_checking = true\n"
        "retry_files_enabled = false\n"
        "[galaxy]\n"
        f"server = {NO_GALAXY}\n"
        "[ssh_connection]\n"
        "pipelining = true\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "PYTHON")) and "proxy" not in k.lower()}
    env.update(ANSIBLE_CONFIG=str(project / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_GALAXY_SERVER=NO_GALAXY,
               NO_COLOR="1", ANSIBLE_FORCE_COLOR="0")
    return project, collections, env


def run(cmd: list[str], cwd, env, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-6000:]}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(project, release_tarball):
    """The release tarball (tests/conftest.py builds it as `make dist` does), installed with
    no network."""
    project_dir, collections, env = project
    tarball = release_tarball
    result = run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline",
                  str(tarball), "-p", str(collections)], project_dir, env)
    with tarfile.open(tarball) as archive:
        version = json.load(archive.extractfile("MANIFEST.json"))["collection_info"]["version"]
    return version, result


@pytest.fixture(scope="module")
def converged(lab, project, installed, fresh):
    project_dir, _, env = project
    # -vv names the config file, the collections path and each task's file.
    first = run([str(BIN / "ansible-playbook"), "-vv", "site.yml"], project_dir, env, 1200)
    # The collection's own playbook, by its full name, as the README says to run it.
    second = run([str(BIN / "ansible-playbook"), "pipfeed.feed.site"], project_dir, env, 1200)
    return first, second


def test_tarball_installs_offline_and_is_the_only_pipfeed_feed(project, installed):
    project_dir, collections, env = project
    version, install = installed
    assert f"pipfeed.feed:{version} was installed successfully" in install.stdout, install.stdout
    target = collections / "ansible_collections" / "pipfeed" / "feed"
    assert target.is_dir() and not target.is_symlink()
    assert (target / "MANIFEST.json").is_file() and (target / "LICENSE").is_file()
    listing = json.loads(run([str(BIN / "ansible-galaxy"), "collection", "list",
                              "--format", "json"], project_dir, env).stdout)
    found = {path: names["pipfeed.feed"]["version"]
             for path, names in listing.items() if "pipfeed.feed" in names}
    assert found == {str(collections / "ansible_collections"): version}, listing


def test_installed_collection_converges_the_lab_then_changes_nothing(lab, project, converged):
    project_dir, collections, _ = project
    first, second = converged
    # The project's settings and the installed copy, not this checkout's.
    assert f"config file = {project_dir / 'ansible.cfg'}" in first.stdout
    assert f"ansible collection location = {collections}\n" in first.stdout
    task_paths = re.findall(r"^task path: (\S+):\d+$", first.stdout, re.M)
    assert task_paths and all(path.startswith(f"{collections}/ansible_collections/pipfeed/feed/")
                              for path in task_paths), sorted(set(task_paths))[:5]
    stats = recap(first.stdout)
    assert set(stats) == set(HOSTS)
    assert all(stats[h]["changed"] > 0 and stats[h]["failed"] == 0 for h in HOSTS), stats
    again = recap(second.stdout)
    assert set(again) == set(HOSTS)
    assert all(again[h]["changed"] == 0 and again[h]["failed"] == 0 for h in HOSTS), \
        second.stdout[-6000:]
    assert lab.token not in first.stdout + first.stderr + second.stdout + second.stderr


def test_pip_on_every_host_installs_a_feed_only_package(lab, converged):
    # An ordinary user of each host, in a fresh venv, with no prompt.
    for host in HOSTS:
        done = lab.ssh(host, f"rm -rf {VENV} && python3 -m venv {VENV} && "
                       f"{VENV}/bin/pip install -q --disable-pip-version-check lab-feedonly",
                       timeout=600)
        assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"

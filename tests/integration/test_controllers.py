"""Two controllers, one fleet (issue 18): the machine's own (Debian 12: Python 3.11,
ansible-core 2.19, pip 26.3, the collection from this checkout) and a second one in the lab
(tests/lab/controller.py: Debian 13, Python 3.13, ansible-core 2.21 installed offline, pip
25.1.1, the collection installed offline from its release tarball). The lab's feed lists two
wheels of cryptography 50.0.2 for CPython 3.11 and later (manylinux_2_28 and manylinux2014),
the pair that two controllers' pips chose differently.

From the second controller, site.yml converges fresh hosts, a re-run changes nothing, and the
hosts install for real. Then the controllers alternate on the same hosts: each run changes
nothing and sends no wheel, and both controllers wrote the same manifest and requirements.txt,
byte for byte. Last, a controller whose feed listed only the manylinux2014 wheel keeps the
hosts' manylinux_2_28 wheelhouses, and a wheelhouse it built with the manylinux2014 wheel is
kept by both controllers, which choose manylinux_2_28: each answers the same lock."""
from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.support import (ROOT, changed_tasks, recap, run_playbooks, sh,
                                       task_hosts, task_results)
from tests.integration.support import unprovision
from tests.lab import packages
from tests.lab.controller import VENV, Controller

pytestmark = pytest.mark.integration
HOSTS = {"deb11-1": "cp39-glibc2.31-x86_64", "deb12-1": "cp311-glibc2.36-x86_64",
         "deb13-1": "cp313-glibc2.41-x86_64"}
WHEELHOUSE = "/var/lib/pipfeed/wheelhouse"
MANYLINUX_2_28 = "cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl"
MANYLINUX_2014 = "cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
SEND = "Send the missing wheels"
SECOND_CACHE = "/root/.cache/pipfeed/wheelhouse"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("controllers")


@pytest.fixture(scope="module")
def second(lab):
    controller = Controller.start(lab)
    yield controller
    controller.stop()


@pytest.fixture(scope="module")
def both_wheels_on_feed(lab):
    """The manylinux2014 wheel next to the manylinux_2_28 one the package set has; the feed
    holds the package set alone again afterwards."""
    added = lab.add_feed_packages(sorted(packages.ensure_variant_wheels().glob("*.whl")))
    listed = {p.name for p in (lab.dir / "feed-packages").glob("cryptography-50.0.2-*")}
    assert {MANYLINUX_2_28, MANYLINUX_2014} <= listed
    yield
    for name in added:
        (lab.dir / "feed-packages" / name).unlink(missing_ok=True)


def main_run(lab, workdir: Path, cache: str = "cache", *args: str):
    """site.yml from the machine's controller, with a wheelhouse cache of this module's."""
    return run_playbooks(lab, workdir, ["site.yml"],
                         {"pipfeed_wheelhouse_cache_dir": str(workdir / cache)}, *args)


def versions(lab) -> dict[str, str]:
    """Where each host's wheelhouse link points: a new version directory on every swap."""
    return {host: sh(lab, host, f"readlink {WHEELHOUSE}")[1].strip() for host in HOSTS}


def assert_no_change_and_nothing_sent(result) -> None:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    stats = recap(result.stdout)
    assert set(stats) == set(HOSTS)
    assert all(s["changed"] == 0 and s["failed"] == 0 for s in stats.values()), \
        (changed_tasks(result.stdout), result.stdout[-4000:])
    assert task_hosts(result.stdout, SEND, "skipping") == set(HOSTS)
    assert not any(SEND in name and status != "skipping"
                   for name, status, _ in task_results(result.stdout))


def assert_no_deprecation(result) -> None:
    said = result.stdout + result.stderr
    assert "[DEPRECATION WARNING]" not in said and "INJECT_FACTS_AS_VARS" not in said, \
        [line for line in said.splitlines() if "DEPRECAT" in line or "WARNING" in line]


@pytest.fixture(scope="module")
def converged(lab, second, both_wheels_on_feed):
    """Fresh hosts, then site.yml from the second controller, twice."""
    for host in HOSTS:
        unprovision(lab, host)
    first = second.playbook(["pipfeed.feed.site"], {})
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    again = second.playbook(["pipfeed.feed.site"], {})
    return first, again


@pytest.fixture(scope="module")
def alternated(lab, workdir, second, converged):
    """Then the machine's controller (a cache of its own, built now), then the second again."""
    before = versions(lab)
    main = main_run(lab, workdir)
    back = second.playbook(["pipfeed.feed.site"], {})
    return before, main, back, versions(lab)


def test_the_second_controller_has_the_newest_ansible_core_installed_offline(second):
    controller_txt = (ROOT / "requirements" / "controller.txt").read_text()
    newest = re.search(r'^ansible-core==(\S+) ; python_version >= "3\.12"$', controller_txt, re.M)
    assert newest, controller_txt
    assert second.ansible_version() == newest.group(1)
    assert f"ansible-core=={newest.group(1)} " in " ".join(packages.CONTROLLER_PINS) + " "
    python = second.exec([f"{VENV}/bin/python", "--version"])
    assert python.stdout.startswith("Python 3.13")
    # The container reaches no index at all: PyPI's names go to the lab's firewall.
    blocked = second.exec(["python3", "-c", "import socket; socket.create_connection("
                           "('pypi.org', 443), timeout=3)"], check=False)
    assert blocked.returncode != 0


def test_site_from_the_second_controller_converges_and_a_rerun_changes_nothing(converged):
    first, again = converged
    stats = recap(first.stdout)
    assert set(stats) == set(HOSTS)
    assert all(s["changed"] > 0 and s["failed"] == 0 for s in stats.values())
    assert task_hosts(first.stdout, SEND, "changed") == set(HOSTS)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr
    assert all(s["changed"] == 0 for s in recap(again.stdout).values()), again.stdout[-4000:]
    # ansible-core 2.21 says nothing about this project's code (no top-level facts used).
    assert_no_deprecation(first)
    assert_no_deprecation(again)


def test_hosts_install_from_the_feed_and_the_wheelhouse_after_the_second_controller(lab,
                                                                                  converged):
    """Real pip on every host (at once), as a user: a package only the feed has (through the
    credential helper or the netrc the second controller installed), then the wheelhouse's
    whole set resolved with no index and every hash checked (pip download, as verify.yml's
    dry run does: an install of it all costs minutes of CPU on a busy machine, and the last
    test installs it on one host)."""
    command = ("rm -rf /tmp/ctl-venv /tmp/ctl-dl && python3 -m venv /tmp/ctl-venv && "
               "/tmp/ctl-venv/bin/pip install -q --disable-pip-version-check lab-feedonly && "
               "/tmp/ctl-venv/bin/python -c 'import lab_feedonly' && "
               "/tmp/ctl-venv/bin/pip download -q --disable-pip-version-check --no-index "
               f"-r {WHEELHOUSE}/requirements.txt -d /tmp/ctl-dl && rm -rf /tmp/ctl-dl")
    with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
        done = dict(zip(HOSTS, pool.map(lambda host: lab.ssh(host, command, timeout=600),
                                        HOSTS)))
    for host, result in done.items():
        assert result.returncode == 0, f"{host}: {result.stdout}{result.stderr}"


def test_switching_controllers_sends_no_wheel_and_changes_nothing(lab, alternated):
    before, main, back, after = alternated
    assert_no_change_and_nothing_sent(main)
    assert_no_change_and_nothing_sent(back)
    assert_no_deprecation(back)
    assert after == before  # no host's wheelhouse was swapped
    # The machine's controller built its own wheelhouse (it asked the feed) and sent nothing.
    assert re.search(r"\d+ files, [1-9]\d* downloaded now", main.stdout), main.stdout[-4000:]


def test_both_controllers_wrote_the_same_manifest_and_requirements_byte_for_byte(
        lab, workdir, second, alternated):
    for host, key in HOSTS.items():
        (ours,) = (workdir / "cache" / key / "sets").glob("*/manifest.json")
        theirs = second.exec(["sh", "-c", f"ls {SECOND_CACHE}/{key}/sets/*/manifest.json"]
                             ).stdout.split()
        assert len(theirs) == 1, theirs
        on_host = lab.testinfra(host).file(f"{WHEELHOUSE}/manifest.json").content
        assert ours.read_bytes() == second.read(theirs[0]) == on_host, key
        requirements = (ours.parent / "requirements.txt").read_bytes()
        assert requirements == second.read(theirs[0].replace("manifest.json", "requirements.txt"))
        assert requirements == lab.testinfra(host).file(f"{WHEELHOUSE}/requirements.txt").content
        # Where the feed offers both wheels, both controllers took the better tag.
        if key != "cp39-glibc2.31-x86_64":
            assert MANYLINUX_2_28.encode() in on_host and MANYLINUX_2014.encode() not in on_host


@pytest.fixture(scope="module")
def built_before_the_better_wheel(lab, workdir, alternated):
    """The machine's controller, with an empty cache, while the feed lists only the
    manylinux2014 wheel (as before the manylinux_2_28 one was uploaded): it chooses that one.
    The hosts' wheelhouses (manylinux_2_28) answer the lock all the same and stay; where a
    host of Python 3.11 and 3.13 has none, it gets the manylinux2014 wheel."""
    hidden = lab.dir / "feed-hidden"
    hidden.mkdir(exist_ok=True)
    shutil.move(lab.dir / "feed-packages" / MANYLINUX_2_28, hidden / MANYLINUX_2_28)
    try:
        kept = main_run(lab, workdir, "cache-earlier", "--tags", "pipfeed_wheelhouse")
        for host in ("deb12-1", "deb13-1"):
            sh(lab, host, f"sudo rm -rf {WHEELHOUSE} /var/lib/pipfeed/.wheelhouse.d")
        earlier = main_run(lab, workdir, "cache-earlier", "--tags", "pipfeed_wheelhouse")
    finally:
        shutil.move(hidden / MANYLINUX_2_28, lab.dir / "feed-packages" / MANYLINUX_2_28)
    assert earlier.returncode == 0, earlier.stdout[-6000:] + earlier.stderr
    return kept, earlier


def test_a_wheelhouse_built_with_the_other_wheel_is_kept_by_both_controllers(
        lab, workdir, second, built_before_the_better_wheel):
    kept, earlier = built_before_the_better_wheel
    (chosen,) = (workdir / "cache-earlier" / HOSTS["deb13-1"] / "sets").glob("*/manifest.json")
    assert MANYLINUX_2014 in chosen.read_text() and MANYLINUX_2_28 not in chosen.read_text()
    assert_no_change_and_nothing_sent(kept)
    assert task_hosts(earlier.stdout, SEND, "changed") == {"deb12-1", "deb13-1"}
    for host in ("deb12-1", "deb13-1"):
        assert sh(lab, host, f"test -f {WHEELHOUSE}/{MANYLINUX_2014}")[0] == 0
    before = versions(lab)
    # Both controllers choose manylinux_2_28 now, and send nothing: the hosts' wheelhouses
    # answer the same lock (the same pins and hashes, every file as its manifest says).
    back = second.playbook(["pipfeed.feed.site"], {}, "--tags", "pipfeed_wheelhouse")
    main = main_run(lab, workdir, "cache", "--tags", "pipfeed_wheelhouse")
    assert_no_change_and_nothing_sent(back)
    assert_no_change_and_nothing_sent(main)
    assert versions(lab) == before
    (chosen,) = (workdir / "cache" / HOSTS["deb13-1"] / "sets").glob("*/manifest.json")
    assert MANYLINUX_2_28 in chosen.read_text()
    # What the host holds installs with its own hashes, with no index.
    done = lab.ssh("deb13-1", "rm -rf /tmp/ctl-kept && python3 -m venv /tmp/ctl-kept && "
                   "/tmp/ctl-kept/bin/pip install -q --disable-pip-version-check --no-index "
                   f"--no-compile --require-hashes -r {WHEELHOUSE}/requirements.txt && "
                   "/tmp/ctl-kept/bin/python -c 'import cryptography'", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

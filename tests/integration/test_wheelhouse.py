"""Role pipfeed_wheelhouse on the lab's Debian 11/12/13 hosts (Python 3.9, 3.11, 3.13): the
controller builds one wheelhouse per platform from the feed, each host gets what it lacks in
one archive, and real pip and uv then install with the feed stopped and no request to any
index. The set holds a release that the feed has only as an sdist: one host of each platform
builds its wheel. --check names the same changed tasks as the run after it and changes
nothing. A re-run transfers nothing, builds nothing and changes nothing; damage on a host is
repaired; a cache that does not match its manifest, or too little free space, stops the run
before the hosts change, and a run that died leaves the previous wheelhouse in use."""
from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.support import (ansible_env, changed_tasks, recap, run_playbooks,
                                       task_hosts, task_results)
from tests.lab import packages

pytestmark = pytest.mark.integration
HOSTS = {"deb11-1": "3.9", "deb12-1": "3.11", "deb13-1": "3.13"}
WHEELHOUSE = "/var/lib/pipfeed/wheelhouse"
STORE = "/var/lib/pipfeed/.wheelhouse.d"
# A release that the feed holds only as an sdist, with a build dependency beyond setuptools
# and a runtime dependency that the set pins.
SDIST_ONLY = ("lab-sdistonly", "1.0.0")


def make_sdist(directory: Path, name: str, version: str) -> Path:
    """A small setuptools project's sdist, byte for byte the same on every call."""
    dist = name.replace("-", "_")
    top = f"{dist}-{version}"
    files = {
        f"{top}/PKG-INFO": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            "Requires-Dist: idna>=3\n"),
        f"{top}/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61", "wheel"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\nrequires-python = ">=3.9"\n'
            'dependencies = ["idna>=3"]\n\n'
            f'[tool.setuptools]\npackages = ["{dist}"]\n'),
        f"{top}/{dist}/__init__.py": f'ORIGIN = "{name}, built from its sdist"\n',
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{top}.tar.gz"
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), 1577836800, 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("wheelhouse")


@pytest.fixture(scope="module")
def sdist_on_feed(lab, workdir) -> Path:
    """The sdist-only release, uploaded with twine (a lab that has it already answers 409)."""
    sdist = make_sdist(workdir / "dist", *SDIST_ONLY)
    env = packages.controller_env(for_lab=True, TWINE_USERNAME="lab", TWINE_PASSWORD=lab.token)
    upload = subprocess.run(
        [str(Path(sys.executable).with_name("twine")), "upload", "--non-interactive",
         "--disable-progress-bar", "--cert", str(lab.ca_file), "--repository-url",
         f"https://{lab.gateway}{lab.feed_path}/upload/", str(sdist)],
        env=env, capture_output=True, text=True, timeout=120)
    said = upload.stdout + upload.stderr
    assert upload.returncode == 0 or "409" in said, said
    return sdist


@pytest.fixture(scope="module")
def requirements(workdir, sdist_on_feed) -> Path:
    path = workdir / "requirements.txt"
    path.write_text("# with markers: the role evaluates them for each target Python\n"
                    + "\n".join(packages.wheelhouse_set())
                    + "\n{}=={}\n".format(*SDIST_ONLY))
    return path


def play(lab, workdir: Path, requirements: Path, check: bool = False, env: dict | None = None,
         args: tuple = (), **settings) -> subprocess.CompletedProcess:
    """pipfeed_config (find-links on) then the wheelhouse, as site.yml runs them."""
    variables = {
        "lab_feed_token": lab.token,
        # The wheelhouse on (pipfeed_config's find-links follows); the helper is tested elsewhere.
        "pipfeed_wheelhouse": True,
        "pipfeed_credential_helper": False,
        "pipfeed_wheelhouse_requirements": str(requirements),
        "pipfeed_wheelhouse_cache_dir": str(workdir / "cache"),
        "pipfeed_wheelhouse_index_url": lab.controller_feed_url,
        "pipfeed_wheelhouse_controller_cert": str(lab.ca_file),
        **settings,
    }
    return run_playbooks(lab, workdir, ["playbooks/hosts.yml"],
                         variables, *(["--check"] if check else []), *args, env=env,
                         timeout=600)


def sudo(lab, host: str, command: str, check: bool = True):
    result = lab.testinfra(host).run(f"sudo sh -c {json.dumps(command)}")
    if check:
        assert result.rc == 0, result.stdout + result.stderr
    return result


def current_version(lab, host: str) -> str:
    return sudo(lab, host, f"readlink {WHEELHOUSE}").stdout.strip()


def offline_install(lab, host: str) -> None:
    """The plain command a user types, in a fresh venv: pip reads find-links from pip.conf."""
    pins = "\\n".join([*packages.wheelhouse_pins(HOSTS[host]), "{}=={}".format(*SDIST_ONLY)])
    sudo(lab, host, f"rm -rf /tmp/wh-pip && python3 -m venv /tmp/wh-pip && "
         f"printf '{pins}\\n' > /tmp/wh-requirements.txt")
    result = lab.testinfra(host).run(
        "sudo /tmp/wh-pip/bin/pip install --no-index --disable-pip-version-check "
        "-r /tmp/wh-requirements.txt")
    assert result.rc == 0, result.stdout + result.stderr
    check = lab.testinfra(host).run(
        "/tmp/wh-pip/bin/python -c 'import cryptography, numpy, pydantic, requests, lab_sdistonly'")
    assert check.rc == 0, check.stderr


@pytest.fixture(scope="module")
def checked(lab, workdir, requirements):
    """Hosts with no pip configuration and no wheelhouse, then a run with --check."""
    for host in HOSTS:
        sudo(lab, host, "rm -rf /etc/pip.conf /etc/pip.conf.*~ /etc/uv /var/lib/pipfeed "
             "/tmp/wh-pip /tmp/wh-uv /tmp/wh-requirements.txt")
    result = play(lab, workdir, requirements, check=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    result.untouched = {host: sudo(lab, host, "ls -A /var/lib/pipfeed /etc/pip.conf /etc/uv "
                                   "2>&1; ls -A /tmp | grep pipfeed-build || true",
                                   check=False).stdout for host in HOSTS}
    return result


@pytest.fixture(scope="module")
def seeded(lab, workdir, requirements, checked):
    """After the check run, one full run."""
    result = play(lab, workdir, requirements)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    yield result
    for host in HOSTS:
        sudo(lab, host, "rm -rf /var/lib/pipfeed /tmp/wh-pip /tmp/wh-uv /tmp/wh-requirements.txt",
             check=False)


def test_first_run_seeds_every_host_with_its_platforms_wheels(lab, seeded):
    assert task_hosts(seeded.stdout, "Send the missing wheels", "changed") == set(HOSTS)
    for host, python in HOSTS.items():
        machine = lab.testinfra(host)
        link = machine.file(WHEELHOUSE)
        assert link.is_symlink and link.user == "root"
        manifest = json.loads(machine.file(f"{WHEELHOUSE}/manifest.json").content_string)
        abi = "cp" + python.replace(".", "")
        assert manifest["platform"]["abi"] == abi
        wheels = [n for n in manifest["files"] if n.endswith(".whl")]
        assert len(wheels) == len(packages.wheelhouse_pins(python)) + 1  # and the sdist-only one
        assert any(n.startswith("numpy-") and f"-{abi}-" in n for n in wheels)
        modes = sudo(lab, host, f"stat -c '%a %U' {WHEELHOUSE}/ {WHEELHOUSE}/*").stdout.split("\n")
        assert modes[0] == "755 root"
        assert {m for m in modes[1:] if m} == {"644 root"}
        text = machine.file(f"{WHEELHOUSE}/requirements.txt").content_string
        assert text.count("--hash=sha256:") == len(wheels)
        # Nothing but the new version and its hashes is left next to the wheelhouse, and the
        # role's actions removed their temporary directories on the host.
        store = sudo(lab, host, f"ls -A {STORE}").stdout.split()
        assert len(store) == 2 and any(n.endswith(".sums") for n in store), store
        left = sudo(lab, host, "ls -A ~labadmin/.ansible/tmp 2>/dev/null || true").stdout.split()
        assert left == [], left


def test_check_mode_names_the_changes_of_the_run_after_it_and_changes_nothing(lab, checked,
                                                                           seeded):
    predicted, made = changed_tasks(checked.stdout), changed_tasks(seeded.stdout)
    assert set(made) == set(HOSTS)
    for host in HOSTS:
        assert sorted(predicted.get(host, [])) == sorted(made[host]), host
        assert "pipfeed.feed.pipfeed_wheelhouse : Send the missing wheels, check every hash against the " \
            "manifest, and swap the wheelhouse" in made[host]
    for host, listing in checked.untouched.items():
        assert listing.count("No such file or directory") == 3, (host, listing)
        assert "pipfeed-build" not in listing, (host, listing)


def test_sdist_only_release_is_built_once_on_a_host_of_each_platform(lab, workdir, checked,
                                                                     seeded):
    # The check run (the first) built it, on one host per platform; the real run found it cached.
    assert task_hosts(checked.stdout, "Build their wheels with pip", "ok") == set(HOSTS)
    assert task_hosts(seeded.stdout, "Build their wheels with pip", "ok") == set()
    for host, python in HOSTS.items():
        abi = "cp" + python.replace(".", "")
        built = json.loads(next((workdir / "cache").glob(f"{abi}-*/built.json")).read_text())
        assert [(e["sdist"], e["host"]) for e in built.values()] == \
            [("lab_sdistonly-1.0.0.tar.gz", host)]
        text = lab.testinfra(host).file(f"{WHEELHOUSE}/requirements.txt").content_string
        assert "# built from lab_sdistonly-1.0.0.tar.gz (sha256 " in text
        assert "lab-sdistonly==1.0.0 \\\n    --hash=sha256:" in text


def test_second_run_downloads_and_transfers_nothing_and_changes_nothing(lab, workdir,
                                                                        requirements, seeded):
    mark = lab.log_mark(lab.access_log)
    result = play(lab, workdir, requirements)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values()), result.stdout
    # A host that lacks nothing skips the transfer (its free-space check is in the same task).
    assert task_hosts(result.stdout, "Send the missing wheels", "skipping") == set(HOSTS)
    assert not any("Send the missing wheels" in name and status != "skipping"
                   for name, status, _ in task_results(result.stdout))
    assert "0 downloaded now" in result.stdout
    assert task_hosts(result.stdout, "Build their wheels with pip", "ok") == set()
    assert lab.read_log(lab.access_log, mark) == [], "the controller asked the feed again"


def test_pip_and_uv_install_offline_with_the_feed_stopped(lab, seeded):
    mark = lab.log_mark(lab.access_log)
    lab.stop_feed()
    try:
        for host in HOSTS:
            offline_install(lab, host)
            sudo(lab, host, "/tmp/wh-pip/bin/pip install --no-index --disable-pip-version-check "
                 "uv==0.13.9 && rm -rf /tmp/wh-uv && python3 -m venv --without-pip /tmp/wh-uv")
            uv = lab.testinfra(host).run(
                "sudo /tmp/wh-pip/bin/uv pip install --offline --python /tmp/wh-uv/bin/python "
                "-r /tmp/wh-requirements.txt")
            assert uv.rc == 0, uv.stdout + uv.stderr
            check = lab.testinfra(host).run("/tmp/wh-uv/bin/python -c 'import numpy, pydantic'")
            assert check.rc == 0, check.stderr
    finally:
        lab.start_feed()
    assert lab.read_log(lab.access_log, mark) == []


def test_venv_step_installs_the_set_with_hashes_and_check_mode_predicts_it(
        lab, workdir, requirements, seeded):
    venvs = [{"path": "/opt/wh-test/venv"}]
    predicted = play(lab, workdir, requirements, check=True, pipfeed_wheelhouse_venvs=venvs)
    result = play(lab, workdir, requirements, pipfeed_wheelhouse_venvs=venvs)
    try:
        assert predicted.returncode == 0, predicted.stdout[-6000:] + predicted.stderr
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr
        assert changed_tasks(predicted.stdout) == changed_tasks(result.stdout)
        assert task_hosts(result.stdout, "Install the requirement set", "changed") == set(HOSTS)
        for host in HOSTS:
            check = lab.testinfra(host).run(
                "/opt/wh-test/venv/bin/python -c 'import cryptography, numpy, uv'")
            assert check.rc == 0, check.stderr
    finally:
        for host in HOSTS:
            sudo(lab, host, "rm -rf /opt/wh-test", check=False)


def _corrupt(lab, host: str) -> tuple[str, str]:
    """Overwrite a few bytes inside one of the host's wheels: (its path, its hash before)."""
    wheel = sudo(lab, host, f"ls {WHEELHOUSE}/numpy-*.whl").stdout.strip()
    before = sudo(lab, host, f"sha256sum {wheel}").stdout.split()[0]
    sudo(lab, host, f"printf garbage | dd of={wheel} bs=1 seek=1000 conv=notrunc status=none")
    assert sudo(lab, host, f"sha256sum {wheel}").stdout.split()[0] != before
    return wheel, before


# The project's ansible.cfg pipelines, and the missing wheels then follow the host script on
# its stdin. The two other ways the role's action sends them, as a file first: pipelining off
# (as in an ansible.cfg that does not turn it on), and more wheels than
# pipfeed_wheelhouse_stream_max_bytes.
@pytest.mark.parametrize("host, env, variables", [
    ("deb12-1", {"ANSIBLE_PIPELINING": "False"}, {}),
    ("deb13-1", {}, {"pipfeed_wheelhouse_stream_max_bytes": 0}),
], ids=["pipelining-off", "over-stream-max"])
def test_corrupted_wheel_on_a_host_is_detected_and_replaced(lab, workdir, requirements, seeded,
                                                           host, env, variables):
    wheel, before = _corrupt(lab, host)
    result = play(lab, workdir, requirements, env=ansible_env(**env), args=("-v",), **variables)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert task_hosts(result.stdout, "Send the missing wheels", "changed") == {host}
    assert re.search(r"sent_by\W+file", result.stdout), result.stdout[-6000:]
    assert sudo(lab, host, f"sha256sum {wheel}").stdout.split()[0] == before
    left = sudo(lab, host, "ls -A ~labadmin/.ansible/tmp 2>/dev/null || true").stdout.split()
    assert left == [], left


def test_cache_file_that_does_not_match_its_manifest_fails_before_any_host_changes(
        lab, workdir, requirements, seeded):
    cached = sorted((workdir / "cache").glob("cp311-*/wheels/idna-*.whl"))[0]
    versions = {host: current_version(lab, host) for host in HOSTS}
    with open(cached, "ab") as handle:
        handle.write(b"tampered")
    result = play(lab, workdir, requirements)
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert f"{cached} has sha256" in said and "but the manifest" in said, result.stdout[-3000:]
    assert {host: current_version(lab, host) for host in HOSTS} == versions
    cached.unlink()  # the next run downloads it afresh and converges
    result = play(lab, workdir, requirements)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values())


def test_too_little_free_space_fails_cleanly_and_keeps_the_old_wheelhouse(
        lab, workdir, requirements, seeded):
    grown = workdir / "requirements-grown.txt"
    grown.write_text(requirements.read_text() + "pyyaml==6.0.3\n")
    versions = {host: current_version(lab, host) for host in HOSTS}
    result = play(lab, workdir, grown, pipfeed_wheelhouse_min_free_bytes=2 ** 60)
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert "free where /var/lib/pipfeed/wheelhouse lives" in said, result.stdout[-3000:]
    assert "Nothing was changed" in said
    assert task_hosts(result.stdout, "Send the missing wheels", "changed") == set()
    assert task_hosts(result.stdout, "Build their wheels with pip", "ok") == set()
    assert {host: current_version(lab, host) for host in HOSTS} == versions
    offline_install(lab, "deb11-1")


def test_a_run_that_died_mid_unpack_leaves_the_old_wheelhouse_and_the_next_run_converges(
        lab, workdir, requirements, seeded):
    # What a run killed between the transfer and the swap leaves: a half-written archive and
    # a half-filled staging directory next to the wheelhouse.
    for host in HOSTS:
        sudo(lab, host, f"mkdir -p {STORE}/20000101T000000-dead00 && "
             f"head -c 5000 /dev/urandom > {STORE}/20000101T000000-dead00/numpy-partial.whl && "
             f"head -c 3000 /dev/urandom > {STORE}/incoming.tar")
    offline_install(lab, "deb13-1")
    result = play(lab, workdir, requirements)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    for host in HOSTS:
        left = sudo(lab, host, f"ls -A {STORE}").stdout.split()
        version = current_version(lab, host).rsplit("/", 1)[-1]
        assert left == [version, f"{version}.sums"]  # the version, and its files' hashes
    result = play(lab, workdir, requirements)
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values())

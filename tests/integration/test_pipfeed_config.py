"""Role pipfeed_config on the lab's Debian 11/12/13 hosts (pip 20.3, 23.0, 25.1): the real
playbook writes /etc/pip.conf and /etc/uv/uv.toml, and real pip and uv resolve from the feed in
each mode, as the feed's access log shows. Check mode on a fresh host changes nothing and
predicts the first run; the second run changes nothing; bad input stops before any change.

The feed's token reaches the hosts only for the length of a download, in the login user's
~/.netrc (mode 0600, removed after): the credential helper is another role's job."""
from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.support import changed_tasks, recap, run_playbooks

pytestmark = pytest.mark.integration
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]
WHEELHOUSE = "/var/lib/pipfeed/wheelhouse"
UV_VENV = "/tmp/pip-config-uv"
MANAGED = ["/etc/pip.conf", "/etc/uv/uv.toml"]


def feed_vars(lab, **settings) -> dict:
    feeds = [{"name": "python-feed", "url": lab.feed_url, "token_var": "lab_feed_token"}]
    # The token is in the run's variables, so preflight's token check and no_log are exercised.
    # pipfeed_config alone: the lab inventory's other roles (helper, wheelhouse) off.
    return {"pipfeed_feeds": feeds, "lab_feed_token": lab.token,
            "pipfeed_credential_helper": False, "pipfeed_wheelhouse": False, **settings}


def play(lab, tmp_path: Path, variables: dict, *args: str) -> subprocess.CompletedProcess:
    """Run the project's playbooks/hosts.yml against the lab with these variables."""
    return run_playbooks(lab, tmp_path, ["playbooks/hosts.yml"], variables, *args)


def sudo(lab, host: str, command: str):
    result = lab.testinfra(host).run(f"sudo sh -c {json.dumps(command)}")
    assert result.rc == 0, result.stdout + result.stderr
    return result


@contextlib.contextmanager
def netrc(lab, host: str):
    """The token for the login user, for one block; never on a command line."""
    machine = lab.testinfra(host)
    encoded = base64.b64encode(
        f"machine feed.lab.test login lab password {lab.token}\n".encode()).decode()
    assert machine.run(f"umask 077 && echo {encoded} | base64 -d > ~/.netrc").rc == 0
    try:
        yield machine
    finally:
        machine.run("rm -f ~/.netrc")


def feed_requests(lab, host: str, mark: int) -> list[tuple[str, int]]:
    ip = lab.host(host).ip
    return [(e["kind"], e["status"]) for e in lab.read_log(lab.access_log, mark)
            if e["client"] == ip]


def pip_download(machine, extra: str = "") -> object:
    return machine.run("rm -rf /tmp/dl && python3 -m pip download --no-deps --no-cache-dir "
                       f"--disable-pip-version-check -d /tmp/dl {extra} lab-feedonly")


def assert_pip_reads_etc_pip_conf(machine) -> None:
    debug = machine.run("python3 -m pip config debug --disable-pip-version-check")
    assert debug.rc == 0, debug.stderr
    assert "  /etc/pip.conf, exists: True" in debug.stdout.splitlines()


@pytest.fixture(scope="module")
def fresh(lab):
    """Hosts as the lab made them: no pip or uv configuration, no wheelhouse."""
    def wipe():
        for host in HOSTS:
            sudo(lab, host, "rm -rf /etc/pip.conf /etc/pip.conf.*~ /etc/uv "
                 f"{WHEELHOUSE} {UV_VENV} /tmp/uv-target /tmp/dl")
    wipe()
    yield
    wipe()


def test_check_mode_on_fresh_hosts_changes_nothing_and_predicts_the_first_run(lab, fresh,
                                                                             tmp_path):
    variables = feed_vars(lab, pipfeed_mode="primary")
    checked = play(lab, tmp_path, variables, "--check", "--diff")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for host in HOSTS:
        machine = lab.testinfra(host)
        for path in MANAGED + ["/etc/uv"]:
            assert not machine.file(path).exists, f"{host}: check mode made {path}"
    assert "+index-url = " + lab.feed_url in checked.stdout

    first = play(lab, tmp_path, variables, "--diff")
    assert first.returncode == 0, first.stdout + first.stderr
    predicted, done = changed_tasks(checked.stdout), changed_tasks(first.stdout)
    assert set(done) == set(HOSTS)
    assert predicted == done
    # One task writes both files; its diff shows each change, predicted and done alike.
    assert done["deb12-1"] == ["pipfeed.feed.pipfeed_config : Write /etc/pip.conf and "
                               "/etc/uv/uv.toml where they differ"]
    for output in (checked.stdout, first.stdout):
        for path in ("/etc/pip.conf", "/etc/uv", "/etc/uv/uv.toml"):
            assert output.count(f"--- before: {path}\n") == len(HOSTS), path

    second = play(lab, tmp_path, variables)
    assert second.returncode == 0, second.stdout + second.stderr
    assert all(recap(second.stdout)[h]["changed"] == 0 for h in HOSTS), second.stdout
    # The run saw the token (preflight checks it is written nowhere) and printed it nowhere.
    verbose = play(lab, tmp_path, variables, "-vvv", "--check")
    assert lab.token not in first.stdout + checked.stdout + verbose.stdout + verbose.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_primary_mode_pip_and_uv_resolve_from_the_feed_only(lab, host, tmp_path):
    machine = lab.testinfra(host)
    for path in MANAGED:
        conf = machine.file(path)
        assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
        assert lab.token not in conf.content_string
    assert_pip_reads_etc_pip_conf(machine)
    mark = lab.log_mark(lab.access_log)
    with netrc(lab, host):
        result = pip_download(machine)
        assert result.rc == 0, result.stdout + result.stderr
        # pip never asked PyPI (dropped by the firewall): no wait, no retry warning.
        assert "pypi.org" not in result.stdout + result.stderr
        # uv, installed from the feed into a venv by the venv's own pip (which reads
        # /etc/pip.conf), then resolving from the feed through /etc/uv/uv.toml.
        ensure_uv(lab, machine)
        uv = machine.run(f"python3 -m venv --without-pip /tmp/uv-target && {UV_VENV}/bin/uv "
                         "pip install --no-cache --python /tmp/uv-target/bin/python lab-feedonly")
        assert uv.rc == 0, uv.stdout + uv.stderr
    assert machine.file("/tmp/dl/lab_feedonly-1.0.0-py3-none-any.whl").exists
    assert machine.run("/tmp/uv-target/bin/python -c 'import lab_feedonly'").rc == 0
    requests = feed_requests(lab, host, mark)
    assert ("simple", 200) in requests and ("download", 303) in requests
    assert ("blob", 200) in requests


def ensure_uv(lab, machine) -> None:
    """uv in a venv on the host, installed from the feed whatever mode pip.conf is in (its own
    settings are ignored for this step only), so each test can run alone. Needs the netrc."""
    if machine.file(f"{UV_VENV}/bin/uv").exists:
        return
    setup = machine.run(f"python3 -m venv {UV_VENV} && PIP_CONFIG_FILE=/dev/null "
                        f"{UV_VENV}/bin/pip install --disable-pip-version-check --no-cache-dir "
                        f"--no-input --index-url {lab.feed_url} uv==0.13.9")
    assert setup.rc == 0, setup.stdout + setup.stderr


def test_extra_mode_warns_that_pypi_does_not_answer_and_still_resolves_from_the_feed(
        lab, tmp_path):
    # Short timeout and no retries: each pip call waits 2 s on the dropped PyPI, not 90 s.
    variables = feed_vars(lab, pipfeed_mode="extra", pipfeed_config_timeout=2,
                          pipfeed_config_retries=0)
    result = play(lab, tmp_path, variables)
    assert result.returncode == 0, result.stdout + result.stderr
    for host in HOSTS:
        assert f"https://pypi.org/simple/ does not answer from {host}" in result.stdout
    assert "Set pipfeed_mode: primary" in result.stdout
    for host in HOSTS:
        machine = lab.testinfra(host)
        assert_pip_reads_etc_pip_conf(machine)
        assert "global.timeout='2'" in machine.run(
            "python3 -m pip config list --disable-pip-version-check").stdout
        mark = lab.log_mark(lab.access_log)
        with netrc(lab, host):
            download = pip_download(machine)
            ensure_uv(lab, machine)
            uv = machine.run(f"rm -rf /tmp/uv-target && python3 -m venv --without-pip "
                             f"/tmp/uv-target && {UV_VENV}/bin/uv pip install --no-cache "
                             "--python /tmp/uv-target/bin/python lab-feedonly")
        assert download.rc == 0, download.stdout + download.stderr
        assert uv.rc == 0, uv.stdout + uv.stderr
        requests = feed_requests(lab, host, mark)
        # pip once, uv at least once (it may ask for the metadata first).
        assert requests.count(("download", 303)) >= 2, requests
    again = play(lab, tmp_path, variables)
    assert all(recap(again.stdout)[h]["changed"] == 0 for h in HOSTS), again.stdout

    failing = play(lab, tmp_path, dict(variables, pipfeed_config_fail_on_unreachable_pypi=True),
                   "--limit", "deb13-1")
    assert failing.returncode != 0
    assert "pipfeed_mode: primary" in failing.stdout


def test_offline_mode_installs_from_the_wheelhouse_without_the_network(lab, tmp_path):
    wheel = next((lab.dir / "feed-packages").glob("lab_feedonly-1.0.0-*.whl"))
    encoded = base64.b64encode(wheel.read_bytes()).decode()
    for host in HOSTS:
        sudo(lab, host, f"mkdir -p {WHEELHOUSE} && echo {encoded} | base64 -d "
             f"> {WHEELHOUSE}/{wheel.name}")
        with netrc(lab, host):
            ensure_uv(lab, lab.testinfra(host))
    result = play(lab, tmp_path, feed_vars(lab, pipfeed_mode="offline"))
    assert result.returncode == 0, result.stdout + result.stderr
    for host in HOSTS:
        machine = lab.testinfra(host)
        assert_pip_reads_etc_pip_conf(machine)
        mark = lab.log_mark(lab.access_log)
        # No token anywhere, and no request to the feed: the wheelhouse is the only source.
        download = pip_download(machine)
        assert download.rc == 0, download.stdout + download.stderr
        uv = machine.run(f"rm -rf /tmp/uv-target && python3 -m venv --without-pip /tmp/uv-target"
                         f" && {UV_VENV}/bin/uv pip install --no-cache "
                         "--python /tmp/uv-target/bin/python lab-feedonly")
        assert uv.rc == 0, uv.stdout + uv.stderr
        missing = machine.run("python3 -m pip download --no-deps --disable-pip-version-check "
                              "-d /tmp/dl requests")
        assert missing.rc != 0
        assert feed_requests(lab, host, mark) == []
    again = play(lab, tmp_path, feed_vars(lab, pipfeed_mode="offline"))
    assert all(recap(again.stdout)[h]["changed"] == 0 for h in HOSTS), again.stdout


def test_existing_pip_conf_keeps_unrelated_settings_with_backup_and_diff(lab, tmp_path):
    host = "deb12-1"
    original = ("# written by hand\n[global]\nextra-index-url = https://old.example.test/simple/\n"
                "timeout = 42\n\n[list]\nformat = columns\n")
    encoded = base64.b64encode(original.encode()).decode()
    sudo(lab, host, f"rm -f /etc/pip.conf.*~ && echo {encoded} | base64 -d > /etc/pip.conf")
    result = play(lab, tmp_path, feed_vars(lab, pipfeed_mode="primary"), "--diff",
                  "--limit", host)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-extra-index-url = https://old.example.test/simple/" in result.stdout
    machine = lab.testinfra(host)
    settings = machine.run("python3 -m pip config list --disable-pip-version-check").stdout
    assert "global.timeout='42'" in settings and "list.format='columns'" in settings
    assert f"global.index-url='{lab.feed_url}'" in settings
    assert "old.example.test" not in settings
    backups = machine.run("ls /etc/pip.conf.*~").stdout.split()
    assert len(backups) == 1 and machine.file(backups[0]).content_string == original


@pytest.mark.parametrize("url, expected", [
    ("https://lab:{token}@feed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
     "pipfeed_credential_helper"),
    ("http://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/", "insecure_http: true"),
    ("feed.lab.test/simple/", "absolute https URL"),
])
def test_preflight_refuses_bad_feed_urls_before_any_change(lab, tmp_path, url, expected):
    host = "deb13-1"
    before = lab.testinfra(host).file("/etc/pip.conf").sha256sum
    variables = feed_vars(lab)
    variables["pipfeed_feeds"][0]["url"] = url.format(token=lab.token)
    result = play(lab, tmp_path, variables, "--limit", host)
    assert result.returncode != 0
    assert "pipfeed_feeds[0] (python-feed)" in result.stdout
    assert expected in result.stdout
    assert lab.token not in result.stdout + result.stderr
    assert "Write /etc/pip.conf" not in result.stdout
    assert lab.testinfra(host).file("/etc/pip.conf").sha256sum == before


def test_an_unknown_mode_is_refused_naming_the_variable(lab, tmp_path):
    result = play(lab, tmp_path, feed_vars(lab, pipfeed_mode="mirror"), "--limit", "deb11-1")
    assert result.returncode != 0
    assert "pipfeed_mode" in result.stdout and "extra, primary, offline" in result.stdout

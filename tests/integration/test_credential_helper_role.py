"""Role pipfeed_credential_helper (with pipfeed_config, through playbooks/hosts.yml) and
playbooks/rotate_token.yml on the lab's Debian 11/12/13 hosts.

The run installs a canary token, taken from a controller environment variable, that the lab's
feed accepts. Real pips and uv then install a package that only the feed has, with no TTY,
`--no-input` and stdin from /dev/null: the distro's pip (20.3.4 and 23.0.1 through the netrc,
25.1.1 through the helper) as root via sudo and as a member of the token group, pip 26 and
uv 0.13.9 in venvs that were themselves bootstrapped from the feed through the helper. The
canary must then be in no file of a host but its token file and the netrc, in no process's
argv, nowhere in the controller's output at -vvv, and never at the second index.

On deb13-1 a stand-in for python3-keyring sits at /usr/bin/keyring before the role runs: the
role diverts it, and everything that is not a feed request still reaches it.

Everything the tests make is removed at the end, so the other integration tests find the
hosts as the lab made them.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
import time
from pathlib import Path

import pytest

from tests.integration.support import ansible_env, must, recap, run_playbooks, sh, sudo

pytestmark = pytest.mark.integration
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]
NETRC_HOSTS = ["deb11-1", "deb12-1"]  # pip 20.3.4 and 23.0.1: auto enables netrc there
TOKEN_ENV = "PIPFEED_TEST_FEED_TOKEN"
TOKEN_FILE = "/etc/pipfeed/tokens/python-feed.token"
NETRC = "/etc/pipfeed/netrc"
WORK = "/tmp/pipfeed-role-test"
FOREIGN = "#!/bin/sh\necho \"foreign-keyring $*\"\n"
PIP = ("timeout 150 python3 -m pip {verb} --no-deps --no-cache-dir --disable-pip-version-check "
       "--no-input {args} lab-feedonly </dev/null")
CLEAN = ("rm -rf /usr/local/bin/keyring /usr/local/lib/pipfeed /etc/pipfeed /root/.netrc "
         "/home/labadmin/.netrc /etc/pip.conf /etc/pip.conf.*~ /etc/uv " + WORK + "; "
         "if [ -L /usr/bin/keyring ]; then rm -f /usr/bin/keyring; fi; "
         "if dpkg-divert --list /usr/bin/keyring | grep -q .; then "
         "dpkg-divert --local --rename --remove /usr/bin/keyring; rm -f /usr/bin/keyring; fi; "
         "if getent group pipfeed >/dev/null; then gpasswd -d labadmin pipfeed >/dev/null 2>&1; "
         "groupdel pipfeed; fi")


# ----- helpers --------------------------------------------------------------------------------

def as_member(command: str) -> str:
    """As labadmin with a fresh login's groups (the SSH session predates the group change)."""
    return f"sudo -u labadmin -H sh -c {shlex.quote(command)}"


def sha256(token: str) -> str:
    return hashlib.sha256((token + "\n").encode()).hexdigest()


def file_sha256(lab, host: str, path: str) -> str:
    return must(lab, host, sudo(f"sha256sum {path}")).split()[0]


def run_playbook(lab, tmp_path: Path, playbook: str, variables: dict, *args: str,
                 token_env: str | None = None, timeout: float = 600):
    """One of the project's playbooks; the token environment variable set only when given."""
    return run_playbooks(lab, tmp_path, [f"playbooks/{playbook}"], variables, *args,
                         env=ansible_env(**{TOKEN_ENV: token_env}), timeout=timeout)


def feeds(lab, **source) -> list[dict]:
    return [{"name": "python-feed", "url": lab.feed_url, **(source or {"token_env": TOKEN_ENV})}]


def site_vars(lab, **settings) -> dict:
    return {"pipfeed_feeds": feeds(lab), "pipfeed_credential_helper": True,
            "pipfeed_wheelhouse": False,
            "pipfeed_credential_helper_users": ["labadmin"],
            # pip 26 on Python 3.9 (deb11) does not use the system store by itself.
            "pipfeed_config_cert": "/etc/ssl/certs/ca-certificates.crt", **settings}


def add_lab_tokens(lab, *entries: dict) -> None:
    data = json.loads(lab.tokens_file.read_text())
    data["tokens"] += list(entries)
    lab.tokens_file.write_text(json.dumps(data, indent=2))


def authorizations_at_other_index(lab, mark: int) -> list[str]:
    seen = []
    for entry in lab.read_log(lab.recorder_log, mark):
        scheme, _, value = (entry.get("authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            seen.append(base64.b64decode(value).decode("utf-8", "replace"))
        elif value:
            seen.append(value)
    return seen


# Walks the host's whole file system (but /proc, /sys, /dev) for the bytes given on stdin.
FIND_BYTES = r"""
import os, sys
needle = sys.stdin.buffer.read().strip()
for top, dirs, files in os.walk("/"):
    if top == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(top, name)
        try:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with open(path, "rb") as handle:
                tail = b""
                while True:
                    chunk = handle.read(1 << 20)
                    if not chunk:
                        break
                    if needle in tail + chunk:
                        print(path)
                        break
                    tail = chunk[-len(needle):]
        except OSError:
            pass
"""


def files_holding(lab, host: str, token: str) -> list[str]:
    code = base64.b64encode(FIND_BYTES.encode()).decode()
    out = must(lab, host, sudo(f"echo {code} | base64 -d > /tmp/find-bytes.py && "
                               "python3 /tmp/find-bytes.py; rm -f /tmp/find-bytes.py"),
               token.encode(), timeout=600)
    return sorted(out.split())


# ----- the installed helper -------------------------------------------------------------------

@pytest.fixture(scope="module")
def canary():
    return "labcanary" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def installed(lab, canary, tmp_path_factory):
    """site's hosts.yml with the helper on, run twice (the second at -vvv)."""
    tmp_path = tmp_path_factory.mktemp("credential_helper_role")
    original_tokens = lab.tokens_file.read_text()
    had_local = {h: sh(lab, h, "test -e ~/.local")[0] == 0 for h in HOSTS}
    try:
        add_lab_tokens(lab, {"token": canary, "scopes": ["read"]})
        for host in HOSTS:
            must(lab, host, sudo(CLEAN))
        # python3-keyring stands in here: its /usr/bin/keyring must keep answering.
        must(lab, "deb13-1", sudo("cat > /usr/bin/keyring && chmod 0755 /usr/bin/keyring"),
             FOREIGN.encode())
        first = run_playbook(lab, tmp_path, "hosts.yml", site_vars(lab), "--diff",
                             token_env=canary)
        assert first.returncode == 0, first.stdout + first.stderr
        second = run_playbook(lab, tmp_path, "hosts.yml", site_vars(lab), "-vvv",
                              token_env=canary)
        assert second.returncode == 0, second.stdout[-5000:] + second.stderr
        yield {"first": first, "second": second, "tmp_path": tmp_path}
    finally:
        lab.tokens_file.write_text(original_tokens)
        for host in HOSTS:
            sh(lab, host, sudo(CLEAN))
            if not had_local[host]:
                sh(lab, host, "rm -rf ~/.local")


def test_first_run_installs_and_second_run_changes_nothing_and_prints_no_token(
        lab, installed, canary):
    first, second = installed["first"], installed["second"]
    assert all(recap(second.stdout)[h]["changed"] == 0 for h in HOSTS), second.stdout[-3000:]
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert canary not in output
    for host in HOSTS:
        machine = lab.testinfra(host)
        program = machine.file("/usr/local/lib/pipfeed/pipfeed-keyring")
        assert (program.user, program.group, program.mode) == ("root", "root", 0o755)
        for link in ("/usr/local/bin/keyring", "/usr/bin/keyring"):
            assert machine.file(link).linked_to == "/usr/local/lib/pipfeed/pipfeed-keyring"
        config = machine.file("/etc/pipfeed/credential-helper.json")
        assert (config.user, config.group, config.mode) == ("root", "root", 0o644)
        assert json.loads(config.content_string)["feeds"] == [
            {"name": "python-feed", "url": lab.feed_url, "token_file": TOKEN_FILE}]
        tokens = machine.file("/etc/pipfeed/tokens")
        assert (tokens.user, tokens.group, tokens.mode) == ("root", "pipfeed", 0o750)
        assert must(lab, host, sudo(f"stat -c '%U %G %a' {TOKEN_FILE}")).split() == [
            "root", "pipfeed", "640"]
        assert file_sha256(lab, host, TOKEN_FILE) == sha256(canary)
        assert "pipfeed" in machine.run("id -Gn labadmin").stdout.split()
        pip_conf = machine.file("/etc/pip.conf").content_string
        user_url = lab.feed_url.replace("https://", "https://pipfeed@")
        assert f"index-url = {user_url}" in pip_conf.splitlines()
        assert "keyring-provider = subprocess" in pip_conf.splitlines()
        uv_toml = machine.file("/etc/uv/uv.toml").content_string
        assert 'keyring-provider = "subprocess"' in uv_toml.splitlines()
        assert f'url = "{user_url}"' in uv_toml.splitlines()
        netrc = must(lab, host, sudo(f"stat -c '%U %G %a' {NETRC} 2>/dev/null || true")).split()
        links = must(lab, host, sudo("for f in /root/.netrc /home/labadmin/.netrc; do "
                                     "readlink $f || echo none; done")).split()
        if host in NETRC_HOSTS:
            assert netrc == ["root", "pipfeed", "640"]
            assert links == [NETRC, NETRC]
        else:
            assert netrc == [] and links == ["none", "none"]


@pytest.mark.parametrize("host", HOSTS)
def test_distro_pip_installs_from_the_feed_as_root_and_as_member_without_a_prompt(
        lab, installed, canary, host):
    mark = lab.log_mark(lab.access_log)
    must(lab, host, f"mkdir -p {WORK} && chmod 0777 {WORK}")
    # ps sampled every 20 ms while root installs: no process may carry the token in its argv.
    sampler = ("for i in $(seq 400); do ps -eo args; sleep 0.02; done "
               f"> {WORK}/ps.log 2>&1 & ")
    root = must(lab, host, sampler + sudo(
        f"cd {WORK} && " + PIP.format(verb="install", args=f"--target {WORK}/root-target")) +
        "; rc=$?; wait; exit $rc")
    assert "Successfully installed lab-feedonly" in root
    ps_log = must(lab, host, f"cat {WORK}/ps.log")
    assert "pip install" in ps_log and canary not in ps_log
    member = must(lab, host, as_member(
        f"cd {WORK} && " + PIP.format(verb="download", args=f"-d {WORK}/member-dl")))
    assert "Successfully downloaded lab-feedonly" in member
    ip = lab.host(host).ip
    requests = [(e["kind"], e["status"], e["auth"]) for e in lab.read_log(lab.access_log, mark)
                if e["client"] == ip]
    assert ("simple", 200, True) in requests and ("simple", 401, False) not in requests


def test_a_user_outside_the_group_fails_fast_and_is_told_why(lab, installed):
    started = time.monotonic()
    rc, out, err = sh(lab, "deb13-1", f"cd /tmp && sudo -u nobody sh -c "
                                      f"{shlex.quote(PIP.format(verb='download', args='-d /tmp/x'))}")
    assert rc not in (0, 124) and time.monotonic() - started < 60
    assert TOKEN_FILE in err and "not readable" in err
    assert "User for" not in out + err


@pytest.mark.parametrize("host, pip", [("deb13-1", "pip==26.3"), ("deb11-1", "pip==26.0.1")])
def test_venvs_bootstrap_through_the_helper_then_newest_pip_and_uv_install(
        lab, installed, host, pip):
    venv, uv = f"{WORK}/pip-venv", f"{WORK}/uv-venv"
    # The venv's own pip (25.1.1 via the helper, 20.3.4 via the netrc) fetches pip and uv.
    must(lab, host, f"mkdir -p {WORK} && chmod 0777 {WORK}")
    must(lab, host, as_member(
        f"cd {WORK} && rm -rf {venv} {uv} && python3 -m venv {venv} && python3 -m venv {uv} && "
        f"timeout 200 {venv}/bin/pip install -q --no-cache-dir --no-input {pip} </dev/null && "
        f"timeout 200 {uv}/bin/pip install -q --no-cache-dir --no-input uv==0.13.9 </dev/null"),
        timeout=450)
    version = must(lab, host, f"{venv}/bin/pip --version")
    assert version.startswith("pip " + pip.split("==")[1])
    out = must(lab, host, as_member(
        f"cd {WORK} && timeout 150 {venv}/bin/pip install --no-cache-dir --no-input "
        "--disable-pip-version-check lab-feedonly </dev/null"))
    assert "Successfully installed lab-feedonly" in out
    must(lab, host, as_member(
        f"cd {WORK} && rm -rf {WORK}/uv-target && python3 -m venv --without-pip {WORK}/uv-target"
        f" && timeout 150 {uv}/bin/uv pip install --no-cache --python {WORK}/uv-target/bin/python"
        " lab-feedonly </dev/null"))
    must(lab, host, f"{WORK}/uv-target/bin/python -c 'import lab_feedonly'")


@pytest.mark.parametrize("host", HOSTS)
def test_token_never_sent_to_other_index(lab, installed, canary, host):
    mark = lab.log_mark(lab.recorder_log)
    out = must(lab, host, sudo(
        f"cd /tmp && rm -rf {WORK}/other && "
        + PIP.format(verb="download", args=f"-d {WORK}/other --extra-index-url "
                                          f"{lab.other_url}").replace(
            "lab-feedonly", "lab-otheronly lab-feedonly")))
    assert "Successfully downloaded" in out
    ip = lab.host(host).ip
    entries = [e for e in lab.read_log(lab.recorder_log, mark) if e["client"] == ip]
    assert entries, "the other index was not asked"
    assert all(canary not in seen for seen in authorizations_at_other_index(lab, mark))


def test_foreign_keyring_is_diverted_and_still_answers(lab, installed):
    host = "deb13-1"
    assert "local diversion of /usr/bin/keyring to /usr/bin/keyring.distrib" in must(
        lab, host, "dpkg-divert --list /usr/bin/keyring")
    assert must(lab, host, "timeout 30 keyring --help </dev/null").strip() == \
        "foreign-keyring --help"
    assert must(lab, host, "timeout 30 keyring get https://vault.example.test/ alice "
                           "</dev/null").strip() == \
        "foreign-keyring get https://vault.example.test/ alice"
    # The feed itself is answered by the helper, not handed over (a fresh login's groups: the
    # test's SSH session may predate the role's group change).
    check = must(lab, host, as_member("timeout 30 keyring --check </dev/null"))
    assert check.startswith("ok: feed 'python-feed'")


def test_canary_token_is_in_no_file_but_its_token_file_and_netrc(lab, installed, canary):
    for host in HOSTS:
        expected = [NETRC, TOKEN_FILE] if host in NETRC_HOSTS else [TOKEN_FILE]
        assert files_holding(lab, host, canary) == expected, host


# ----- token checks and rotation --------------------------------------------------------------

def test_wrong_token_fails_fast_naming_its_source_and_keeps_the_old_one(
        lab, installed, canary):
    before = {h: file_sha256(lab, h, TOKEN_FILE) for h in HOSTS}
    wrong = "labpat-wrong-" + secrets.token_hex(12)
    result = run_playbook(lab, installed["tmp_path"], "rotate_token.yml",
                          {"pipfeed_feeds": feeds(lab, token_var="rotate_token"),
                           "rotate_token": wrong})
    assert result.returncode != 0
    assert result.elapsed < 120
    for host in HOSTS:
        assert recap(result.stdout)[host]["failed"] == 1
        assert f"{host}: feed python-feed ({lab.feed_url}) answered 401" in result.stdout
    assert "the variable rotate_token (token_var)" in result.stdout
    assert "Packaging (Read)" in result.stdout
    assert "Replace the token files" not in result.stdout
    assert wrong not in result.stdout + result.stderr
    assert {h: file_sha256(lab, h, TOKEN_FILE) for h in HOSTS} == before


def test_token_without_read_scope_is_refused_by_the_site_run_too(lab, installed):
    scopeless = "labpat-noscope-" + secrets.token_hex(12)
    add_lab_tokens(lab, {"token": scopeless, "scopes": []})
    before = file_sha256(lab, "deb11-1", TOKEN_FILE)
    result = run_playbook(lab, installed["tmp_path"], "hosts.yml", site_vars(lab),
                          "--limit", "deb11-1", token_env=scopeless)
    assert result.returncode != 0
    assert "answered 403" in result.stdout and "Packaging (Read)" in result.stdout
    assert f"the controller environment variable {TOKEN_ENV} (token_env)" in result.stdout
    # pipfeed_config's checks run before the helper (they only read); nothing of it was written.
    assert "pipfeed.feed.pipfeed_config : Write" not in result.stdout
    assert file_sha256(lab, "deb11-1", TOKEN_FILE) == before


def test_a_token_file_that_cannot_be_written_stops_the_run_saying_why(lab, installed, canary):
    """The token step is no_log (its arguments hold the token) and does not fail by itself: the
    step after it fails with its error, which never holds the token; in site's play that is the
    helper's configuration step (nothing of it is written), in rotate_token.yml a stop task."""
    host, config = "deb12-1", "/etc/pipfeed/credential-helper.json"
    new = "labunwritable" + secrets.token_hex(12)
    add_lab_tokens(lab, {"token": new, "scopes": ["read"]})
    must(lab, host, sudo(f"rm -f {TOKEN_FILE} && mkdir {TOKEN_FILE}"))
    before = file_sha256(lab, host, config)
    try:
        for playbook, task in (("hosts.yml", "Write the helper's configuration and links where "
                                             "they differ"),
                               ("rotate_token.yml", "Stop when the token files could not be "
                                                    "written")):
            result = run_playbook(lab, installed["tmp_path"], playbook, site_vars(lab),
                                  "--limit", host, token_env=new)
            assert result.returncode != 0
            said = " ".join(result.stdout.split())
            assert f"TASK [pipfeed.feed.pipfeed_credential_helper : {task}]" in result.stdout
            assert f"{TOKEN_FILE} is a directory on the host" in said, result.stdout[-3000:]
            assert new not in result.stdout + result.stderr
            assert file_sha256(lab, host, config) == before
    finally:
        must(lab, host, sudo(f"rmdir {TOKEN_FILE}"))
        restored = run_playbook(lab, installed["tmp_path"], "hosts.yml", site_vars(lab),
                                "--limit", host, token_env=canary)
        assert restored.returncode == 0, restored.stdout[-3000:]


def test_feed_down_fails_with_a_clear_message_and_keeps_the_old_token(lab, installed, canary):
    before = file_sha256(lab, "deb13-1", TOKEN_FILE)
    lab.stop_feed()
    try:
        result = run_playbook(lab, installed["tmp_path"], "rotate_token.yml",
                              {"pipfeed_feeds": feeds(lab), "pipfeed_credential_helper_check_timeout": 5},
                              "--limit", "deb13-1", token_env=canary)
    finally:
        lab.start_feed()
    assert result.returncode != 0
    assert f"deb13-1 cannot ask feed python-feed ({lab.feed_url})" in result.stdout
    assert file_sha256(lab, "deb13-1", TOKEN_FILE) == before


def test_rotation_with_serial_replaces_the_token_everywhere_and_pip_uses_it(
        lab, installed, canary, tmp_path):
    new = "labrotated" + secrets.token_hex(20)
    add_lab_tokens(lab, {"token": new, "scopes": ["read"]})
    source = tmp_path / "new-token"
    source.write_text(new + "\n")
    source.chmod(0o600)
    result = run_playbook(lab, installed["tmp_path"], "rotate_token.yml",
                          {"pipfeed_feeds": feeds(lab, token_file=str(source)),
                           "pipfeed_rotate_serial": 1, "pipfeed_credential_helper_users": ["labadmin"]})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    # One batch per host, one after the other.
    assert result.stdout.count("TASK [pipfeed.feed.pipfeed_credential_helper : Write the token files and the netrc where "
                                "they differ]") == 3
    assert new not in result.stdout + result.stderr
    for host in HOSTS:
        assert file_sha256(lab, host, TOKEN_FILE) == sha256(new)
        if host in NETRC_HOSTS:
            assert files_holding(lab, host, new) == [NETRC, TOKEN_FILE]
        mark = lab.log_mark(lab.access_log)
        out = must(lab, host, as_member(
            "cd /tmp && " + PIP.format(verb="download", args=f"-d {WORK}/rotated")))
        assert "Successfully downloaded lab-feedonly" in out
        assert any(e["client"] == lab.host(host).ip and e["status"] == 200
                   for e in lab.read_log(lab.access_log, mark))


def test_two_feeds_each_get_their_own_token(lab, installed, canary, tmp_path):
    """The second index of the lab plays a second feed with a token of its own: the helper
    answers each URL with its feed's token, and the canary never reaches the second one."""
    host = "deb13-1"
    second = "labsecond" + secrets.token_hex(20)
    variables = site_vars(lab, pipfeed_feeds=feeds(lab) + [
        {"name": "second-feed", "url": lab.other_url, "token_var": "second_feed_token"}],
        second_feed_token=second)
    mark = lab.log_mark(lab.recorder_log)
    result = run_playbook(lab, installed["tmp_path"], "hosts.yml", variables, "--limit", host,
                          token_env=canary)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    config = json.loads(lab.testinfra(host).file("/etc/pipfeed/credential-helper.json")
                        .content_string)
    assert [f["token_file"] for f in config["feeds"]] == [
        TOKEN_FILE, "/etc/pipfeed/tokens/second-feed.token"]
    answers = {}
    for name, url in (("python-feed", lab.feed_url), ("second-feed", lab.other_url)):
        answers[name] = must(lab, host, sudo(
            f"keyring get {url} pipfeed </dev/null | sha256sum")).split()[0]
    assert answers == {"python-feed": sha256(canary), "second-feed": sha256(second)}
    seen = authorizations_at_other_index(lab, mark)
    assert f"pipfeed:{second}" in seen  # the role's token check, to the feed it belongs to
    assert all(canary not in value for value in seen)

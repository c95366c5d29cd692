"""The credential helper against the real pips and uv of the lab hosts, with no TTY and no input.

The helper goes into a scratch directory on each host (program, configuration, token file
root:labadmin 0640) and onto PATH as `keyring` in /usr/local/bin and /usr/bin; everything is
removed again at the end. Tests that record how pip and uv call it swap in a wrapper that logs
the arguments (never the answer) before handing over to the helper.
"""
from __future__ import annotations

import base64
import contextlib
import json
import shlex
import time
from pathlib import Path

import pytest

from tests.files import program
from tests.integration.support import must, sh, unprovision

pytestmark = pytest.mark.integration

PROGRAM = program("pipfeed-keyring")
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]
SCRATCH = "/opt/pipfeed-helper-test"
CONFIG = f"{SCRATCH}/credential-helper.json"
TOKEN_FILE = f"{SCRATCH}/python-feed.token"
HELPER = f"{SCRATCH}/pipfeed-keyring"
WRAPPER = f"{SCRATCH}/argv-recorder"
ARGV_LOG = "/tmp/pipfeed-helper-test-argv.log"
WORK = "/tmp/pipfeed-helper-test"
LINKS = ("/usr/local/bin/keyring", "/usr/bin/keyring")
ENV = f"export PIPFEED_HELPER_CONFIG={CONFIG} PIP_DISABLE_PIP_VERSION_CHECK=1; "
PIP_ARGS = "--no-cache-dir --no-input --no-deps"


def put_root_file(lab, host: str, path: str, data: bytes, mode: str,
                  group: str = "root") -> None:
    script = ('umask 077 && cat > "$1.tmp" && chown "root:$2" "$1.tmp" && chmod "$3" "$1.tmp" '
              '&& mv -f "$1.tmp" "$1"')
    must(lab, host, f"sudo sh -c {shlex.quote(script)} sh {path} {group} {mode}", data)


def feed_url(lab, user: str = "") -> str:
    return lab.feed_url.replace("https://", f"https://{user}@" if user else "https://")


def set_token(lab, host: str, token: str) -> None:
    put_root_file(lab, host, TOKEN_FILE, (token + "\n").encode(), "0640", "labadmin")


@pytest.fixture(scope="module")
def helper(lab):
    """The helper on every host, as `keyring` in /usr/local/bin and /usr/bin."""
    config = {"feeds": [{"name": "python-feed", "url": lab.feed_url,
                         "token_file": TOKEN_FILE}]}
    wrapper = (f'#!/bin/sh\nprintf "%s\\n" "$*" >> {ARGV_LOG}\nexec {HELPER} "$@"\n')
    # uv leaves an empty lock file in ~/.local/share/uv/credentials/: remove what was not there.
    had_local = {host: sh(lab, host, "test -e ~/.local")[0] == 0 for host in HOSTS}
    try:
        for host in HOSTS:
            # Start from a host without the product, whatever an earlier module left.
            unprovision(lab, host)
            for link in LINKS:
                # Never clobber a keyring the host already has.
                must(lab, host, f"test ! -e {link} && test ! -L {link}")
            must(lab, host, f"test ! -e ~/.netrc && sudo install -d -m 0755 {SCRATCH} && "
                            f"rm -rf {WORK} && mkdir -p {WORK}")
            put_root_file(lab, host, HELPER, PROGRAM.read_bytes(), "0755")
            put_root_file(lab, host, WRAPPER, wrapper.encode(), "0755")
            put_root_file(lab, host, CONFIG, json.dumps(config).encode(), "0644")
            set_token(lab, host, lab.token)
            for link in LINKS:
                must(lab, host, f"sudo ln -s {HELPER} {link}")
        yield
    finally:
        for host in HOSTS:
            links = " ".join(LINKS)
            sh(lab, host, f"for l in {links}; do case $(readlink $l) in {SCRATCH}/*) "
                          f"sudo rm -f $l;; esac; done; sudo rm -rf {SCRATCH}; "
                          f"rm -rf {WORK} {ARGV_LOG} ~/.netrc")
            if not had_local[host]:
                sh(lab, host, "rm -rf ~/.local")


@contextlib.contextmanager
def recording(lab, host: str):
    """Route the `keyring` links there are through the argv recorder; yields a reader of the
    recorded calls."""
    links = " ".join(LINKS)
    relink = f"for l in {links}; do if [ -L $l ]; then sudo ln -sfn {{}} $l; fi; done"
    must(lab, host, f"rm -f {ARGV_LOG} && " + relink.format(WRAPPER))
    try:
        yield lambda: sh(lab, host, f"cat {ARGV_LOG}")[1].splitlines()
    finally:
        must(lab, host, f"rm -f {ARGV_LOG} && " + relink.format(HELPER))


@contextlib.contextmanager
def without_link(lab, host: str, link: str):
    must(lab, host, f"sudo rm -f {link}")
    try:
        yield
    finally:
        must(lab, host, f"sudo ln -sfn {HELPER} {link}")


@pytest.fixture(scope="module")
def venvs(lab, helper):
    """pip 26.3 and uv 0.13.9 on deb13, pip 26.0.1 on deb11, installed from the feed with a
    temporary ~/.netrc that is removed before any test runs."""
    netrc = f"machine feed.lab.test login lab password {lab.token}\n".encode()
    plan = {"deb13-1": [("pip26", "pip==26.3"), ("uv", "uv==0.13.9")],
            "deb11-1": [("pip260", "pip==26.0.1")]}
    for host, envs in plan.items():
        must(lab, host, "umask 077 && cat > ~/.netrc", netrc)
        try:
            for name, requirement in envs:
                must(lab, host, f"timeout 120 python3 -m venv {WORK}/{name} && "
                                f"timeout 180 {WORK}/{name}/bin/pip install -q {PIP_ARGS} "
                                f"--cert /etc/ssl/certs/ca-certificates.crt "
                                f"--index-url {lab.feed_url} {requirement} </dev/null",
                     timeout=400)
        finally:
            must(lab, host, "rm -f ~/.netrc")
    yield


def feed_requests(lab, host: str, mark: int) -> list[tuple]:
    ip = lab.host(host).ip
    return [(e["kind"], e["status"], e["auth"]) for e in lab.read_log(lab.access_log, mark)
            if e["client"] == ip]


def no_netrc(lab, host: str) -> None:
    must(lab, host, "test ! -e ~/.netrc")


# ----- the helper itself on each host's Python ----------------------------------------------

@pytest.mark.parametrize("host", HOSTS)
def test_helper_answers_on_each_host_python_and_check_passes(lab, helper, host):
    out = must(lab, host, ENV + "timeout 30 keyring --check </dev/null")
    assert out.startswith("ok: feed 'python-feed'") and lab.token not in out
    rc, out, err = sh(lab, host, ENV + f"timeout 30 keyring get {lab.other_url} pipfeed "
                                       "</dev/null")
    assert (rc, out, err) == (1, "", "")
    answer = must(lab, host, ENV + "timeout 30 keyring --mode=creds --output=json get "
                                   f"{lab.feed_url} </dev/null")
    assert json.loads(answer) == {"username": "pipfeed", "password": lab.token}


# ----- pip 25.1.1 (Debian 13's own) ---------------------------------------------------------

def test_distro_pip_25_with_subprocess_provider_downloads_feed_only_package(lab, helper):
    host = "deb13-1"
    no_netrc(lab, host)
    mark = lab.log_mark(lab.access_log)
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m pip download "
                              f"{PIP_ARGS} --keyring-provider subprocess -d dl "
                              f"--index-url {feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        assert calls() == [f"get {lab.feed_url} pipfeed"]
    must(lab, host, f"test -f {WORK}/dl/lab_feedonly-1.0.0-py3-none-any.whl")
    assert ("simple", 200, True) in feed_requests(lab, host, mark)


def test_distro_pip_25_skips_a_keyring_in_its_own_scripts_dir_usr_local_bin(lab, helper):
    # Debian's python3 has sysconfig scripts = /usr/local/bin, and pip 23.1+ drops that
    # directory from PATH when it looks for keyring: only /usr/bin/keyring is found.
    host = "deb13-1"
    with without_link(lab, host, "/usr/bin/keyring"), recording(lab, host) as calls:
        rc, out, err = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m "
                                           f"pip download -v {PIP_ARGS} --keyring-provider "
                                           f"subprocess -d dl --index-url "
                                           f"{feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        assert rc != 0 and "Keyring provider set: disabled" in out + err
        assert calls() == []


def test_distro_pip_25_without_a_username_in_the_url_never_asks(lab, helper):
    host = "deb13-1"
    with recording(lab, host) as calls:
        rc, out, err = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m "
                                           f"pip download {PIP_ARGS} --keyring-provider "
                                           f"subprocess -d dl --index-url {lab.feed_url} "
                                           "lab-feedonly </dev/null")
        assert rc != 0 and "No matching distribution found" in err
        assert calls() == []


# ----- pip 26.3 and 26.0.1 in venvs ---------------------------------------------------------

def test_pip_26_3_installs_feed_only_package_without_a_username(lab, venvs):
    host = "deb13-1"
    no_netrc(lab, host)
    mark = lab.log_mark(lab.access_log)
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"timeout 120 {WORK}/pip26/bin/pip install {PIP_ARGS} "
                              f"--keyring-provider subprocess --index-url {lab.feed_url} "
                              "lab-feedonly </dev/null")
        assert calls() == [f"--mode=creds --output=json get {lab.feed_url}"]
    must(lab, host, f"{WORK}/pip26/bin/python -c 'import lab_feedonly'")
    assert ("simple", 200, True) in feed_requests(lab, host, mark)


def test_pip_26_3_passes_the_url_username_along(lab, venvs):
    host = "deb13-1"
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 {WORK}/pip26/bin/pip "
                              f"download {PIP_ARGS} --keyring-provider subprocess -d dl "
                              f"--index-url {feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        assert calls() == [f"--mode=creds --output=json get {lab.feed_url} pipfeed"]


def test_pip_26_0_on_python_3_9_uses_the_older_get_form(lab, venvs):
    host = "deb11-1"
    # pip 26 on Python 3.9 has no truststore: it needs the system bundle for the lab's CA.
    cert = "--cert /etc/ssl/certs/ca-certificates.crt"
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 {WORK}/pip260/bin/pip "
                              f"download {PIP_ARGS} {cert} --keyring-provider subprocess -d dl "
                              f"--index-url {feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        assert calls() == [f"get {lab.feed_url} pipfeed"]
        rc, _, _ = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 "
                                       f"{WORK}/pip260/bin/pip download {PIP_ARGS} {cert} "
                                       f"--keyring-provider subprocess -d dl --index-url "
                                       f"{lab.feed_url} lab-feedonly </dev/null")
        assert rc != 0 and len(calls()) == 1, "pip 26.0 asks keyring only with a username"


# ----- uv 0.13.9 ----------------------------------------------------------------------------

def test_uv_installs_feed_only_package_with_a_username_in_the_index_url(lab, venvs):
    host = "deb13-1"
    no_netrc(lab, host)
    must(lab, host, f"rm -rf {WORK}/uvtarget && python3 -m venv --without-pip {WORK}/uvtarget")
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"timeout 120 {WORK}/uv/bin/uv pip install --no-cache "
                              f"--system-certs --python {WORK}/uvtarget/bin/python "
                              f"--keyring-provider subprocess --index-url "
                              f"{feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        assert calls() == [f"get {lab.feed_url} pipfeed"]
    must(lab, host, f"{WORK}/uvtarget/bin/python -c 'import lab_feedonly'")


def test_uv_without_a_username_asks_for_creds_when_the_index_authenticates_always(lab, venvs):
    host = "deb13-1"
    uv_toml = (f'keyring-provider = "subprocess"\nsystem-certs = true\n\n[[index]]\n'
               f'name = "python-feed"\nurl = "{lab.feed_url}"\ndefault = true\n'
               'authenticate = "always"\n')
    must(lab, host, f"cat > {WORK}/uv.toml && rm -rf {WORK}/uvtarget && "
                    f"python3 -m venv --without-pip {WORK}/uvtarget", uv_toml.encode())
    with recording(lab, host) as calls:
        must(lab, host, ENV + f"timeout 120 {WORK}/uv/bin/uv pip install --no-cache "
                              f"--config-file {WORK}/uv.toml --python {WORK}/uvtarget/bin/python"
                              " lab-feedonly </dev/null")
        assert calls() == [f"get {lab.feed_url} --mode creds"]
    must(lab, host, f"{WORK}/uvtarget/bin/python -c 'import lab_feedonly'")


# ----- pip 23.0.1 and 20.3.4: no keyring path under no-input --------------------------------

def test_pip_23_0_asks_keyring_only_when_input_is_allowed(lab, helper):
    host = "deb12-1"
    download = (ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m pip download "
                      f"--no-cache-dir --no-deps {{}} -d dl --index-url "
                      f"{feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
    with recording(lab, host) as calls:
        rc, _, err = sh(lab, host, download.format("--no-input"))
        assert rc != 0 and "No matching distribution found" in err
        assert calls() == []
        must(lab, host, download.format(""))
        assert calls() == [f"get {lab.feed_url} pipfeed"]
    rc, _, err = sh(lab, host, download.format("--keyring-provider subprocess"))
    assert rc != 0 and "no such option: --keyring-provider" in err


def test_pip_20_3_never_asks_keyring(lab, helper):
    host = "deb11-1"
    with recording(lab, host) as calls:
        for flags in ("--no-input", ""):
            rc, _, _ = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m "
                                           f"pip download --no-cache-dir --no-deps {flags} "
                                           f"-d dl --index-url {feed_url(lab, 'pipfeed')} "
                                           "lab-feedonly </dev/null")
            assert rc != 0
        assert calls() == []


# ----- failures are fast and the token stays with its feed ----------------------------------

@pytest.mark.parametrize("client", ["pip25", "pip26"])
def test_wrong_token_fails_fast_without_a_prompt(lab, venvs, client):
    host = "deb13-1"
    pip = "python3 -m pip" if client == "pip25" else f"{WORK}/pip26/bin/pip"
    mark = lab.log_mark(lab.access_log)
    set_token(lab, host, "labpat-wrong-" + "0" * 30)
    try:
        started = time.monotonic()
        rc, out, err = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 {pip} "
                                           f"download {PIP_ARGS} --keyring-provider subprocess "
                                           f"-d dl --index-url {feed_url(lab, 'pipfeed')} "
                                           "lab-feedonly </dev/null", timeout=150)
        elapsed = time.monotonic() - started
    finally:
        set_token(lab, host, lab.token)
    assert rc not in (0, 124), out + err
    assert elapsed < 60
    assert "User for" not in out + err and "Password" not in out + err
    assert "401" in out + err
    assert ("simple", 401, True) in feed_requests(lab, host, mark)


def test_refused_token_file_fails_fast_and_says_why(lab, venvs):
    host = "deb13-1"
    must(lab, host, f"sudo chmod 0644 {TOKEN_FILE}")
    try:
        rc, out, err = sh(lab, host, ENV + f"timeout 30 keyring get {lab.feed_url} pipfeed "
                                           "</dev/null")
        assert rc == 2 and out == ""
        assert TOKEN_FILE in err and "0644" in err and lab.token not in err
        rc, out, err = sh(lab, host, ENV + f"cd {WORK} && rm -rf dl && timeout 120 python3 -m "
                                           f"pip download {PIP_ARGS} --keyring-provider "
                                           f"subprocess -d dl --index-url "
                                           f"{feed_url(lab, 'pipfeed')} lab-feedonly </dev/null")
        # pip 23.1 to 26.1 pass the helper's stderr through, so the reason reaches the user.
        assert rc != 0 and TOKEN_FILE in err and lab.token not in out + err
    finally:
        must(lab, host, f"sudo chmod 0640 {TOKEN_FILE}")


def _tokens_seen_by_other_index(lab, host: str, mark: int) -> list[str]:
    seen = []
    for entry in lab.read_log(lab.recorder_log, mark):
        if entry["client"] != lab.host(host).ip or not entry["authorization"]:
            continue
        scheme, _, value = entry["authorization"].partition(" ")
        seen.append(base64.b64decode(value).decode("utf-8", "replace")
                    if scheme.lower() == "basic" else value)
    return seen


@pytest.mark.parametrize("client", ["pip25", "pip26", "uv"])
def test_token_never_sent_to_other_index(lab, venvs, client):
    host = "deb13-1"
    mark = lab.log_mark(lab.recorder_log)
    other = lab.other_url.replace("https://", "https://pipfeed@")
    feed = feed_url(lab, "pipfeed")
    if client == "uv":
        command = (f"rm -rf {WORK}/uvtarget && python3 -m venv --without-pip {WORK}/uvtarget && "
                   f"timeout 120 {WORK}/uv/bin/uv pip install --no-cache --system-certs "
                   f"--python {WORK}/uvtarget/bin/python --keyring-provider subprocess "
                   f"--index-url {other} --extra-index-url {feed} lab-otheronly lab-feedonly")
    else:
        pip = "python3 -m pip" if client == "pip25" else f"{WORK}/pip26/bin/pip"
        command = (f"cd {WORK} && rm -rf dl && timeout 120 {pip} download {PIP_ARGS} "
                   f"--keyring-provider subprocess -d dl --index-url {other} "
                   f"--extra-index-url {feed} lab-otheronly lab-feedonly")
    with recording(lab, host) as calls:
        must(lab, host, ENV + command + " </dev/null")
        asked = calls()
    entries = [e for e in lab.read_log(lab.recorder_log, mark)
               if e["client"] == lab.host(host).ip]
    assert entries, "the other index was not asked at all"
    assert all(lab.token not in seen for seen in _tokens_seen_by_other_index(lab, host, mark))
    # The helper is asked about the feed; any question about the other index went unanswered.
    assert any(lab.feed_url in line for line in asked)
    if client == "uv":
        # uv asks about the other index too (its URL, then host:port): the helper declines.
        assert f"get {lab.other_url} pipfeed" in asked
        assert "get other.lab.test:8443 pipfeed" in asked

"""The credential helper (plugins/module_utils/pipfeed_keyring.py, installed as pipfeed-keyring): every request form
pip and uv use, URL matching against prefix tricks, token file refusals, and the hand-over to a
real keyring. Imported as a module for the pure parts and run as a program for the rest."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.files import program

pytestmark = pytest.mark.unit

PROGRAM = program("pipfeed-keyring")
FEED = "https://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/"
TOKEN = "unitpat" + "q" * 40


def load_helper():
    """A fresh copy of the helper's module, which a test may patch (TRUSTED_UID) alone."""
    loader = importlib.machinery.SourceFileLoader("pipfeed_keyring_under_test", str(PROGRAM))
    spec = importlib.util.spec_from_loader("pipfeed_keyring_under_test", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


helper = load_helper()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make root-owned files")


class Site:
    """A configuration, token files and PATH directories under tmp_path."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path
        self.config = tmp_path / "etc" / "credential-helper.json"
        self.config.parent.mkdir()
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "keyring").symlink_to(PROGRAM)
        self.later = tmp_path / "later-bin"
        self.later.mkdir()

    def token_file(self, name: str, content: str | bytes = TOKEN + "\n",
                   mode: int = 0o600) -> Path:
        path = self.root / "etc" / f"{name}.token"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(mode)
        return path

    def write_config(self, feeds: list[dict] | None = None, mode: int = 0o644, **top) -> None:
        if feeds is None:
            feeds = [{"name": "python-feed", "url": FEED,
                      "token_file": str(self.token_file("python-feed"))}]
        self.config.write_text(json.dumps({"feeds": feeds, **top}))
        self.config.chmod(mode)

    def env(self, **extra) -> dict:
        env = {"PATH": f"{self.bin}:{self.later}", helper.CONFIG_ENV: str(self.config),
               "LANG": "C.UTF-8"}
        env.update(extra)
        return env

    def run(self, *args: str, via_path: bool = True, stdin=subprocess.DEVNULL,
            **extra_env) -> subprocess.CompletedProcess:
        exe = str(self.bin / "keyring") if via_path else str(PROGRAM)
        return subprocess.run([exe, *args], env=self.env(**extra_env), stdin=stdin,
                              capture_output=True, timeout=30)

    def fake_keyring(self, directory: Path | None = None, name: str = "keyring") -> Path:
        """A stand-in for the real keyring that shows how it was called."""
        path = (directory or self.later) / name
        path.write_text("#!/bin/sh\nprintf 'real-keyring'\nprintf ' [%s]' \"$@\"\necho\n")
        path.chmod(0o755)
        return path


@pytest.fixture
def site(tmp_path, monkeypatch) -> Site:
    made = Site(tmp_path)
    made.write_config()
    monkeypatch.setenv(helper.CONFIG_ENV, str(made.config))
    return made


# ----- request forms -------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    # pip 23.0 to 26.1, and uv with a username in the index URL
    (["get", FEED, "pipfeed"], ("pipfeed", "password", "plain")),
    # pip 26.2 and later, with and without a username
    (["--mode=creds", "--output=json", "get", FEED, "alice"], ("alice", "creds", "json")),
    (["--mode=creds", "--output=json", "get", FEED], (None, "creds", "json")),
    # uv without a username
    (["get", FEED, "--mode", "creds"], (None, "creds", "plain")),
    (["--output", "json", "get", FEED, "bob"], ("bob", "password", "json")),
])
def test_every_get_form_pip_and_uv_use_is_understood(argv, expected):
    request = helper.parse_get(argv)
    assert request is not None and request.service == FEED
    assert (request.username, request.mode, request.output) == expected


@pytest.mark.parametrize("argv", [
    [], ["set", FEED, "user"], ["del", FEED, "user"], ["diagnose"], ["--help"], ["-h"],
    ["--version"], ["--list-backends"], ["-b", "keyring.backends.fail.Keyring", "get", FEED, "u"],
    ["get"], ["get", FEED, "user", "extra"], ["--mode=secret", "get", FEED, "u"],
    ["--output=yaml", "get", FEED, "u"], ["get", FEED, "--mode"],
])
def test_anything_but_a_plain_get_is_not_answered_here(argv):
    assert helper.parse_get(argv) is None


def test_plain_get_prints_the_password_only(site):
    result = site.run("get", FEED, "pipfeed")
    assert (result.returncode, result.stdout, result.stderr) == (0, (TOKEN + "\n").encode(), b"")


@pytest.mark.parametrize("user_args, username", [([], "pipfeed"), (["alice"], "alice")])
def test_pip_26_json_creds_form_returns_the_passed_or_default_username(site, user_args,
                                                                      username):
    result = site.run("--mode=creds", "--output=json", "get", FEED, *user_args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"username": username, "password": TOKEN}
    assert result.stderr == b""


def test_uv_creds_form_without_username_prints_username_then_password(site):
    result = site.run("get", FEED, "--mode", "creds")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["pipfeed", TOKEN]


def test_username_falls_back_to_the_feed_then_the_file_setting(site):
    token = str(site.token_file("python-feed"))
    site.write_config([{"name": "python-feed", "url": FEED, "token_file": token,
                        "username": "feeduser"}], username="fileuser")
    answer = site.run("--mode=creds", "--output=json", "get", FEED)
    assert json.loads(answer.stdout)["username"] == "feeduser"
    site.write_config([{"name": "python-feed", "url": FEED, "token_file": token}],
                      username="fileuser")
    answer = site.run("--mode=creds", "--output=json", "get", FEED)
    assert json.loads(answer.stdout)["username"] == "fileuser"


def test_file_urls_of_the_feed_are_answered_too(site):
    wheel = ("https://feed.lab.test/contoso/_packaging/python-feed/pypi/download/"
             "lab-feedonly/1.0.0/lab_feedonly-1.0.0-py3-none-any.whl")
    assert site.run("get", wheel, "pipfeed").stdout == (TOKEN + "\n").encode()


def test_program_runs_by_its_own_path_and_shebang(site):
    result = site.run("get", FEED, "u", via_path=False)
    assert result.returncode == 0 and result.stdout == (TOKEN + "\n").encode()
    assert PROGRAM.read_text().startswith("#!/usr/bin/python3\n")
    assert PROGRAM.stat().st_mode & stat.S_IXUSR


def test_never_reads_stdin_so_an_open_terminal_cannot_make_it_wait(site):
    # stdin stays open and empty: a program that read it would block until the timeout.
    proc = subprocess.Popen([str(site.bin / "keyring"), "get", FEED, "u"], env=site.env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out == (TOKEN + "\n").encode()


def test_a_rotated_token_is_used_at_once(site):
    assert site.run("get", FEED, "u").stdout == (TOKEN + "\n").encode()
    site.token_file("python-feed", "rotatedpat123\n")
    assert site.run("get", FEED, "u").stdout == b"rotatedpat123\n"


def test_helper_writes_no_file(site, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    assert site.run("get", FEED, "u").returncode == 0
    assert site.run("--mode=creds", "--output=json", "get", FEED).returncode == 0
    assert sorted(p for p in tmp_path.rglob("*")) == before


# ----- URL matching --------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    FEED,
    FEED.rstrip("/"),
    "https://FEED.Lab.Test/contoso/_packaging/python-feed/pypi/simple/lab-feedonly/",
    "https://feed.lab.test:443/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test./contoso/_packaging/python-feed/pypi/simple/",
    "https://pipfeed@feed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/download/x/1.0/x-1.0.tar.gz",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/?q=1#frag",
])
def test_urls_of_the_feed_match(url):
    feeds = [helper.Feed("python-feed", "https", "feed.lab.test", 443,
                         "/contoso/_packaging/python-feed/pypi/", "/t", None)]
    assert helper.find_feed(feeds, url) is feeds[0]


@pytest.mark.parametrize("url", [
    # a path that only starts alike
    "https://feed.lab.test/contoso/_packaging/python-feed-evil/pypi/simple/",
    "https://feed.lab.test/contoso/_packaging/python-feedx/pypi/simple/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypix/simple/",
    "https://feed.lab.test/contoso/_packaging/python-feed/",
    "https://feed.lab.test/",
    "https://feed.lab.test",
    # a longer host name, or the host name as user info
    "https://feed.lab.test.evil.com/contoso/_packaging/python-feed/pypi/simple/",
    "https://evilfeed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test@evil.com/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test:443@evil.com/contoso/_packaging/python-feed/pypi/simple/",
    # another scheme or port
    "http://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test:8443/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test:80/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test:bad/contoso/_packaging/python-feed/pypi/simple/",
    # paths a server resolves elsewhere
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/../../python-feed-evil/pypi/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/%2e%2e/%2E%2E/evil/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/./simple/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/..%5c..%5cevil/",
    # bare host names (pip's and uv's second try), and things that are no URL
    "feed.lab.test",
    "feed.lab.test:443",
    "//feed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
    "ftp://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/ x",
    "https://other.lab.test:8443/simple/",
    "",
])
def test_urls_outside_the_feed_do_not_match(url):
    feeds = [helper.Feed("python-feed", "https", "feed.lab.test", 443,
                         "/contoso/_packaging/python-feed/pypi/", "/t", None)]
    assert helper.find_feed(feeds, url) is None


@pytest.mark.parametrize("path, prefix", [
    ("/contoso/_packaging/python-feed/pypi/simple/", "/contoso/_packaging/python-feed/pypi/"),
    ("/contoso/platform/_packaging/f/pypi/simple", "/contoso/platform/_packaging/f/pypi/"),
    ("/repository/pypi-group/simple/", "/repository/pypi-group/"),
    ("/root/pypi/+simple/", "/root/pypi/"),
    ("/simple/", "/"),
    ("/index/", "/index/"),
    ("", "/"),
])
def test_default_prefix_is_the_index_without_its_simple_segment(path, prefix):
    assert helper.default_prefix(path) == prefix


def test_longest_matching_prefix_wins_and_ports_are_told_apart(site):
    def feed(name: str, url: str, **extra) -> dict:
        return {"name": name, "url": url,
                "token_file": str(site.token_file(name, f"pat-{name}\n")), **extra}

    site.write_config([
        feed("org-wide", "https://feed.lab.test/contoso/simple/", prefix="/contoso/"),
        feed("python-feed", FEED),
        feed("other-port", "https://feed.lab.test:8443/contoso/_packaging/python-feed/pypi/"
                           "simple/"),
    ])
    assert site.run("get", FEED, "u").stdout == b"pat-python-feed\n"
    assert site.run("get", "https://feed.lab.test/contoso/_packaging/python-feed-evil/pypi/"
                           "simple/", "u").stdout == b"pat-org-wide\n"
    assert site.run("get", "https://feed.lab.test:8443/contoso/_packaging/python-feed/pypi/"
                           "simple/x/", "u").stdout == b"pat-other-port\n"


@pytest.mark.parametrize("url", [
    "https://other.lab.test:8443/simple/",
    "https://feed.lab.test.evil.com/contoso/_packaging/python-feed/pypi/simple/",
    "https://feed.lab.test@evil.com/",
    "feed.lab.test",
])
def test_other_urls_get_nothing_on_stdout_and_exit_1(site, url):
    for argv in (["get", url, "u"], ["--mode=creds", "--output=json", "get", url],
                 ["get", url, "--mode", "creds"]):
        result = site.run(*argv)
        assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


def test_no_configuration_file_means_no_feed(site):
    site.config.unlink()
    result = site.run("get", FEED, "u")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


# ----- token file refusals -------------------------------------------------------------------

def _refused(result, site_file: Path) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert result.stdout == b""
    assert str(site_file) in err and "python-feed" in err
    assert TOKEN not in err
    return err


@needs_root
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o660, 0o620, 0o666, 0o700, 0o4600])
def test_token_file_with_a_loose_mode_is_refused(site, mode):
    path = site.token_file("python-feed", mode=mode)
    err = _refused(site.run("get", FEED, "u"), path)
    assert f"{mode:04o}" in err and "0600" in err and "0640" in err


@needs_root
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_token_file_owned_by_root_with_0600_or_0640_is_accepted(site, mode):
    path = site.token_file("python-feed", mode=mode)
    os.chown(path, 0, 65534)
    assert site.run("get", FEED, "u").stdout == (TOKEN + "\n").encode()


@needs_root
def test_token_file_not_owned_by_root_is_refused(site):
    path = site.token_file("python-feed")
    os.chown(path, 65534, 65534)
    err = _refused(site.run("get", FEED, "u"), path)
    assert "uid 65534" in err and "root" in err


@needs_root
def test_token_file_that_is_a_symlink_is_refused_even_to_a_good_file(site, tmp_path):
    good = site.token_file("elsewhere")
    link = tmp_path / "etc" / "python-feed.token"
    link.unlink()
    link.symlink_to(good)
    err = _refused(site.run("get", FEED, "u"), link)
    assert "symlink" in err


@needs_root
def test_token_file_that_is_no_regular_file_is_refused(site, tmp_path):
    path = tmp_path / "etc" / "python-feed.token"
    path.unlink()
    os.mkfifo(path, 0o600)
    err = _refused(site.run("get", FEED, "u"), path)
    assert "not a regular file" in err
    path.unlink()
    path.mkdir(mode=0o700)
    assert "not a regular file" in _refused(site.run("get", FEED, "u"), path)


def test_missing_token_file_is_refused_by_name(site, tmp_path):
    path = tmp_path / "etc" / "python-feed.token"
    path.unlink()
    assert "does not exist" in _refused(site.run("get", FEED, "u"), path)


@needs_root
@pytest.mark.parametrize("content, says", [
    ("", "empty"), ("\n", "empty"),
    (TOKEN + "\n\n", "more than one line"), (TOKEN + "\nsecond\n", "more than one line"),
    (" " + TOKEN + "\n", "whitespace"), (TOKEN + " \n", "whitespace"),
    (b"\xff\xfe" + TOKEN.encode(), "UTF-8"),
])
def test_token_file_without_exactly_one_token_is_refused(site, content, says):
    path = site.token_file("python-feed", content)
    assert says in _refused(site.run("get", FEED, "u"), path)


@needs_root
@pytest.mark.parametrize("content", [TOKEN, TOKEN + "\n", TOKEN + "\r\n"])
def test_one_trailing_newline_is_stripped(site, content):
    site.token_file("python-feed", content)
    assert site.run("get", FEED, "u").stdout == (TOKEN + "\n").encode()


@needs_root
def test_a_user_who_cannot_read_the_token_gets_a_message_not_a_prompt():
    # pytest's tmp_path is private to root; this test needs a directory uid 65534 can enter.
    with tempfile.TemporaryDirectory(prefix="pipfeed-helper-") as scratch:
        base = Path(scratch)
        base.chmod(0o755)
        program = base / "keyring"
        shutil.copy(PROGRAM, program)
        program.chmod(0o755)
        token = base / "python-feed.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o640)
        config = base / "credential-helper.json"
        config.write_text(json.dumps({"feeds": [{"name": "python-feed", "url": FEED,
                                                  "token_file": str(token)}]}))
        config.chmod(0o644)
        result = subprocess.run(
            [str(program), "get", FEED, "u"], env={"PATH": "/usr/bin:/bin",
                                                   helper.CONFIG_ENV: str(config)},
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            user=65534, group=65534, extra_groups=[])
    err = _refused(result, token)
    assert "not readable by uid 65534" in err and "0640" in err


# ----- configuration refusals ----------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_a_configuration_others_could_write_is_refused(site, mode):
    site.config.chmod(mode)
    result = site.run("get", FEED, "u")
    assert result.returncode == 3 and result.stdout == b""
    assert str(site.config) in result.stderr.decode()


@needs_root
def test_a_configuration_not_owned_by_root_is_refused(site):
    os.chown(site.config, 65534, 65534)
    result = site.run("get", FEED, "u")
    assert result.returncode == 3 and b"uid 65534" in result.stderr


@pytest.mark.parametrize("config, says", [
    ("{", "not valid JSON"),
    ('{"feeds": {}}', '"feeds"'),
    ('{"feeds": [], "extra": 1}', "unknown keys"),
    ('{"feeds": [{"name": "f", "url": "https://h/simple/"}]}', '"token_file"'),
    ('{"feeds": [{"name": "f", "url": "http://h/simple/", "token_file": "/t"}]}',
     "insecure_http"),
    ('{"feeds": [{"name": "f", "url": "https://u:p@h/simple/", "token_file": "/t"}]}',
     "without credentials"),
    ('{"feeds": [{"name": "f", "url": "https://h/simple/", "token_file": "t"}]}', "absolute"),
    ('{"feeds": [{"name": "f", "url": "https://h/simple/", "token_file": "/t", "tokn": 1}]}',
     "unknown keys"),
    ('{"feeds": [{"name": "f", "url": "https://h/a/", "token_file": "/t"},'
     ' {"name": "g", "url": "https://H:443/a/simple", "token_file": "/u"}]}', "same URL space"),
])
def test_an_invalid_configuration_is_refused_with_its_path(site, config, says):
    site.config.write_text(config)
    result = site.run("get", FEED, "u")
    assert result.returncode == 3 and result.stdout == b""
    assert says in result.stderr.decode() and str(site.config) in result.stderr.decode()


def test_http_feed_is_allowed_only_when_asked_for(site):
    url = "http://plain.lab.test/simple/"
    site.write_config([{"name": "plain", "url": url, "insecure_http": True,
                        "token_file": str(site.token_file("plain"))}])
    assert site.run("get", url + "pkg/", "u").stdout == (TOKEN + "\n").encode()
    assert site.run("get", "https://plain.lab.test/simple/", "u").returncode == 1


# ----- hand-over to the real keyring ---------------------------------------------------------

def test_other_urls_go_to_the_next_keyring_with_the_same_arguments(site):
    site.fake_keyring()
    other = "https://other.lab.test:8443/simple/"
    result = site.run("get", other, "user")
    assert result.returncode == 0
    assert result.stdout == f"real-keyring [get] [{other}] [user]\n".encode()
    result = site.run("--mode=creds", "--output=json", "get", other)
    assert result.stdout == f"real-keyring [--mode=creds] [--output=json] [get] [{other}]\n" \
        .encode()


@pytest.mark.parametrize("argv", [["set", FEED, "user"], ["del", FEED, "user"], ["--help"],
                                  ["--list-backends"], ["diagnose"], ["--version"]])
def test_other_commands_go_to_the_next_keyring(site, argv):
    site.fake_keyring()
    result = site.run(*argv)
    assert result.returncode == 0
    assert result.stdout.decode() == "real-keyring" + "".join(f" [{a}]" for a in argv) + "\n"


@pytest.mark.parametrize("argv", [["set", FEED, "user"], ["--help"], ["diagnose"]])
def test_other_commands_without_a_real_keyring_fail_with_a_short_message(site, argv):
    result = site.run(*argv)
    assert result.returncode == 1 and result.stdout == b""
    message = result.stderr.decode()
    assert "get" in message and len(message.splitlines()) == 1


def test_a_keyring_earlier_on_path_is_not_asked_again(site, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    site.fake_keyring(earlier)
    result = site.run("get", "https://other.lab.test:8443/simple/", "u",
                      via_path=False, PATH=f"{earlier}:{site.bin}")
    assert (result.returncode, result.stdout) == (1, b"")


def test_feed_urls_are_answered_here_even_with_a_real_keyring_installed(site):
    site.fake_keyring()
    assert site.run("get", FEED, "u").stdout == (TOKEN + "\n").encode()


def test_two_copies_on_path_do_not_hand_over_to_each_other_forever(site):
    copy = site.later / "keyring"
    copy.write_bytes(PROGRAM.read_bytes())
    copy.chmod(0o755)
    result = site.run("get", "https://other.lab.test:8443/simple/", "u")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


def test_diverted_keyring_is_the_last_resort(site, monkeypatch, tmp_path):
    diverted = site.fake_keyring(tmp_path, "keyring.distrib")
    monkeypatch.setattr(helper, "FALLBACK_KEYRINGS", (str(diverted),))
    monkeypatch.setenv("PATH", str(site.bin))
    monkeypatch.delenv(helper.SEEN_ENV, raising=False)
    assert helper.next_keyring() == str(diverted)
    site.fake_keyring()
    monkeypatch.setenv("PATH", f"{site.bin}:{site.later}")
    assert helper.next_keyring() == str(site.later / "keyring")


# ----- self-test -----------------------------------------------------------------------------

def test_check_reports_the_feed_and_never_the_token(site):
    result = site.run("--check", FEED)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert out.startswith("ok: feed 'python-feed' https://feed.lab.test:443/contoso/")
    assert "mode 0600" in out and TOKEN not in out + result.stderr.decode()
    assert site.run("--check").returncode == 0
    other = site.run("--check", "https://other.lab.test:8443/simple/")
    assert other.returncode == 1 and b"not under any feed" in other.stderr


@needs_root
def test_check_fails_like_get_on_a_bad_token_file(site):
    path = site.token_file("python-feed", mode=0o644)
    result = site.run("--check")
    assert result.returncode == 2 and str(path).encode() in result.stderr
    assert TOKEN.encode() not in result.stdout + result.stderr


def test_a_wrapper_that_hands_back_to_the_helper_does_not_loop(site):
    wrapper = site.later / "keyring"
    wrapper.write_text(f"#!/bin/sh\nexec {PROGRAM} \"$@\"\n")
    wrapper.chmod(0o755)
    result = site.run("get", "https://other.lab.test:8443/simple/", "u")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")

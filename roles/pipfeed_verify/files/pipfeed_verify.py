#!/usr/bin/env python3
"""Is this host healthy? One call per host, standard library only, run as root.

Every answer comes from the tools a user of the host would run: pip's own `--version`,
`config debug` and `config list`; the feed's credential fetched the way this host's pip fetches
it (the `keyring` program on PATH for pip 23.1 and later with keyring-provider = subprocess,
~/.netrc for older pips) and then sent to the feed's index; the wheelhouse's files hashed
against its manifest; and pip resolving the requirement set with no index at all.

The offline check is `pip download --no-index -r <set> -d <tmp>`, not `pip install --dry-run`:
--dry-run exists only from pip 22.2 (Debian 11 has 20.3), and `pip install` into the system
Python is refused on Debian 12 and later (PEP 668) even for a dry run. `pip download` resolves
the same set with the same find-links from pip.conf, for this interpreter's tags, checks every
hash, and touches no environment.

A host without a system pip (as Debian's and Ubuntu's cloud images come) is asked through the
pip of a throwaway venv (the pip its users' venvs get); a host with neither pip nor a venv
module but uv is asked through uv (its uv.toml, the helper, and `uv pip install --dry-run
--offline`); the report says which one answered.

Input: one JSON argument (no secret in it). Output: JSON on stdout with "facts", "problems"
(each says what to fix) and "warnings". The token is held in memory only, never printed.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import json
import netrc
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

HELPER = "/usr/local/lib/pipfeed/pipfeed-keyring"
PIP_CONF = "/etc/pip.conf"


def run(argv, timeout=120, env=None):
    """(exit status, stdout, stderr); a missing program or a timeout is a failed run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout, done.stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        return 127, "", str(error)


def tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def os_release() -> str:
    fields = {}
    try:
        with open("/etc/os-release") as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    name = fields.get("NAME", "unknown OS").split(" GNU/")[0]
    version = fields.get("VERSION_ID", "")
    try:
        with open("/etc/debian_version") as handle:
            version = handle.read().strip() or version
    except OSError:
        pass
    return f"{name} {version}".strip()


def pip_settings(python: str) -> tuple[list, dict, str]:
    """The files pip reads (that exist) and its effective settings, from pip itself."""
    rc, out, err = run([python, "-m", "pip", "config", "debug", "--disable-pip-version-check"])
    files = []
    for line in out.splitlines():
        line = line.strip()
        if line.endswith(", exists: True"):
            files.append(line[: -len(", exists: True")])
    rc2, out2, err2 = run([python, "-m", "pip", "config", "list", "--disable-pip-version-check"])
    settings = {}
    for line in out2.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        settings[key.strip()] = str(value)
    error = "" if rc == 0 and rc2 == 0 else tail(err or err2)
    return files, settings, error


def setting(settings: dict, key: str) -> list:
    """A pip setting's values, from any section that applies to `pip install`."""
    values = []
    for section in ("global", "install", "download"):
        raw = settings.get(f"{section}.{key}")
        if raw:
            values += raw.split()
    return values


def plain(url: str) -> str:
    """The URL without user info, for comparing what pip.conf holds with a feed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path, "", "")).rstrip("/")


class SameHostRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only on the feed's own scheme and host: the token goes nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def ask(url: str, timeout: float, cafile, auth=None, method: str = "GET") -> tuple[int, str]:
    """(HTTP status, "") or (0, why there was no answer)."""
    request = urllib.request.Request(url, method=method,
                                     headers={"User-Agent": "pipfeed-verify"})
    if auth:
        pair = f"{auth[0]}:{auth[1]}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    context = ssl.create_default_context(cafile=cafile or None)
    opener = urllib.request.build_opener(SameHostRedirect(),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as error:
        return error.code, ""
    except Exception as error:  # noqa: BLE001 - any failure to connect is the answer
        reason = getattr(error, "reason", None) or error
        return 0, str(reason) or type(error).__name__


def credential(feed: dict, pip_version: tuple, uses_keyring: bool) -> tuple:
    """(username, token, how) as this host's pip would get them; token None when none."""
    username = feed.get("username") or "pipfeed"
    if uses_keyring and pip_version >= (23, 1):
        keyring = shutil.which("keyring", path="/usr/local/bin:/usr/bin:/bin")
        if not keyring:
            return username, None, "no keyring program on PATH"
        rc, out, err = run([keyring, "get", feed["url"], username], timeout=30)
        if rc != 0 or not out.strip():
            return username, None, f"keyring answered nothing (exit {rc}: {tail(err, 1)})"
        return username, out.strip(), ("keyring (credential helper, the VM's managed identity)"
                                       if feed.get("identity") else "keyring (credential helper)")
    host = urlsplit(feed["url"]).hostname or ""
    try:
        entries = netrc.netrc(os.environ.get("NETRC") or os.path.expanduser("~/.netrc"))
    except (OSError, netrc.NetrcParseError) as error:
        return username, None, f"no usable ~/.netrc ({error.__class__.__name__})"
    for machine in (f"{username}@{host}", host):
        found = entries.authenticators(machine)
        if found:
            return found[0] or username, found[2], "~/.netrc"
    return username, None, f"~/.netrc has no entry for {host}"


def check_feeds(spec: dict, pip_version: tuple, settings: dict, report: dict) -> None:
    cafile = (setting(settings, "cert") or [""])[0]
    uses_keyring = "subprocess" in setting(settings, "keyring-provider")
    results = []
    for feed in spec["feeds"]:
        entry = {"name": feed["name"], "status": 0}
        auth = None
        if spec["helper"]:
            username, token, how = credential(feed, pip_version, uses_keyring)
            entry["credential"] = how
            if token is None:
                report["problems"].append(
                    f"feed {feed['name']}: pip gets no token for {feed['url']} ({how}). Run "
                    "site.yml (tags pipfeed_credential_helper, pipfeed_config) to install the helper "
                    "and wire pip to it.")
                entry["status"] = -1
                results.append(entry)
                continue
            auth = (username, token)
        status, why = ask(feed["url"], spec["feed_timeout"], cafile, auth)
        del auth
        entry["status"] = status
        if status == 200:
            pass
        elif status in (401, 403) and feed.get("identity"):
            report["problems"].append(
                f"feed {feed['name']}: the token of the VM's managed identity was "
                f"{'refused (401)' if status == 401 else 'not allowed to read the feed (403)'}. "
                "Add the identity's service principal to the Azure DevOps organization "
                "(Organization settings, Users) and give it Reader (Feed Reader) on the feed "
                "(Artifacts, feed settings, Permissions); nothing to rotate on the host.")
        elif status == 401:
            report["problems"].append(
                f"feed {feed['name']}: the token was refused (401). Put a valid personal access "
                f"token in {feed['token_source']}, then run playbooks/rotate_token.yml.")
        elif status == 403:
            report["problems"].append(
                f"feed {feed['name']}: the token may not read the feed (403). Give the token "
                f"in {feed['token_source']} the scope Packaging (Read) for this feed, then run "
                "playbooks/rotate_token.yml.")
        elif status == 0:
            report["problems"].append(
                f"feed {feed['name']}: {feed['url']} does not answer ({why}). Check the feed, "
                "DNS, proxy and firewall from this host.")
        else:
            report["problems"].append(
                f"feed {feed['name']}: {feed['url']} answered HTTP {status}. Check the feed URL "
                "in pipfeed_feeds.")
        results.append(entry)
    report["facts"]["feeds"] = results


def check_config(spec: dict, files: list, settings: dict, report: dict) -> None:
    report["facts"]["pipfeed_config_files"] = files
    index = setting(settings, "index-url")
    extra = setting(settings, "extra-index-url")
    report["facts"]["pip_index"] = {"index-url": index, "extra-index-url": extra,
                                    "find-links": setting(settings, "find-links"),
                                    "no-index": setting(settings, "no-index")}
    fix = (" Run site.yml (tag pipfeed_config); if it already ran, another file or PIP_* "
           f"variable overrides it (pip reads: {', '.join(files) or 'no file'}).")
    if PIP_CONF not in files:
        report["problems"].append(f"pip does not read {PIP_CONF}." + fix)
        return
    mode, feeds = spec["mode"], [plain(f["url"]) for f in spec["feeds"]]
    if mode == "primary" and feeds and [plain(u) for u in index] != feeds[:1]:
        report["problems"].append(
            f"pip's index-url is {index or 'PyPI (unset)'}, not the feed {spec['feeds'][0]['url']}"
            " (mode primary)." + fix)
    if mode == "extra" and feeds and not set(feeds) <= {plain(u) for u in extra}:
        report["problems"].append(
            f"pip's extra-index-url is {extra or 'unset'}; it lacks the feeds (mode extra)." + fix)
    if mode == "offline" and setting(settings, "no-index")[:1] not in (["true"], ["True"], ["1"]):
        report["problems"].append("pip still has an index, though mode is offline." + fix)
    if spec["wheelhouse"] and spec["wheelhouse_path"] not in setting(settings, "find-links"):
        report["problems"].append(
            f"pip's find-links does not point at the wheelhouse {spec['wheelhouse_path']}." + fix)


def check_pypi(spec: dict, settings: dict, report: dict) -> None:
    started = time.monotonic()
    status, why = ask(spec["pypi_url"], spec["pypi_timeout"],
                      (setting(settings, "cert") or [""])[0], method="HEAD")
    took = time.monotonic() - started
    reachable = status > 0
    report["facts"]["pypi"] = {"reachable": reachable, "status": status,
                               "seconds": round(took, 1), "why": why}
    if not reachable and spec["mode"] == "extra":
        report["warnings"].append(
            f"PyPI ({spec['pypi_url']}) does not answer ({why}) and pip is in mode extra: every "
            "install asks PyPI first and waits for its timeout. Set pipfeed_mode: primary for "
            "this host's group.")


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_wheelhouse(spec: dict, report: dict) -> bool:
    path = spec["wheelhouse_path"]
    fix = " Run site.yml (tag pipfeed_wheelhouse): it sends what is missing and checks every hash."
    try:
        with open(os.path.join(path, "manifest.json")) as handle:
            files = json.load(handle)["files"]
    except (OSError, ValueError, KeyError) as error:
        report["facts"]["wheelhouse"] = {"files": 0, "bad": []}
        report["problems"].append(
            f"the wheelhouse {path} has no readable manifest.json ({error.__class__.__name__})."
            + fix)
        return False
    bad = []
    for name, expected in sorted(files.items()):
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            bad.append(f"{name} (missing)")
        elif sha256(file_path) != expected.get("sha256"):
            bad.append(f"{name} (wrong sha256)")
    report["facts"]["wheelhouse"] = {"files": len(files), "bad": bad}
    if bad:
        report["problems"].append(
            f"the wheelhouse {path} does not match its manifest: {'; '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "") + "." + fix)
    return True


def check_offline(spec: dict, python: str, report: dict) -> None:
    requirements = spec["requirements"] or os.path.join(spec["wheelhouse_path"],
                                                        "requirements.txt")
    if not os.path.isfile(requirements):
        report["facts"]["offline"] = "no requirement set"
        report["problems"].append(
            f"the requirement set {requirements} is missing. Run site.yml (tag pipfeed_wheelhouse), "
            "or set pipfeed_verify_requirements to a file on the host.")
        return
    with tempfile.TemporaryDirectory(prefix="pipfeed-verify-") as scratch:
        rc, out, err = run([python, "-m", "pip", "download", "--no-index", "--quiet",
                            "--disable-pip-version-check", "--progress-bar", "off",
                            "--dest", scratch, "--requirement", requirements],
                           timeout=spec["offline_timeout"])
        count = len(os.listdir(scratch))
    report["facts"]["offline"] = f"ok ({count} files)" if rc == 0 else "failed"
    if rc != 0:
        report["problems"].append(
            f"the requirement set {requirements} does not install with no index "
            f"(pip download --no-index: {tail(err or out)}). Run site.yml (tag pipfeed_wheelhouse).")


def tool_version(argv: list) -> str:
    rc, out, err = run(argv, timeout=30)
    return out.split("(")[0].strip() if rc == 0 else ""


def throwaway_venv(python: str, scratch: str):
    """A venv's python made with the host's Python (its pip from ensurepip: the pip the host's
    venvs get), or None where the venv module is missing."""
    rc, out, err = run([python, "-m", "venv", os.path.join(scratch, "venv")], timeout=300)
    return os.path.join(scratch, "venv", "bin", "python") if rc == 0 else None


def check_uv(spec: dict, uv: str, python: str, report: dict) -> None:
    """A host with uv but no pip: uv.toml as uv reads it, the feeds through the credential
    helper (uv's keyring-provider), and the offline set resolved by uv with no index."""
    facts = report["facts"]
    facts["pip_used"] = "uv (no pip on the host)"
    try:
        import tomllib
        with open("/etc/uv/uv.toml", "rb") as handle:
            settings = tomllib.load(handle)
    except ImportError:
        settings = None
    except (OSError, ValueError) as error:
        report["problems"].append(f"uv cannot read /etc/uv/uv.toml ({error}). Run site.yml "
                                  "(tag pipfeed_config).")
        return
    if settings is not None:
        urls = [plain(index.get("url", "")) for index in settings.get("index", [])]
        missing = [f["name"] for f in spec["feeds"] if plain(f["url"]) not in urls]
        if spec["mode"] != "offline" and missing:
            report["problems"].append(
                f"/etc/uv/uv.toml has no index for {', '.join(missing)}. Run site.yml (tag "
                "pipfeed_config).")
        uses_keyring = settings.get("keyring-provider") == "subprocess"
    else:
        uses_keyring = True
    if spec["mode"] != "offline":
        check_feeds(spec, (99,), {"global.keyring-provider": "subprocess" if uses_keyring
                                  else ""}, report)
    if spec["wheelhouse"] and check_wheelhouse(spec, report):
        requirements = spec["requirements"] or os.path.join(spec["wheelhouse_path"],
                                                            "requirements.txt")
        with tempfile.TemporaryDirectory(prefix="pipfeed-verify-") as scratch:
            venv = os.path.join(scratch, "venv")
            rc, out, err = run([uv, "venv", "--quiet", "--offline", "--python", python, venv])
            if rc == 0:
                rc, out, err = run([uv, "pip", "install", "--dry-run", "--offline", "--no-index",
                                    "--find-links", spec["wheelhouse_path"], "--python",
                                    os.path.join(venv, "bin", "python"), "-r", requirements],
                                   timeout=spec["offline_timeout"])
        report["facts"]["offline"] = "ok (uv)" if rc == 0 else "failed"
        if rc != 0:
            report["problems"].append(
                f"the requirement set {requirements} does not resolve with no index (uv pip "
                f"install --dry-run --offline: {tail(err or out)}). Run site.yml (tag "
                "pipfeed_wheelhouse).")


def main() -> int:
    spec = json.loads(sys.argv[1])
    python = spec["python"]
    report = {"facts": {}, "problems": [], "warnings": []}
    facts = report["facts"]
    facts["os"] = os_release()
    facts["python"] = tool_version([python, "--version"]).replace("Python ", "") or "missing"
    uv = shutil.which("uv", path="/usr/local/bin:/usr/bin:/bin:/opt/pipfeed/bin")
    facts["uv"] = tool_version([uv, "--version"]).replace("uv ", "") if uv else "not installed"
    with tempfile.TemporaryDirectory(prefix="pipfeed-verify-") as scratch:
        pip_python = python
        pip = tool_version([python, "-m", "pip", "--version", "--disable-pip-version-check"])
        facts["pip_used"] = "the system's pip"
        if not pip:
            # No system pip (cloud images): the pip a venv of this Python gets answers, as
            # the host's users would install.
            venv_python = throwaway_venv(python, scratch)
            if venv_python:
                pip_python = venv_python
                pip = tool_version([pip_python, "-m", "pip", "--version",
                                    "--disable-pip-version-check"])
                facts["pip_used"] = "the pip of a throwaway venv (ensurepip)"
        facts["pip"] = pip.split(" from ")[0].replace("pip ", "") if pip else "missing"
        if not pip:
            if uv:
                check_uv(spec, uv, python, report)
            else:
                facts["pip_used"] = "none"
                report["problems"].append(
                    f"no pip and no uv on this host can install from the feed: '{python} -m "
                    "pip' does not run and there is no venv module. Install python3-venv (venvs "
                    "then get pip from python3-pip-whl) or python3-pip, or set "
                    "pipfeed_config_uv_install: true, then run site.yml.")
            print(json.dumps(report))
            return 0
        pip_version = version_tuple(facts["pip"])
        files, settings, error = pip_settings(pip_python)
        if error:
            report["problems"].append(f"pip cannot read its configuration ({error}). Fix "
                                      f"{PIP_CONF}, or run site.yml (tag pipfeed_config).")
        check_config(spec, files, settings, report)
        if spec["mode"] != "offline":
            check_feeds(spec, pip_version, settings, report)
        check_pypi(spec, settings, report)
        if spec["wheelhouse"]:
            if check_wheelhouse(spec, report):
                check_offline(spec, pip_python, report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fill a feed: resolve packages and their whole dependency closure for every target platform,
download the wheels from an upstream index, and upload to the feed what it does not hold yet.

Runs with the controller's Python (the one running Ansible). It needs the standard library,
``packaging`` (which ansible-core depends on) and, for uploading, twine.

Why not ``pip download <packages> --python-version X --platform ...`` and be done: pip picks
wheels for the target, but it evaluates the environment markers of dependencies
(``typing-extensions; python_version < "3.11"``) for the Python that runs it, so a closure
resolved on a 3.11 controller misses what a 3.9 host needs. Here pip only downloads, one
dependency level at a time with ``--no-deps`` (it still picks each project's newest version
whose wheel and Requires-Python fit the target); the dependencies are read from each wheel's
own metadata and their markers evaluated for the target, as the target's pip would.

The platform notion (Python, ABI, architecture, glibc; key ``cp311-glibc2.36-x86_64``) and the
wheel tag rules are the wheelhouse's (wheelhouse_build in this package): one definition for
both.

Commands, run by the action pipfeed.feed.publish in the controller's Ansible process (a spec
in, a result out; ``run`` the error function's message, with the token scrubbed):
``check``  the inputs: requirement lines, the requirement file, the platforms (normalised and
           returned).
``run``    resolve, download, read the feed's index, upload (not in dry run), report per file.
           The feed's token is an argument of its own, never in the spec; twine gets it
           through its environment (TWINE_PASSWORD), never on a command line.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from ansible_collections.pipfeed.feed.plugins.plugin_utils import wheelhouse_build as wheelhouse
from ansible_collections.pipfeed.feed.plugins.plugin_utils.wheel_choice import parse_simple_page

# Settings a controller's environment may carry that must not steer this run: the role says
# which index, which CA and which credentials.
INHERITED = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "NETRC")
MAX_ROUNDS = 30
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PublishError(Exception):
    pass


# ----- inputs --------------------------------------------------------------------------------
def normalize_platform(item, where: str) -> dict:
    """A platform given by hand, completed the way the wheelhouse probe reports one."""
    if not isinstance(item, dict):
        raise PublishError(f"{where} must be a mapping such as "
                           "{python: '3.11', arch: x86_64, glibc: '2.36'}")
    python = item.get("python")
    if isinstance(python, float):
        raise PublishError(f"{where}.python is the number {python}; quote it (python: "
                           f"'{python}'), or YAML reads 3.10 as 3.1")
    python = str(python or "")
    glibc = str(item.get("glibc") or "")
    arch = str(item.get("arch") or "x86_64")
    if not re.fullmatch(r"3\.[0-9]{1,2}", python):
        raise PublishError(f"{where}.python is '{python}'; give the target's Python version "
                           "as a quoted string, for example '3.11'")
    if not re.fullmatch(r"2\.[0-9]{1,3}", glibc):
        raise PublishError(f"{where}.glibc is '{glibc}'; give the target's glibc version "
                           "(ldd --version; Debian 11: '2.31', 12: '2.36', 13: '2.41')")
    if not re.fullmatch(r"[a-z0-9_]+", arch):
        raise PublishError(f"{where}.arch is '{arch}'; give a machine name such as x86_64 "
                           "or aarch64 (uname -m)")
    abi = str(item.get("abi") or "cp" + python.replace(".", ""))
    if not re.fullmatch(r"cp3[0-9]{1,2}t?", abi):
        raise PublishError(f"{where}.abi is '{abi}'; CPython ABIs look like cp311")
    return {"key": f"{abi}-glibc{glibc}-{arch}", "python": python, "implementation": "cpython",
            "abi": abi, "arch": arch, "glibc": glibc}


def check_platforms(spec: dict) -> list[dict]:
    given = spec.get("platforms_given") or []
    if given:
        found = [normalize_platform(item, f"pipfeed_publish_platforms[{index}]")
                 for index, item in enumerate(given)]
    else:
        found = list(spec.get("platforms_probed") or [])
        for platform in found:
            if platform.get("implementation") != "cpython" or not platform.get("glibc"):
                raise PublishError(
                    f"hosts of platform {platform.get('key')} are not CPython on glibc; the "
                    "feed gets manylinux wheels for CPython only. Leave those hosts out "
                    "(pipfeed_publish_hosts, --limit) or list pipfeed_publish_platforms")
    if not found:
        raise PublishError("no target platform: list pipfeed_publish_platforms, or run the "
                           "playbook against the hosts of the fleet so that it reads theirs")
    unique = {}
    for platform in found:
        unique.setdefault(platform["key"], platform)
    return sorted(unique.values(), key=lambda p: (
        tuple(int(part) for part in p["python"].split(".")), p["key"]))


def root_requirements(spec: dict) -> list[tuple[Requirement, str]]:
    """(requirement, where it was given) for every package asked for."""
    roots = []
    for index, line in enumerate(spec.get("packages") or []):
        where = f"pipfeed_publish_packages[{index}] '{line}'"
        if not isinstance(line, str) or not line.strip():
            raise PublishError(f"{where} is not a requirement string (name, or name>=1.2)")
        if line.strip().startswith("-"):
            raise PublishError(f"{where} is a pip option; give requirements only (the role "
                               "sets the index itself)")
        try:
            requirement = Requirement(line.strip())
        except InvalidRequirement as error:
            raise PublishError(f"{where} is not a requirement ({error})")
        roots.append((requirement, where))
    if spec.get("requirements"):
        path = spec["requirements"]
        if not Path(path).is_file():
            raise PublishError(f"pipfeed_publish_requirements is {path}, which is not a file "
                               "on the controller")
        try:
            entries = wheelhouse.parse_file(path, "pipfeed_publish_requirements")
        except wheelhouse.BuildError as error:
            raise PublishError(str(error))
        roots += [(entry["requirement"], entry["where"]) for entry in entries]
    for requirement, where in roots:
        if requirement.url:
            raise PublishError(f"{where} is a direct URL; name a project of the upstream "
                               "index instead")
    if not roots:
        raise PublishError("nothing to publish: list packages in pipfeed_publish_packages, or "
                           "name a requirement file in pipfeed_publish_requirements")
    return roots


def command_check(spec: dict) -> dict:
    root_requirements(spec)
    return {"platforms": check_platforms(spec)}


# ----- resolution per platform ---------------------------------------------------------------
@dataclass
class Chosen:
    name: str
    version: str
    path: Path
    dependencies: list = field(default_factory=list)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of the controller's pip and twine: none of the machine's pip or twine
    settings (/etc/pip.conf, PIP_*, TWINE_*, ~/.netrc through NETRC), none of its CA overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "TWINE_")) and k not in INHERITED}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra)
    return env


def tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Resolver:
    """The dependency closure of the root requirements for one target platform."""

    def __init__(self, spec: dict, platform: dict, roots: list[tuple[Requirement, str]]):
        self.spec = spec
        self.platform = platform
        self.environment = wheelhouse.marker_environment(platform)
        self.roots = [(r, where) for r, where in roots
                      if r.marker is None or r.marker.evaluate(self.environment)]
        self.cache = Path(os.path.expanduser(spec["cache_dir"]))
        self.files = self.cache / "files"
        self.chosen: dict[str, Chosen] = {}

    def closure(self):
        """Walk from the roots through the chosen versions' dependencies: each project's
        combined specifier and extras, who asked for it, and its depth."""
        specifiers: dict[str, SpecifierSet] = {}
        extras: dict[str, set[str]] = {}
        asked_by: dict[str, set[str]] = {}
        depth: dict[str, int] = {}
        expanded: set[tuple[str, str]] = set()
        pending = [(requirement, where, 0) for requirement, where in self.roots]
        while pending:
            requirement, parent, level = pending.pop(0)
            name = canonicalize_name(requirement.name)
            specifiers[name] = specifiers.get(name, SpecifierSet()) & requirement.specifier
            extras.setdefault(name, set()).update(requirement.extras)
            asked_by.setdefault(name, set()).add(f"{parent} ({requirement})")
            depth[name] = max(depth.get(name, 0), level)
            chosen = self.chosen.get(name)
            if chosen is None or not specifiers[name].contains(chosen.version, True):
                continue
            for extra in [""] + sorted(extras[name]):
                if (name, extra) in expanded:
                    continue
                expanded.add((name, extra))
                for dependency in chosen.dependencies:
                    if dependency.marker is None or dependency.marker.evaluate(
                            dict(self.environment, extra=extra)):
                        pending.append((dependency, f"{chosen.name} {chosen.version}",
                                        level + 1))
        return specifiers, extras, asked_by, depth

    def resolve(self) -> dict:
        for _ in range(MAX_ROUNDS):
            specifiers, extras, asked_by, depth = self.closure()
            needed = sorted(name for name in specifiers
                            if name not in self.chosen
                            or not specifiers[name].contains(self.chosen[name].version, True))
            if not needed:
                return {name: {"name": self.chosen[name].name,
                               "version": self.chosen[name].version,
                               "file": self.chosen[name].path.name,
                               "path": str(self.chosen[name].path), "depth": depth[name]}
                        for name in sorted(specifiers)}
            self.download({name: specifiers[name] for name in needed}, asked_by)
        raise PublishError(f"the dependency closure for {self.platform['key']} did not settle "
                           f"in {MAX_ROUNDS} rounds; pin the packages more tightly")

    def download(self, wanted: dict[str, SpecifierSet], asked_by: dict[str, set[str]]) -> None:
        """One pip call for a whole dependency level; pip picks each project's best wheel for
        the target. A fresh directory per call shows exactly what it picked."""
        (self.cache / "tmp").mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=self.cache / "tmp"))
        try:
            requirements = work / "requirements.txt"
            requirements.write_text("".join(f"{name}{specifier}\n"
                                            for name, specifier in sorted(wanted.items())))
            dest = work / "dest"
            result = subprocess.run(self.pip_command(requirements, dest), capture_output=True,
                                    text=True, env=clean_env(),
                                    timeout=self.spec.get("timeout", 1800), check=False)
            if result.returncode != 0:
                who = "; ".join(f"{name} wanted by {', '.join(sorted(asked_by[name]))}"
                                for name in sorted(wanted))
                raise PublishError(
                    f"pip could not download for {self.platform['key']} (Python "
                    f"{self.platform['python']}) from {self.spec['upstream_url']}:\n"
                    f"{tail(result.stderr or result.stdout)}\n({who}). A project with no "
                    "wheel for this platform (sdist only), or requirements that exclude each "
                    "other, cannot be published for it: pin another version, or leave the "
                    "platform out (pipfeed_publish_platforms)")
            for path in sorted(dest.glob("*")):
                if not path.name.endswith(".whl"):
                    continue
                name, version, _, _ = parse_wheel_filename(path.name)
                target = self.files / path.name
                os.replace(path, target)
                self.chosen[name] = Chosen(name, str(version), target,
                                           wheelhouse.wheel_dependencies(target))
            missing = sorted(name for name in wanted if name not in self.chosen
                             or not wanted[name].contains(self.chosen[name].version, True))
            if missing:
                raise PublishError(f"pip reported success but brought no wheel for "
                                   f"{', '.join(missing)} ({self.platform['key']})")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def pip_command(self, requirements: Path, dest: Path) -> list[str]:
        platform = self.platform
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", str(dest),
                   "--index-url", self.spec["upstream_url"],
                   "--cache-dir", str(self.cache / "pip"),
                   "--python-version", platform["python"], "--implementation", "cp",
                   "--abi", platform["abi"], "--abi", "abi3", "--abi", "none",
                   "--progress-bar", "off", "--requirement", str(requirements)]
        for tag in wheelhouse.manylinux_platforms(platform["glibc"], platform["arch"]):
            command += ["--platform", tag]
        if self.spec.get("upstream_cert"):
            command += ["--cert", self.spec["upstream_cert"]]
        return command


def resolve_all(spec: dict, platforms: list[dict], roots) -> dict[str, dict]:
    """Every platform's closure, resolved side by side."""
    with ThreadPoolExecutor(max_workers=min(4, len(platforms))) as pool:
        futures = {p["key"]: pool.submit(Resolver(spec, p, roots).resolve) for p in platforms}
        return {key: future.result() for key, future in futures.items()}


def merge(closures: dict[str, dict]) -> dict[str, dict]:
    """One entry per file: a pure-Python wheel serves several platforms under one name."""
    files: dict[str, dict] = {}
    for key, closure in closures.items():
        for name, item in closure.items():
            entry = files.setdefault(item["file"], {
                "file": item["file"], "project": name, "version": item["version"],
                "path": item["path"], "platforms": [], "depth": 0})
            entry["platforms"].append(key)
            entry["depth"] = max(entry["depth"], item["depth"])
    return files


# ----- the feed ------------------------------------------------------------------------------
class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the feed's own origin: urllib would otherwise carry the
    Authorization header to whatever host a redirect names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urlsplit(req.full_url), urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise PublishError(f"the feed redirected {req.full_url} to another origin "
                               f"({new.scheme}://{new.hostname}); the token is not sent there")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Feed:
    """The feed's simple index, read with the token, one page per project."""

    def __init__(self, spec: dict, token: str):
        self.url = spec["feed_url"].rstrip("/") + "/"
        self.name = spec.get("feed_name") or self.url
        self.source = spec.get("token_source") or "its token source"
        context = ssl.create_default_context(cafile=spec.get("cert") or None)
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  SameOriginRedirects())
        pair = f"{spec.get('username') or 'pipfeed'}:{token}".encode()
        self.authorization = "Basic " + base64.b64encode(pair).decode()
        self.timeout = float(spec.get("http_timeout", 60))

    def files(self, project: str) -> set[str]:
        """The file names the feed lists for a project; empty when it has none."""
        url = self.url + canonicalize_name(project) + "/"
        request = urllib.request.Request(url, headers={
            "Authorization": self.authorization, "Accept": "text/html",
            "User-Agent": "pipfeed-publish"})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                body = response.read().decode(response.headers.get_content_charset() or "utf-8",
                                              "replace")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return set()
            if error.code == 401:
                raise PublishError(
                    f"feed {self.name} answered 401 to {url}: it does not take the token from "
                    f"{self.source}. Set it to a valid personal access token (Azure "
                    "Artifacts: scope Packaging (Read & write))")
            if error.code == 403:
                raise PublishError(
                    f"feed {self.name} answered 403 to {url}: the token from {self.source} may "
                    "not read it. Give it the scope Packaging (Read & write)")
            raise PublishError(f"feed {self.name} answered {error.code} to {url}")
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PublishError(f"feed {self.name} did not answer at {url} ({reason}). Check "
                               "pipfeed_publish_index_url and pipfeed_publish_cert")
        return {item.filename for item in parse_simple_page(body, url)}


def read_feed(feed: Feed, projects: list[str]) -> dict[str, set[str]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(projects, pool.map(feed.files, projects)))


# ----- upload --------------------------------------------------------------------------------
def twine_upload(spec: dict, token: str, path: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "twine", "upload", "--non-interactive",
               "--disable-progress-bar", "--repository-url", spec["upload_url"], path]
    if spec.get("cert"):
        command[5:5] = ["--cert", spec["cert"]]
    # The token goes in the environment only; keyring is not asked (nothing to store, and a
    # desktop keyring would prompt).
    env = clean_env(TWINE_USERNAME=spec.get("username") or "pipfeed", TWINE_PASSWORD=token,
                    TWINE_NON_INTERACTIVE="1", NO_COLOR="1",
                    PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    return subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=spec.get("timeout", 1800), check=False)


def upload_reason(output: str) -> str:
    """What twine said went wrong, on one line, with a hint for the usual feed answers."""
    text = " ".join(ANSI.sub("", output).split())
    text = text.replace("Retry with the --verbose option for more details.", "")
    error = re.search(r"\bERROR\s+(.*)", text)
    reason = (error.group(1) if error else text[-300:]).strip()
    reason = reason or "twine failed without a message"
    hints = {" 403 ": "the token may not write to the feed: give it the scope Packaging "
                      "(Read & write)",
             " 401 ": "the feed does not take the token",
             " 409 ": "the feed holds a file of this name (or held one: Azure Artifacts keeps "
                      "deleted versions in its recycle bin and refuses them again)"}
    for code, hint in hints.items():
        if code in f" {reason} ":
            return f"{reason}: {hint}"
    return reason


def scrub(text: str, token: str, username: str = "pipfeed") -> str:
    """The text without the token, plain or inside an HTTP Basic header."""
    if not token:
        return text
    forms = {token, base64.b64encode(token.encode()).decode(),
             base64.b64encode(f"{username}:{token}".encode()).decode()}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "********")
    return text


def command_run(spec: dict, token: str) -> dict:
    if not token:
        raise PublishError("no token arrived for the feed")
    roots = root_requirements(spec)
    platforms = check_platforms(spec)
    feed = Feed(spec, token)
    # Ask the feed once before any download: a token it refuses stops the run at once.
    feed.files(canonicalize_name(roots[0][0].name))
    files = merge(resolve_all(spec, platforms, roots))
    on_feed = read_feed(feed, sorted({entry["project"] for entry in files.values()}))
    dry_run = bool(spec.get("dry_run"))
    report = []
    # Dependencies first: a run that stops half-way leaves no package whose dependencies are
    # missing from the feed.
    order = sorted(files.values(), key=lambda e: (-e["depth"], e["project"], e["file"]))
    for entry in order:
        item = {k: entry[k] for k in ("file", "project", "version", "platforms")}
        item["sha256"] = wheelhouse.sha256_file(Path(entry["path"]))
        if entry["file"] in on_feed[entry["project"]]:
            item.update(status="skipped", reason="already on the feed")
        elif dry_run:
            item.update(status="would upload", reason="dry run")
        else:
            result = twine_upload(spec, token, entry["path"])
            if result.returncode == 0:
                item.update(status="uploaded", reason="")
            elif entry["file"] in feed.files(entry["project"]):
                item.update(status="skipped", reason="appeared on the feed during the run")
            else:
                item.update(status="failed",
                            reason=scrub(upload_reason(result.stderr + "\n" + result.stdout),
                                         token, spec.get("username") or "pipfeed"))
        item["line"] = (f"{item['status']}: {item['file']}"
                        + (f" ({item['reason']})" if item["status"] != "uploaded" else "")
                        + f" [{', '.join(item['platforms'])}]")
        report.append(item)
    counts = {status: sum(1 for item in report if item["status"] == status)
              for status in ("uploaded", "skipped", "failed", "would upload")}
    result = {"dry_run": dry_run, "platforms": [p["key"] for p in platforms],
              "feed": spec.get("feed_name", ""), "files": report, "counts": counts,
              "summary": summary(spec.get("feed_name", ""), counts, len(report), dry_run)}
    if spec.get("report_file"):
        write_atomic(Path(os.path.expanduser(spec["report_file"])),
                     json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def summary(feed: str, counts: dict, total: int, dry_run: bool) -> str:
    """One sentence for the end of the run; a run with nothing to do says so."""
    if dry_run:
        return (f"Dry run: {counts['would upload']} of {total} files would be uploaded to feed "
                f"{feed}; {counts['skipped']} are already on it. Nothing was uploaded.")
    if counts["uploaded"] == 0 and counts["failed"] == 0:
        return f"Nothing to upload: feed {feed} already has all {total} files."
    return (f"{counts['uploaded']} uploaded, {counts['skipped']} skipped (already on the "
            f"feed), {counts['failed']} failed, of {total} files for feed {feed}.")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


ERRORS = (PublishError, wheelhouse.BuildError, OSError, ValueError, subprocess.TimeoutExpired)

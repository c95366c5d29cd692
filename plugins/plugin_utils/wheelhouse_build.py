# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller side of the wheelhouse: one build per target platform, cached.

Runs with the controller's Python (the one running Ansible), and needs only the standard
library and ``packaging``, which ansible-core itself depends on.

Why not just ``pip download -r requirements.txt --python-version ...``: pip evaluates
environment markers (``; python_version < "3.10"``) for the Python that runs it, not for
``--python-version``, and it does so for dependencies too. So the requirement set is resolved
here, for the target: every requirement must be pinned (directly or by the constraints file),
and the dependency closure is checked from each wheel's own metadata, evaluated for the target;
a dependency that the constraints pin is added, one that nothing pins fails the build with its
name.

Nor does the controller's pip choose the files: pips of different releases pick different
wheels of one release for one target (cryptography's ``manylinux_2_28`` wheel or its
``manylinux2014`` one), so two controllers built two wheelhouses from one lock and every
switch of controller re-sent every host's wheels. Each pin's file is chosen here, from the
index's own list of files (its PEP 503 page) and the target's tag priority, by the rule of
``wheel_choice`` (in this package), then downloaded with urllib and checked against the page's
``#sha256=`` (and the lock's ``--hash``, when it lists any). The token goes as HTTP Basic
authentication to the index's own origin only (scheme, host and port of the index URL), never
with a redirect to another one (Azure Artifacts answers each download with a 303 to a blob
host). The manifest and ``requirements.txt`` hold nothing of the controller (no path, no time,
no index URL), so every controller writes them byte for byte alike.

Commands (a spec in, a result out; a BuildError's message says what is wrong), run by the
action pipfeed.feed.wheelhouse_build in the controller's Ansible process:
``check``   the requirement set for a list of platforms: pinned, parseable; and the plan.
``plan``    which platforms already have a complete, verified build in the cache.
``build``   download what is missing. A release with no wheel for the platform comes as its
            sdist; the result for that platform is then "pending": one archive with the sdists
            and the wheels of their build dependencies (fetched by pip, which reads the token
            from the netrc file in $NETRC), for a host of the platform to build
            (``wheelhouse_host.py build``). The next ``build`` call, told which host built what
            (``built``), takes the wheels it fetched back into the cache and finishes the set.
            A built wheel stays in the cache, so a rebuild never builds it again.

Each result carries an ``answer``: the lock's identity for the platform and its pins, from
which the filter ``pipfeed.feed.wheelhouse_delta`` decides whether a host's wheelhouse (built
by any controller, perhaps with other files) already answers the same lock, and then sends it
nothing.

What a host lacks goes to it from the cache's files themselves, through the action
pipfeed.feed.host_script, with no archive made here.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import shutil
import tarfile
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.parser import HeaderParser
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ansible_collections.pipfeed.feed.plugins.plugin_utils.wheel_choice import (
    ChoiceError, IndexFile, choose_sdist, choose_wheel, manylinux_platforms,
    parse_simple_page, parse_wheel_name, same_version, tag_ranks, target_tags)

MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"
# Which cached wheels a host built from an sdist: wheel file -> sdist, its sha256, the host.
BUILT = "built.json"
SDIST_SUFFIXES = (".tar.gz", ".zip")
# The manifest's format. 2: files chosen by wheel_choice's rule, the lock's identity ("lock")
# in the manifest. It is part of the cache key too, so that a set an older release of the
# collection built (with the controller's pip choosing the files) is built again.
FORMAT = 2
DEFAULT_HOST_PATH = "/var/lib/pipfeed/wheelhouse"
# What pip assumes for an sdist without a [build-system] table (PEP 518), plus wheel, which
# setuptools before 70.1 asks for and older pips add on their own.
DEFAULT_BUILD_REQUIRES = ["setuptools>=40.8.0"]
# How a machine points TLS clients at its own CA bundle; the controller's pip must not inherit
# them (nor any PIP_* setting nor /etc/pip.conf): the role says which index and which CA.
CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
HASH_OPTION = re.compile(r"\s--hash[=\s]+(\S+)")
# A file name from an index that may become a path in the cache: no directory part, no dot
# first (a page could name "..").
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!~-]*$")
# HTTP answers worth a second try (a busy or restarting index), and how long to wait before it.
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRY_WAITS = (1, 3)


class BuildError(Exception):
    pass


# ----- the target platform -------------------------------------------------------------------
# manylinux_platforms and target_tags (the target's tag priority) are wheel_choice's, imported
# above; the publish role reaches them through this module, which defines the platform notion.


def marker_environment(platform: dict) -> dict[str, str]:
    """PEP 508 environment of the target, for evaluating markers as its own pip would."""
    return {
        "implementation_name": "cpython", "implementation_version": platform["python"] + ".0",
        "os_name": "posix", "platform_machine": platform["arch"],
        "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": "Linux", "platform_version": "", "python_full_version":
        platform["python"] + ".0", "python_version": platform["python"], "sys_platform": "linux",
    }


# ----- the requirement set -------------------------------------------------------------------
def logical_lines(text: str):
    """(line number, line) with comments removed and backslash continuations joined."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield start, line


def parse_file(path: str, label: str) -> list[dict]:
    """Every requirement of a file, with the hashes it lists and where it is."""
    entries = []
    text = Path(path).read_text()
    for number, line in logical_lines(text):
        hashes = [value.split(":", 1)[-1] for value in HASH_OPTION.findall(" " + line)]
        spec = HASH_OPTION.sub(" ", " " + line).strip()
        if spec.startswith("-"):
            raise BuildError(
                f"{label} line {number}: '{line}' is a pip option; the file may hold "
                "requirements only (the role sets the index, find-links and hashes itself)")
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as error:
            raise BuildError(f"{label} line {number}: '{line}' is not a requirement ({error})")
        if requirement.url:
            raise BuildError(f"{label} line {number}: '{line}' is a direct URL; name a "
                             "release of the index instead (name==version)")
        entries.append({"requirement": requirement, "hashes": hashes,
                        "where": f"{label} line {number}: '{line}'"})
    return entries


def pinned_version(requirement: Requirement):
    specifiers = list(requirement.specifier)
    if (len(specifiers) == 1 and specifiers[0].operator == "=="
            and "*" not in specifiers[0].version):
        return specifiers[0].version
    return None


def resolve_set(requirements: str, constraints: str, platform: dict) -> dict[str, dict]:
    """The pins that apply to the target: {canonical name: {name, version, extras, hashes}}.

    A requirement is pinned by '==' on its own line or by the constraints file; markers are
    evaluated for the target.
    """
    environment = marker_environment(platform)
    pins: dict[str, dict] = {}
    constrained = constraint_pins(constraints, platform)
    for entry in parse_file(requirements, "pipfeed_wheelhouse_requirements"):
        requirement = entry["requirement"]
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        version = pinned_version(requirement)
        if version is None and name in constrained:
            version = constrained[name]["version"]
            if requirement.specifier and not requirement.specifier.contains(version, True):
                raise BuildError(f"{entry['where']} excludes {version}, which "
                                 "pipfeed_wheelhouse_constraints pins")
        if version is None:
            raise BuildError(
                f"{entry['where']} is not pinned. Pin it with '==' "
                f"({requirement.name}==<version>), or pin it in pipfeed_wheelhouse_constraints: a "
                "wheelhouse holds exact releases, so that an offline install gets the same ones")
        if name in pins and pins[name]["version"] != version:
            raise BuildError(f"{entry['where']} pins {requirement.name} to {version}, another "
                             f"line to {pins[name]['version']}, for Python {platform['python']}")
        hashes = entry["hashes"] or constrained.get(name, {}).get("hashes", [])
        pins[name] = {"name": requirement.name, "version": version,
                      "extras": sorted(requirement.extras), "hashes": hashes}
    return pins


def constraint_pins(constraints: str, platform: dict) -> dict[str, dict]:
    if not constraints:
        return {}
    environment = marker_environment(platform)
    pins = {}
    for entry in parse_file(constraints, "pipfeed_wheelhouse_constraints"):
        requirement = entry["requirement"]
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        version = pinned_version(requirement)
        if version is None:
            raise BuildError(f"{entry['where']} is not pinned with '=='")
        pins[canonicalize_name(requirement.name)] = {
            "name": requirement.name, "version": version, "extras": [],
            "hashes": entry["hashes"]}
    return pins


def wheel_dependencies(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist()
                        if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(archive.read(metadata).decode("utf-8", "replace"))
    return [Requirement(value) for value in headers.get_all("Requires-Dist") or []]


def missing_dependencies(chosen: dict[str, Path], pins: dict[str, dict],
                         platform: dict) -> list[tuple[str, Requirement]]:
    """(needed by, requirement) for every dependency of the set, for the target, that the set
    does not satisfy."""
    problems = []
    base = marker_environment(platform)
    for name, wheel in sorted(chosen.items()):
        extras = [""] + pins[name]["extras"]
        for requirement in wheel_dependencies(wheel):
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate(dict(base, extra=extra)) for extra in extras):
                continue
            dependency = canonicalize_name(requirement.name)
            pin = pins.get(dependency)
            if pin is None or not requirement.specifier.contains(pin["version"], True):
                problems.append((pins[name]["name"], requirement))
    return problems


# ----- the cache -----------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def platform_dir(spec: dict, platform: dict) -> Path:
    return Path(os.path.expanduser(spec["cache_dir"])) / platform["key"]


def set_key(spec: dict, platform: dict) -> str:
    """Where the controller caches a build: the two files' bytes, the target, the index and the
    path on the hosts, and the manifest's format (a set an older release built is built
    again). Only the controller sees it; hosts see the lock's identity (lock_id)."""
    material = [f"format {FORMAT}".encode(), Path(spec["requirements"]).read_bytes(),
                Path(spec["constraints"]).read_bytes() if spec.get("constraints") else b"",
                json.dumps(platform, sort_keys=True).encode(), spec["index_url"].encode(),
                spec.get("host_path", DEFAULT_HOST_PATH).encode()]
    return hashlib.sha256(b"\0".join(material)).hexdigest()[:16]


def lock_pins(spec: dict, platform: dict) -> tuple[dict, dict]:
    """The requirement set's pins for the target, and the constraints' pins (a lock file)."""
    return (resolve_set(spec["requirements"], spec.get("constraints", ""), platform),
            constraint_pins(spec.get("constraints", ""), platform))


def lock_id(spec: dict, platform: dict) -> str:
    """The identity of what a host of this platform must hold, from the inputs alone: the pins
    that apply to the target (name, version, extras, the lock's hashes), the constraints' pins,
    the platform and the path on the host (named in requirements.txt). Comments, the order of
    lines, the index URL and the controller do not enter it, so every controller of a team
    computes the same identity for the same lock; the manifest carries it to the host."""
    pins, constrained = lock_pins(spec, platform)
    material = {
        "format": FORMAT, "platform": platform,
        "path": spec.get("host_path", DEFAULT_HOST_PATH),
        "requirements": sorted([name, pin["version"], sorted(pin["extras"]), sorted(pin["hashes"])]
                               for name, pin in pins.items()),
        "constraints": sorted([name, pin["version"], sorted(pin["hashes"])]
                              for name, pin in constrained.items()),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cached_result(spec: dict, platform: dict):
    """The build for this key when its manifest exists and every file matches it; None when a
    file is missing (the build downloads it again). A file that is there but does not match its
    manifest stops the run: the cache was altered, and hiding that would hide the cause."""
    root = platform_dir(spec, platform)
    set_dir = root / "sets" / set_key(spec, platform)
    manifest_path = set_dir / MANIFEST
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    # Files whose size, inode and times are those recorded when they were last verified are
    # not hashed again (any write changes them); the others are.
    verified_path = set_dir / "verified.json"
    verified = read_json(verified_path, {})
    now = {}
    for name, expected in sorted(manifest["files"].items()):
        path = (set_dir if name == REQUIREMENTS else root / "wheels") / name
        if not path.exists():
            return None
        stat = path.stat()
        now[name] = [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
        if verified.get(name) == now[name]:
            continue
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            raise BuildError(
                f"{path} has sha256 {actual}, but the manifest {manifest_path} says "
                f"{expected['sha256']}. The cached file was altered or damaged; delete it (or "
                f"the whole cache directory {root}) and run again to download it afresh")
    if now != verified:
        write_atomic(verified_path, json.dumps(now, sort_keys=True))
    return result_for(spec, platform, root, set_dir, manifest)


def answer_for(spec: dict, platform: dict, manifest: dict) -> dict:
    """What a host's wheelhouse must be to answer this lock (the filter wheelhouse_delta reads
    it): the lock's identity, the platform, and per project of the set its pinned version and
    the hashes the lock lists for it (empty when it lists none)."""
    pins, constrained = lock_pins(spec, platform)
    wanted = {}
    for name in manifest["files"]:
        if name == REQUIREMENTS:
            continue
        project = parse_wheel_name(name).project
        pin = pins.get(project) or constrained.get(project) or {}
        wanted[project] = {"version": parse_wheel_name(name).version,
                           "hashes": sorted(pin.get("hashes") or [])}
    return {"format": FORMAT, "lock": manifest["lock"], "platform": platform, "pins": wanted}


def result_for(spec: dict, platform: dict, root: Path, set_dir: Path, manifest: dict,
               downloaded=()) -> dict:
    """What the role needs of a complete build: the files and where they are, what this call
    fetched (wheels, sdists and build dependencies) and had built, and the answer a host's
    wheelhouse is judged by."""
    files = {}
    for name, entry in manifest["files"].items():
        source = set_dir / name if name == REQUIREMENTS else root / "wheels" / name
        files[name] = dict(entry, src=str(source))
    manifest_path = set_dir / MANIFEST
    files[MANIFEST] = {"sha256": sha256_file(manifest_path),
                       "size": manifest_path.stat().st_size, "src": str(manifest_path)}
    return {"key": manifest["platform"]["key"], "dir": str(root), "files": files,
            "manifest_sha256": files[MANIFEST]["sha256"], "downloaded": list(downloaded),
            "built": sorted(n for n, e in manifest["files"].items() if e.get("built_from")),
            "answer": answer_for(spec, platform, manifest)}


# ----- the index -----------------------------------------------------------------------------
class _Redirects(urllib.request.HTTPRedirectHandler):
    """The token never follows a redirect to another origin. From one index page to another of
    the index's own origin it does (an index may redirect a name to its normalised form); a
    file download's redirect (Azure Artifacts: a 303 to a signed blob URL) goes without it."""

    def __init__(self, index: "Index"):
        super().__init__()
        self.index = index

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and getattr(req, "pipfeed_page", False):
            new.pipfeed_page = True
            if self.index.same_origin(newurl):
                self.index.authorize(new)
        return new


class Index:
    """The index's project pages and files, read by the controller with urllib, in its own
    process: one page per project and call (the platforms of a call share it), and only the
    files the rule chooses."""

    def __init__(self, spec: dict):
        self.url = spec["index_url"].rstrip("/") + "/"
        parts = urlsplit(self.url)
        self.origin = (parts.scheme, parts.hostname, parts.port)
        credentials = spec.get("credentials") or []
        self.authorization = ""
        if len(credentials) == 2 and credentials[1]:
            pair = f"{credentials[0] or 'pipfeed'}:{credentials[1]}".encode()
            self.authorization = "Basic " + base64.b64encode(pair).decode()
        context = ssl.create_default_context(cafile=spec.get("cert") or None)
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  _Redirects(self))
        self.timeout = float(spec.get("http_timeout", 60))
        self.pages: dict[str, list[IndexFile]] = {}

    def same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.hostname, parts.port) == self.origin

    def authorize(self, request: urllib.request.Request) -> None:
        # Unredirected: urllib copies a request's other headers into the request a redirect
        # makes, whatever its host.
        if self.authorization:
            request.add_unredirected_header("Authorization", self.authorization)

    def _open(self, url: str, page: bool):
        """The response to a GET, retried on a busy index or a broken connection."""
        request = urllib.request.Request(url, headers={
            "User-Agent": "pipfeed-wheelhouse", "Accept": "text/html" if page else "*/*"})
        request.pipfeed_page = page
        if self.same_origin(url):
            self.authorize(request)
        for attempt, wait in enumerate((*RETRY_WAITS, None)):
            try:
                return self.opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as error:
                error.close()
                if error.code not in RETRY_STATUS or wait is None:
                    raise self._http_problem(url, error.code, page) from None
            except (urllib.error.URLError, OSError) as error:
                if wait is None:
                    reason = getattr(error, "reason", error)
                    raise BuildError(f"{url} did not answer ({reason}, {attempt + 1} tries). "
                                     "Check pipfeed_wheelhouse_index_url and "
                                     "pipfeed_wheelhouse_controller_cert") from None
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _http_problem(self, url: str, code: int, page: bool) -> BuildError:
        if not page:
            # The file's own URL, or the blob host it was redirected to (its signed URL may
            # have expired: the next run asks again).
            return BuildError(f"downloading {url} failed: HTTP {code}")
        if code == 401:
            hint = ("the index does not take the token of the feed pipfeed_wheelhouse_index_feed "
                    "names (or none was sent): set a valid token in its token source")
        elif code == 403:
            hint = "the token may not read the index: give it the scope Packaging (Read)"
        elif code == 404:
            hint = ("the index has no such project: publish it to the feed "
                    "(playbooks/publish.yml), or fix the pin")
        else:
            hint = "the index failed; try again later, or ask its operator"
        return BuildError(f"{url} answered HTTP {code}: {hint}")

    def prefetch(self, projects: list[str]) -> None:
        """The pages of these projects, eight at a time (a remote index answers each after a
        round trip; a lock of hundreds of projects would wait for them one by one)."""
        wanted = sorted({canonicalize_name(p) for p in projects} - set(self.pages))
        if len(wanted) > 1:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self.files, wanted))

    def files(self, project: str) -> list[IndexFile]:
        """The files the index lists for a project (its PEP 503 page)."""
        name = canonicalize_name(project)
        if name not in self.pages:
            with self._open(self.url + name + "/", page=True) as response:
                charset = response.headers.get_content_charset() or "utf-8"
                text = response.read().decode(charset, "replace")
                self.pages[name] = parse_simple_page(text, response.geturl())
        return self.pages[name]

    def download(self, item: IndexFile, target: Path) -> str:
        """The file, streamed into target (through a temporary name of this process: two
        controller runs may share a cache); its sha256."""
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with self._open(item.url, page=False) as response, open(temporary, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, target)
        return digest.hexdigest()


def fetch(index: Index, item: IndexFile, directory: Path, pin: dict) -> tuple[Path, bool]:
    """The chosen file in the cache: (its path, whether it was downloaded now). Its sha256 must
    match the index page's fragment, and one of the lock's hashes when it lists any; a file
    with neither cannot be checked and is refused."""
    if not SAFE_NAME.match(item.filename):
        raise BuildError(f"{index.url} lists a file named {item.filename!r}, which is no plain "
                         "file name; it is not downloaded")
    if not item.sha256 and not pin["hashes"]:
        raise BuildError(
            f"{index.url} gives no sha256 for {item.filename} (no #sha256= in its link), and the "
            f"requirement set lists no --hash for {pin['name']}=={pin['version']}: the download "
            "could not be checked. Add its hash to the lock (--hash=sha256:...), or use an "
            "index that publishes file hashes (PEP 503)")
    path = directory / item.filename
    fresh = not path.exists()
    actual = index.download(item, path) if fresh else sha256_file(path)
    if item.sha256 and actual != item.sha256:
        if fresh:
            path.unlink()
            raise BuildError(f"{item.filename} from {index.url} has sha256 {actual}, but the "
                             f"index's page says {item.sha256}; it was not kept")
        raise BuildError(f"{path} has sha256 {actual}, but the index's page says "
                         f"{item.sha256}. The cached file was altered, or the index now serves "
                         "another file under that name; delete it and run again")
    # A lock's hashes are those of what the index serves: the wheel, or for a release with no
    # wheel for the platform, its sdist.
    if pin["hashes"] and actual not in pin["hashes"]:
        raise BuildError(
            f"{item.filename} has sha256 {actual}, which is none of the hashes the requirement "
            f"set lists for {pin['name']}=={pin['version']} ({', '.join(pin['hashes'])}). The "
            "index serves another file than the one that was locked: find out why before you "
            "trust it, then fix the hash or the index")
    return path, fresh


def index_listing(files: list[IndexFile], project: str, version: str) -> str:
    """What the index has of a release, for a message."""
    names = [f.filename for f in files
             if f.filename.lower().startswith(canonicalize_name(project).replace("-", "_") + "-")
             or f.filename.lower().startswith(canonicalize_name(project) + "-")]
    names = [n for n in names if f"-{version}" in n]
    return ", ".join(sorted(names)[:12]) or "no file of that release"


# ----- pip (only for the build dependencies of sdists) ----------------------------------------
def pip_env(spec: dict) -> dict[str, str]:
    """pip's settings come from here only. The CA bundle goes in the environment, not on the
    command line, so that the pip that installs an sdist's build dependencies inherits it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in CA_OVERRIDES and k != "NETRC"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if spec.get("netrc"):
        env["NETRC"] = spec["netrc"]
    if spec.get("cert"):
        env["PIP_CERT"] = spec["cert"]
    return env


def run_pip(spec: dict, args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--progress-bar", "off",
           "--index-url", spec["index_url"], *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=pip_env(spec),
                            timeout=spec.get("timeout", 1800), check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-6:])
        raise BuildError(f"pip download of {what} from {spec['index_url']} failed:\n{tail}")


def target_options(platform: dict) -> list[str]:
    options = ["--python-version", platform["python"], "--implementation", "cp",
               "--abi", platform["abi"], "--abi", "abi3", "--abi", "none"]
    for tag in manylinux_platforms(platform["glibc"], platform["arch"]):
        options += ["--platform", tag]
    return options


def sdist_release(filename: str):
    """(canonical name, Version) of an sdist file name, or None."""
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            name, _, version = filename[:-len(suffix)].rpartition("-")
            try:
                return canonicalize_name(name), Version(version)
            except ValueError:
                return None
    return None


def find_sdist(directory: Path, name: str, version: str):
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if sdist_release(path.name) == (name, Version(version)):
            return path
    return None


def build_requires(sdist: Path) -> list[str]:
    """[build-system] requires of the sdist's pyproject.toml (PEP 518), or pip's default."""
    text = None
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1
                     and n.endswith("/pyproject.toml")]
            text = archive.read(names[0]).decode() if names else None
    else:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if member.isfile() and member.name.count("/") == 1 \
                        and member.name.endswith("/pyproject.toml"):
                    text = archive.extractfile(member).read().decode()
                    break
    if text is None:
        return list(DEFAULT_BUILD_REQUIRES)
    system = tomllib.loads(text).get("build-system") or {}
    return list(system.get("requires", DEFAULT_BUILD_REQUIRES))


def built_wheel(root: Path, built: dict, sdist: Path, ranks: dict[str, int]):
    """The wheel a host of the platform built from this very sdist (same file name and
    sha256), when the cache holds it; the best-ranked, then the smallest name, if several."""
    digest = None
    found = []
    for wheel, origin in built.items():
        if origin.get("sdist") != sdist.name or not (root / "wheels" / wheel).exists():
            continue
        digest = digest or sha256_file(sdist)
        if origin.get("sdist_sha256") != digest:
            continue
        position = min((ranks[t] for t in parse_wheel_name(wheel).tags if t in ranks),
                       default=None)
        if position is not None:
            found.append((position, wheel))
    return root / "wheels" / min(found)[1] if found else None


def cache_files(root: Path) -> set[str]:
    """What the controller has fetched for a platform: wheels, sdists and build dependencies."""
    return {f"{sub}/{p.name}" for sub in ("wheels", "sdists", "build-deps")
            for p in (root / sub).glob("*") if not p.name.endswith(".tmp")}


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def build_one(spec: dict, platform: dict, index: Index) -> dict:
    cached = cached_result(spec, platform)
    if cached is not None:
        return cached
    root = platform_dir(spec, platform)
    wheels, sdists = root / "wheels", root / "sdists"
    for directory in (wheels, sdists):
        directory.mkdir(parents=True, exist_ok=True)
    built_host = (spec.get("built") or {}).get(platform["key"])
    # What an earlier call of this run fetched before it handed the sdists to a host.
    earlier = read_json(root / "build" / "pending.json", {}).get("downloaded", []) \
        if built_host else []
    if built_host:
        take_built(root, platform, built_host)
    before = cache_files(root) - set(earlier)
    pins, constrained = lock_pins(spec, platform)
    ranks = tag_ranks(platform)
    built = read_json(root / BUILT, {})
    chosen: dict[str, Path] = {}
    todo = list(pins)
    for _ in range(50):  # each round adds the dependencies the constraints pin
        unbuilt = []
        index.prefetch([pins[name]["name"] for name in todo])
        for name in todo:
            pin = pins[name]
            files = index.files(pin["name"])
            wheel = choose_wheel(files, name, pin["version"], platform, ranks)
            if wheel is not None:
                chosen[name] = fetch(index, wheel, wheels, pin)[0]
                continue
            sdist_file = choose_sdist(files, name, pin["version"], platform)
            if sdist_file is None:
                raise BuildError(
                    f"{index.url} has neither a wheel for {platform['key']} nor an sdist of "
                    f"{pin['name']}=={pin['version']} (it lists: "
                    f"{index_listing(files, name, pin['version'])})")
            sdist = fetch(index, sdist_file, sdists, pin)[0]
            done = built_wheel(root, built, sdist, ranks)
            if done is not None:
                chosen[name] = done
            else:
                unbuilt.append(name)
        if unbuilt:
            if built_host:
                raise BuildError(
                    f"{built_host} built no wheel of "
                    + ", ".join(f"{pins[n]['name']}=={pins[n]['version']}" for n in unbuilt)
                    + f" that fits {platform['key']}")
            return pending_result(spec, platform, root, [pins[n] for n in unbuilt], before)
        todo = []
        unresolved = []
        for needed_by, requirement in missing_dependencies(chosen, pins, platform):
            dependency = canonicalize_name(requirement.name)
            pin = constrained.get(dependency)
            if (dependency not in pins and pin
                    and requirement.specifier.contains(pin["version"], True)):
                pins[dependency] = dict(pin, extras=sorted(requirement.extras))
                todo.append(dependency)
            else:
                unresolved.append(f"{needed_by} needs {requirement}")
        if unresolved:
            raise BuildError(
                f"the requirement set is not complete for Python {platform['python']}: "
                + "; ".join(sorted(set(unresolved)))
                + ". Pin these in pipfeed_wheelhouse_requirements or pipfeed_wheelhouse_constraints "
                "(a lock file, for example from 'pip-compile' or 'uv pip compile').")
        if not todo:
            break
    files, lines = {}, []
    for name in sorted(chosen):
        wheel, pin = chosen[name], pins[name]
        digest = sha256_file(wheel)
        origin = built.get(wheel.name)
        # A lock file hashes what the index serves: for a wheel built here, that is its sdist.
        if origin and pin["hashes"] and origin["sdist_sha256"] not in pin["hashes"]:
            raise BuildError(
                f"{origin['sdist']} has sha256 {origin['sdist_sha256']}, which is none of the "
                f"hashes the requirement set lists for {pin['name']}=={pin['version']} "
                f"({', '.join(pin['hashes'])}). The index serves another file than the one "
                "that was locked: find out why before you trust it, then fix the hash or the "
                "index")
        files[wheel.name] = {"sha256": digest, "size": wheel.stat().st_size}
        if origin:
            files[wheel.name].update(built_from=origin["sdist"],
                                     built_from_sha256=origin["sdist_sha256"])
            lines.append(f"# built from {origin['sdist']} (sha256 {origin['sdist_sha256']})"
                         f" on {origin['host']}\n")
        extras = f"[{','.join(pin['extras'])}]" if pin["extras"] else ""
        lines.append(f"{pin['name']}{extras}=={pin['version']} \\\n    --hash=sha256:{digest}\n")
    key = set_key(spec, platform)
    set_dir = root / "sets" / key
    set_dir.mkdir(parents=True, exist_ok=True)
    path = spec.get("host_path", DEFAULT_HOST_PATH)
    requirements = (
        f"# The wheelhouse's requirement set for {platform['key']}, pinned and hashed.\n"
        f"# Install it with no request to any index:\n"
        f"#   pip install --no-index -r {path}/{REQUIREMENTS}\n" + "".join(lines))
    write_atomic(set_dir / REQUIREMENTS, requirements)
    files[REQUIREMENTS] = {"sha256": sha256_file(set_dir / REQUIREMENTS),
                           "size": (set_dir / REQUIREMENTS).stat().st_size}
    # Nothing of the controller: sorted keys, no path, no time, no index URL.
    manifest = {"format": FORMAT, "lock": lock_id(spec, platform), "platform": platform,
                "files": files}
    write_atomic(set_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    downloaded = sorted(cache_files(root) - before)
    shutil.rmtree(root / "build", ignore_errors=True)
    return result_for(spec, platform, root, set_dir, manifest, downloaded)


def pending_result(spec: dict, platform: dict, root: Path, pending: list[dict],
                   before: set[str]) -> dict:
    """The sdists that a host of the platform must build, in one archive with the wheels of
    their build dependencies (for the target, from the same index), so that the host builds
    with --no-index."""
    sdists, requires = [], ["wheel"]
    for pin in pending:
        sdist = find_sdist(root / "sdists", canonicalize_name(pin["name"]), pin["version"])
        digest = sha256_file(sdist)
        if pin["hashes"] and digest not in pin["hashes"]:
            raise BuildError(
                f"{sdist.name} has sha256 {digest}, which is none of the hashes the requirement "
                f"set lists for {pin['name']}=={pin['version']} ({', '.join(pin['hashes'])})")
        sdists.append(sdist)
        requires += build_requires(sdist)
    build = root / "build"
    shutil.rmtree(build, ignore_errors=True)
    deps = build / "deps"
    deps.mkdir(parents=True)
    # With their dependencies, resolved for the target (only wheels, so --platform holds).
    # These go to the builder host only, never into a wheelhouse, so pip may choose them.
    run_pip(spec, ["--only-binary=:all:", "--dest", str(deps), *target_options(platform),
                   *sorted(set(requires))],
            f"the build dependencies ({', '.join(sorted(set(requires)))}) of "
            + ", ".join(s.name for s in sdists) + f" for {platform['key']}")
    store = root / "build-deps"
    store.mkdir(exist_ok=True)
    for wheel in deps.glob("*.whl"):
        if not (store / wheel.name).exists():
            shutil.copy2(wheel, store / wheel.name)
    files = {p.name: {"src": str(p)} for p in [*sdists, *deps.glob("*.whl")]}
    archive = build / "sources.tar"
    make_tar(archive, sorted(files), files)
    shutil.rmtree(deps)
    downloaded = sorted(cache_files(root) - before)
    (build / "pending.json").write_text(json.dumps({"downloaded": downloaded}))
    return {"key": platform["key"], "dir": str(root), "pending": [
        {"name": p["name"], "version": p["version"]} for p in pending],
        "sources": str(archive), "result": str(build / "built.tar"),
        "downloaded": downloaded}


def take_built(root: Path, platform: dict, host: str) -> None:
    """Move the wheels a host built (fetched back as one tar) into the platform's cache,
    each checked: a plain wheel file name, a release of an sdist that was sent, a tag that
    the platform accepts."""
    archive = root / "build" / "built.tar"
    if not archive.exists():
        raise BuildError(f"{archive} is missing: the wheels that {host} built did not arrive")
    ranks = tag_ranks(platform)
    built = read_json(root / BUILT, {})
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            name = member.name
            if not member.isfile() or "/" in name or name.startswith(".") \
                    or not name.endswith(".whl"):
                raise BuildError(f"{archive} holds {name!r}, which is not a wheel file name")
            try:
                wheel = parse_wheel_name(name)
            except ChoiceError as error:
                raise BuildError(f"{host} built {name!r}: {error}") from None
            sdist = find_sdist(root / "sdists", wheel.project, wheel.version)
            if sdist is None or not any(tag in ranks for tag in wheel.tags):
                raise BuildError(f"{host} built {name}, which is no release that was sent to "
                                 f"it, or does not fit {platform['key']}")
            temporary = root / "wheels" / (name + ".tmp")
            with open(temporary, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out)
            os.replace(temporary, root / "wheels" / name)
            built[name] = {"sdist": sdist.name, "sdist_sha256": sha256_file(sdist),
                           "host": host}
    write_atomic(root / BUILT, json.dumps(built, indent=1, sort_keys=True) + "\n")
    archive.unlink()


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ----- the sdists' archive --------------------------------------------------------------------
def make_tar(target: Path, names: list[str], files: dict) -> None:
    """A plain tar (wheels are compressed already) of exactly these files, owned by root."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with tarfile.open(temporary, "w:", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(names):
            info = archive.gettarinfo(files[name]["src"], arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            info.mtime = 0
            with open(files[name]["src"], "rb") as handle:
                archive.addfile(info, handle)
    os.replace(temporary, target)


# ----- commands ------------------------------------------------------------------------------
def command_check(spec: dict) -> dict:
    for name in ("requirements", "constraints"):
        value = spec.get(name) or ""
        if value and not Path(value).is_file():
            raise BuildError(f"pipfeed_wheelhouse_{name} is {value}, which is not a file on the "
                             "controller")
    for platform in spec["platforms"]:
        if platform.get("implementation") != "cpython" or not platform.get("glibc"):
            raise BuildError(f"hosts of platform {platform['key']} are not CPython on glibc; "
                             "the wheelhouse builds manylinux wheels for CPython only")
        try:
            manylinux_platforms(platform["glibc"], platform["arch"])
        except ChoiceError as error:
            raise BuildError(f"hosts of platform {platform['key']}: {error}") from None
        resolve_set(spec["requirements"], spec.get("constraints", ""), platform)
    # The cache's plan in the same call: a re-run starts one controller process, not two.
    return {"ok": True, "plan": command_plan(spec)}


def command_plan(spec: dict) -> dict:
    return {p["key"]: cached_result(spec, p) for p in spec["platforms"]}


def command_build(spec: dict) -> dict:
    index = Index(spec)  # one page per project for every platform of the call
    return {p["key"]: build_one(spec, p, index) for p in spec["platforms"]}


COMMANDS = {"check": command_check, "plan": command_plan, "build": command_build}

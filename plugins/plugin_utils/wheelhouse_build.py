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
pip downloads exactly those pins with ``--no-deps``, and the dependency closure is then checked
from each wheel's own metadata, evaluated for the target; a dependency that the constraints pin
is added, one that nothing pins fails the build with its name.

Commands (a spec in, a result out; a BuildError's message says what is wrong), run by the
action pipfeed.feed.wheelhouse_build in the controller's Ansible process:
``check``   the requirement set for a list of platforms: pinned, parseable; and the plan.
``plan``    which platforms already have a complete, verified build in the cache.
``build``   download what is missing (pip reads the token from the netrc file in $NETRC).
            A release with no wheel for the platform comes as its sdist; the result for that
            platform is then "pending": one archive with the sdists and the wheels of their
            build dependencies, for a host of the platform to build (``wheelhouse_host.py
            build``). The next ``build`` call, told which host built what (``built``), takes
            the wheels it fetched back into the cache and finishes the set. A built wheel stays
            in the cache, so a rebuild never builds it again.

What a host lacks goes to it from the cache's files themselves, through the action
pipfeed.feed.host_script, with no archive made here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import shutil
import tarfile
import tempfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"
# Which cached wheels a host built from an sdist: wheel file -> sdist, its sha256, the host.
BUILT = "built.json"
SDIST_SUFFIXES = (".tar.gz", ".zip")
# What pip assumes for an sdist without a [build-system] table (PEP 518), plus wheel, which
# setuptools before 70.1 asks for and older pips add on their own.
DEFAULT_BUILD_REQUIRES = ["setuptools>=40.8.0"]
# How a machine points TLS clients at its own CA bundle; the controller's pip must not inherit
# them (nor any PIP_* setting nor /etc/pip.conf): the role says which index and which CA.
CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
HASH_OPTION = re.compile(r"\s--hash[=\s]+(\S+)")


class BuildError(Exception):
    pass


# ----- the target platform -------------------------------------------------------------------
def manylinux_platforms(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a host with this glibc accepts, most specific first (PEP 600, and
    the legacy aliases of PEP 513/571/599)."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise BuildError(f"glibc {glibc} is not a 2.x glibc")
    tags = []
    for glibc_minor in range(minor, 4, -1):
        tags.append(f"manylinux_2_{glibc_minor}_{arch}")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(glibc_minor)
        if legacy:
            tags.append(f"{legacy}_{arch}")
    return tags


def target_tags(platform: dict) -> list[Tag]:
    """The wheel tags the target's pip accepts, best first."""
    version = tuple(int(part) for part in platform["python"].split("."))
    abi = platform["abi"]
    # linux_<arch> last: the tag of a wheel that a host of this very platform built from an
    # sdist (it is never asked of the index).
    platforms = manylinux_platforms(platform["glibc"], platform["arch"]) + [
        f"linux_{platform['arch']}"]
    return (list(cpython_tags(version, [abi, "abi3", "none"], platforms))
            + list(compatible_tags(version, abi, platforms)))


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
    """What a build depends on: the two files' bytes, the target, and the index."""
    material = [Path(spec["requirements"]).read_bytes(),
                Path(spec["constraints"]).read_bytes() if spec.get("constraints") else b"",
                json.dumps(platform, sort_keys=True).encode(), spec["index_url"].encode()]
    return hashlib.sha256(b"\0".join(material)).hexdigest()[:16]


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
    return result_for(root, set_dir, manifest)


def result_for(root: Path, set_dir: Path, manifest: dict, downloaded=()) -> dict:
    """What the role needs of a complete build: the files and where they are, and what this
    call fetched (wheels, sdists and build dependencies) and had built."""
    files = {}
    for name, entry in manifest["files"].items():
        source = set_dir / name if name == REQUIREMENTS else root / "wheels" / name
        files[name] = dict(entry, src=str(source))
    manifest_path = set_dir / MANIFEST
    files[MANIFEST] = {"sha256": sha256_file(manifest_path),
                       "size": manifest_path.stat().st_size, "src": str(manifest_path)}
    return {"key": manifest["platform"]["key"], "dir": str(root), "files": files,
            "manifest_sha256": files[MANIFEST]["sha256"], "downloaded": list(downloaded),
            "built": sorted(n for n, e in manifest["files"].items() if e.get("built_from"))}


# ----- pip -----------------------------------------------------------------------------------
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


def pip_download(spec: dict, platform: dict, pins: list[dict], dest: Path) -> None:
    """The pins, each as a wheel for the target where the index has one, else as its sdist
    (--prefer-binary; --no-deps is what lets pip take an sdist with --platform). pip reads an
    sdist's metadata here, in an isolated build environment from the same index."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(f"{p['name']}=={p['version']}\n" for p in pins))
    try:
        run_pip(spec, ["--no-deps", "--prefer-binary", "--dest", str(dest),
                       *target_options(platform), "--requirement", handle.name],
                f"{len(pins)} pinned releases for {platform['key']}")
    finally:
        os.unlink(handle.name)


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


def choose_wheel(directory: Path, name: str, version: str, ranks: dict[Tag, int]):
    best, best_rank = None, None
    for path in directory.glob("*.whl"):
        try:
            wheel_name, wheel_version, _, tags = parse_wheel_filename(path.name)
        except ValueError:
            continue
        if wheel_name != name or wheel_version != Version(version):
            continue
        rank = min((ranks[tag] for tag in tags if tag in ranks), default=None)
        if rank is not None and (best_rank is None or rank < best_rank):
            best, best_rank = path, rank
    return best


def cache_files(root: Path) -> set[str]:
    """What the controller has fetched for a platform: wheels, sdists and build dependencies."""
    return {f"{sub}/{p.name}" for sub in ("wheels", "sdists", "build-deps")
            for p in (root / sub).glob("*") if not p.name.endswith(".tmp")}


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def build_one(spec: dict, platform: dict) -> dict:
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
    pins = resolve_set(spec["requirements"], spec.get("constraints", ""), platform)
    constrained = constraint_pins(spec.get("constraints", ""), platform)
    ranks = {tag: index for index, tag in enumerate(target_tags(platform))}
    chosen: dict[str, Path] = {}
    todo = list(pins)
    for _ in range(50):  # each round adds the dependencies the constraints pin
        fetch = [pins[n] for n in todo
                 if choose_wheel(wheels, n, pins[n]["version"], ranks) is None
                 and find_sdist(sdists, n, pins[n]["version"]) is None]
        if fetch:
            pip_download(spec, platform, fetch, wheels)
            for path in wheels.glob("*"):
                if sdist_release(path.name):
                    os.replace(path, sdists / path.name)
        unbuilt = [n for n in todo if choose_wheel(wheels, n, pins[n]["version"], ranks) is None]
        for name in unbuilt:
            if find_sdist(sdists, name, pins[name]["version"]) is None:
                raise BuildError(f"neither a wheel for {platform['key']} nor an sdist of "
                                 f"{pins[name]['name']}=={pins[name]['version']} arrived from "
                                 f"{spec['index_url']}")
        if unbuilt:
            if built_host:
                raise BuildError(
                    f"{built_host} built no wheel of "
                    + ", ".join(f"{pins[n]['name']}=={pins[n]['version']}" for n in unbuilt)
                    + f" that fits {platform['key']}")
            return pending_result(spec, platform, root, [pins[n] for n in unbuilt], before)
        for name in todo:
            chosen[name] = choose_wheel(wheels, name, pins[name]["version"], ranks)
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
    built = read_json(root / BUILT, {})
    files, lines = {}, []
    for name in sorted(chosen):
        wheel, pin = chosen[name], pins[name]
        digest = sha256_file(wheel)
        origin = built.get(wheel.name)
        # A lock file hashes what the index serves: for a wheel built here, that is its sdist.
        locked_file, locked = (origin["sdist"], origin["sdist_sha256"]) if origin \
            else (wheel.name, digest)
        if pin["hashes"] and locked not in pin["hashes"]:
            raise BuildError(
                f"{locked_file} has sha256 {locked}, which is none of the hashes the requirement "
                f"set lists for {pin['name']}=={pin['version']} ({', '.join(pin['hashes'])}). "
                "The index serves another file than the one that was locked: find out why "
                "before you trust it, then fix the hash or the index")
        files[wheel.name] = {"sha256": digest, "size": wheel.stat().st_size}
        if origin:
            files[wheel.name]["built_from"] = origin["sdist"]
            lines.append(f"# built from {origin['sdist']} (sha256 {origin['sdist_sha256']})"
                         f" on {origin['host']}\n")
        extras = f"[{','.join(pin['extras'])}]" if pin["extras"] else ""
        lines.append(f"{pin['name']}{extras}=={pin['version']} \\\n    --hash=sha256:{digest}\n")
    key = set_key(spec, platform)
    set_dir = root / "sets" / key
    set_dir.mkdir(parents=True, exist_ok=True)
    path = spec.get("host_path", "/var/lib/pipfeed/wheelhouse")
    requirements = (
        f"# The wheelhouse's requirement set for {platform['key']}, pinned and hashed.\n"
        f"# Install it with no request to any index:\n"
        f"#   pip install --no-index -r {path}/{REQUIREMENTS}\n" + "".join(lines))
    write_atomic(set_dir / REQUIREMENTS, requirements)
    files[REQUIREMENTS] = {"sha256": sha256_file(set_dir / REQUIREMENTS),
                           "size": (set_dir / REQUIREMENTS).stat().st_size}
    manifest = {"platform": platform, "files": files}
    write_atomic(set_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    downloaded = sorted(cache_files(root) - before)
    shutil.rmtree(root / "build", ignore_errors=True)
    return result_for(root, set_dir, manifest, downloaded)


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
    ranks = {tag: index for index, tag in enumerate(target_tags(platform))}
    built = read_json(root / BUILT, {})
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            name = member.name
            if not member.isfile() or "/" in name or name.startswith(".") \
                    or not name.endswith(".whl"):
                raise BuildError(f"{archive} holds {name!r}, which is not a wheel file name")
            wheel_name, version, _, tags = parse_wheel_filename(name)
            sdist = find_sdist(root / "sdists", wheel_name, str(version))
            if sdist is None or not any(tag in ranks for tag in tags):
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
        resolve_set(spec["requirements"], spec.get("constraints", ""), platform)
    # The cache's plan in the same call: a re-run starts one controller process, not two.
    return {"ok": True, "plan": command_plan(spec)}


def command_plan(spec: dict) -> dict:
    return {p["key"]: cached_result(spec, p) for p in spec["platforms"]}


def command_build(spec: dict) -> dict:
    return {p["key"]: build_one(spec, p) for p in spec["platforms"]}


COMMANDS = {"check": command_check, "plan": command_plan, "build": command_build}

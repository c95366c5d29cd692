# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which file of an index the wheelhouse takes for a pinned release and a target platform.

The choice is a function of two things only: the index's own list of files for the project
(its PEP 503 simple page, with each file's ``#sha256=`` fragment, ``data-requires-python`` and
``data-yanked``) and the target's tag priority, computed here. It does not depend on the
controller's pip, ``packaging`` or Python: those differ between the controllers of a team (an
agent pool, a laptop, a pipeline), and where the controller's own pip picked the file, two
controllers built two different wheelhouses from one lock for one host (pip 25.1 took
cryptography's ``manylinux2014_x86_64.manylinux_2_17_x86_64`` wheel, pip 26.3 its
``manylinux_2_28_x86_64`` one), so that every switch of controller re-sent every host's wheels.

The rule, for a pin ``name==version`` and a target (CPython X.Y, ABI, architecture, glibc):

1. Candidates are the index's wheels of that project and version (names compared as PEP 503
   normalises them, versions as PEP 440 compares them) whose ``data-requires-python`` admits
   Python X.Y (as ``pip --python-version X.Y`` reads it), and which carry at least one tag the
   target accepts.
2. A wheel's rank is the position of its best tag in the target's priority list (below); the
   lowest rank wins, as it does for the target's own pip. A yanked file (PEP 592) comes after
   every file that is not yanked, as in pip.
3. Ties (several files whose best tag is the same, for example ``manylinux_2_17_x86_64`` and
   ``manylinux2014_x86_64.manylinux_2_17_x86_64``): the highest build tag (PEP 427) wins, as in
   pip; then the lexicographically smallest file name. pip breaks such a tie by the order of
   the index page's links, which an index does not promise to keep.

The priority list is what pip on the target accepts, in its order (``packaging.tags.sys_tags``
for CPython on glibc, which pip 20.3 and later vendor): ``cpXY-cpXY-<platform>`` for every
platform, ``cpXY-abi3-<platform>``, ``cpXY-none-<platform>``, then ``cpXW-abi3-<platform>`` for
each older minor W down to 2; then ``pyXY-none-<platform>``, ``pyX-none-<platform>``,
``pyXW-none-<platform>``..., ``cpXY-none-any``, ``pyXY-none-any``, ``pyX-none-any``,
``pyXW-none-any``.... The platforms, best first: ``manylinux_2_<N>_<arch>`` from the host's
glibc minor N down to 5 on x86 (17 elsewhere), each followed by its legacy alias where it has
one (``manylinux2014`` for 2.17, ``manylinux2010`` for 2.12, ``manylinux1`` for 2.5), then
``linux_<arch>`` (a wheel that a host of the platform built itself). It is written out here
instead of taken from the controller's ``packaging.tags``, whose output depends on the
controller's packaging release.

``packaging`` is used for what is stable across its releases, and pinned by the unit tests:
``Version`` equality of two PEP 440 versions and ``SpecifierSet`` for Requires-Python.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

# The legacy manylinux names (PEP 513, 571, 599) of three glibc versions.
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
SDIST_SUFFIXES = (".tar.gz", ".zip")


class ChoiceError(ValueError):
    pass


def canonical_name(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ----- the target's tag priority ---------------------------------------------------------------
def manylinux_platforms(glibc: str, arch: str) -> list[str]:
    """Every manylinux platform tag a host with this glibc accepts, best first (PEP 600, and the
    legacy aliases of PEP 513/571/599 right after the glibc version they stand for)."""
    try:
        major, minor = (int(part) for part in glibc.split(".")[:2])
    except ValueError:
        raise ChoiceError(f"glibc {glibc!r} is not a version") from None
    if major != 2:
        raise ChoiceError(f"glibc {glibc} is not a 2.x glibc")
    # manylinux1 and manylinux2010 existed for x86 only; every other architecture starts at 2.17.
    oldest = 5 if arch in ("x86_64", "i686") else 17
    tags = []
    for glibc_minor in range(minor, oldest - 1, -1):
        tags.append(f"manylinux_2_{glibc_minor}_{arch}")
        if glibc_minor in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[glibc_minor]}_{arch}")
    return tags


def target_tags(platform: dict) -> list[str]:
    """The wheel tags ("interpreter-abi-platform") a CPython host of this platform accepts, in
    the order its pip prefers them (see the module's docstring)."""
    major, minor = (int(part) for part in platform["python"].split(".")[:2])
    abi = platform["abi"]
    platforms = manylinux_platforms(platform["glibc"], platform["arch"]) + [
        f"linux_{platform['arch']}"]
    interpreter = f"cp{major}{minor}"
    tags = []
    if abi not in ("abi3", "none"):
        tags += [f"{interpreter}-{abi}-{plat}" for plat in platforms]
    # abi3 (the stable ABI) exists from 3.2; a free-threaded build ("cp313t") has no abi3.
    abi3 = (major, minor) >= (3, 2) and not abi.endswith("t")
    if abi3:
        tags += [f"{interpreter}-abi3-{plat}" for plat in platforms]
    tags += [f"{interpreter}-none-{plat}" for plat in platforms]
    if abi3:
        for older in range(minor - 1, 1, -1):
            tags += [f"cp{major}{older}-abi3-{plat}" for plat in platforms]
    pythons = [f"py{major}{minor}", f"py{major}"]
    pythons += [f"py{major}{older}" for older in range(minor - 1, -1, -1)]
    for python in pythons:
        tags += [f"{python}-none-{plat}" for plat in platforms]
    tags.append(f"{interpreter}-none-any")
    tags += [f"{python}-none-any" for python in pythons]
    return tags


def tag_ranks(platform: dict) -> dict[str, int]:
    """{tag: its position in the target's priority list}."""
    return {tag: index for index, tag in enumerate(target_tags(platform))}


# ----- file names ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WheelName:
    project: str            # normalised (PEP 503)
    version: str            # as written in the file name
    build: tuple            # () or (number, rest) of the build tag (PEP 427)
    tags: frozenset         # every "interpreter-abi-platform" its compressed tag set expands to


def parse_wheel_name(filename: str) -> WheelName:
    """A wheel file name (PEP 427): name-version[-build]-python-abi-platform.whl, each of the
    last three possibly a dot-separated set (compressed tag sets, PEP 425)."""
    if not filename.endswith(".whl") or "/" in filename:
        raise ChoiceError(f"{filename!r} is not a wheel file name")
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        raise ChoiceError(f"{filename!r} is not a wheel file name (name-version[-build]-"
                          "python-abi-platform.whl)")
    build = ()
    if len(parts) == 6:
        match = re.match(r"^(\d+)(.*)$", parts[2])
        if not match:
            raise ChoiceError(f"{filename!r} has a build tag that does not start with a digit")
        build = (int(match.group(1)), match.group(2))
    pythons, abis, platforms = (part.lower().split(".") for part in parts[-3:])
    tags = frozenset(f"{p}-{a}-{plat}" for p in pythons for a in abis for plat in platforms)
    return WheelName(canonical_name(parts[0]), parts[1], build, tags)


def sdist_release(filename: str):
    """(normalised name, version text) of an sdist file name, or None."""
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            name, sep, version = filename[:-len(suffix)].rpartition("-")
            if sep and name and version:
                return canonical_name(name), version
    return None


def same_version(one: str, other: str) -> bool:
    """PEP 440 equality ("1.0" is "1.0.0"); the texts themselves where one is no PEP 440
    version (an index may hold such files; pip skips them)."""
    try:
        return Version(one) == Version(other)
    except InvalidVersion:
        return one == other


def rank(filename: str, ranks: dict[str, int]):
    """The wheel's best position in the target's priority list; None when it has no tag the
    target accepts (or is no wheel)."""
    try:
        tags = parse_wheel_name(filename).tags
    except ChoiceError:
        return None
    return min((ranks[tag] for tag in tags if tag in ranks), default=None)


# ----- the index's page ------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str                 # absolute, without the fragment
    sha256: str              # from the link's #sha256= fragment; "" when it has none
    requires_python: str     # data-requires-python, "" when absent
    yanked: bool             # data-yanked present (PEP 592)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base = None
        self.links = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        elif tag == "a" and values.get("href"):
            self.links.append(values)


def parse_simple_page(text: str, page_url: str) -> list[IndexFile]:
    """Every file link of a PEP 503 project page, in the page's order. The file name is the
    last segment of the link's path (PEP 503: it must equal the link's text)."""
    parser = _Links()
    parser.feed(text)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    files = []
    for attrs in parser.links:
        url, fragment = urldefrag(urljoin(base, attrs["href"]))
        filename = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        if not filename:
            continue
        sha256 = ""
        for part in fragment.split("&"):
            algorithm, _, value = part.partition("=")
            if algorithm.lower() == "sha256" and re.fullmatch(r"[0-9a-fA-F]{64}", value):
                sha256 = value.lower()
        files.append(IndexFile(filename=filename, url=url, sha256=sha256,
                               requires_python=html.unescape(
                                   attrs.get("data-requires-python") or "").strip(),
                               yanked="data-yanked" in attrs))
    return files


def python_admitted(requires_python: str, python: str) -> bool:
    """Whether Requires-Python admits the target, read as ``pip --python-version X.Y`` reads it
    (X.Y is X.Y.0). A value that is no specifier is ignored, as pip ignores it."""
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(Version(python), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True


# ----- the choice ------------------------------------------------------------------------------
def wheel_candidates(files: list[IndexFile], project: str, version: str, platform: dict,
                     ranks: dict[str, int]) -> list[tuple[IndexFile, int, tuple]]:
    """(file, rank, build tag) of every wheel of the release the target would install."""
    project = canonical_name(project)
    found = []
    for item in files:
        try:
            name = parse_wheel_name(item.filename)
        except ChoiceError:
            continue
        if name.project != project or not same_version(name.version, version):
            continue
        if not python_admitted(item.requires_python, platform["python"]):
            continue
        best = min((ranks[tag] for tag in name.tags if tag in ranks), default=None)
        if best is not None:
            found.append((item, best, name.build))
    return found


def choose_wheel(files: list[IndexFile], project: str, version: str, platform: dict,
                 ranks: dict[str, int] | None = None):
    """The one wheel of the release that the wheelhouse takes for this platform, or None when
    the index has no wheel the target accepts (see the module's docstring for the rule)."""
    ranks = ranks if ranks is not None else tag_ranks(platform)
    candidates = wheel_candidates(files, project, version, platform, ranks)
    if not candidates:
        return None
    # Not yanked first, then the best tag; among equals the highest build tag; then the name.
    best = min((item.yanked, position) for item, position, _ in candidates)
    equal = [(item, build) for item, position, build in candidates
             if (item.yanked, position) == best]
    highest = max(build for _, build in equal)
    return min((item for item, build in equal if build == highest), key=lambda i: i.filename)


def choose_sdist(files: list[IndexFile], project: str, version: str, platform: dict):
    """The release's sdist, for a release with no wheel for the platform: not yanked first,
    then .tar.gz (PEP 625) before .zip, then the smallest file name; None without one."""
    project = canonical_name(project)
    found = [item for item in files
             if (release := sdist_release(item.filename)) is not None
             and release[0] == project and same_version(release[1], version)
             and python_admitted(item.requires_python, platform["python"])]
    if not found:
        return None
    return min(found, key=lambda i: (i.yanked, not i.filename.endswith(".tar.gz"), i.filename))

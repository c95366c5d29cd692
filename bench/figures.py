"""The install benchmark's arithmetic: the requirement set, medians, request counts from the
feed's access log, the extrapolation for a PyPI that drops packets, the targets, the table.

Nothing here touches the lab, so every piece is unit-tested (tests/unit/test_bench.py); the
runner (bench/runner.py) feeds it what the lab measured.
"""
from __future__ import annotations

import hashlib
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)$")
TIMING = re.compile(r"^pipfeed-bench rc=(\d+) ns=(\d+)$", re.M)


class BenchError(RuntimeError):
    """A benchmark that cannot give honest figures stops with one of these."""


def normalize(name: str) -> str:
    """PEP 503 normalisation: how pip and the feed compare project names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_requirements(path: Path) -> list[tuple[str, str]]:
    """The pinned set as (normalized name, version), in file order.

    Every line must be `name==version` (comments and blank lines aside): the benchmark
    compares ways on exactly the same files, which only a full pin guarantees.
    """
    pins: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line.replace(" ", ""))
        if not match:
            raise BenchError(f"{path}:{number}: {raw.strip()!r} is not pinned as name==version; "
                             "pin every line (no markers, options or ranges)")
        name = normalize(match.group(1))
        if name in seen:
            raise BenchError(f"{path}:{number}: {name} is pinned again (first on line "
                             f"{seen[name]}); keep one pin per project")
        seen[name] = number
        pins.append((name, match.group(2)))
    if not pins:
        raise BenchError(f"{path}: no requirement in it")
    return pins


def set_key(path: Path, python: str, platforms: Iterable[str]) -> str:
    """The controller cache key of a downloaded set: its file, target Python and platforms."""
    material = Path(path).read_bytes() + repr((python, tuple(platforms))).encode()
    return hashlib.sha256(material).hexdigest()[:12]


def check_installed(pins: list[tuple[str, str]], found: dict[str, str]) -> list[str]:
    """What is wrong with a venv after an install: each pin missing or at another version."""
    installed = {normalize(name): version for name, version in found.items()}
    problems = []
    for name, version in pins:
        have = installed.get(name)
        if have is None:
            problems.append(f"{name} is not installed")
        elif have != version:
            problems.append(f"{name} is {have}, not {version}")
    return problems


def parse_timing(output: str) -> tuple[int, float]:
    """(exit status, seconds) from the line the host's timing wrapper prints last."""
    found = TIMING.findall(output)
    if not found:
        raise BenchError("the host printed no timing line; the command did not finish")
    rc, ns = found[-1]
    return int(rc), int(ns) / 1e9


@dataclass
class Requests:
    """What the feed served during one install, from its access log."""

    index: int = 0        # simple pages (the project lists)
    redirects: int = 0    # file downloads answered with a signed blob URL
    blobs: int = 0        # the files themselves, from the blob host
    other: int = 0
    blob_bytes: int = 0
    files: list[str] = field(default_factory=list)  # the files fetched from the blob host

    @property
    def total(self) -> int:
        return self.index + self.redirects + self.blobs + self.other

    def describe(self) -> str:
        if not self.total:
            return "0"
        parts = [f"{self.index} index", f"{self.redirects} 303", f"{self.blobs} blob"]
        if self.other:
            parts.append(f"{self.other} other")
        return f"{self.total} ({', '.join(parts)}; {self.blob_bytes / 1e6:.1f} MB)"


def projects_of(files: Iterable[str]) -> list[str]:
    """The projects of wheel file names, normalized, sorted, each once."""
    return sorted({normalize(name.split("-", 1)[0]) for name in files if name})


def count_requests(entries: Iterable[dict]) -> Requests:
    """Sort the feed's access-log entries of one install into the kinds that cost time."""
    counted = Requests()
    for entry in entries:
        kind = entry.get("kind")
        if kind == "simple":
            counted.index += 1
        elif kind == "download":
            counted.redirects += 1
        elif kind == "blob":
            counted.blobs += 1
            counted.blob_bytes += int(entry.get("bytes") or 0)
            counted.files.append(str(entry.get("path", "")).rsplit("/", 1)[-1])
        else:
            counted.other += 1
    return counted


def median(values: list[float]) -> float:
    if not values:
        raise BenchError("no run to take a median of")
    return float(statistics.median(values))


@dataclass
class Result:
    """One way's runs: seconds per run, feed requests per run, PyPI connection attempts."""

    key: str
    title: str
    seconds: list[float] = field(default_factory=list)
    requests: list[Requests] = field(default_factory=list)
    pypi_packets: list[int] = field(default_factory=list)
    note: str = ""
    estimated: bool = False  # True: extrapolated from a sample, not measured whole

    @property
    def median(self) -> float:
        return median(self.seconds)

    @property
    def max_requests(self) -> int:
        return max((r.total for r in self.requests), default=0)


@dataclass
class Extrapolation:
    """A whole-set time for a way too slow to run whole: a few projects are timed this way and
    the base way, and what this way adds per project is added to the base way's whole time.

    Used for PyPI silently dropped (base: PyPI refused, each project there waits for pip's
    timeouts and retries) and, with --quick, for PyPI refused (base: the feed alone, way 2).
    """

    sample: int                 # projects in the sample
    sample_seconds: float       # the sample installed this way
    sample_base_seconds: float  # the same sample installed the base way
    projects: int               # projects in the whole set
    base_seconds: float         # the whole set installed the base way
    base_label: str             # e.g. "way 1, PyPI refused"
    this_label: str             # e.g. "PyPI dropped"

    @property
    def extra_per_project(self) -> float:
        """What this way costs each project on top of the base way."""
        if self.sample <= 0:
            raise BenchError("a sample needs at least one project")
        return max(0.0, self.sample_seconds - self.sample_base_seconds) / self.sample

    @property
    def seconds(self) -> float:
        return self.base_seconds + self.projects * self.extra_per_project

    def explain(self) -> str:
        return (f"extrapolated, not measured: {self.sample} project(s) took "
                f"{self.sample_seconds:.1f} s with {self.this_label} and "
                f"{self.sample_base_seconds:.1f} s the base way, {self.extra_per_project:.1f} s "
                f"more per project; {self.base_seconds:.1f} s ({self.base_label}) + "
                f"{self.projects} x {self.extra_per_project:.1f} s = {self.seconds:.0f} s "
                f"({self.seconds / 60:.1f} min)")


@dataclass
class Target:
    """A claim of the issue: `subject` at most `factor` times `reference` (lower is better)."""

    label: str
    subject: str
    reference: str
    factor: float

    def verdict(self, results: dict[str, Result]) -> Optional[tuple[float, bool]]:
        """(subject/reference, met), or None when a way did not run."""
        if self.subject not in results or self.reference not in results:
            return None
        share = results[self.subject].median / results[self.reference].median
        return share, share <= self.factor


TARGETS = (
    Target("way 4 at least 10x faster than way 1 (PyPI refused)", "4", "1r", 1 / 10),
    Target("way 4 at least 1.5x faster than way 2 (feed only, pip cache warm)", "4", "2", 1 / 1.5),
    Target("way 4 no slower than 1.1x way 3b (pip's floor)", "4", "3b", 1.1),
    Target("way 5 (uv, warm cache) at most a third of way 4", "5w", "4", 1 / 3),
    Target("way 5 (uv, cold cache) at most a third of way 4", "5c", "4", 1 / 3),
)
ZERO_REQUESTS = ("3b", "4", "5c", "5w")


def describe_share(share: float) -> str:
    """A time share as the reader wants it: '12.3x faster' or '1.04x slower' than the other."""
    if share <= 0:
        return "instant"
    return f"{1 / share:.2f}x faster" if share < 1 else f"{share:.2f}x slower"


def target_lines(results: dict[str, Result]) -> list[str]:
    lines = []
    for target in TARGETS:
        verdict = target.verdict(results)
        if verdict is None:
            lines.append(f"  {target.label}: not run")
            continue
        share, met = verdict
        reference = results[target.reference]
        approx = " (against an estimate)" if reference.estimated or \
            results[target.subject].estimated else ""
        lines.append(f"  {target.label}: way {target.subject} is {describe_share(share)} than "
                     f"way {target.reference}{approx}  ->  {'met' if met else 'NOT MET'}")
    for key in ZERO_REQUESTS:
        if key in results:
            most = results[key].max_requests
            lines.append(f"  way {key} sends no request to the feed: most in a run {most}  ->  "
                         f"{'met' if most == 0 else 'NOT MET'}")
    return lines


def table(results: dict[str, Result], reference: str = "4") -> list[str]:
    """One line per way: median, every run, ratio to the reference way, feed requests."""
    ref = results.get(reference)
    lines = [f"{'way':<4} {'median':>9} {'x way ' + reference:>9}  {'runs (s)':<24} "
             f"{'feed requests per run':<44} {'PyPI pkts':>9}  what"]
    for key, result in results.items():
        ratio = f"{result.median / ref.median:.2f}" if ref and ref.median > 0 else "-"
        runs = ", ".join(f"{s:.1f}" for s in result.seconds)
        if result.estimated:
            runs = "estimated"
        requests = result.requests[-1].describe() if result.requests else "-"
        if len({r.total for r in result.requests}) > 1:
            requests += " (last run)"
        packets = str(max(result.pypi_packets)) if result.pypi_packets else "-"
        mark = "~" if result.estimated else ""
        lines.append(f"{key:<4} {mark + format(result.median, '.1f') + ' s':>9} {ratio:>9}  "
                     f"{runs:<24} {requests:<44} {packets:>9}  {result.title}")
        if result.note:
            lines.append(f"{'':<4} {'':>9} {'':>9}  {result.note}")
    return lines

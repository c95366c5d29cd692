"""The fleet benchmark's arithmetic: the PLAY RECAP it checks, the medians, ratios and per-host
figures it prints, the targets of the issue "Fleet scale", the curve across fleet sizes.

Nothing here touches the lab, so every piece is unit-tested (tests/unit/test_bench.py); the
runner (bench/fleet.py) feeds it what it measured.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Optional

# One line of PLAY RECAP: "deb11-1   : ok=14   changed=0    unreachable=0    failed=0 ...".
RECAP_LINE = re.compile(r"^(\S+)\s+: (ok=\d+.*)$", re.M)
DISTROS = ("deb11", "deb12", "deb13")

# The kinds of run, in the order they are printed; "recheck" is the run right after a rotation,
# which must change nothing.
KINDS = {
    "ping": "ansible all -m ping",
    "first": "site.yml, first run (fresh hosts)",
    "noop": "site.yml, nothing to change",
    "rotation": "site.yml, token rotated",
    "recheck": "site.yml, re-run after the rotation",
}


class FleetError(RuntimeError):
    """A run that cannot give honest figures (a failed host, a change where none was due)."""


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP per host: {'deb11-1': {'ok': 14, 'changed': 0, 'skipped': 6, ...}}.

    Only the last recap counts: an ansible-playbook run prints one, at its end."""
    start = output.rfind("PLAY RECAP")
    if start < 0:
        raise FleetError("the run printed no PLAY RECAP")
    stats = {}
    for host, fields in RECAP_LINE.findall(output[start:]):
        stats[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", fields)}
    return stats


def check_recap(stats: dict[str, dict[str, int]], hosts: Iterable[str], changes: str,
                what: str) -> None:
    """A run's recap must name exactly the hosts, with nothing failed or unreachable, and
    changes "none" (changed=0 everywhere), "every" (changed on each host) or "any"; else
    FleetError."""
    hosts = sorted(hosts)
    if sorted(stats) != hosts:
        missing = sorted(set(hosts) - set(stats))
        extra = sorted(set(stats) - set(hosts))
        raise FleetError(f"{what}: the recap names other hosts (missing {missing}, extra {extra})")
    bad = {h: s for h, s in stats.items() if s.get("failed") or s.get("unreachable")}
    if bad:
        raise FleetError(f"{what}: failed or unreachable hosts: {sorted(bad)}")
    changed = sorted(h for h, s in stats.items() if s.get("changed"))
    if changes == "none" and changed:
        raise FleetError(f"{what}: expected changed=0 on every host; changed on {changed}")
    if changes == "every" and len(changed) != len(hosts):
        raise FleetError(f"{what}: expected a change on every host; none on "
                         f"{sorted(set(hosts) - set(changed))}")


def failure_excerpt(output: str, lines: int = 8) -> str:
    """Where a playbook run failed, from its default callback's output: the TASK line before
    the first failure and the lines after it, and the number of failed hosts."""
    text = output.splitlines()
    first = next((i for i, line in enumerate(text)
                  if line.startswith(("fatal: ", "failed: ", "[ERROR]"))), None)
    if first is None:
        return "\n".join(text[-lines:])
    task = next((text[i] for i in range(first, -1, -1) if text[i].startswith("TASK [")), "")
    hosts = sum(1 for line in text if line.startswith(("fatal: [", "failed: [")))
    return "\n".join([task, *text[first:first + lines], f"({hosts} failed host results)"])


def span(values: Iterable[int]) -> str:
    """'14' when every host has the same count, '14-15' when they differ."""
    values = sorted(values)
    if not values:
        return "-"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}-{values[-1]}"


def tasks_per_host(stats: dict[str, dict[str, int]]) -> str:
    """The recap's counts per host as 'ok/changed/skipped' (ok includes changed)."""
    return "/".join(span(s.get(key, 0) for s in stats.values())
                    for key in ("ok", "changed", "skipped"))


def hosts_of_size(names: Iterable[str], size: int) -> list[str]:
    """The first size/3 hosts of each distro (deb11-1, deb11-2, ...), by their number.

    Raises FleetError when size is not a multiple of 3 or the names fall short."""
    if size < 3 or size % len(DISTROS):
        raise FleetError(f"a fleet size must be a multiple of {len(DISTROS)} (one host of each "
                         f"Debian per step), not {size}")
    per = size // len(DISTROS)
    chosen = []
    for distro in DISTROS:
        mine = sorted((int(n.rsplit("-", 1)[1]), n) for n in names
                      if re.fullmatch(rf"{distro}-\d+", n))
        if len(mine) < per:
            raise FleetError(f"{size} hosts need {per} {distro} hosts; the lab has {len(mine)}")
        chosen += [name for _, name in mine[:per]]
    return chosen


def parse_sizes(text: str) -> list[int]:
    """'3,12,24,48' -> [3, 12, 24, 48], checked (multiples of 3, ascending, no repeats)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FleetError(f"--sizes takes numbers separated by commas, not {text!r}") from None
    if not sizes:
        raise FleetError("--sizes names no size")
    for size in sizes:
        if size < 3 or size % len(DISTROS):
            raise FleetError(f"--sizes: {size} is not a multiple of 3 (a host of each Debian)")
    if sizes != sorted(set(sizes)):
        raise FleetError(f"--sizes must grow, each size once: {text!r}")
    return sizes


def waves(hosts: int, forks: int) -> int:
    """How many rounds of workers a task needs: hosts over forks, rounded up."""
    return -(-hosts // max(1, forks))


@dataclass
class Run:
    """One timed command: wall seconds, controller CPU seconds (user+sys of its process tree
    as reaped), and the recap of a playbook run (empty for ping)."""

    seconds: float
    cpu: float
    stats: dict = field(default_factory=dict)


@dataclass
class Size:
    """Every run at one fleet size."""

    hosts: int
    forks: int
    runs: dict[str, list[Run]] = field(default_factory=dict)
    slowest: list[tuple[str, float]] = field(default_factory=list)  # no-op run's tasks
    complete: bool = False  # False: an error stopped the runs of this size

    def add(self, kind: str, run: Run) -> None:
        self.runs.setdefault(kind, []).append(run)

    def has(self, kind: str) -> bool:
        return bool(self.runs.get(kind))

    def seconds(self, kind: str) -> float:
        return median(r.seconds for r in self.runs[kind])

    def cpu(self, kind: str) -> float:
        return median(r.cpu for r in self.runs[kind])

    def cpu_per_host(self, kind: str) -> float:
        return self.cpu(kind) / self.hosts

    def wall_per_host(self, kind: str) -> float:
        return self.seconds(kind) / self.hosts

    def ratio(self, kind: str) -> Optional[float]:
        """The median of this kind over the median ping at the same size."""
        if not (self.has(kind) and self.has("ping")) or self.seconds("ping") <= 0:
            return None
        return self.seconds(kind) / self.seconds("ping")


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise FleetError("no run to take a median of")
    return float(statistics.median(values))


def size_table(size: Size) -> list[str]:
    """One size: a line per kind of run with its median, every run, the ratio to ping, the
    controller's CPU seconds (total and per host) and the recap's counts per host."""
    lines = [f"{size.hosts} hosts ({size.hosts // len(DISTROS)} per Debian), forks {size.forks}"
             f" ({waves(size.hosts, size.forks)} wave{'s' if waves(size.hosts, size.forks) > 1 else ''}"
             f" of workers per task)" + ("" if size.complete else
                                          ": INCOMPLETE, an error stopped its runs"),
             f"  {'run':<38} {'median':>8} {'x ping':>7} {'CPU s':>7} {'CPU/host':>9}  "
             f"{'ok/changed/skipped per host':<28} runs (s)"]
    for kind, title in KINDS.items():
        if not size.has(kind):
            continue
        ratio = size.ratio(kind)
        runs = size.runs[kind]
        counts = tasks_per_host(runs[-1].stats) if runs[-1].stats else "-"
        lines.append(f"  {title:<38} {size.seconds(kind):7.2f}s {ratio:6.2f}x "
                     f"{size.cpu(kind):7.2f} {size.cpu_per_host(kind):8.3f}s  {counts:<28} "
                     + ", ".join(f"{r.seconds:.1f}" for r in runs))
    return lines


def curve(sizes: list[Size]) -> list[str]:
    """The fleet-size curve: per size, ping, each site.yml run with its ratio to ping, and the
    per-host figures (wall and controller CPU) of the run that changes nothing."""
    def cell(size: Size, kind: str) -> str:
        if not size.has(kind):
            return f"{'-':>16}"
        ratio = size.ratio(kind)
        return f"{size.seconds(kind):7.1f}s ({ratio:4.1f}x)" if ratio else \
            f"{size.seconds(kind):7.1f}s       "

    lines = [f"{'hosts':>5} {'ping':>7} {'first run':>16} {'nothing to do':>16} "
             f"{'token rotated':>16} {'no-op s/host':>12} {'no-op CPU/host':>14} "
             f"{'first CPU/host':>14}"]
    for size in sizes:
        noop = size.has("noop")
        lines.append(
            f"{size.hosts:>5} {size.seconds('ping') if size.has('ping') else 0:6.2f}s "
            f"{cell(size, 'first')} {cell(size, 'noop')} {cell(size, 'rotation')} "
            f"{(format(size.wall_per_host('noop'), '11.3f') + 's') if noop else '-':>12} "
            f"{(format(size.cpu_per_host('noop'), '13.3f') + 's') if noop else '-':>14} "
            f"{(format(size.cpu_per_host('first'), '13.3f') + 's') if size.has('first') else '-':>14}")
    return lines


@dataclass
class Target:
    """A figure of the issue, lower is better: `value` at most `limit`."""

    label: str
    value: Optional[float]
    limit: float
    unit: str = "x"
    detail: str = ""

    @property
    def met(self) -> Optional[bool]:
        return None if self.value is None else self.value <= self.limit

    def line(self) -> str:
        if self.value is None:
            detail = f"; {self.detail}" if self.detail else ""
            return f"  {self.label}: not measured (size not run{detail})"
        shown = f"{self.value:.2f}{self.unit}"
        detail = f" ({self.detail})" if self.detail else ""
        return (f"  {self.label}: {shown}{detail}, target <= {self.limit:g}{self.unit}  ->  "
                f"{'met' if self.met else 'MISSED'}")


def growth(sizes: list[Size], kind: str, small: int, large: int, per: str) -> Optional[float]:
    """The per-host figure (per = "cpu" or "wall") of `kind` at `large` hosts over the one at
    `small` hosts; None when either size or the run is missing."""
    by_hosts = {s.hosts: s for s in sizes}
    if small not in by_hosts or large not in by_hosts:
        return None
    a, b = by_hosts[small], by_hosts[large]
    if not (a.has(kind) and b.has(kind)):
        return None
    value = (lambda s: s.cpu_per_host(kind)) if per == "cpu" else (lambda s: s.wall_per_host(kind))
    return value(b) / value(a) if value(a) > 0 else None


def targets(sizes: list[Size], at: int = 24, small: int = 12, large: int = 48) -> list[Target]:
    """The targets of the issue "Fleet scale", judged on the medians of this run."""
    by_hosts = {s.hosts: s for s in sizes}
    here = by_hosts.get(at)
    every = [f"{s.cpu_per_host('noop'):.2f}" for s in sizes if s.has("noop")]
    return [
        Target(f"nothing to change at {at} hosts, x ping on the same hosts",
               here.ratio("noop") if here and here.has("noop") else None, 4.0),
        Target(f"first run at {at} hosts, x ping on the same hosts",
               here.ratio("first") if here and here.has("first") else None, 8.0),
        Target(f"controller CPU per host, nothing to change, at {at} hosts",
               here.cpu_per_host("noop") if here and here.has("noop") else None, 1.5, " s",
               f"at {', '.join(str(s.hosts) for s in sizes if s.has('noop'))} hosts: "
               f"{', '.join(every)} s" if every else ""),
        Target(f"per-host controller CPU, nothing to change, {large} hosts over {small}",
               growth(sizes, "noop", small, large, "cpu"), 1.3),
        Target(f"per-host wall time, nothing to change, {large} hosts over {small}",
               growth(sizes, "noop", small, large, "wall"), 1.3),
    ]


def growth_lines(sizes: list[Size], small: int = 12, large: int = 48) -> list[str]:
    """Per-host growth from `small` to `large` hosts for each kind of site.yml run."""
    lines = []
    for kind in ("first", "noop", "rotation"):
        cpu = growth(sizes, kind, small, large, "cpu")
        wall = growth(sizes, kind, small, large, "wall")
        if cpu is None or wall is None:
            continue
        lines.append(f"  {KINDS[kind]:<38} per host, {large} over {small} hosts: "
                     f"CPU {cpu:.2f}x, wall {wall:.2f}x")
    return lines

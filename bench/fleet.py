#!/usr/bin/env python3
"""Fleet benchmark: the whole site.yml on a lab that grows to 3, 12, 24 and 48 hosts.

    .venv/bin/python bench/fleet.py [--sizes 3,12,24,48] [--runs N] [--quick]
                                    [--lab NAME] [--keep] [--forks N] [--no-record]

At each size (a third of the hosts each of Debian 11, 12 and 13), with the project's
ansible.cfg and the lab's inventory, it times three runs of `ansible-playbook site.yml`, each
beside `ansible all -m ping` on the same hosts, run just before it so that both see the same
load:

  first run       every host fresh (what site.yml installs removed, as the integration tests'
                  unprovision() does), the controller's wheelhouse cache warm;
  nothing to do   a converged fleet (every host must report changed=0);
  token rotated   a new valid token in the lab feed's tokens file and in the file the
                  inventory reads it from (every host must report a change; the run right
                  after it must report changed=0 on every host, and is shown too).

For each: wall seconds (median of its runs), the ratio to ping's median at that size, the
controller's CPU seconds (user+sys of the ansible process tree and its ssh clients, from
getrusage(RUSAGE_CHILDREN) around the run; ControlPersist's ssh masters run detached and are
not in it), per host, and the PLAY RECAP's ok/changed/skipped per host. Then the curve across
sizes, the issue's targets as met or missed, the per-host growth from 12 to 48 hosts, and the
machine's load at the start and the end.

The lab: --lab NAME uses that lab when it is up, or brings it up; without --lab, a lab named
"fleet" is brought up with 3 hosts and grown (Lab.add_hosts) as the sizes need. A lab this
script brought up is taken down at the end unless --keep; hosts it added to a lab it found are
removed. The controller's wheelhouse cache is one of its own (a temporary directory, warmed by
a first site.yml run that is not timed), so ~/.cache/pipfeed is not touched.

A run of the default sizes records its report in bench/README.md (between the fleet-bench
markers) unless --no-record. Exit status 0 when every run ran and every recap was as due,
whether or not a target was met; 1 on an error.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fleet_figures import (  # noqa: E402
    FleetError, Run, Size, check_recap, curve, failure_excerpt, growth_lines, hosts_of_size, median,
    parse_recap,
    parse_sizes, size_table, targets)
from tests.lab.lab import Lab, LabError  # noqa: E402

BIN = Path(sys.executable).parent
DEFAULT_SIZES = "3,12,24,48"
QUICK_SIZES = "3,12"
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- fleet-bench:begin -->", "<!-- fleet-bench:end -->"
CALLBACKS = Path(__file__).resolve().parent / "fleet_callbacks"


def log(message: str) -> None:
    print(f"fleet: {message}", file=sys.stderr, flush=True)


def configured_forks() -> int:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "ansible.cfg")
    return parser.getint("defaults", "forks", fallback=5)


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    memory = ""
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
        memory = f", {int(total.split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores{memory}, load average {load}"


def revision() -> str:
    """The checkout's commit, and the files that differ from it (what the figures are of)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.rstrip() if done.returncode == 0 else ""
    commit = git("log", "-1", "--format=%h %cs %s")
    if not commit:
        return "not a git checkout"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines()]
    if len(commit) > 80:
        commit = commit[:77].rsplit(" ", 1)[0] + " ..."
    return commit + (f"; uncommitted changes in {', '.join(changed)}" if changed else "")


def other_containers(lab: Lab) -> int:
    """Containers running on the machine that are not this lab's (other labs, other jobs)."""
    listing = subprocess.run(["docker", "ps", "--format", "{{.Names}}"], capture_output=True,
                             text=True).stdout.split()
    return sum(1 for name in listing if not name.startswith(lab.prefix + "-"))


class Fleet:
    """The runs, against one lab, with a work directory of the benchmark's own."""

    def __init__(self, lab: Lab, work: Path, forks: int | None):
        self.lab = lab
        self.work = work
        self.forks = forks
        self.token_file = work / "token"
        self.set_token(lab.token)
        self.vars_file = work / "vars.json"
        # The controller cache, and the token's source: the inventory's token_var reads the
        # file lab_feed_token_file names, which is this one.
        self.vars_file.write_text(json.dumps({
            "pipfeed_wheelhouse_cache_dir": str(work / "cache"),
            "lab_feed_token_file": str(self.token_file)}))
        self.vars_file.chmod(0o600)
        self.task_log = work / "task-times.jsonl"

    def set_token(self, token: str) -> None:
        partial = self.token_file.with_suffix(".partial")
        partial.write_text(token + "\n")
        partial.chmod(0o600)
        partial.rename(self.token_file)

    def env(self, **extra: str) -> dict:
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1",
                   ANSIBLE_FORCE_COLOR="0", **extra)
        if self.forks:
            env["ANSIBLE_FORKS"] = str(self.forks)
        return env

    @staticmethod
    def timed(cmd: list[str], env: dict, what: str, timeout: float = 3600) -> tuple[Run, str]:
        """Run a command; its wall and controller CPU seconds, and its output. CPU is the
        user+sys time of the children reaped during the run: the command and its process tree
        (Ansible's workers, the ssh clients), as nothing else runs meanwhile."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            raise FleetError(f"{what} failed (exit {result.returncode}):\n"
                             + failure_excerpt(result.stdout) + "\n" + result.stderr[-2000:])
        return Run(took, cpu), result.stdout

    def limit(self, hosts: list[str]) -> list[str]:
        every = sorted(h.name for h in self.lab.hosts)
        return [] if sorted(hosts) == every else ["--limit", ",".join(hosts)]

    def ping(self, hosts: list[str]) -> Run:
        run, _ = self.timed([str(BIN / "ansible"), "all", "-i", str(self.lab.inventory),
                             "-m", "ping", *self.limit(hosts)], self.env(), "ansible all -m ping")
        return run

    def site(self, hosts: list[str], what: str, changes: str,
             tasks: dict[str, list[float]] | None = None) -> Run:
        """site.yml on these hosts; its recap checked (changes: "none" or "every")."""
        self.task_log.unlink(missing_ok=True)
        env = self.env(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS),
                       ANSIBLE_CALLBACKS_ENABLED="fleet_task_times",
                       FLEET_TASK_TIMES=str(self.task_log))
        run, output = self.timed([str(BIN / "ansible-playbook"), "-i", str(self.lab.inventory),
                                  "site.yml", "-e", f"@{self.vars_file}", *self.limit(hosts)],
                                 env, what)
        run.stats = parse_recap(output)
        check_recap(run.stats, hosts, changes, what)
        if tasks is not None and self.task_log.exists():
            for line in self.task_log.read_text().splitlines():
                entry = json.loads(line)
                tasks.setdefault(entry["task"], []).append(entry["s"])
        return run

    def unprovision(self, hosts: list[str]) -> None:
        """Every host as fresh as the lab made it, as the integration tests make it."""
        from tests.integration.support import unprovision
        with ThreadPoolExecutor(min(16, len(hosts))) as pool:
            list(pool.map(lambda host: unprovision(self.lab, host), hosts))

    def rotate(self) -> None:
        """A new token that the feed takes, in the feed's tokens file and in the inventory's
        source (the old one stays valid, as an Azure PAT does until it expires)."""
        token = "labfleet" + secrets.token_hex(20)
        data = json.loads(self.lab.tokens_file.read_text())
        data["tokens"].append({"token": token, "scopes": ["read"]})
        partial = self.lab.tokens_file.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2))
        partial.chmod(0o600)
        partial.rename(self.lab.tokens_file)
        self.set_token(token)


def grow(lab: Lab, size: int, added: list[str]) -> list[str]:
    """The hosts of this size, after adding what the lab lacks (names kept in `added`)."""
    per = size // 3
    for distro in ("deb11", "deb12", "deb13"):
        have = sum(1 for h in lab.hosts if h.distro == distro and h.name.startswith(distro + "-"))
        if have < per:
            log(f"adding {per - have} {distro} hosts")
            added += [h.name for h in lab.add_hosts([distro], per - have)]
    return hosts_of_size([h.name for h in lab.hosts], size)


def measure_size(fleet: Fleet, hosts: list[str], args, size: Size) -> None:
    """Every run at one size, into `size` (which keeps what ran when an error stops it)."""
    n = len(hosts)
    fleet.ping(hosts)  # untimed: every host answers, and its SSH master is up
    for i in range(args.first_runs):
        log(f"{n} hosts: first run {i + 1}/{args.first_runs} (unprovisioning the hosts)")
        fleet.unprovision(hosts)
        size.add("ping", fleet.ping(hosts))
        size.add("first", fleet.site(hosts, f"first run at {n} hosts", "every"))
        log(f"{n} hosts: first run {size.runs['first'][-1].seconds:.1f} s")
    tasks: dict[str, list[float]] = {}
    for i in range(args.runs):
        size.add("ping", fleet.ping(hosts))
        size.add("noop", fleet.site(hosts, f"run with nothing to change at {n} hosts", "none",
                                    tasks))
        log(f"{n} hosts: nothing to change {i + 1}/{args.runs}: "
            f"{size.runs['noop'][-1].seconds:.1f} s (ping {size.runs['ping'][-1].seconds:.1f} s)")
    size.slowest = sorted(((name, median(v)) for name, v in tasks.items()),
                          key=lambda item: -item[1])[:6]
    for i in range(args.rotations):
        fleet.rotate()
        size.add("ping", fleet.ping(hosts))
        size.add("rotation", fleet.site(hosts, f"token rotation at {n} hosts", "every"))
        size.add("recheck", fleet.site(hosts, f"re-run after the rotation at {n} hosts", "none"))
        log(f"{n} hosts: token rotated {size.runs['rotation'][-1].seconds:.1f} s, "
            f"re-run {size.runs['recheck'][-1].seconds:.1f} s with changed=0")
    size.complete = True


def report(sizes: list[Size], header: list[str], footer: list[str]) -> list[str]:
    lines = list(header) + [""]
    for size in sizes:
        lines += size_table(size)
        if size.slowest:
            lines.append("  slowest tasks, nothing to change (median s): " + "; ".join(
                f"{name.split(' : ', 1)[-1][:60]} {seconds:.2f}"
                for name, seconds in size.slowest))
        lines.append("")
    lines += ["Curve (medians; x ping: over ansible all -m ping on the same hosts, same run):"]
    lines += curve(sizes)
    lines += ["", "Targets:"] + [t.line() for t in targets(sizes)]
    grown = growth_lines(sizes)
    if grown:
        lines += ["", "Per-host growth:"] + grown
    return lines + [""] + footer


def record(lines: list[str], path: Path = README) -> bool:
    """Put the report between the fleet-bench markers of bench/README.md; False when the
    markers are missing."""
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    block = BEGIN + "\n```\n" + "\n".join(lines).rstrip() + "\n```\n"
    path.write_text(text[:start] + block + text[end:])
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"fleet sizes, multiples of 3, growing (default {DEFAULT_SIZES})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: sizes {QUICK_SIZES}, one run of each kind")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs with nothing to change per size (default 3)")
    parser.add_argument("--first-runs", type=int, default=3,
                        help="first runs on fresh hosts per size (default 3: the noisiest "
                             "figure, a median as for the other runs)")
    parser.add_argument("--rotations", type=int, default=1,
                        help="token rotations per size, each with its re-run (default 1)")
    parser.add_argument("--forks", type=int, default=None,
                        help="Ansible's forks for ping and site.yml (default: ansible.cfg's)")
    parser.add_argument("--lab", default=None, help="lab name (default: bring up 'fleet')")
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab (and the hosts this script added) up")
    parser.add_argument("--no-record", action="store_true",
                        help="do not write the report into bench/README.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.first_runs, args.rotations = QUICK_SIZES, 1, 1, 1
    for name in ("runs", "first_runs", "rotations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.forks is not None and args.forks < 1:
        parser.error("--forks must be 1 or more")
    try:
        args.size_list = parse_sizes(args.sizes)
    except FleetError as error:
        parser.error(str(error))
    args.record = not args.no_record and args.sizes == DEFAULT_SIZES and not args.quick
    return args


def bench(lab: Lab, args, added: list[str]) -> int:
    started = time.monotonic()
    forks = args.forks or configured_forks()
    work = Path(tempfile.mkdtemp(prefix="pipfeed-fleet-"))
    sizes: list[Size] = []
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = [
        f"pipfeed fleet benchmark, {stamp}",
        f"revision: {revision()}",
        f"machine at the start: {machine()}; other containers running: {other_containers(lab)}",
        f"site.yml (playbooks/hosts.yml, one play) on lab {lab.name!r}, "
        f"forks {forks}{' (ansible.cfg)' if not args.forks else ' (--forks)'}; per size "
        f"{args.first_runs} first run(s), {args.runs} with nothing to change, "
        f"{args.rotations} rotation(s); medians",
        "controller wheelhouse cache warm (a temporary one, filled by an untimed run first)"]
    try:
        fleet = Fleet(lab, work, args.forks)
        for number, target in enumerate(args.size_list):
            hosts = grow(lab, target, added)
            if number == 0:
                log(f"{len(hosts)} hosts: warming the controller's wheelhouse cache "
                    "(site.yml, not timed)")
                fleet.ping(hosts)
                warm = fleet.site(hosts, "warm-up run", "any")
                header.append(f"warm-up: site.yml at {len(hosts)} hosts with a cold cache "
                              f"took {warm.seconds:.1f} s (not in the figures)")
            sizes.append(Size(len(hosts), forks))
            measure_size(fleet, hosts, args, sizes[-1])
            for line in size_table(sizes[-1]):
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        footer = [f"machine at the end: {machine()}",
                  f"fleet: {sum(s.complete for s in sizes)} of {len(args.size_list)} sizes in "
                  f"{(time.monotonic() - started) / 60:.1f} min"]
        if sizes and not sizes[-1].runs:
            sizes.pop()
        if sizes:
            lines = report(sizes, header, footer)
            print("\n" + "\n".join(lines), flush=True)
            if args.record and all(s.complete for s in sizes) \
                    and len(sizes) == len(args.size_list):
                if record(lines):
                    log(f"recorded in {README.relative_to(ROOT)}")
                else:
                    log(f"not recorded: {README.name} has no {BEGIN} ... {END} block")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.lab or "fleet"
    made = False
    added: list[str] = []
    try:
        try:
            lab = Lab.load(name)
            log(f"using the running lab {name!r} ({len(lab.hosts)} hosts)")
        except LabError:
            log(f"bringing up lab {name!r} (3 hosts; grown as the sizes need)")
            lab = Lab.up(name, count=1)
            made = True
        try:
            return bench(lab, args, added)
        finally:
            if made and not args.keep:
                lab.down()
            elif added and not args.keep:
                log(f"removing the {len(added)} hosts this run added to {name!r}")
                for host in added:
                    lab.remove_host(host)
    except (FleetError, LabError, subprocess.TimeoutExpired, OSError) as error:
        print(f"fleet: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

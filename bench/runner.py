"""The install benchmark: one pinned requirement set installed into a fresh venv on one lab
host (Debian 12, Python 3.11, its pip 23.0.1) in each of the ways users install today and the
way this project sets up, with the feed slowed to 50 ms per request and 20 MB/s.

Ways (bench/README.md says how to read them):
  1r  the seed's configuration: /etc/pip.conf with the feed as extra-index-url, PyPI refused
  1d  the same with PyPI silently dropped: a few projects timed, the whole set extrapolated
  2   the feed as the only index, pip's cache warm (the signed blob URLs defeat it)
  3a  the seeds' hand-made script on a warm wheelhouse: pip wheel --find-links, then
      pip install --no-index
  3b  only its last line, pip install --no-index --find-links (pip's floor)
  4   a host configured by this project's roles (site.yml), the README's plain command:
      pip install --no-index -r requirements.txt
  5c  uv on that host, cold cache: uv pip install --offline -r requirements.txt
  5w  the same with uv's cache warm

Ways 1-3 reproduce a host as the seeds set it up: pip reads no configuration file
(PIP_CONFIG_FILE=/dev/null hides the roles' /etc/pip.conf) and gets the seed's settings from
the matching PIP_* variables; the PAT, which the seed types at pip's prompt, comes from a
netrc file of the benchmark's own (NETRC), so that no run waits for a prompt.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import figures
from bench.figures import BenchError, Extrapolation, Requests, Result
from tests.lab import packages
from tests.lab.lab import FEED_HOST, Lab, LabError

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.11"
REQUIREMENTS = ROOT / "bench" / f"requirements-{PYTHON}.txt"
LATENCY_MS = 50
BANDWIDTH = 20_000_000          # bytes per second: 20 MB/s
BENCH_DIR = "/tmp/pipfeed-bench"  # on the host, owned by the lab's admin account
# Small projects of the set, timed alone (--no-deps) where a way is too slow for the whole set.
SAMPLE = ("mdurl", "isodate", "h11", "idna")
# Modules that must import after every install: the compiled heart of the set.
IMPORTS = "azure.identity, azure.storage.blob, cryptography.fernet, numpy, pandas, pydantic, " \
          "lxml.etree, sqlalchemy, orjson, psutil, yaml, httpx, rich"
HOST_TIMEOUT = 3600             # seconds any one host command may take before it is stopped


def log(message: str = "") -> None:
    print(message, flush=True)


# ----- the controller side ----------------------------------------------------------------

def ensure_bench_wheels(requirements: Path = REQUIREMENTS, python: str = PYTHON) -> Path:
    """Download the set's wheels for the target Python once, from PyPI (or
    PIPFEED_LAB_UPSTREAM), into the lab cache; later runs reuse it. Nothing else reaches PyPI."""
    key = figures.set_key(requirements, python, packages.PLATFORMS)
    target = packages.cache_root() / f"bench-{key}"
    if (target / ".complete").exists():
        return target
    log(f"bench: downloading the benchmark's package set for Python {python} into {target}")
    packages.download_once(target.name, key, [(python, requirements.read_text())], log=sys.stderr)
    return target


def machine_facts() -> str:
    """The controller, which here is also the machine the lab's containers run on."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({model}), {total_kb / 2**20:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, load average {load}")


# ----- the host side ----------------------------------------------------------------------

@dataclass
class Bench:
    lab: Lab
    host: str
    pins: list[tuple[str, str]]
    uv_pin: str
    sample: tuple[str, ...] = SAMPLE[:2]

    def ssh(self, command: str, stdin: bytes = b"", timeout: float = HOST_TIMEOUT
            ) -> subprocess.CompletedProcess:
        """A command on the host as the lab's admin account. Data (the token) goes on stdin,
        never into the command line."""
        cmd = ["ssh", "-F", str(self.lab.ssh_config), "-o", "BatchMode=yes",
               "-o", "ServerAliveInterval=30", self.host, command]
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout + 60)

    def must(self, command: str, stdin: bytes = b"", what: str = "") -> str:
        done = self.ssh(command, stdin)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise BenchError(f"{self.host}: {what or command} failed ({done.returncode}):\n"
                             + "\n".join(output.splitlines()[-25:]))
        return done.stdout.decode(errors="replace")

    # -- PyPI's firewall: how many packets it refused or dropped --
    def _firewall(self, *args: str) -> str:
        container = self.lab.state["firewall"]["container"]
        done = subprocess.run(["docker", "exec", container, "iptables", "-w", *args],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"reading PyPI's firewall failed: {done.stderr.strip()}")
        return done.stdout

    def pypi_reset(self) -> None:
        self._firewall("-Z", "INPUT")

    def pypi_packets(self) -> int:
        """Packets that reached the firewall PyPI's names point at (connection attempts and
        their retransmissions): none should arrive, but way 1's pip sends them."""
        total = 0
        for line in self._firewall("-L", "INPUT", "-v", "-x", "-n").splitlines()[2:]:
            fields = line.split()
            if fields and fields[0].isdigit():
                total += int(fields[0])
        return total

    # -- one timed run --
    def timed(self, prepare: str, command: str, venv: Optional[str], pins=None,
              what: str = "") -> tuple[float, Requests, int]:
        """Prepare (not timed), then run the command under the host's own clock; check the
        venv got every pin; return (seconds, the feed's requests, PyPI packets) of the command.
        """
        self.must(prepare, what=f"preparing {what}")
        mark = self.lab.log_mark(self.lab.access_log)
        self.pypi_reset()
        script = (f"cd {BENCH_DIR} && s=$(date +%s%N); ( {command} ) > {BENCH_DIR}/last.log 2>&1;"
                  f" rc=$?; e=$(date +%s%N); tail -n 30 {BENCH_DIR}/last.log;"
                  " echo \"pipfeed-bench rc=$rc ns=$((e - s))\"")
        done = self.ssh(f"bash -c {shlex.quote(script)}")
        output = (done.stdout + done.stderr).decode(errors="replace")
        rc, seconds = figures.parse_timing(output)
        if rc != 0:
            raise BenchError(f"{what}: the install failed ({rc}); its output ends:\n{output}")
        time.sleep(0.3)  # the feed writes a request's log line just after answering it
        requests = figures.count_requests(self.lab.read_log(self.lab.access_log, mark))
        packets = self.pypi_packets()
        if venv:
            self.check_venv(venv, pins or self.pins, what)
        return seconds, requests, packets

    def check_venv(self, venv: str, pins, what: str) -> None:
        """Every pin installed at its version and, after the whole set, the compiled modules
        import (one Python start for both)."""
        probe = ("import json, importlib.metadata as m; print(json.dumps("
                 "{d.metadata['Name']: d.version for d in m.distributions()}))")
        if pins is self.pins:
            probe = f"import {IMPORTS}; {probe}"
        found = json.loads(self.must(f"{venv}/bin/python -c {shlex.quote(probe)}",
                                     what=f"checking what {what} installed"))
        problems = figures.check_installed(pins, found)
        if problems:
            raise BenchError(f"{what}: the venv is not the pinned set: {'; '.join(problems)}")


# The seed's host: no configuration file (hides the roles' /etc/pip.conf), the PAT from a
# netrc file of the benchmark's own, never a prompt, no self-check against an index.
SEED_ENV = (f"export PIP_CONFIG_FILE=/dev/null NETRC={BENCH_DIR}/netrc PIP_NO_INPUT=1 "
            "PIP_DISABLE_PIP_VERSION_CHECK=1")
FRESH_VENV = f"rm -rf {BENCH_DIR}/venv && python3 -m venv {BENCH_DIR}/venv"
ACTIVATE = f". {BENCH_DIR}/venv/bin/activate"


def way_commands(feed_url: str) -> dict[str, str]:
    """The timed command of each way, run in BENCH_DIR after a fresh venv is made."""
    seed_script = (  # the seeds' script, line for line, with the requirement file as <packages>
        "set -e; "
        f"export PIP_CACHE_DIR={BENCH_DIR}/wheelhouse-3; "
        "mkdir -p $PIP_CACHE_DIR; "
        "python -m pip install pip wheel --upgrade; "
        "python -m pip wheel --find-links=$PIP_CACHE_DIR --wheel-dir=$PIP_CACHE_DIR "
        "-r requirements.txt; "
        "python -m pip install --find-links=$PIP_CACHE_DIR --no-index -r requirements.txt")
    return {
        "1r": f"{SEED_ENV} PIP_EXTRA_INDEX_URL={feed_url} PIP_CACHE_DIR={BENCH_DIR}/cache-1; "
              f"{ACTIVATE} && pip install -r requirements.txt",
        "2": f"{SEED_ENV} PIP_INDEX_URL={feed_url} PIP_CACHE_DIR={BENCH_DIR}/cache-2; "
             f"{ACTIVATE} && pip install -r requirements.txt",
        "3a": f"{SEED_ENV} PIP_INDEX_URL={feed_url}; {ACTIVATE} && {seed_script}",
        "3b": f"{SEED_ENV} PIP_CACHE_DIR={BENCH_DIR}/wheelhouse-3; {ACTIVATE} && "
              "python -m pip install --find-links=$PIP_CACHE_DIR --no-index -r requirements.txt",
        # What the README tells a user of a configured host to type; pip reads /etc/pip.conf.
        "4": f"{ACTIVATE} && pip install --no-index -r requirements.txt",
        "5c": f"{ACTIVATE} && export PATH={BENCH_DIR}/tools/bin:$PATH "
              f"UV_CACHE_DIR={BENCH_DIR}/uv-cache && uv pip install --offline -r requirements.txt",
    }


TITLES = {
    "1r": "seed pip.conf: feed as extra-index-url, PyPI refused",
    "1d": "seed pip.conf: feed as extra-index-url, PyPI dropped",
    "2": "feed as the only index, pip's cache warm",
    "3a": "seed script on a warm wheelhouse: pip wheel --find-links + pip install --no-index",
    "3b": "seed script's last line only: pip install --no-index --find-links",
    "4": "configured by pipfeed: pip install --no-index -r requirements.txt",
    "5c": "configured by pipfeed: uv pip install --offline -r ..., cold uv cache",
    "5w": "configured by pipfeed: uv pip install --offline -r ..., warm uv cache",
}


def prepare_host(bench: Bench, requirements: Path) -> dict[str, str]:
    """The benchmark's directory on the host: the requirement file, the seed's netrc, uv."""
    gone = bench.ssh(f"rm -rf {BENCH_DIR} && mkdir -m 0700 {BENCH_DIR}")
    if gone.returncode != 0:
        raise BenchError(f"{bench.host}: cannot make {BENCH_DIR}")
    text = "".join(f"{name}=={version}\n" for name, version in bench.pins)
    bench.must(f"cat > {BENCH_DIR}/requirements.txt", text.encode(), "writing requirements.txt")
    sample = [(n, v) for n, v in bench.pins if n in bench.sample]
    bench.must(f"cat > {BENCH_DIR}/sample.txt",
               "".join(f"{n}=={v}\n" for n, v in sample).encode(), "writing sample.txt")
    # The PAT the seed types at pip's prompt, as a netrc line for the feed; 0600, removed at the end.
    netrc = f"machine {FEED_HOST} login bench password {bench.lab.token}\n".encode()
    bench.must(f"umask 077 && cat > {BENCH_DIR}/netrc", netrc, "writing the seed's netrc")
    bench.must(f"python3 -m venv {BENCH_DIR}/tools && {BENCH_DIR}/tools/bin/pip install -q "
               f"--disable-pip-version-check --no-index {bench.uv_pin}",
               what="installing uv from the wheelhouse")
    facts = bench.must(
        "echo debian=$(cat /etc/debian_version); echo python=$(python3 -V 2>&1 | cut -d' ' -f2);"
        f" python3 -m venv {BENCH_DIR}/probe && echo pip=$({BENCH_DIR}/probe/bin/pip --version "
        f"| cut -d' ' -f2); echo uv=$({BENCH_DIR}/tools/bin/uv --version | cut -d' ' -f2);"
        f" rm -rf {BENCH_DIR}/probe")
    return dict(line.split("=", 1) for line in facts.split() if "=" in line)


def configure_host(bench: Bench, wheelhouse_requirements: Path) -> float:
    """site.yml from the lab inventory on the bench host, with the benchmark's set as the
    wheelhouse; the feed is not slowed down for it. Returns its wall time."""
    lab = bench.lab
    variables = {"pipfeed_wheelhouse_requirements": str(wheelhouse_requirements),
                 "pipfeed_wheelhouse_cache_dir": str(lab.dir / "bench" / "wheelhouse-cache")}
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=lab.dir / "bench",
                                     delete=False) as handle:
        json.dump(variables, handle)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(lab.inventory),
           str(ROOT / "site.yml"), "--limit", bench.host, "-e", f"@{handle.name}"]
    log(f"bench: configuring {bench.host} with site.yml (the benchmark's set as its wheelhouse)")
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=1800)
    finally:
        os.unlink(handle.name)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError("site.yml failed on the bench host; its output ends:\n"
                         + "\n".join(done.stdout.splitlines()[-30:]))
    recap = [line for line in done.stdout.splitlines() if line.startswith(bench.host + " ")]
    log(f"bench: site.yml took {took:.0f} s: {recap[-1].split(':', 1)[1].strip() if recap else ''}")
    return took


# ----- the ways -----------------------------------------------------------------------------

def run_ways(bench: Bench, runs: int, slow_runs: int, quick: bool) -> dict[str, Result]:
    """Warm-ups, then `runs` rounds of the fast ways (in a rotating order, so that a change in
    the machine's load spreads over all of them), then way 1, whose every project waits for
    PyPI."""
    commands = way_commands(bench.lab.feed_url)
    results = {key: Result(key, TITLES[key]) for key in TITLES}
    venv = f"{BENCH_DIR}/venv"

    def record(key: str, measured: tuple[float, Requests, int]) -> None:
        seconds, requests, packets = measured
        results[key].seconds.append(seconds)
        results[key].requests.append(requests)
        results[key].pypi_packets.append(packets)
        log(f"  way {key:<3} {seconds:7.1f} s   feed requests {requests.describe()}"
            + (f", PyPI packets {packets}" if packets else ""))

    def uv_prepare(cold: bool) -> str:
        return FRESH_VENV + (f" && rm -rf {BENCH_DIR}/uv-cache" if cold else "")

    rounds = [
        [("4", FRESH_VENV, "4")],
        [("5c", uv_prepare(True), "5c"), ("5w", uv_prepare(False), "5c")],
        [("3b", FRESH_VENV, "3b")],
        [("3a", FRESH_VENV, "3a")],
        [("2", FRESH_VENV, "2")],
    ]
    bench.lab.set_pypi_block("refuse")
    log("bench: warming up (not counted): pip's cache for way 2, the wheelhouse of way 3, "
        "and one read of the host's wheelhouse for way 4")
    cold2 = bench.timed(f"{FRESH_VENV} && rm -rf {BENCH_DIR}/cache-2", commands["2"], venv,
                        what="way 2, cold cache")
    log(f"  way 2  with a cold pip cache: {cold2[0]:.1f} s, feed requests {cold2[1].describe()}")
    cold3 = bench.timed(f"{FRESH_VENV} && rm -rf {BENCH_DIR}/wheelhouse-3", commands["3a"], venv,
                        what="way 3a, cold wheelhouse")
    log(f"  way 3a with an empty wheelhouse: {cold3[0]:.1f} s, feed requests "
        f"{cold3[1].describe()}")
    first4 = bench.timed(FRESH_VENV, commands["4"], venv, what="way 4, first read")
    log(f"  way 4  first run: {first4[0]:.1f} s")

    for number in range(runs):
        order = rounds[number % len(rounds):] + rounds[:number % len(rounds)]
        log(f"bench: round {number + 1} of {runs}")
        for group in order:
            for key, prepare, command in group:
                record(key, bench.timed(prepare, commands[command], venv, what=f"way {key}"))

    warm2 = results["2"].requests[-1]
    results["2"].note = (
        f"cold pip cache: {cold2[0]:.1f} s, {cold2[1].blobs} files ({cold2[1].blob_bytes / 1e6:.1f}"
        f" MB) from the blob host; warm: {warm2.blobs} files ({warm2.blob_bytes / 1e6:.1f} MB) "
        "again, each by a new signed URL: pip's cache (keyed by URL) never hits")
    warm3 = results["3a"].requests[-1]
    results["3a"].note = (
        f"empty wheelhouse (first run): {cold3[0]:.1f} s; warm, pip still reads {warm3.index} "
        f"index pages and fetches {', '.join(figures.projects_of(warm3.files)) or 'nothing'} "
        "again (the script's `pip install pip wheel --upgrade`)")

    # Way 1: every project first waits for PyPI, which the firewall refuses, then the feed.
    projects = len(bench.pins)
    sample_pins = [(n, v) for n, v in bench.pins if n in bench.sample]
    sample_cmd = {key: commands[key].replace("-r requirements.txt", "--no-deps -r sample.txt")
                  for key in ("1r", "2")}
    names = ", ".join(n for n, _ in sample_pins)

    def sample(key: str, what: str) -> tuple[float, Requests, int]:
        measured = bench.timed(FRESH_VENV, sample_cmd[key], venv, sample_pins, what)
        log(f"  {what} ({names}): {measured[0]:.1f} s, feed requests "
            f"{measured[1].describe()}, PyPI packets {measured[2]}")
        return measured

    def estimate(key: str, guess: Extrapolation) -> None:
        results[key].seconds.append(guess.seconds)
        results[key].estimated = True
        results[key].note = guess.explain()

    refused = sample("1r", "sample, PyPI refused")
    if quick:
        base = sample("2", "sample, the feed alone")
        estimate("1r", Extrapolation(len(sample_pins), refused[0], base[0], projects,
                                     results["2"].median, "way 2, the feed alone",
                                     "PyPI refused"))
    else:
        for number in range(1, slow_runs + 1):
            log(f"bench: way 1, PyPI refused, run {number} of {slow_runs} (pip tries PyPI "
                "for every project, with retries)")
            record("1r", bench.timed(FRESH_VENV, commands["1r"], venv,
                                     what="way 1, PyPI refused"))
    per_project = refused[2] / len(sample_pins)
    results["1r"].note = " ".join(filter(None, [
        results["1r"].note, f"PyPI packets: {per_project:.0f} per project (a connection and "
        "pip's 5 retries, each refused at once)"]))

    # PyPI silently dropped: minutes per project. Time the sample and extrapolate.
    bench.lab.set_pypi_block("drop")
    log(f"bench: way 1, PyPI dropped: timing {len(sample_pins)} projects; minutes each")
    dropped = sample("1r", "sample, PyPI dropped")
    estimate("1d", Extrapolation(len(sample_pins), dropped[0], refused[0], projects,
                                 results["1r"].median, "way 1, PyPI refused", "PyPI dropped"))
    return results


# ----- the command --------------------------------------------------------------------------

def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/install",
        description="Install speed on a locked-down lab host: the seeds' ways against a host "
                    "configured by pipfeed, side by side in one run (bench/README.md).")
    parser.add_argument("--lab", default="bench",
                        help="lab to use; brought up (Debian 12 only) and removed afterwards "
                             "when it is not running (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs of each way; medians are reported (default: 3)")
    parser.add_argument("--slow-runs", type=int, default=2,
                        help="timed runs of way 1 with PyPI refused, about 6 minutes each "
                             "(default: 2)")
    parser.add_argument("--sample", type=int, default=2, choices=range(1, len(SAMPLE) + 1),
                        help="projects timed with PyPI dropped, minutes each (default: 2)")
    parser.add_argument("--quick", action="store_true",
                        help="one run of each way, and way 1 with PyPI refused extrapolated "
                             "from a sample too (a third of a full run's time)")
    parser.add_argument("--keep-lab", action="store_true",
                        help="leave a lab this run brought up running")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.slow_runs < 1:
        parser.error("--runs and --slow-runs must be 1 or more")
    if args.quick:
        args.runs = args.slow_runs = 1
    return args


def pick_host(lab: Lab) -> str:
    for host in lab.hosts:
        if host.python == PYTHON:
            return host.name
    raise BenchError(f"lab {lab.name!r} has no Debian 12 host (Python {PYTHON}); bring one up "
                     f"with: python -m tests.lab up --name NAME --distros deb12")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        pins = figures.load_requirements(REQUIREMENTS)
        uv_pin = next(p for p in packages.requirements_for(PYTHON) if p.startswith("uv=="))
        wheels = ensure_bench_wheels()
        brought_up = False
        try:
            lab = Lab.load(args.lab)
            log(f"bench: using the running lab {args.lab!r}")
        except LabError:
            log(f"bench: bringing up lab {args.lab!r} (one Debian 12 host)")
            lab = Lab.up(args.lab, distros=("deb12",), count=1)
            brought_up = True
        pypi_block = lab.state.get("pypi_block", "drop")
        try:
            return measure(lab, pins, uv_pin, wheels, args, started)
        finally:
            restore(lab, pypi_block)
            if brought_up and not args.keep_lab:
                lab.down()
    except (BenchError, LabError, subprocess.CalledProcessError,
            subprocess.TimeoutExpired) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2


def restore(lab: Lab, pypi_block: str) -> None:
    """Put the feed and the firewall back as the lab had them, and remove the benchmark's
    directory on the host (the seed's netrc with it)."""
    try:
        lab.control(latency_ms=0, bandwidth_bps=0)
        lab.set_pypi_block(pypi_block)
        subprocess.run(["ssh", "-F", str(lab.ssh_config), "-o", "BatchMode=yes",
                        pick_host(lab), f"rm -rf {BENCH_DIR}"], capture_output=True, timeout=120)
    except (LabError, BenchError, OSError, subprocess.SubprocessError) as error:
        print(f"bench: could not restore lab {lab.name!r}: {error}", file=sys.stderr)


def measure(lab: Lab, pins, uv_pin: str, wheels: Path, args, started: float) -> int:
    host = pick_host(lab)
    bench = Bench(lab, host, pins, uv_pin, SAMPLE[:args.sample])
    files = sorted(wheels.glob("*.whl"))
    size = sum(f.stat().st_size for f in files)
    added = lab.add_feed_packages(files)
    log(f"bench: {len(pins)} projects, {len(files)} wheels ({size / 1e6:.1f} MB); "
        f"{len(added)} added to the feed")
    (lab.dir / "bench").mkdir(exist_ok=True)
    wheelhouse = lab.dir / "bench" / "wheelhouse-requirements.txt"
    wheelhouse.write_text("# The install benchmark's set, and uv for way 5.\n"
                          + REQUIREMENTS.read_text() + uv_pin + "\n")
    lab.control(latency_ms=0, bandwidth_bps=0)
    configure_host(bench, wheelhouse)
    facts = prepare_host(bench, REQUIREMENTS)
    lab.control(latency_ms=LATENCY_MS, bandwidth_bps=BANDWIDTH)
    header = [
        f"pipfeed install benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"machine: {machine_facts()}",
        f"host: {host} (Debian {facts.get('debian')}, Python {facts.get('python')}, "
        f"venv pip {facts.get('pip')}, uv {facts.get('uv')}), one of the lab's containers",
        f"set: {len(pins)} projects, {size / 1e6:.1f} MB of wheels ({REQUIREMENTS.name}), "
        "each way into a fresh venv",
        f"feed: {LATENCY_MS} ms per request, {BANDWIDTH / 1e6:.0f} MB/s; "
        f"{args.runs} timed run(s) per way ({args.slow_runs} of way 1 with PyPI refused), "
        "medians"]
    log("\n".join(header))
    results = run_ways(bench, args.runs, args.slow_runs, args.quick)
    log("")
    log("\n".join(header))
    log("")
    for line in figures.table(results):
        log(line)
    log("\nTargets:")
    for line in figures.target_lines(results):
        log(line)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"\nbench: done in {(time.monotonic() - started) / 60:.1f} min; load average now {load}")
    return 0

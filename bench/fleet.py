#!/usr/bin/env python3
"""Fleet benchmark of the pipfeed_wheelhouse role, on a lab of 6 hosts (2 per Debian release).

    .venv/bin/python bench/fleet.py [--runs N] [--lab NAME] [--keep]

Three measurements, each against a named baseline timed in the same run, interleaved with it
so that both see the same load; each is the median of --runs runs:

(a) re-run with nothing changed: `ansible-playbook playbooks/wheelhouse.yml` on hosts whose
    wheelhouse is complete, against `ansible all -m ping` on the same hosts (target: 2x).
(b) first seeding: the same playbook on hosts with no wheelhouse (controller cache warm),
    against copying the same bytes (the bundle the role sends each host, written to a file) to
    every host with scp (target: 1.5x), two ways: one host after another (a shell loop, one
    scp per host: the target's baseline), and all hosts at once (as Ansible's forks send; the
    stricter one, reported beside it).
(c) controller rebuild with unchanged inputs: the role's controller step (wheelhouse_build.py
    `plan`, then `build` for what the plan lacks, with the spec the role passes) on a warm
    cache, against the same step on an empty cache; the feed's access log must show zero
    requests during the rebuild (target: 10% of the first build's time).

The lab: --lab NAME uses that lab when it is up (and leaves it up), or brings it up with that
name; without --lab, a lab named "fleet" is brought up. A lab this script brought up is taken
down at the end unless --keep. Exit status 0 when every measurement ran, whether or not a
target was met; 1 on an error.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.files import load_file  # noqa: E402
from tests.lab.lab import Lab, LabError  # noqa: E402


# The role's host action: its bundle() makes the scp baseline the very bytes it sends.
HOST_ACTION = load_file("pipfeed_wheelhouse_host_action",
                        ROOT / "roles" / "pipfeed_wheelhouse" / "action_plugins" / "pipfeed_wheelhouse_host.py")

ROLE = ROOT / "roles" / "pipfeed_wheelhouse"
BUILD = ROLE / "files" / "wheelhouse_build.py"
PROBE = ROLE / "files" / "wheelhouse_host.py"
BIN = Path(sys.executable).parent
WHEELHOUSE = "/var/lib/pipfeed/wheelhouse"
TARGETS = {"a": 2.0, "b": 1.5, "c": 0.10}


class BenchError(RuntimeError):
    pass


def ansible_env(**extra: str) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1",
               ANSIBLE_FORCE_COLOR="0", **extra)
    return env


def timed(cmd: list[str], what: str, env: dict | None = None, timeout: float = 1800):
    """Run a command; (seconds, stdout). A failure is an error of the benchmark."""
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env or ansible_env(), capture_output=True,
                            text=True, timeout=timeout)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({' '.join(cmd[:3])} ...):\n"
                         + (result.stdout[-3000:] + result.stderr[-2000:]))
    return took, result.stdout


class Fleet:
    def __init__(self, lab: Lab, work: Path):
        self.lab = lab
        self.work = work
        self.cache = work / "cache"
        self.vars_file = work / "vars.json"
        self.vars_file.write_text(json.dumps({"pipfeed_wheelhouse_cache_dir": str(self.cache)}))
        self.vars_file.chmod(0o600)
        self.hosts = [h.name for h in lab.hosts]

    # ----- commands --------------------------------------------------------------------------
    def playbook(self, what: str, times: dict | None = None) -> tuple[float, str]:
        """The wheelhouse play; with times, each task's wall time is added to it."""
        log = self.work / "task-times.jsonl"
        log.unlink(missing_ok=True)
        env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "fleet_callbacks"),
                          ANSIBLE_CALLBACKS_ENABLED="fleet_task_times", FLEET_TASK_TIMES=str(log))
        result = timed([str(BIN / "ansible-playbook"), "-i", str(self.lab.inventory),
                        "playbooks/wheelhouse.yml", "-e", f"@{self.vars_file}"], what, env)
        if times is not None and log.exists():
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                times.setdefault(entry["task"], []).append(entry["s"])
        return result

    def ping(self) -> float:
        return timed([str(BIN / "ansible"), "all", "-i", str(self.lab.inventory), "-m", "ping"],
                     "ansible all -m ping")[0]

    def on_hosts(self, command: str) -> None:
        """One command as root on every host at once."""
        def one(host: str):
            done = self.lab.ssh(host, f"sudo sh -c '{command}'", timeout=300)
            if done.returncode != 0:
                raise BenchError(f"{host}: {command}: {done.stderr.strip()}")
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(one, self.hosts))

    def scp_all(self, files: dict[str, Path], parallel: bool) -> float:
        """scp each host its file: all hosts at once, or one after another (a shell loop);
        the copies are removed afterwards."""
        started = time.monotonic()
        codes = []
        procs = []
        for host, path in files.items():
            proc = subprocess.Popen(["scp", "-q", "-F", str(self.lab.ssh_config), str(path),
                                     f"{host}:/tmp/pipfeed-bench.tar"])
            if parallel:
                procs.append(proc)
            else:
                codes.append(proc.wait(timeout=1800))
        codes += [proc.wait(timeout=1800) for proc in procs]
        took = time.monotonic() - started
        if any(codes):
            raise BenchError(f"scp failed: exit codes {codes}")
        self.on_hosts("rm -f /tmp/pipfeed-bench.tar")
        return took

    # ----- the controller step (c) -----------------------------------------------------------
    def platforms(self) -> list[dict]:
        """Each distinct host platform, read by the role's own probe."""
        found = {}
        for host in self.lab.hosts:
            if host.python in found:
                continue
            done = subprocess.run(["ssh", "-F", str(self.lab.ssh_config), host.name,
                                   f"python3 - probe {WHEELHOUSE}"], input=PROBE.read_text(),
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise BenchError(f"probe on {host.name}: {done.stderr.strip()}")
            found[host.python] = json.loads(done.stdout)["platform"]
        return list(found.values())

    def controller_step(self, spec: dict, netrc: Path) -> tuple[float, dict]:
        """What build.yml runs: plan; then build for the platforms the plan lacks."""
        env = dict(os.environ)
        started = time.monotonic()
        planned = json.loads(timed([sys.executable, str(BUILD), "plan", json.dumps(spec)],
                                   "wheelhouse_build.py plan", env)[1])
        todo = [p for p in spec["platforms"] if not planned[p["key"]]]
        built = {}
        if todo:
            built = json.loads(timed([sys.executable, str(BUILD), "build",
                                      json.dumps(dict(spec, platforms=todo, netrc=str(netrc)))],
                                     "wheelhouse_build.py build", env)[1])
        took = time.monotonic() - started
        return took, {**planned, **built}


def inventory_vars(lab: Lab) -> dict:
    return json.loads(lab.inventory.read_text())["all"]["vars"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio <= target else "MISSED"


def recap_changed(output: str) -> int:
    total = 0
    for line in output.splitlines():
        if " : ok=" in line and "changed=" in line:
            total += int(line.split("changed=")[1].split()[0])
    return total


def bench(lab: Lab, runs: int, out=sys.stdout) -> None:
    work = Path(tempfile.mkdtemp(prefix="pipfeed-fleet-"))
    try:
        fleet = Fleet(lab, work)
        settings = inventory_vars(lab)
        print(f"fleet benchmark: lab {lab.name}, {len(fleet.hosts)} hosts "
              f"({', '.join(fleet.hosts)}), {runs} runs each, medians; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", file=out, flush=True)

        # (c) the controller step, first build against rebuild.
        spec = {"requirements": settings["pipfeed_wheelhouse_requirements"], "constraints": "",
                "cache_dir": str(fleet.cache), "index_url": settings["pipfeed_wheelhouse_index_url"],
                "cert": settings["pipfeed_wheelhouse_controller_cert"], "host_path": WHEELHOUSE,
                "platforms": fleet.platforms()}
        netrc = work / "netrc"
        host = settings["pipfeed_wheelhouse_index_url"].split("/")[2]
        netrc.write_text(f"machine {host} login pipfeed password {lab.token}\n")
        netrc.chmod(0o600)
        first, again, requests = [], [], []
        for _ in range(runs):
            shutil.rmtree(fleet.cache, ignore_errors=True)
            took, result = fleet.controller_step(spec, netrc)
            first.append(took)
            mark = lab.log_mark(lab.access_log)
            took, result = fleet.controller_step(spec, netrc)
            again.append(took)
            requests.append(len(lab.read_log(lab.access_log, mark)))
        files = sum(len(r["files"]) for r in result.values())
        size = sum(e["size"] for r in result.values() for e in r["files"].values())
        netrc.unlink()

        # (b) first seeding against scp of the same bytes: what the role's action sends a host
        # with no wheelhouse (its platform's files, after the bundle's one-line header), written
        # once per platform for scp.
        bundles = {}
        for key, build in result.items():
            send = [[name, entry["src"]] for name, entry in sorted(build["files"].items())]
            bundle = work / f"{key}.bundle"
            with open(bundle, "wb") as handle:
                handle.writelines(HOST_ACTION.bundle(send))
            bundles[key] = bundle
        per_host = {}
        for lab_host in lab.hosts:
            abi = "cp" + lab_host.python.replace(".", "")
            keys = [key for key in bundles if key.startswith(abi + "-")]
            if len(keys) != 1:
                raise BenchError(f"expected one platform for {abi}, found {keys}")
            per_host[lab_host.name] = bundles[keys[0]]
        sent = sum(p.stat().st_size for p in per_host.values())
        seed, copy, loop, seed_tasks = [], [], [], {}
        for _ in range(runs):
            fleet.on_hosts("rm -rf /var/lib/pipfeed")
            took, output = fleet.playbook("seeding playbooks/wheelhouse.yml", seed_tasks)
            seed.append(took)
            copy.append(fleet.scp_all(per_host, parallel=True))
            loop.append(fleet.scp_all(per_host, parallel=False))
        rerun, ping, changed, rerun_tasks = [], [], [], {}
        for _ in range(runs):
            took, output = fleet.playbook("re-run playbooks/wheelhouse.yml", rerun_tasks)
            rerun.append(took)
            changed.append(recap_changed(output))
            ping.append(fleet.ping())
        if any(changed):
            raise BenchError(f"a re-run with nothing changed reported changed tasks: {changed}")

        def report(label, name, value, base_name, base, target, extra=""):
            ratio = value / base
            print(f"{label} {name:<58} {value:7.2f} s\n"
                  f"    baseline: {base_name:<48} {base:7.2f} s\n"
                  f"    ratio {ratio:.2f}x (target <= {target:g}x): {verdict(ratio, target)}"
                  f"{extra}", file=out, flush=True)

        report("(a)", "re-run, nothing changed: ansible-playbook playbooks/wheelhouse.yml",
               median(rerun), "ansible all -m ping", median(ping), TARGETS["a"],
               "; changed=0 on every run")
        report("(b)", "first seeding: ansible-playbook playbooks/wheelhouse.yml", median(seed),
               f"scp of the same bytes ({sent / 1e6:.0f} MB), one host after another",
               median(loop), TARGETS["b"])
        report("   ", "(the same seeding)", median(seed),
               "scp of the same bytes, all hosts at once", median(copy), TARGETS["b"])
        report("(c)", "controller rebuild, unchanged inputs (plan, warm cache)", median(again),
               f"first build (empty cache, {files} files, {size / 1e6:.0f} MB)", median(first),
               TARGETS["c"], f"; feed requests during rebuilds: {requests}")
        for label, times in (("re-run", rerun_tasks), ("seeding", seed_tasks)):
            slowest = sorted(((median(v), k) for k, v in times.items()), reverse=True)[:6]
            print(f"    {label}, slowest tasks (median s): "
                  + "; ".join(f"{name} {value:.2f}" for value, name in slowest), file=out)
        print("runs (s): " + json.dumps({
            "a_rerun": [round(v, 2) for v in rerun], "a_ping": [round(v, 2) for v in ping],
            "b_seed": [round(v, 2) for v in seed], "b_scp": [round(v, 2) for v in copy],
            "b_scp_loop": [round(v, 2) for v in loop],
            "c_rebuild": [round(v, 2) for v in again], "c_first": [round(v, 2) for v in first]}),
            file=out, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--lab", default=None, help="lab name (default: bring up 'fleet')")
    parser.add_argument("--keep", action="store_true", help="leave a lab this script made up")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    name = args.lab or "fleet"
    made = False
    try:
        try:
            lab = Lab.load(name)
            print(f"fleet: using the running lab {name!r}", file=sys.stderr)
        except LabError:
            lab = Lab.up(name, count=2)
            made = True
        try:
            bench(lab, args.runs)
        finally:
            if made and not args.keep:
                lab.down()
    except (BenchError, LabError, subprocess.TimeoutExpired, OSError) as error:
        print(f"fleet: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Where the controller's time goes in one site.yml run: a profile of every Ansible worker.

    .venv/bin/python bench/profile_workers.py --lab NAME [--limit HOSTS] [--top N]

Runs site.yml once against a running lab (as bench/fleet.py does: the project's ansible.cfg,
the lab's inventory; the controller's wheelhouse cache in .cache/profile-wheelhouse, kept
between runs) with every worker process (one per task and host) under cProfile, then prints
the workers' total time, what kind of work it went to, the collection modules compiled from
source, and the tasks that cost the most. Run it twice on a converged lab and read the
second: that is a run with nothing to change.

A profile slows what it measures and weighs Python calls more than C: the figures say where
the time goes, not how long a run takes (bench/fleet.py measures that). Nothing is recorded.

How: a sitecustomize.py in a temporary directory on PYTHONPATH wraps Ansible's
WorkerProcess._run, and the collection loader's get_code, in the ansible-playbook process
only (the environment variable PIPFEED_PROFILE_DIR says where each worker writes its profile).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fleet import BIN, Fleet  # noqa: E402
from tests.lab.lab import Lab, LabError  # noqa: E402

SITECUSTOMIZE = '''
import json, os, time
_OUT = os.environ.get("PIPFEED_PROFILE_DIR")
if _OUT:
    import cProfile
    from ansible.executor.process import worker as _worker
    from ansible.utils.collection_loader import _collection_finder as _finder
    _compiled = {}
    _get_code = _finder._AnsibleCollectionPkgLoaderBase.get_code

    def get_code(self, fullname):
        started = time.perf_counter()
        try:
            return _get_code(self, fullname)
        finally:
            _compiled[fullname] = _compiled.get(fullname, 0.0) + time.perf_counter() - started

    _finder._AnsibleCollectionPkgLoaderBase.get_code = get_code
    _run = _worker.WorkerProcess._run

    def run(self):
        _compiled.clear()  # what the parent compiled before the fork is not this worker's
        profile = cProfile.Profile()
        profile.enable()
        try:
            return _run(self)
        finally:
            profile.disable()
            base = os.path.join(_OUT, str(os.getpid()))
            profile.dump_stats(base + ".prof")
            with open(base + ".json", "w") as out:
                json.dump({"task": self._task.get_name(), "compiled": _compiled}, out)

    _worker.WorkerProcess._run = run
'''

# Own time of functions, by where they live.
KINDS = (
    ("Jinja compilation", ("jinja2/compiler", "jinja2/parser", "jinja2/lexer", "jinja2/nodes",
                           "jinja2/visitor", "jinja2/idtracking", "jinja2/optimizer")),
    ("templating (rendering, lazy variables)", ("ansible/_internal/_templating", "jinja2/")),
    ("plugin loading", ("ansible/plugins/loader", "collection_loader")),
    ("imports", ("<frozen importlib", "importlib/")),
)


def kind(filename: str, function: str) -> str:
    if function in ("<built-in method builtins.compile>", "<built-in method marshal.loads>"):
        return "compiling Python source"
    if "select" in function and "poll" in function:
        return "waiting (for the host, for results)"
    for name, places in KINDS:
        if any(place in filename for place in places):
            return name
    return "the rest (task execution, result handling, variables)"


def report(directory: Path, top: int) -> list[str]:
    workers, kinds = 0, collections.Counter()
    per_task: dict[str, list[float]] = collections.defaultdict(list)
    compiled: collections.Counter = collections.Counter()
    compiled_count: collections.Counter = collections.Counter()
    for meta in sorted(directory.glob("*.json")):
        profile = meta.with_suffix(".prof")
        if not profile.exists() or profile.stat().st_size == 0:
            continue
        info = json.loads(meta.read_text())
        stats = pstats.Stats(str(profile))
        workers += 1
        per_task[info["task"]].append(stats.total_tt)
        for (filename, _, function), (_, _, own, _, _) in stats.stats.items():
            kinds[kind(filename, function)] += own
        for module, seconds in info["compiled"].items():
            compiled[module] += seconds
            compiled_count[module] += 1
    total = sum(kinds.values())
    if not workers or not total:
        return ["no worker profiles were written"]
    lines = [f"{workers} workers, {total:.2f} s profiled in all, "
             f"{1000 * total / workers:.0f} ms per worker"]
    lines += [f"  {share:6.2f} s  {100 * share / total:4.1f}%  {name}"
              for name, share in kinds.most_common()]
    lines.append("collection modules compiled from source in the workers (s, times):")
    lines += [f"  {seconds:6.3f} s  x{compiled_count[module]:<3d} {module}"
              for module, seconds in compiled.most_common(top)]
    lines.append(f"the {top} costliest tasks (profiled s per worker, workers):")
    ranked = sorted(per_task.items(), key=lambda item: -sum(item[1]))[:top]
    lines += [f"  {1000 * sum(v) / len(v):6.0f} ms  x{len(v):<3d} {task}" for task, v in ranked]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", required=True, help="a running lab (python -m tests.lab up)")
    parser.add_argument("--limit", default="", help="hosts, as ansible-playbook --limit takes")
    parser.add_argument("--top", type=int, default=12, help="rows per list (default 12)")
    args = parser.parse_args(argv)
    try:
        lab = Lab.load(args.lab)
    except LabError as error:
        parser.error(str(error))
    work = Path(tempfile.mkdtemp(prefix="pipfeed-profile-"))
    try:
        hook, profiles = work / "hook", work / "profiles"
        hook.mkdir()
        profiles.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        fleet = Fleet(lab, work, None)
        cache = ROOT / ".cache" / "profile-wheelhouse"
        cache.mkdir(parents=True, exist_ok=True)
        settings = json.loads(fleet.vars_file.read_text())
        fleet.vars_file.write_text(json.dumps(dict(settings,
                                                   pipfeed_wheelhouse_cache_dir=str(cache))))
        env = fleet.env(PIPFEED_PROFILE_DIR=str(profiles),
                        PYTHONPATH=os.pathsep.join(
                            filter(None, [str(hook), os.environ.get("PYTHONPATH", "")])))
        cmd = [str(BIN / "ansible-playbook"), "-i", str(lab.inventory), "site.yml",
               "-e", f"@{fleet.vars_file}"] + (["--limit", args.limit] if args.limit else [])
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=3600)
        recap = done.stdout[done.stdout.rfind("PLAY RECAP"):].strip()
        print(recap or done.stdout[-2000:])
        if done.returncode != 0:
            print(f"site.yml exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)
        print("\n".join(report(profiles, args.top)))
        return 0 if done.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

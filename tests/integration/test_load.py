"""Load: a fleet of 12 lab hosts (four of each Debian), site.yml with forks enough for all of
them at once, then every host installing a real package set from the feed at the same moment.

Bounded: every install has a time limit, and so has the run. Judged by real pip and by the
feed's access log: no host fails, every request the hosts made got an answer (no 5xx, none
left without a status), each host downloaded every file of its set exactly once, and each
host's virtual environment holds the whole set. The times are printed in the summary.

The lab for this module is its own (12 hosts); PIPFEED_LOAD_LAB=<name> reuses a running one
made with `python -m tests.lab up --name <name> --count 4`.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.integration.support import ansible_env, must, recap, run_playbooks, sh
from tests.lab import packages
from tests.lab.lab import reused_or_running

pytestmark = pytest.mark.integration
RELIABILITY = "Load"
PER_DISTRO = 4
INSTALL_TIMEOUT = 900
VENV = "/tmp/pipfeed-load/venv"


@pytest.fixture(scope="module")
def fleet():
    with reused_or_running("PIPFEED_LOAD_LAB", count=PER_DISTRO) as lab:
        yield lab


def the_set(python: str) -> list[str]:
    """The lab's wheelhouse set for this Python but uv (one 20 MB wheel adds only bytes)."""
    return [pin for pin in packages.wheelhouse_pins(python) if not pin.startswith("uv==")]


def install_command(pins: list[str]) -> str:
    """As the lab's admin (a member of the token group, with a fresh login's groups): a fresh
    venv, then pip from the feed only: PIP_FIND_LINKS empty switches off the wheelhouse that
    pip.conf points at, so every file comes from the feed."""
    requirements = "\\n".join(pins)
    inner = (f"rm -rf /tmp/pipfeed-load && mkdir -p /tmp/pipfeed-load && "
             f"printf '{requirements}\\n' > /tmp/pipfeed-load/requirements.txt && "
             f"python3 -m venv {VENV} && PIP_FIND_LINKS= timeout {INSTALL_TIMEOUT} "
             f"{VENV}/bin/pip install --no-cache-dir --no-input --disable-pip-version-check "
             f"-r /tmp/pipfeed-load/requirements.txt </dev/null")
    return f"sudo -u labadmin -H sh -c \"{inner}\""


def test_fleet_of_12_runs_site_then_installs_concurrently_from_the_feed(
        request, fleet, tmp_path):
    request.node.user_properties.append(
        ("case", "12 hosts: site.yml with forks 25, then 12 concurrent pip installs from the feed"))
    hosts = fleet.hosts
    assert len(hosts) >= 12
    site = run_playbooks(fleet, tmp_path, ["site.yml"],
                         {"pipfeed_wheelhouse_cache_dir": str(tmp_path / "cache")},
                         env=ansible_env(ANSIBLE_FORKS="25"), timeout=1800)
    assert site.returncode == 0, site.stdout[-6000:] + site.stderr
    stats = recap(site.stdout)
    assert sorted(stats) == sorted(h.name for h in hosts)
    assert all(s["failed"] == 0 and s["unreachable"] == 0 for s in stats.values()), stats

    sets = {h.name: the_set(h.python) for h in hosts}
    for host in hosts:  # connections first, so the installs start together
        fleet.testinfra(host.name)
    mark = fleet.log_mark(fleet.access_log)
    results: dict[str, tuple] = {}
    barrier = threading.Barrier(len(hosts))

    def install(host) -> None:
        barrier.wait(timeout=60)
        started = time.monotonic()
        try:
            rc, out, err = sh(fleet, host.name, install_command(sets[host.name]),
                              timeout=INSTALL_TIMEOUT + 60)
        except Exception as error:  # noqa: BLE001 - reported as this host's failure
            rc, out, err = -1, "", repr(error)
        results[host.name] = (rc, out, err, time.monotonic() - started)

    started = time.monotonic()
    threads = [threading.Thread(target=install, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(INSTALL_TIMEOUT + 120)
    wall = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "an install outlived its time limit"

    failed = {name: (r[0], r[2][-800:]) for name, r in results.items() if r[0] != 0}
    assert failed == {}, failed
    log = fleet.read_log(fleet.access_log, mark)
    unanswered = [e for e in log if not e.get("status")]
    errors = [e for e in log if int(e.get("status") or 0) >= 500]
    assert unanswered == [] and errors == [], (unanswered[:5], errors[:5])
    for host in hosts:
        blobs = [e["path"].rsplit("/", 1)[-1].split("?")[0] for e in log
                 if e["client"] == host.ip and e["kind"] == "blob" and e["status"] == 200]
        assert len(blobs) == len(set(blobs)) == len(sets[host.name]), (host.name, blobs)
        frozen = must(fleet, host.name, f"{VENV}/bin/pip freeze --disable-pip-version-check")
        have = {line.split("==")[0].lower().replace("_", "-") for line in frozen.split()}
        want = {pin.split("==")[0].lower() for pin in sets[host.name]}
        assert want <= have, (host.name, sorted(want - have))
        must(fleet, host.name, f"{VENV}/bin/python -c 'import cryptography, numpy, pydantic, requests'")
    slowest = max(r[3] for r in results.values())
    files = sum(len(s) for s in sets.values())
    detail = (f"site.yml on {len(hosts)} hosts {site.elapsed:.0f}s; {len(hosts)} concurrent installs "
              f"({files} wheels, {len(log)} feed requests, 0 errors) {wall:.0f}s wall, slowest "
              f"host {slowest:.0f}s")
    print(detail)
    request.node.user_properties.append(("detail", detail))

"""playbooks/verify.yml on the lab's Debian 11/12/13 hosts (pip 20.3, 23.0, 25.1): a healthy
fleet passes with one summary line per host; a refused token, a wheel missing from the
wheelhouse and a stopped feed each fail the hosts concerned, naming what to fix, and the named
fix works. Every answer comes from the host's own pip, helper and files."""
from __future__ import annotations

import re

import pytest

from tests.integration.support import must, recap, run_playbooks, sudo, unprovision

pytestmark = pytest.mark.integration
HOSTS = ("deb11-1", "deb12-1", "deb13-1")
PIPS = {"deb11-1": "20.3.4", "deb12-1": "23.0.1", "deb13-1": "25.1.1"}
TOKEN_FILE = "/etc/pipfeed/tokens/python-feed.token"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def configured(lab, workdir):
    result = run_playbooks(lab, workdir, ["site.yml"], {})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    yield
    # The lab's hosts are shared by the modules that follow: leave them as they came.
    for host in HOSTS:
        unprovision(lab, host)


def verify(lab, workdir, *args, **variables):
    result = run_playbooks(lab, workdir, ["playbooks/verify.yml"], variables, *args)
    assert lab.token not in result.stdout + result.stderr
    return result


def summary(output: str) -> dict[str, str]:
    """Each host's summary line (the debug task prints them as one literal block)."""
    return {m.group(1): m.group(0) for m in
            re.finditer(r"^\s*(deb\d+-\d+)  (?:UN)?HEALTHY.*$", output, re.M)}


def test_healthy_fleet_passes_with_one_summary_line_per_host(lab, workdir, configured):
    result = verify(lab, workdir)
    assert result.returncode == 0, result.stdout[-5000:]
    lines = summary(result.stdout)
    assert set(lines) == set(HOSTS)
    for host, line in lines.items():
        assert f"{host}  HEALTHY  Debian" in line
        assert f"pip {PIPS[host]}" in line and "pip reads /etc/pip.conf" in line
        assert "feed python-feed HTTP 200" in line and "PyPI unreachable" in line
        assert re.search(r"wheelhouse (\d+)/\1 ok", line) and "offline dry run ok" in line
    # Each pip's own way to the token: netrc before pip 23.1, the helper from then on.
    assert "via ~/.netrc" in lines["deb11-1"] and "via ~/.netrc" in lines["deb12-1"]
    assert "via keyring (credential helper)" in lines["deb13-1"]
    assert all(s["changed"] == 0 for s in recap(result.stdout).values())


def test_refused_token_and_missing_wheel_fail_those_hosts_naming_the_fix(lab, workdir,
                                                                         configured):
    must(lab, "deb13-1", sudo(f"cp -a {TOKEN_FILE} /root/token.bak && "
                              f"echo labpatrevoked0000 > {TOKEN_FILE}"))
    wheel = must(lab, "deb11-1", "ls /var/lib/pipfeed/wheelhouse/ | grep '^numpy-'").strip()
    must(lab, "deb11-1", sudo(f"rm \"$(readlink -f /var/lib/pipfeed/wheelhouse)/{wheel}\""))
    try:
        result = verify(lab, workdir)
        assert result.returncode != 0
        lines, stats = summary(result.stdout), recap(result.stdout)
        assert {h: s["failed"] for h, s in stats.items()} == {
            "deb11-1": 1, "deb12-1": 0, "deb13-1": 1}
        assert "deb12-1  HEALTHY" in lines["deb12-1"]
        assert "deb13-1  UNHEALTHY" in lines["deb13-1"]
        assert ("the token was refused (401). Put a valid personal access token in the "
                "variable lab_feed_token (token_var), then run playbooks/rotate_token.yml"
                ) in lines["deb13-1"]
        assert "deb11-1  UNHEALTHY" in lines["deb11-1"]
        assert f"{wheel} (missing)" in lines["deb11-1"]
        assert "offline dry run failed" in lines["deb11-1"]
        assert "Run site.yml (tag pipfeed_wheelhouse)" in lines["deb11-1"]
    finally:
        must(lab, "deb13-1", sudo(f"mv /root/token.bak {TOKEN_FILE}"))
    # The fix the message names: the wheelhouse role sends the missing wheel again.
    repaired = run_playbooks(lab, workdir, ["site.yml"], {}, "--tags", "pipfeed_wheelhouse",
                             "--limit", "deb11-1")
    assert repaired.returncode == 0, repaired.stdout[-5000:]
    again = verify(lab, workdir, "--limit", "deb11-1,deb13-1")
    assert again.returncode == 0, again.stdout[-5000:]


def test_stopped_feed_fails_every_host_and_mode_extra_warns_of_the_slow_path(lab, workdir,
                                                                              configured):
    lab.stop_feed()
    try:
        # Asked as if the hosts were in mode extra: pip.conf disagrees, and PyPI's silence is
        # the slow path every install would wait on.
        result = verify(lab, workdir, pipfeed_mode="extra")
    finally:
        lab.start_feed()
    assert result.returncode != 0
    lines = summary(result.stdout)
    assert set(lines) == set(HOSTS)
    for host, line in lines.items():
        assert f"{host}  UNHEALTHY" in line and "no answer" in line
        assert "does not answer" in line and "Check the feed, DNS, proxy and firewall" in line
        assert "lacks the feeds (mode extra)" in line
    assert result.stdout.count("and pip is in mode extra: every install asks PyPI first") == 3

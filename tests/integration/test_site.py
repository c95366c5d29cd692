"""site.yml as an operator runs it against an inventory of VMs: `--check --diff` on fresh hosts
predicts changes and touches nothing; `--limit` leaves the other hosts alone; `pipfeed_serial`
rolls through the fleet in batches; a later full run changes nothing where the limited run
already converged; tags select one role."""
from __future__ import annotations

import subprocess

import pytest

from tests.integration.support import BIN, ROOT, ansible_env, recap, run_playbooks, sh, unprovision

pytestmark = pytest.mark.integration
HOSTS = ("deb11-1", "deb12-1", "deb13-1")
LIMITED = ("deb12-1", "deb13-1")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("site")


def exists(lab, host: str, path: str) -> bool:
    return sh(lab, host, f"sudo test -e {path}")[0] == 0


@pytest.fixture(scope="module")
def fresh(lab):
    for host in HOSTS:
        unprovision(lab, host)
    yield
    # The lab's hosts are shared by the modules that follow: leave them as they came.
    for host in HOSTS:
        unprovision(lab, host)


@pytest.fixture(scope="module")
def checked(lab, workdir, fresh):
    result = run_playbooks(lab, workdir, ["site.yml"], {}, "--check", "--diff")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result


@pytest.fixture(scope="module")
def limited(lab, workdir, checked):
    result = run_playbooks(lab, workdir, ["site.yml"], {"pipfeed_serial": 1},
                           "--limit", ",".join(LIMITED))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result


@pytest.fixture(scope="module")
def full(lab, workdir, limited):
    result = run_playbooks(lab, workdir, ["site.yml"], {})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result


def test_check_diff_on_fresh_hosts_predicts_changes_and_touches_nothing(lab, checked):
    stats = recap(checked.stdout)
    assert set(stats) == set(HOSTS)
    assert all(stats[h]["changed"] > 0 and stats[h]["failed"] == 0 for h in HOSTS)
    # The diff shows the pip.conf each host would get, feed URL included.
    assert "+index-url = https://pipfeed@feed.lab.test/" in checked.stdout
    for host in HOSTS:
        for path in ("/etc/pip.conf", "/etc/pipfeed", "/var/lib/pipfeed/wheelhouse"):
            assert not exists(lab, host, path), f"--check wrote {path} on {host}"
    assert lab.token not in checked.stdout + checked.stderr


def test_limit_leaves_other_hosts_alone_and_serial_rolls_in_batches(lab, limited):
    stats = recap(limited.stdout)
    assert set(stats) == set(LIMITED)
    # One play header per batch of one host, for each play that changes hosts.
    assert limited.stdout.count("PLAY [Point pip and uv at the feed]") == len(LIMITED)
    for host in LIMITED:
        assert exists(lab, host, "/etc/pip.conf")
        assert exists(lab, host, "/etc/pipfeed/credential-helper.json")
    assert not exists(lab, "deb11-1", "/etc/pip.conf")


def test_full_run_converges_the_rest_and_changes_nothing_on_converged_hosts(lab, full):
    stats = recap(full.stdout)
    assert set(stats) == set(HOSTS)
    assert all(stats[h]["changed"] == 0 for h in LIMITED), full.stdout[-4000:]
    assert stats["deb11-1"]["changed"] > 0
    # A user of each host (a fresh login: the pipfeed group is new) installs a package that
    # only the feed has, with no prompt.
    for host in HOSTS:
        done = lab.ssh(host, "rm -rf /tmp/site-venv && python3 -m venv /tmp/site-venv && "
                       "/tmp/site-venv/bin/pip install -q --disable-pip-version-check "
                       "lab-feedonly", timeout=600)
        assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("tag,role", [("pipfeed_config", "pipfeed_config"),
                                      ("pipfeed_wheelhouse", "pipfeed_wheelhouse"),
                                      ("pipfeed_credential_helper", "pipfeed_credential_helper")])
def test_a_tag_selects_one_role(lab, tag, role):
    listing = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(lab.inventory),
                              str(ROOT / "site.yml"), "--list-tasks", "--tags", tag],
                             cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
                             timeout=300)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    # Argument validation is tagged "always" and runs for every role; the rest is selected.
    tasks = [line.strip() for line in listing.stdout.splitlines()
             if line.startswith("      ") and "TAGS:" in line and "TAGS: [always" not in line]
    assert any(line.startswith(f"pipfeed.feed.{role} : ") for line in tasks), listing.stdout
    for line in tasks:
        if line.startswith(f"pipfeed.feed.{role} : "):
            continue
        # The only other tasks a role's tag may select are the pre_tasks of playbooks/hosts.yml
        # that include this role's preflight; they carry this role's tags and no other.
        name, tags = line.split("\tTAGS: ")
        assert "before anything changes" in name, line
        assert all(t.strip() == role or t.strip().startswith(f"{role}_")
                   for t in tags.strip("[]").split(",")), line


def test_without_pipelining_the_programs_go_as_files_and_the_run_converges(lab, full, workdir):
    """A controller that keeps pipelining off (Ansible's default, and what a first boot's
    bootstrap would have without its own setting): the host programs and their data go as
    files into the remote temporary directory, the run converges, and a re-run changes
    nothing. Ansible's temporary directories are gone afterwards."""
    host = "deb13-1"
    unprovision(lab, host)
    env = ansible_env(ANSIBLE_PIPELINING="False")
    first = run_playbooks(lab, workdir, ["site.yml"], {}, "--limit", host, env=env)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert recap(first.stdout)[host]["changed"] > 0
    assert exists(lab, host, "/etc/pipfeed/tokens/python-feed.token")
    again = run_playbooks(lab, workdir, ["site.yml"], {}, "--limit", host, env=env)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr
    assert recap(again.stdout)[host]["changed"] == 0, again.stdout[-4000:]
    leftovers = sh(lab, host, "sudo sh -c 'ls -d /root/.ansible/tmp/ansible-tmp-* "
                              "/home/labadmin/.ansible/tmp/ansible-tmp-* 2>/dev/null'")[1]
    assert leftovers.strip() == ""

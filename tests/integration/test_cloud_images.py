"""Hosts as clouds ship them: Debian 12 with python3 and python3-venv but no python3-pip (as
Debian's and Ubuntu's cloud images come), and Debian 13 with python3 alone. site.yml converges
both with no extra variable, says what each has, and a re-run changes nothing; verify.yml asks
the pip a venv gets (or uv) and passes; an ordinary user installs from the feed with the venv's
pip on the first and, with pipfeed_config_uv_install, with uv on the second."""
from __future__ import annotations

import json

import pytest

from tests.integration.support import ansible_env, recap, run_playbooks, sh

pytestmark = pytest.mark.integration
NOPIP, BARE = "deb12nopip", "deb13bare"


@pytest.fixture(scope="module")
def hosts(lab):
    """One fresh host of each image, removed at the end."""
    added = {image: lab.add_host(image).name for image in (NOPIP, BARE)}
    yield added
    for name in added.values():
        lab.remove_host(name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cloud-images")


def host_vars_inventory(workdir, host_vars: dict) -> str:
    """A second inventory source with variables for some hosts of the lab's (Ansible merges
    both): how a user sets one host's switch in host_vars."""
    path = workdir / "host-vars.json"
    path.write_text(json.dumps({"all": {"hosts": host_vars}}))
    return str(path)


def site(lab, workdir, hosts, *args, uv: bool):
    extra = host_vars_inventory(workdir, {hosts[BARE]: {"pipfeed_config_uv_install": uv}})
    return run_playbooks(lab, workdir, ["site.yml"], {}, "-i", extra, "--limit",
                         ",".join(hosts.values()), *args, env=ansible_env())


@pytest.fixture(scope="module")
def without_uv(lab, workdir, hosts):
    result = site(lab, workdir, hosts, uv=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result


@pytest.fixture(scope="module")
def converged(lab, workdir, hosts, without_uv):
    result = site(lab, workdir, hosts, uv=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    return result


def test_the_run_says_which_pip_each_host_has_and_when_none_can_use_the_files(hosts, without_uv):
    out = " ".join(without_uv.stdout.split())
    assert "Python 3.11.2 (x86_64), no pip for python3, venvs get pip 23.0.1" in out
    assert "no pip for python3, no venv module (python3-venv)" in out
    assert f"WARNING: {hosts[BARE]} has no pip that can use the configuration yet" in out
    assert f"WARNING: {hosts[NOPIP]} has no pip" not in out
    # The files are written all the same, on both.
    assert all(recap(without_uv.stdout)[h]["failed"] == 0 for h in hosts.values())


def test_both_converge_and_a_second_run_changes_nothing(lab, workdir, hosts, converged):
    assert "uv 0.13.9 installed by this role" in " ".join(converged.stdout.split())
    again = site(lab, workdir, hosts, uv=True)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr
    assert all(recap(again.stdout)[h]["changed"] == 0 for h in hosts.values()), \
        again.stdout[-4000:]


def test_verify_asks_the_pip_a_venv_gets_or_uv(lab, workdir, hosts, converged):
    result = run_playbooks(lab, workdir, ["playbooks/verify.yml"], {}, "--limit",
                           ",".join(hosts.values()))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    out = " ".join(result.stdout.split())
    assert (f"{hosts[NOPIP]} HEALTHY Debian 12" in out
            and "pip 23.0.1 (the pip of a throwaway venv (ensurepip))" in out), out[-3000:]
    assert (f"{hosts[BARE]} HEALTHY Debian 13" in out and "(uv (no pip on the host))" in out
            and "via keyring (credential helper)" in out), out[-3000:]


def test_an_ordinary_user_installs_from_the_feed_with_a_venvs_pip(lab, hosts, converged):
    done = lab.ssh(hosts[NOPIP], "rm -rf /tmp/cloud-venv && python3 -m venv /tmp/cloud-venv && "
                                 "/tmp/cloud-venv/bin/pip install -q --disable-pip-version-check "
                                 "lab-feedonly && /tmp/cloud-venv/bin/python -c 'import "
                                 "lab_feedonly'", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_ordinary_user_installs_from_the_feed_with_uv_on_a_bare_host(lab, hosts, converged):
    host = hosts[BARE]
    assert sh(lab, host, "python3 -c 'import venv, ensurepip'")[0] != 0, "not a bare host"
    done = lab.ssh(host, "rm -rf /tmp/cloud-uv && uv venv -q /tmp/cloud-uv && "
                         "uv pip install --python /tmp/cloud-uv/bin/python lab-feedonly && "
                         "/tmp/cloud-uv/bin/python -c 'import lab_feedonly'", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

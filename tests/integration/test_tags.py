"""Every tag that playbooks/site.yml documents works on its own, as an operator runs it:
`ansible-playbook site.yml --tags <tag>` on converged hosts passes, changes nothing it should
not, and a tag of a step that changes hosts repairs what that step owns (a file of it removed
first) without the other steps' facts from an earlier run."""
from __future__ import annotations

import re

import pytest

from tests.integration.support import ROOT, must, recap, run_playbooks, sh, sudo, unprovision

pytestmark = pytest.mark.integration
HOSTS = ("deb11-1", "deb12-1", "deb13-1")
HOST = "deb12-1"


def documented_tags() -> list[str]:
    """The tags the header of playbooks/site.yml lists, in its order."""
    header = (ROOT / "playbooks" / "site.yml").read_text().split("\n- name:")[0]
    block = header.split("# Tags:", 1)[1].split("# Then:", 1)[0]
    found = []
    for word in re.findall(r"\b(report|pipfeed_[a-z_]+)\b", block):
        if word not in found:
            found.append(word)
    return found


# What a tag's run must do, beyond passing: a file of the step removed first must be back, or
# a line the step prints must be there.
REPAIRS = {
    "pipfeed_config_configure": "/etc/uv/uv.toml",
    "pipfeed_credential_helper_install": "/usr/local/bin/keyring",
    "pipfeed_credential_helper_configure": "/etc/pipfeed/credential-helper.json",
    "pipfeed_wheelhouse_sync": "/var/lib/pipfeed/wheelhouse/requirements.txt",
}
SAYS = {
    "report": "TASK [pipfeed.feed.pipfeed_config : Check the host before anything changes, and show its platform]",
    "pipfeed_config_preflight": "TASK [pipfeed.feed.pipfeed_config : Check pipfeed_config's settings, then read the host's pip",
    "pipfeed_config_verify": "pip reads /etc/pip.conf",
    "pipfeed_credential_helper_preflight": "TASK [pipfeed.feed.pipfeed_credential_helper : Check the settings and each feed's token, then read",
    "pipfeed_credential_helper_verify": "pipfeed-keyring --check",
    "pipfeed_wheelhouse_preflight": "TASK [pipfeed.feed.pipfeed_wheelhouse : Check the role's variables, then read the host's",
    "pipfeed_wheelhouse_build": "TASK [pipfeed.feed.pipfeed_wheelhouse : Report what the controller downloaded",
    "pipfeed_wheelhouse_venvs": "TASK [pipfeed.feed.pipfeed_wheelhouse : Install the requirement set into the",
}


@pytest.fixture(scope="module")
def converged(lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tags")
    for host in HOSTS:
        unprovision(lab, host)
    result = run_playbooks(lab, workdir, ["site.yml"], {})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    yield workdir
    for host in HOSTS:
        unprovision(lab, host)


def test_the_header_documents_every_role_and_step_tag():
    tags = documented_tags()
    assert "report" in tags
    for role, steps in {"pipfeed_config": ("preflight", "configure", "verify"),
                        "pipfeed_credential_helper": ("preflight", "install", "configure",
                                                      "verify"),
                        "pipfeed_wheelhouse": ("preflight", "build", "sync", "venvs")}.items():
        assert role in tags
        for step in steps:
            assert f"{role}_{step}" in tags


@pytest.mark.parametrize("tag", documented_tags())
def test_each_documented_tag_works_on_its_own(lab, converged, tag):
    repaired = REPAIRS.get(tag)
    if repaired:
        must(lab, HOST, sudo(f"rm -f {repaired}"))
    result = run_playbooks(lab, converged, ["site.yml"], {}, "--tags", tag)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    stats = recap(result.stdout)
    assert set(stats) == set(HOSTS)
    if repaired:
        assert sh(lab, HOST, sudo(f"test -e {repaired}"))[0] == 0, f"{tag} did not repair {repaired}"
        assert stats[HOST]["changed"] >= 1
        others = [h for h in HOSTS if h != HOST]
        assert all(stats[h]["changed"] == 0 for h in others), result.stdout[-4000:]
    else:
        assert all(stats[h]["changed"] == 0 for h in HOSTS), result.stdout[-4000:]
    if tag in SAYS:
        assert SAYS[tag] in result.stdout, result.stdout[-4000:]

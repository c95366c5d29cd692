"""A feed token from the VM's managed identity, against the lab's IMDS stand-in
(tests/lab/imds.py), which every host reaches as http://169.254.169.254 and which mints
short-lived tokens that the lab feed takes as the Basic password.

site.yml runs on the Debian 13 host (pip 25) with the lab feed as a managed-identity feed
(azure_identity: {}) and the lab's second index as a second feed with a token of its own. The
controller's own requests (the wheelhouse build, uv's binary) use an Entra token it got
itself, as `az account get-access-token` gives one in a pipeline: here, from the stand-in. An
ordinary user of the host, in no group of the project, then installs with pip and uv; the host
holds no token of that feed at all.
"""
from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request

import pytest

from tests.integration.support import (ansible_env, must, recap, run_playbooks, sh, sudo,
                                       unprovision)
from tests.integration.test_credential_helper_role import (authorizations_at_other_index,
                                                           files_holding)
from tests.lab import imds
from tests.lab.lab import IMDS_PORT

pytestmark = pytest.mark.integration

HOST = "deb13-1"
USER = "pfmi-user"
WORK = f"/tmp/{USER}"
ENTRA_ENV = "LAB_ENTRA_TOKEN"
CONFIG = "/etc/pipfeed/credential-helper.json"
PIP = ("timeout 150 {pip} download --no-deps --no-cache-dir --disable-pip-version-check "
       "-d {dest} lab-feedonly </dev/null")
# Every token the stand-in mints starts with the same JWT header: the canary for all of them.
MINTED = ".".join([base64.urlsafe_b64encode(json.dumps(
    {"typ": "JWT", "alg": "RS256", "kid": "pipfeed-lab"}, separators=(",", ":")).encode())
    .rstrip(b"=").decode(), ""])
IDENTITY_VIA = "via keyring (credential helper, the VM's managed identity)"


def as_user(command: str) -> str:
    """As the ordinary user, with a login's environment and no terminal."""
    return f"sudo -u {USER} -H sh -c {json.dumps(command)}"


def controller_token(lab) -> str:
    """An Entra token for the controller, as a pipeline's AzureCLI@2 step gets one
    (az account get-access-token --resource 499b84ac-...): from the stand-in, by the gateway."""
    request = urllib.request.Request(
        f"http://{lab.gateway}:{IMDS_PORT}{imds.TOKEN_PATH}?api-version={imds.API_VERSION}"
        f"&resource={imds.DEVOPS_RESOURCE}", headers={"Metadata": "true"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        return json.load(answer)["access_token"]


def minted(lab, since: float = 0) -> list[dict]:
    """The tokens the stand-in minted (entries of the feed's tokens file), newest last."""
    entries = json.loads(lab.tokens_file.read_text())["tokens"]
    return [e for e in entries if e.get("source") == "imds" and e.get("expires", 0) > since]


@pytest.fixture(scope="module")
def outputs():
    """Every playbook run's output, for the check that no minted token is in any."""
    return []


@pytest.fixture(scope="module")
def identity(lab, tmp_path_factory, outputs):
    """The host as an Azure VM with a system-assigned identity, provisioned by site.yml."""
    workdir = tmp_path_factory.mktemp("managed_identity")
    second = "labsecond" + secrets.token_hex(20)
    had_uv = sh(lab, HOST, "test -e /usr/local/bin/uv")[0] == 0
    lab.start_imds()
    unprovision(lab, HOST)
    must(lab, HOST, sudo(f"id {USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {USER}"))
    variables = {
        "pipfeed_feeds": [
            {"name": "python-feed", "url": lab.feed_url, "azure_identity": {},
             "token_env": ENTRA_ENV},
            {"name": "second-feed", "url": lab.other_url, "token_var": "second_feed_token"}],
        "second_feed_token": second,
        "pipfeed_config_uv_install": True,
        "pipfeed_config_cert": "/etc/ssl/certs/ca-certificates.crt"}
    env = ansible_env(**{ENTRA_ENV: controller_token(lab)})
    recorder = lab.log_mark(lab.recorder_log)
    imds_mark = lab.log_mark(lab.imds_log)

    def run(playbook: str, *args: str, **more):
        result = run_playbooks(lab, workdir, [playbook], {**variables, **more}, "--limit",
                               HOST, *args, env=env)
        outputs.append(result.stdout + result.stderr)
        return result

    site = run("site.yml")
    try:
        yield {"site": site, "run": run, "second": second, "recorder": recorder,
               "imds_mark": imds_mark}
    finally:
        lab.stop_imds()
        must(lab, HOST, sudo(f"userdel -r {USER} >/dev/null 2>&1; rm -rf {WORK}; true"))
        if not had_uv:
            must(lab, HOST, sudo("rm -f /usr/local/bin/uv /usr/local/bin/uvx"))
        unprovision(lab, HOST)


def test_site_installs_the_helper_and_the_host_holds_no_token_of_the_feed(lab, identity):
    site = identity["site"]
    assert site.returncode == 0, site.stdout[-5000:] + site.stderr
    config = json.loads(must(lab, HOST, f"cat {CONFIG}"))
    assert [(f["name"], f.get("azure_identity"), f.get("token_file")) for f in config["feeds"]] \
        == [("python-feed", {}, None),
            ("second-feed", None, "/etc/pipfeed/tokens/second-feed.token")]
    assert must(lab, HOST, sudo("ls /etc/pipfeed/tokens")).split() == ["second-feed.token"]
    assert sh(lab, HOST, "test -e /etc/pipfeed/netrc")[0] != 0
    # The preflight asked the feed with a token of the identity, from the host itself.
    asked = [e for e in lab.read_log(lab.imds_log, identity["imds_mark"])
             if e["client"] == lab.host(HOST).ip]
    assert asked and all(e["metadata"] == "true" and e["status"] == 200 for e in asked), asked
    assert all(f"resource={imds.DEVOPS_RESOURCE}" in e["path"] for e in asked)


def test_an_ordinary_user_installs_with_pip_and_uv(lab, identity):
    """A user in no group of the project, with no token file readable to them: pip 25
    (Debian 13's), pip 26.3 in a venv (itself installed from the feed that way) and uv."""
    assert USER not in must(lab, HOST, "getent group pipfeed || true")
    mark = lab.log_mark(lab.imds_log)
    out = must(lab, HOST, as_user(
        f"rm -rf {WORK} && mkdir -p {WORK} && cd {WORK} && "
        + PIP.format(pip="python3 -m pip", dest=f"{WORK}/system")
        + f" && python3 -m venv {WORK}/pip26 && timeout 200 {WORK}/pip26/bin/pip install -q "
          "--no-cache-dir --disable-pip-version-check pip==26.3 </dev/null && "
        + PIP.format(pip=f"{WORK}/pip26/bin/pip", dest=f"{WORK}/pip26-dl")
        + f" && {WORK}/pip26/bin/pip --version"
        + f" && uv venv -q {WORK}/uv && timeout 150 uv pip install --no-cache --python "
          f"{WORK}/uv/bin/python lab-feedonly </dev/null && {WORK}/uv/bin/python -c "
          "'import lab_feedonly'"), timeout=700)
    assert "pip 26.3 " in out, out
    assert must(lab, HOST, f"ls {WORK}/system {WORK}/pip26-dl").count("lab_feedonly") == 2
    asked = [e for e in lab.read_log(lab.imds_log, mark) if e["client"] == lab.host(HOST).ip]
    assert len(asked) >= 3 and all(e["status"] == 200 for e in asked), asked


def test_an_expired_token_is_replaced_on_the_next_call(lab, identity):
    lab.imds_control(ttl=3)
    try:
        before = {e["token"] for e in minted(lab)}
        started = time.time()
        must(lab, HOST, as_user(PIP.format(pip="python3 -m pip", dest=f"{WORK}/first")))
        first = [e for e in minted(lab) if e["token"] not in before]
        assert first and all(e["expires"] <= started + 10 for e in first), first
        time.sleep(max(e["expires"] for e in first) - time.time() + 1)
        # Every token of that install has expired; the feed refuses them. The next call gets
        # a fresh one from IMDS: nothing on the host kept the old one.
        assert all(e["expires"] < time.time() for e in first)
        must(lab, HOST, as_user(PIP.format(pip="python3 -m pip", dest=f"{WORK}/second")))
        fresh = minted(lab, since=time.time())
        assert fresh and not {e["token"] for e in fresh} & {e["token"] for e in first}
    finally:
        lab.imds_control(ttl=3600)


def test_imds_down_fails_clearly_and_never_prompts(lab, identity):
    """With a terminal, as a user at a shell: pip fails at once with the helper's reason; no
    prompt for a user name or password, nothing waits for input."""
    lab.imds_control(down=True)
    try:
        started = time.monotonic()
        rc, out, err = sh(lab, HOST, as_user(
            "timeout 120 script -qec '" + PIP.format(pip="python3 -m pip",
                                                     dest=f"{WORK}/down").replace(" </dev/null", "")
            + "' /dev/null"), timeout=200)
        took = time.monotonic() - started
        said = out + err
        assert rc not in (0, 124), said  # failed, and not by the timeout
        assert "this host is not an Azure VM with a managed identity" in said, said[-3000:]
        assert "User for" not in said and "Password" not in said, said[-3000:]
        assert took < 110, took
        rc, out, err = sh(lab, HOST, as_user(f"keyring get {lab.feed_url} pipfeed </dev/null"))
        assert (rc, out) == (2, ""), (rc, out, err)
        assert "feed 'python-feed': the instance metadata service (169.254.169.254) does not " \
               "answer" in err, err
    finally:
        lab.imds_control(down=False)


def test_verify_reports_the_managed_identity_as_the_token_source(lab, identity):
    result = identity["run"]("playbooks/verify.yml")
    assert result.returncode == 0, result.stdout[-5000:]
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith(HOST)
                and "HEALTHY" in line)
    assert f"feed python-feed HTTP 200 {IDENTITY_VIA}" in line, line
    assert "feed second-feed HTTP 200 via keyring (credential helper)" in line, line


def test_a_feed_that_refuses_the_identity_names_the_usual_causes(lab, identity):
    """The identity is known but may not read the feed (403): the preflight, run where the
    helper's configuration changes, says why before changing anything; verify says it too."""
    lab.imds_control(identities={"system": {"scopes": []}})
    try:
        result = identity["run"]("playbooks/verify.yml", pipfeed_verify_fail=True)
        assert result.returncode != 0
        assert "the token of the VM's managed identity was not allowed to read the feed (403)" \
            in result.stdout, result.stdout[-4000:]
        must(lab, HOST, sudo(f"mv {CONFIG} {CONFIG}.kept"))
        try:
            result = identity["run"]("site.yml")
            assert result.returncode != 0
            assert recap(result.stdout)[HOST]["changed"] == 0, result.stdout[-4000:]
            said = " ".join(result.stdout.split())
            assert "feed python-feed" in said and "answered 403 to the token of the VM's " \
                   "managed identity" in said, said[-4000:]
            assert "not added to the Azure DevOps organization" in said
            assert "Reader (or Feed Reader) permission on the feed" in said
            assert sh(lab, HOST, f"test -e {CONFIG}")[0] != 0
        finally:
            must(lab, HOST, sudo(f"mv {CONFIG}.kept {CONFIG}"))
    finally:
        lab.imds_control(identities={"system": {"scopes": ["read"]}})


@pytest.mark.parametrize("uv", [True, False], ids=["uv-binary", "wheelhouse"])
def test_the_controllers_downloads_need_a_token_of_its_own(lab, identity, uv):
    """uv's binary and the wheelhouse are downloaded by the controller, which is no VM: a feed
    with azure_identity alone fails before anything changes, saying what to give it."""
    feeds = [{"name": "python-feed", "url": lab.feed_url, "azure_identity": {}}]
    result = identity["run"]("site.yml", pipfeed_feeds=feeds, pipfeed_config_uv_install=uv)
    assert result.returncode != 0
    assert recap(result.stdout)[HOST]["changed"] == 0, result.stdout[-4000:]
    said = " ".join(result.stdout.split())
    assert "Feed python-feed takes its token from each VM's managed identity (azure_identity), " \
           "and the controller has none of its own" in said, said[-3000:]
    assert "give the feed a token_env too, holding an Entra token (az account " \
           "get-access-token --resource 499b84ac-1321-427f-aa17-267ca6975798" in said


def test_the_second_index_never_gets_the_identitys_token(lab, identity):
    seen = authorizations_at_other_index(lab, identity["recorder"])
    assert f"pipfeed:{identity['second']}" in seen  # the second feed's own token, asked
    assert all(MINTED not in value for value in seen), seen


def test_no_token_of_the_identity_in_any_file_or_output(lab, identity, outputs):
    assert minted(lab), "the stand-in minted nothing"
    assert files_holding(lab, HOST, MINTED) == []
    assert outputs and all(MINTED not in output for output in outputs)

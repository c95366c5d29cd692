"""Leaks: a canary token goes through full runs at -vvv, succeeding and failing, and must then
be found nowhere but where the design puts it.

The canary is the feed's token (the lab's feed accepts it), given as the controller
environment variable of the feed's token_env. The runs: site.yml twice (helper, pipfeed_config and
a wheelhouse built from the feed with the canary), site.yml with the canary revoked at the feed
(401), rotate_token.yml with the canary plus a line break (refused in preflight), and the
wheelhouse build while the feed answers 500 (pip's own error in the message). Then real pip
installs from the feed on every host, as root and as a member of the token group.

Searched: everything the runs printed; the controller's Ansible log, fact cache, local temp
and TMPDIR (the wheelhouse build's netrc lives there for the download), and the wheelhouse
cache; every file of every host except /proc, /sys and /dev (the canary may be in the token
file, and in the netrc on hosts whose pip is older than 23.1); and `ps -eo args` sampled on
every host every 0.1 s through the runs and the installs.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.integration.reliability import clean, failure_messages
from tests.integration.support import ansible_env, must, recap, run_playbooks, sh, sudo
from tests.integration.test_credential_helper_role import files_holding

pytestmark = pytest.mark.integration
RELIABILITY = "Leaks"
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]
NETRC_HOSTS = ["deb11-1", "deb12-1"]  # pip 20.3 and 23.0: the netrc is their only way
TOKEN_FILE = "/etc/pipfeed/tokens/python-feed.token"
NETRC = "/etc/pipfeed/netrc"
TOKEN_ENV = "PIPFEED_LEAK_TOKEN"
PS_LOG = "/var/tmp/pipfeed-leak-ps.log"
STOP = "/var/tmp/pipfeed-leak-ps.stop"
# ps every 0.1 s until the stop file appears, at most 20 minutes.
SAMPLER = (f"rm -f {STOP} {PS_LOG}; nohup sh -c 'i=0; while [ ! -e {STOP} ] && [ $i -lt 12000 ]; "
           f"do ps -eo args >> {PS_LOG}; sleep 0.1; i=$((i+1)); done' >/dev/null 2>&1 &")


@pytest.fixture(scope="module")
def canary():
    return "labcanary" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def controller(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("leaks")
    dirs = {name: root / name for name in ("local-tmp", "tmp", "facts", "cache")}
    for path in dirs.values():
        path.mkdir()
    return {"root": root, "log": root / "ansible.log", **dirs}


def leak_env(controller: dict, token: str | None) -> dict:
    return ansible_env(**{
        TOKEN_ENV: token, "ANSIBLE_LOG_PATH": str(controller["log"]),
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(controller["facts"]),
        "ANSIBLE_LOCAL_TEMP": str(controller["local-tmp"]), "TMPDIR": str(controller["tmp"])})


def set_tokens(lab, *extra: dict, base: str) -> None:
    data = json.loads(base)
    data["tokens"] += list(extra)
    lab.tokens_file.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def runs(lab, canary, controller):
    tokens = lab.tokens_file.read_text()
    feeds = [{"name": "python-feed", "url": lab.feed_url, "token_env": TOKEN_ENV}]
    variables = {"pipfeed_feeds": feeds, "pipfeed_wheelhouse_cache_dir": str(controller["cache"])}
    done: dict = {}
    for host in HOSTS:
        clean(lab, host)
        must(lab, host, sudo(SAMPLER))
    try:
        set_tokens(lab, {"token": canary, "scopes": ["read"]}, base=tokens)
        env = leak_env(controller, canary)
        done["site"] = run_playbooks(lab, controller["root"], ["site.yml"], variables, "-vvv", env=env)
        assert done["site"].returncode == 0, done["site"].stdout[-5000:]
        done["site again"] = run_playbooks(lab, controller["root"], ["site.yml"], variables,
                                           "-vvv", env=env)
        assert done["site again"].returncode == 0, done["site again"].stdout[-5000:]
        # Installs with the canary, while ps is sampled.
        for host in HOSTS:
            out = must(lab, host, sudo(
                "cd /tmp && timeout 200 python3 -m pip install --no-cache-dir --no-input "
                "--disable-pip-version-check --target /tmp/leak-root lab-feedonly requests "
                "</dev/null"), timeout=260)
            assert "Successfully installed" in out
            out = must(lab, host, "sudo -u labadmin -H sh -c 'cd /tmp && timeout 200 python3 -m "
                                  "pip download --no-cache-dir --no-input --disable-pip-version-check "
                                  "-d /tmp/leak-member lab-feedonly </dev/null'", timeout=260)
            assert "Successfully downloaded" in out
        # Failing runs. The canary revoked at the feed: 401 in the rotation's token check (a
        # rotation asks the feed about every token; site.yml only about a token that changes).
        lab.tokens_file.write_text(tokens)
        done["revoked (401)"] = run_playbooks(lab, controller["root"],
                                              ["playbooks/rotate_token.yml"], variables,
                                              "-vvv", "--limit", "deb12-1", env=env)
        # The canary with a line break after it: refused before it leaves the controller.
        set_tokens(lab, {"token": canary, "scopes": ["read"]}, base=tokens)
        done["line break"] = run_playbooks(lab, controller["root"], ["playbooks/rotate_token.yml"],
                                           variables, "-vvv", "--limit", "deb11-1",
                                           env=leak_env(controller, canary + "\nsecond-line"))
        # The wheelhouse build failing at the feed (500), from a fresh cache, with the canary.
        lab.control(error_status=500)
        try:
            done["build at 500"] = run_playbooks(
                lab, controller["root"], ["playbooks/wheelhouse.yml"],
                {**variables, "pipfeed_wheelhouse_cache_dir": str(controller["cache"] / "fresh")},
                "-vvv", "--limit", "deb13-1", env=env)
        finally:
            lab.control(error_status=None)
        yield done
    finally:
        lab.tokens_file.write_text(tokens)
        lab.control(error_status=None)
        for host in HOSTS:
            sh(lab, host, sudo(f"touch {STOP}"))


@pytest.fixture(scope="module", autouse=True)
def hosts_back_as_the_lab_made_them(lab):
    yield
    for host in HOSTS:
        sh(lab, host, sudo(f"touch {STOP}; sleep 0.3; rm -rf {PS_LOG} {STOP} /tmp/leak-root "
                           "/tmp/leak-member"))
        clean(lab, host)


def test_failing_runs_failed_as_intended(request, runs):
    """The failing runs fail where they should, so the searches below cover failures"""
    request.node.user_properties.append(("case", "three failing runs at -vvv fail where intended"))
    assert "answered 401" in failure_messages(runs["revoked (401)"].stdout).get("deb12-1", "")
    assert "holds a line break" in failure_messages(runs["line break"].stdout).get("deb11-1", "")
    built = runs["build at 500"]
    assert built.returncode != 0 and "answered HTTP 500" in " ".join(built.stdout.split()), \
        built.stdout[-3000:]
    assert all(s["changed"] == 0 for s in recap(runs["site again"].stdout).values())
    request.node.user_properties.append(("detail", "401 at the token check; line break refused "
                                                   "in preflight; wheelhouse build: the index "
                                                   "answered HTTP 500"))


def test_no_canary_in_any_run_output_at_vvv(request, runs, canary):
    request.node.user_properties.append(("case", "controller output of 5 runs at -vvv"))
    size = 0
    for name, result in runs.items():
        for stream in (result.stdout, result.stderr):
            size += len(stream)
            assert canary not in stream, f"the canary is in the output of the {name} run"
    assert size > 200_000  # -vvv really was on
    request.node.user_properties.append(("detail", f"{size // 1024} KiB searched, 0 hits"))


def test_no_canary_in_controller_logs_fact_cache_or_temp(request, runs, canary, controller):
    request.node.user_properties.append(
        ("case", "controller: Ansible log, fact cache, local temp, TMPDIR, wheelhouse cache"))
    needle = canary.encode()
    searched, hits = 0, []
    for path in Path(controller["root"]).rglob("*"):
        if path.is_file() and not path.name.startswith("vars-"):
            searched += 1
            if needle in path.read_bytes():
                hits.append(str(path))
    assert controller["log"].stat().st_size > 100_000
    # site.yml gathers no facts (each role's probe reads what it uses), so the fact cache may
    # hold nothing; whatever it holds is searched with the rest.
    assert hits == []
    request.node.user_properties.append(("detail", f"{searched} files searched, 0 hits"))


@pytest.mark.parametrize("host", HOSTS)
def test_canary_only_in_the_token_file_and_netrc_on_hosts(request, lab, runs, canary, host):
    request.node.user_properties.append(("case", f"every file of {host}"))
    expected = [NETRC, TOKEN_FILE] if host in NETRC_HOSTS else [TOKEN_FILE]
    assert files_holding(lab, host, canary) == expected
    request.node.user_properties.append(("detail", "only " + ", ".join(expected)))


def test_no_canary_in_process_listings_sampled_during_runs_and_installs(request, lab, runs,
                                                                         canary):
    request.node.user_properties.append(
        ("case", "`ps -eo args` sampled every 0.1 s on every host during the runs and installs"))
    samples = 0
    for host in HOSTS:
        must(lab, host, sudo(f"touch {STOP}"))
        listing = must(lab, host, sudo(f"cat {PS_LOG}"))
        assert "pip install" in listing and "python3" in listing, f"{host}: the sampler missed"
        assert canary not in listing
        samples += listing.count("COMMAND")
    request.node.user_properties.append(("detail", f"{samples} listings, 0 hits"))

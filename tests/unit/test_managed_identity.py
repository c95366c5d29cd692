"""The credential helper's managed-identity source, against the lab's IMDS stand-in on loopback:
what it asks IMDS (header, query, no proxy), Microsoft's retries (404, 429 with Retry-After,
410 for up to 70 s, 5xx), what it refuses at once, and that the token goes only to its own
feed. The first-boot bootstrap's IMDS client too. Pauses are recorded, not slept."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.files import ROOT, program
from tests.lab import imds

pytestmark = pytest.mark.unit

PROGRAM = program("pipfeed-keyring")
FEED = "https://feed.lab.test/contoso/_packaging/python-feed/pypi/simple/"
OTHER = "https://other.lab.test:8443/simple/"
BOOTSTRAP = ROOT / "roles" / "pipfeed_cloud_init" / "files" / "pipfeed-bootstrap"


def load(path: Path, name: str):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


helper = load(PROGRAM, "pipfeed_keyring_identity")
bootstrap = load(BOOTSTRAP, "pipfeed_bootstrap_identity")


class Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The IMDS stand-in on loopback; the helper and the bootstrap pointed at it."""
    tokens, control = tmp_path / "tokens.json", tmp_path / "control.json"
    log = tmp_path / "imds.jsonl"
    tokens.write_text(json.dumps({"tokens": []}))
    imds.write_control(control)
    service = imds.ImdsService("127.0.0.1:0", control, tokens, log).start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{service.port}{imds.TOKEN_PATH}"
    monkeypatch.setattr(helper, "IMDS_URL", url)
    monkeypatch.setattr(bootstrap, "IMDS", url)
    # A proxy that leads nowhere: IMDS must never be asked through one.
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    class StandIn:
        def set(self, **settings):
            imds.update_control(control, **settings)

        def requests(self, at_least: int = 1) -> list[dict]:
            """The log's entries; the service writes each just after it answers, so wait a
            little for ``at_least`` of them."""
            deadline = time.monotonic() + 3
            while True:
                found = [json.loads(line) for line in log.read_text().splitlines()] \
                    if log.exists() else []
                if len(found) >= at_least or time.monotonic() > deadline:
                    return found
                time.sleep(0.02)

        def minted(self) -> list[str]:
            return [e["token"] for e in json.loads(tokens.read_text())["tokens"]]

    yield StandIn()
    stop.set()
    thread.join(5)
    service.close()


def ask(identity=None, clock=None):
    clock = clock or Clock()
    return helper.imds_token(identity or {}, sleep=clock.sleep, clock=clock)


def test_asks_for_azure_devops_with_the_metadata_header_and_no_proxy(stand_in):
    token = ask()
    assert token == stand_in.minted()[-1]
    (request,) = stand_in.requests()
    assert request["metadata"] == "true" and request["status"] == 200
    assert f"resource={helper.AZURE_DEVOPS}" in request["path"]
    assert "api-version=2018-02-01" in request["path"]
    assert "client_id" not in request["path"]
    assert token not in json.dumps(stand_in.requests())


@pytest.mark.parametrize("key", ["client_id", "object_id", "msi_res_id"])
def test_a_user_assigned_identity_is_named_in_the_query(stand_in, key):
    value = "/subscriptions/s/resourcegroups/g/providers/x/uai" if key == "msi_res_id" \
        else "11111111-2222-3333-4444-555555555555"
    stand_in.set(identities={f"{key}:{value}": {"scopes": ["read"]}})
    assert ask({key: value})
    assert f"{key}=" in stand_in.requests()[-1]["path"]


def test_an_identity_the_vm_lacks_is_refused_at_once_with_the_fix(stand_in):
    clock = Clock()
    with pytest.raises(helper.HelperError) as caught:
        ask({"client_id": "99999999-0000-0000-0000-000000000000"}, clock)
    assert caught.value.code == helper.EXIT_TOKEN
    said = str(caught.value)
    assert "has no token of the user-assigned identity client_id 99999999" in said
    assert "az vm identity assign" in said
    assert len(stand_in.requests()) == 1 and clock.slept == []


def test_429_404_and_5xx_are_asked_again_with_growing_pauses_and_retry_after(stand_in):
    stand_in.set(fail=[429, 404, 500, 503], retry_after=4)
    clock = Clock()
    assert ask(clock=clock)
    assert [r["status"] for r in stand_in.requests(5)] == [429, 404, 500, 503, 200]
    # Retry-After (4 s) on the 429, then 2, 4, 8: each pause at least the one before.
    assert clock.slept == [4.0, 2.0, 4.0, 8.0]


def test_410_means_imds_is_updating_and_is_asked_for_up_to_70_seconds(stand_in):
    stand_in.set(fail=[410] * 12)
    clock = Clock()
    assert ask(clock=clock)
    assert len(stand_in.requests(8)) >= 8  # more than the 6 attempts other answers get
    stand_in.set(fail=[410] * 40)
    clock = Clock()
    with pytest.raises(helper.HelperError) as caught:
        ask(clock=clock)
    assert "kept answering HTTP 410" in str(caught.value)
    assert 70 <= clock.now <= 90, clock.now


def test_a_lasting_5xx_gives_up_after_six_attempts(stand_in):
    stand_in.set(fail=[500] * 10)
    clock = Clock()
    with pytest.raises(helper.HelperError) as caught:
        ask(clock=clock)
    assert f"tried {helper.IMDS_ATTEMPTS} times" in str(caught.value)
    assert len(stand_in.requests(helper.IMDS_ATTEMPTS)) == helper.IMDS_ATTEMPTS


def test_imds_unreachable_says_the_host_is_no_azure_vm(stand_in):
    stand_in.set(down=True)
    clock = Clock()
    with pytest.raises(helper.HelperError) as caught:
        ask(clock=clock)
    assert "does not answer" in str(caught.value)
    assert "this host is not an Azure VM with a managed identity" in str(caught.value)
    assert len(clock.slept) == 1


def test_an_answer_without_a_usable_token_is_refused(stand_in, monkeypatch):
    monkeypatch.setattr(helper, "token_problem", lambda token: "is empty")
    with pytest.raises(helper.HelperError) as caught:
        ask()
    assert "answered without a usable access token (it is empty)" in str(caught.value)


# ----- the helper program, configured with a managed-identity feed ------------------------------

@pytest.fixture
def configured(stand_in, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the helper trusts only a root-owned configuration")
    other_token = tmp_path / "other.token"
    other_token.write_text("otherpat" + "x" * 30 + "\n")
    other_token.chmod(0o600)
    config = tmp_path / "credential-helper.json"
    config.write_text(json.dumps({"feeds": [
        {"name": "python-feed", "url": FEED, "azure_identity": {}},
        {"name": "second-feed", "url": OTHER, "token_file": str(other_token)}]}))
    config.chmod(0o644)
    monkeypatch.setenv(helper.CONFIG_ENV, str(config))
    return stand_in


def test_get_answers_the_feeds_urls_with_a_token_of_the_identity(configured, capsys):
    assert helper.main(["get", FEED + "lab-feedonly/", "pipfeed"]) == helper.EXIT_OK
    assert capsys.readouterr().out == configured.minted()[-1] + "\n"


def test_the_other_feed_never_gets_the_identitys_token(configured, capsys):
    assert helper.main(["get", OTHER + "lab-feedonly/", "pipfeed"]) == helper.EXIT_OK
    assert capsys.readouterr().out == "otherpat" + "x" * 30 + "\n"
    with pytest.raises(SystemExit):
        helper.main(["get", "https://pypi.org/simple/lab-feedonly/", "pipfeed"])
    assert capsys.readouterr().out == ""
    assert configured.requests(at_least=0) == []  # IMDS was not even asked


def test_check_asks_the_identity(configured, capsys):
    assert helper.main(["--check"]) == helper.EXIT_OK
    assert "token from the VM's managed identity (system-assigned)" in capsys.readouterr().out
    configured.set(down=True)
    assert helper.main(["--check"]) == helper.EXIT_TOKEN
    assert "not an Azure VM" in capsys.readouterr().err


def test_a_configuration_with_both_or_a_bad_identity_is_refused(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the helper trusts only a root-owned configuration")
    config = tmp_path / "credential-helper.json"
    monkeypatch.setenv(helper.CONFIG_ENV, str(config))
    for feed, says in (
            ({"azure_identity": {}, "token_file": "/x.token"}, 'either "token_file" or '
                                                               '"azure_identity"'),
            ({"azure_identity": {"client_id": "a", "object_id": "b"}}, "must be {}"),
            ({"azure_identity": {"tenant": "a"}}, "must be {}"),
            ({"azure_identity": "system"}, "must be {}")):
        config.write_text(json.dumps({"feeds": [{"name": "f", "url": FEED, **feed}]}))
        config.chmod(0o644)
        with pytest.raises(helper.HelperError) as caught:
            helper.load_feeds(str(config))
        assert says in str(caught.value), (feed, str(caught.value))


# ----- the first boot's bootstrap -------------------------------------------------------------

def test_bootstrap_asks_the_identity_named_for_the_resource_given(stand_in, monkeypatch):
    monkeypatch.setattr(bootstrap.time, "sleep", lambda seconds: None)
    stand_in.set(fail=[500])
    token = bootstrap.identity_token(bootstrap.AZURE_DEVOPS, {}, "fix it")
    assert token == stand_in.minted()[-1]
    assert [r["status"] for r in stand_in.requests(2)] == [500, 200]
    assert all(r["metadata"] == "true" for r in stand_in.requests())


def test_bootstrap_stops_at_once_for_an_identity_the_vm_lacks(stand_in, monkeypatch):
    slept = []
    monkeypatch.setattr(bootstrap.time, "sleep", slept.append)
    with pytest.raises(bootstrap.BootstrapError) as caught:
        bootstrap.identity_token(bootstrap.AZURE_DEVOPS, {"client_id": "nope"},
                                 "give the VM the managed identity of feed python-feed")
    assert "HTTP 400" in str(caught.value) and "python-feed" in str(caught.value)
    assert slept == [] and len(stand_in.requests()) == 1

"""The lab's IMDS stand-in (tests/lab/imds.py) on loopback, and the feed's token expiry."""
from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.lab import feed, imds

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PAT = "labpat-" + "d" * 30
QUERY = f"api-version={imds.API_VERSION}&resource={imds.DEVOPS_RESOURCE}"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: dict

    @property
    def token(self) -> str:
        return self.body["access_token"]


@dataclass
class Imds:
    service: imds.ImdsService
    control: Path
    tokens: Path
    log: Path

    def get(self, query: str = QUERY, metadata: Optional[str] = "true",
            path: str = imds.TOKEN_PATH, method: str = "GET", timeout: float = 5,
            headers: Optional[dict] = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if metadata is not None:
                sent["Metadata"] = metadata
            conn.request(method, f"{path}?{query}" if query else path, headers=sent)
            resp = conn.getresponse()
            return Answer(resp.status, resp.headers, json.loads(resp.read() or b"{}"))
        finally:
            conn.close()

    def set(self, **settings) -> None:
        imds.update_control(self.control, **settings)

    def accepted(self, token: str, scope: str = "read") -> int:
        """What the feed answers for this token as a Basic password (0: granted)."""
        header = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
        return feed.TokenStore(self.tokens).check(header, scope)


def write_tokens(path: Path, entries: list[dict]) -> None:
    path.write_text(json.dumps({"tokens": entries}))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Imds]:
    tokens = tmp_path / "secrets" / "tokens.json"
    tokens.parent.mkdir()
    write_tokens(tokens, [{"token": PAT, "scopes": ["read", "write"]}])
    control, log = tmp_path / "imds-control.json", tmp_path / "logs" / "imds.jsonl"
    imds.write_control(control)
    service = imds.ImdsService("127.0.0.1:0", control, tokens, log).start()
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    yield Imds(service, control, tokens, log)
    stop.set()
    thread.join(5)
    service.close()


def connect(port: int) -> str:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ----- requests IMDS refuses ----------------------------------------------------------------

@pytest.mark.parametrize("metadata", [None, "false", "True", ""])
def test_the_metadata_header_is_required(lab: Imds, metadata) -> None:
    answer = lab.get(metadata=metadata)
    assert answer.status == 400
    assert answer.body == {"error": "invalid_request",
                           "error_description": "Required metadata header not specified"}
    assert answer.headers["Content-Type"].startswith("application/json")


def test_a_forwarded_request_is_refused(lab: Imds) -> None:
    assert lab.get(headers={"X-Forwarded-For": "10.0.0.1"}).status == 400


@pytest.mark.parametrize("query, error", [
    (f"resource={imds.DEVOPS_RESOURCE}",
     "Bad request. api-version was not specified in the request. "
     "For more information refer to aka.ms/azureimds"),
    (f"api-version=2099-01-01&resource={imds.DEVOPS_RESOURCE}",
     "Bad request. api-version is invalid or was not specified in the request. "
     "For more information refer to aka.ms/azureimds"),
])
def test_a_missing_or_unknown_api_version_is_refused(lab: Imds, query, error) -> None:
    answer = lab.get(query)
    assert answer.status == 400
    assert answer.body == {"error": error, "newest-versions": ["2018-02-01"]}


def test_a_missing_or_unknown_resource_is_refused(lab: Imds) -> None:
    missing = lab.get(f"api-version={imds.API_VERSION}")
    assert missing.status == 400
    assert missing.body == {"error": "invalid_request",
                            "error_description": "Required query variable 'resource' is missing"}
    other = lab.get(f"api-version={imds.API_VERSION}&resource=https://management.azure.com/")
    assert other.status == 400
    assert other.body["error"] == "invalid_resource"
    assert other.body["error_description"].startswith("AADSTS50001: ")


def test_other_paths_methods_and_duplicate_parameters(lab: Imds) -> None:
    assert lab.get(path="/metadata/instance").status == 404
    assert lab.get(method="POST").status == 405
    assert lab.get(QUERY + "&resource=x").status == 400


# ----- tokens -------------------------------------------------------------------------------

def test_a_token_is_minted_answered_like_imds_and_accepted_by_the_feed(lab: Imds) -> None:
    before = int(time.time())
    answer = lab.get()
    assert answer.status == 200
    body = answer.body
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on",
                         "ext_expires_in", "not_before", "resource", "token_type"}
    assert all(isinstance(value, str) for value in body.values())
    assert body["token_type"] == "Bearer"
    assert body["resource"] == imds.DEVOPS_RESOURCE
    assert body["client_id"] == imds.SYSTEM_CLIENT_ID
    assert body["expires_in"] == body["ext_expires_in"] == "3600"
    assert before <= int(body["not_before"]) <= int(time.time())
    assert int(body["expires_on"]) - int(body["not_before"]) in (3600, 3601)
    token = answer.token
    assert len(token) > 500 and re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    # JWT-shaped: the audience and expiry can be read, as from a real one.
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == imds.DEVOPS_RESOURCE and claims["exp"] == int(body["expires_on"])
    entries = json.loads(lab.tokens.read_text())["tokens"]
    assert entries[0] == {"token": PAT, "scopes": ["read", "write"]}
    minted = entries[1]
    assert minted["token"] == token and minted["scopes"] == ["read"]
    assert abs(minted["expires"] - int(body["expires_on"])) <= 1
    assert lab.tokens.stat().st_mode & 0o777 == 0o600
    # The feed takes it as the Basic password under any user name, with the identity's scopes.
    assert lab.accepted(token) == 0
    assert lab.accepted(token, "write") == 403
    assert lab.accepted(PAT, "write") == 0
    # Every request mints a new one.
    assert lab.get().token != token


def test_identities_are_chosen_by_client_object_or_resource_id(lab: Imds) -> None:
    res_id = "/subscriptions/0000/resourcegroups/rg/providers/Microsoft.ManagedIdentity/" \
             "userAssignedIdentities/feed-reader"
    lab.set(identities={"system": {"scopes": ["read"]},
                        "client_id:11111111-aaaa-4bbb-8ccc-222222222222": {"scopes": ["read",
                                                                                      "write"]},
                        "object_id:33333333-dddd-4eee-8fff-444444444444": {"scopes": ["read"]},
                        f"msi_res_id:{res_id}": {"scopes": ["read"], "client_id": "cid-res"}})
    by_client = lab.get(QUERY + "&client_id=11111111-AAAA-4bbb-8ccc-222222222222")
    assert by_client.status == 200
    assert by_client.body["client_id"] == "11111111-aaaa-4bbb-8ccc-222222222222"
    assert lab.accepted(by_client.token, "write") == 0
    by_object = lab.get(QUERY + "&object_id=33333333-dddd-4eee-8fff-444444444444")
    assert by_object.status == 200 and lab.accepted(by_object.token, "write") == 403
    by_res = lab.get(QUERY + "&msi_res_id=" + res_id)
    assert by_res.status == 200 and by_res.body["client_id"] == "cid-res"
    not_found = {"error": "invalid_request", "error_description": "Identity not found"}
    unknown = lab.get(QUERY + "&client_id=55555555-0000-4000-8000-000000000000")
    assert (unknown.status, unknown.body) == (400, not_found)
    assert lab.get(QUERY + "&client_id=a&object_id=b").status == 400
    # A VM with user-assigned identities only: asking for the system one finds nothing.
    lab.set(identities={"client_id:abc": {"scopes": ["read"]}})
    system = lab.get()
    assert (system.status, system.body) == (400, not_found)
    lab.set(identities={})
    assert lab.get(QUERY + "&client_id=abc").status == 400


def test_queued_failures_are_answered_in_order_once_each(lab: Imds) -> None:
    lab.set(fail=[429, 410, 500], retry_after=3)
    # A request IMDS refuses anyway does not take a queued failure.
    assert lab.get(metadata=None).status == 400
    answers = [lab.get() for _ in range(4)]
    assert [a.status for a in answers] == [429, 410, 500, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert all(a.headers["Retry-After"] is None for a in answers[1:])
    assert all("error" in a.body and "access_token" not in a.body for a in answers[:3])
    assert imds.read_control(lab.control)["fail"] == []
    assert lab.get().status == 200
    # The failed requests minted nothing: the PAT and the two tokens only.
    assert len(json.loads(lab.tokens.read_text())["tokens"]) == 3
    lab.set(fail=[503])
    assert lab.get().status == 503
    assert lab.get().status == 200


def test_a_token_expires_after_its_ttl_and_expired_ones_are_pruned(lab: Imds) -> None:
    lab.set(ttl=1)
    answer = lab.get()
    assert answer.body["expires_in"] == "1"
    assert lab.accepted(answer.token) == 0
    time.sleep(1.2)
    assert lab.accepted(answer.token) == 401
    lab.set(ttl=3600)
    fresh = lab.get().token
    tokens = [e["token"] for e in json.loads(lab.tokens.read_text())["tokens"]]
    assert tokens == [PAT, fresh]
    assert lab.accepted(PAT) == 0 and lab.accepted(fresh) == 0


def test_the_log_records_requests_and_never_a_token(lab: Imds) -> None:
    lab.get(metadata=None)
    tokens = [lab.get().token for _ in range(2)]
    entries = feed.read_jsonl(lab.log, at_least=3)
    assert [e["status"] for e in entries] == [400, 200, 200]
    assert all(e["client"] == "127.0.0.1" and e["path"].startswith(imds.TOKEN_PATH)
               for e in entries)
    assert entries[0]["error"] == "invalid_request" and entries[0]["metadata"] is None
    assert entries[1]["identity"] == "system" and "expires_on" in entries[1]
    text = lab.log.read_text()
    for token in tokens:
        assert token not in text
        assert token.split(".")[2] not in text


# ----- reachability and delay ---------------------------------------------------------------

def test_down_stops_listening_and_up_listens_again(lab: Imds) -> None:
    port = lab.service.port
    lab.set(down=True)
    wait_for(lambda: connect(port) == "refused")
    lab.set(down=False)
    wait_for(lambda: connect(port) == "connected")
    assert lab.service.port == port
    assert lab.get().status == 200


def test_down_hang_takes_connections_and_never_answers(lab: Imds) -> None:
    lab.set(down="hang")
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        lab.get(timeout=0.5)
    assert time.monotonic() - started < 2
    lab.set(down=False)
    assert lab.get().status == 200


def test_delay(lab: Imds) -> None:
    lab.set(delay_ms=300)
    started = time.monotonic()
    assert lab.get().status == 200
    assert time.monotonic() - started >= 0.3


def test_control_settings_are_checked() -> None:
    with pytest.raises(TypeError):
        imds.write_control("/nonexistent/never-written.json", tll=5)
    for bad in ({"fail": ["429"]}, {"fail": [200]}, {"ttl": 0}, {"down": "maybe"},
                {"identities": {"user:x": {"scopes": []}}}):
        with pytest.raises(ValueError):
            imds.write_control("/nonexistent/never-written.json", **bad)


# ----- the feed's side: tokens that expire --------------------------------------------------

def test_token_store_refuses_expired_tokens_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    now = time.time()
    write_tokens(path, [{"token": "plain", "scopes": ["read"]},
                        {"token": "live", "scopes": ["read"], "expires": now + 60},
                        {"token": "dead", "scopes": ["read"], "expires": now - 1},
                        {"token": "garbled", "scopes": ["read"], "expires": "tomorrow"},
                        {"token": "unset", "scopes": ["read"], "expires": None}])
    store = feed.TokenStore(path)
    header = lambda token: "Basic " + base64.b64encode(f"u:{token}".encode()).decode()  # noqa: E731
    verdicts = {t: store.check(header(t), "read")
                for t in ("plain", "live", "dead", "garbled", "unset")}
    assert verdicts == {"plain": 0, "live": 0, "dead": 401, "garbled": 401, "unset": 0}


# ----- command line -------------------------------------------------------------------------

def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tokens, log = tmp_path / "tokens.json", tmp_path / "imds.jsonl"
    write_tokens(tokens, [])
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.imds",
                             "--listen", f"127.0.0.1:{port}",
                             "--control", str(tmp_path / "control.json"),
                             "--tokens", str(tokens), "--log", str(log)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is None and connect(port) == "connected", 15)
        answer = Imds(imds.ImdsService(f"127.0.0.1:{port}", None, tokens, None), tmp_path,
                      tokens, log).get()
        assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert stdout == b""
    assert answer.token.encode() not in stderr
    assert [e["status"] for e in feed.read_jsonl(log, 1)] == [200]

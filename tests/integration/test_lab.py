"""The lab is what every other test stands on: prove that its hosts are locked down and that
its feed behaves like Azure Artifacts, from the hosts themselves, over SSH."""
from __future__ import annotations

import base64
import json
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.lab import packages

pytestmark = pytest.mark.integration
PROBE = base64.b64encode((Path(__file__).with_name("probe.py")).read_bytes()).decode()
HOSTS = ["deb11-1", "deb12-1", "deb13-1"]


def probe(lab, host: str, *args: str) -> dict:
    command = (f"echo {PROBE} | base64 -d > /tmp/probe.py && "
               f"python3 /tmp/probe.py {shlex.join(args)}")
    result = lab.testinfra(host).run(command)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def feed_file(lab, name_start: str) -> str:
    return next(p.name for p in sorted((lab.dir / "feed-packages").glob(name_start + "*")))


@pytest.fixture
def default_control(lab):
    yield
    lab.control(latency_ms=0, bandwidth_bps=0, blob_ttl_s=300, error_status=None, stall_s=0)


@pytest.mark.parametrize("host", HOSTS)
def test_host_trusts_lab_ca_and_feed_accepts_the_token(lab, host):
    page = probe(lab, host, "get", lab.feed_url + "lab-feedonly/", lab.token)
    assert page["status"] == 200
    assert "/pypi/download/lab-feedonly/1.0.0/lab_feedonly-1.0.0-py3-none-any.whl#sha256=" \
        in page["body"]


@pytest.mark.parametrize("token", ["-", "wrong-token"])
def test_feed_rejects_a_missing_or_wrong_token_with_a_basic_challenge(lab, token):
    answer = probe(lab, "deb12-1", "get", lab.feed_url, token)
    assert answer["status"] == 401
    assert answer["www_authenticate"].startswith("Basic ")


def test_two_downloads_of_one_file_get_different_signed_blob_urls(lab):
    wheel = feed_file(lab, "requests-2.32.5")
    url = f"https://feed.lab.test{lab.feed_path}/download/requests/2.32.5/{wheel}"
    first = probe(lab, "deb11-1", "get", url, lab.token, "nofollow")
    second = probe(lab, "deb11-1", "get", url, lab.token, "nofollow")
    assert first["status"] == second["status"] == 303
    assert first["location"] != second["location"]
    for answer in (first, second):
        assert answer["location"].startswith(f"https://blob.lab.test/blobs/{wheel}?")
        # The blob host needs no credentials: the signature in the URL is the permission.
        blob = probe(lab, "deb11-1", "get", answer["location"], "-")
        assert blob["status"] == 200
        assert blob["length"] == (lab.dir / "feed-packages" / wheel).stat().st_size


def test_expired_or_forged_blob_url_is_refused(lab, default_control):
    lab.control(blob_ttl_s=1)
    wheel = feed_file(lab, "idna-")
    name, version = wheel.split("-")[:2]
    url = f"https://feed.lab.test{lab.feed_path}/download/{name}/{version}/{wheel}"
    location = probe(lab, "deb13-1", "get", url, lab.token, "nofollow")["location"]
    forged = location.replace("sig=", "sig=0")
    assert probe(lab, "deb13-1", "get", forged, "-")["status"] == 403
    time.sleep(2.2)
    expired = probe(lab, "deb13-1", "get", location, "-")
    assert expired["status"] == 403
    assert "expired" in expired["body"].lower()


@pytest.mark.parametrize("host", HOSTS)
def test_pypi_is_silently_dropped_so_clients_wait_for_their_timeout(lab, host):
    assert lab.state["pypi_block"] == "drop"
    for name in ("pypi.org", "files.pythonhosted.org"):
        answer = probe(lab, host, "connect", name, "443", "2")
        assert answer["result"] == "timeout"
        assert 1.8 <= answer["seconds"] < 5


def test_pypi_can_refuse_instead_of_dropping(lab):
    lab.set_pypi_block("refuse")
    try:
        answer = probe(lab, "deb12-1", "connect", "pypi.org", "443", "5")
        assert answer["result"] == "refused"
        assert answer["seconds"] < 1
    finally:
        lab.set_pypi_block("drop")
    assert probe(lab, "deb12-1", "connect", "pypi.org", "443", "1")["result"] == "timeout"


def _controller_addresses(lab) -> list[str]:
    """The machine's own addresses outside the lab network (reachable through INPUT)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return [a for a in found if not a.startswith("127.") and a != lab.gateway]


def test_hosts_reach_the_lab_services_and_nothing_else(lab):
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    port = str(listener.getsockname()[1])
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                listener.accept()[0].close()
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        # A service of the machine on a port the lab does not serve: not reachable.
        assert probe(lab, "deb11-1", "connect", lab.gateway, port, "2")["result"] == "timeout"
        for address in _controller_addresses(lab):
            assert probe(lab, "deb11-1", "connect", address, port, "2")["result"] == "timeout"
        # The controller itself does reach that listener on the same address: the block is
        # the lab's doing, not a dead listener.
        with socket.create_connection((lab.gateway, int(port)), timeout=2):
            pass
    finally:
        stop.set()
        thread.join()
        listener.close()
    # Names resolve only to what the lab put in /etc/hosts; there is no DNS out.
    assert probe(lab, "deb11-1", "resolve", "pypi.org")["result"] == lab.state["firewall"]["ip"]
    answer = probe(lab, "deb11-1", "resolve", "example.org")
    assert answer["result"].startswith("error")
    assert answer["seconds"] < 10
    assert probe(lab, "deb11-1", "connect", "feed.lab.test", "443", "2")["result"] == "connected"


def test_access_log_records_requests_and_never_the_credentials(lab):
    mark = lab.log_mark(lab.access_log)
    host = lab.host("deb12-1")
    probe(lab, host.name, "get", lab.feed_url, "-")
    probe(lab, host.name, "get", lab.feed_url, lab.token)
    entries = [e for e in lab.read_log(lab.access_log, mark) if e["client"] == host.ip]
    assert [(e["status"], e["auth"], e["kind"]) for e in entries] == [
        (401, False, "simple"), (200, True, "simple")]
    assert all(e["path"] == lab.feed_path + "/simple/" for e in entries)
    text = lab.access_log.read_text()
    assert lab.token not in text
    assert "sig=" not in text


@pytest.mark.parametrize("host", HOSTS)
def test_distro_pip_installs_a_feed_only_package_through_signed_redirects(lab, host):
    mark = lab.log_mark(lab.access_log)
    machine = lab.testinfra(host)
    # pip on every lab distro reads ~/.netrc; the file is removed again below.
    netrc = f"machine feed.lab.test login lab password {lab.token}\n"
    encoded = base64.b64encode(netrc.encode()).decode()
    try:
        assert machine.run(f"umask 077 && echo {encoded} | base64 -d > ~/.netrc").rc == 0
        result = machine.run(
            "rm -rf /tmp/dl && python3 -m pip download --no-deps --no-cache-dir --no-input "
            f"--disable-pip-version-check -d /tmp/dl --index-url {lab.feed_url} lab-feedonly")
    finally:
        machine.run("rm -f ~/.netrc")
    assert result.rc == 0, result.stdout + result.stderr
    assert machine.file("/tmp/dl/lab_feedonly-1.0.0-py3-none-any.whl").exists
    ip = lab.host(host).ip
    kinds = [(e["kind"], e["status"]) for e in lab.read_log(lab.access_log, mark)
             if e["client"] == ip]
    assert ("download", 303) in kinds and ("blob", 200) in kinds


def test_twine_uploads_to_the_feed_and_hosts_see_the_new_package(lab, tmp_path):
    wheel = packages.build_wheel(tmp_path, "lab-uploaded", "2.0.0")
    # The controller reaches the feed by the gateway address, which the certificate names,
    # so nothing on this machine (its /etc/hosts) needs to change.
    upload = f"https://{lab.gateway}{lab.feed_path}/upload/"
    env = packages.controller_env(for_lab=True, TWINE_USERNAME="lab", TWINE_PASSWORD=lab.token)
    twine = [str(Path(sys.executable).with_name("twine")), "upload", "--non-interactive",
             "--disable-progress-bar", "--cert", str(lab.ca_file), "--repository-url", upload,
             str(wheel)]
    first = subprocess.run(twine, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert lab.token not in first.stdout + first.stderr
    page = probe(lab, "deb13-1", "get", lab.feed_url + "lab-uploaded/", lab.token)
    assert "lab_uploaded-2.0.0-py3-none-any.whl" in page["body"]
    again = subprocess.run(twine, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "409" in again.stdout + again.stderr
    bad = subprocess.run(twine, env=dict(env, TWINE_PASSWORD="wrong"), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "401" in bad.stdout + bad.stderr


def test_second_index_records_every_authorization_header(lab):
    mark = lab.log_mark(lab.recorder_log)
    assert probe(lab, "deb13-1", "get", lab.other_url + "lab-otheronly/", "-")["status"] == 200
    probe(lab, "deb13-1", "get", lab.other_url, "not-a-real-token")
    entries = [e for e in lab.read_log(lab.recorder_log, mark)
               if e["client"] == lab.host("deb13-1").ip]
    expected = "Basic " + base64.b64encode(b"probe:not-a-real-token").decode()
    assert [e["authorization"] for e in entries] == [None, expected]


def test_controller_pip_downloads_from_the_feed_by_its_address(lab, tmp_path):
    """What a controller-side build does: real pip here, the token from a netrc file (never
    on a command line), links and the 303 to the blob side kept on the gateway address."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {lab.gateway} login lab password {lab.token}\n")
    netrc.chmod(0o600)
    mark = lab.log_mark(lab.access_log)
    env = packages.controller_env(for_lab=True, NETRC=str(netrc))
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                             "--no-cache-dir", "--cert", str(lab.ca_file), "--index-url",
                             lab.controller_feed_url, "--dest", str(tmp_path / "dl"),
                             "lab-feedonly"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "dl" / "lab_feedonly-1.0.0-py3-none-any.whl").exists()
    kinds = [(e["kind"], e["host"], e["status"]) for e in lab.read_log(lab.access_log, mark)]
    assert ("download", lab.gateway, 303) in kinds and ("blob", lab.gateway, 200) in kinds


# What a host's credential helper does to get a token from its VM's managed identity: IMDS at
# 169.254.169.254 with the Metadata header and no proxy (standard library only, Python 3.9+).
IMDS_CLIENT = base64.b64encode(rb'''
import base64, json, socket, sys, time, urllib.error, urllib.request
URL = ("http://169.254.169.254/metadata/identity/oauth2/token"
       "?api-version=2018-02-01&resource=499b84ac-1321-427f-aa17-267ca6975798")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def call(request, timeout):
    start = time.monotonic()
    try:
        with OPENER.open(request, timeout=timeout) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        result = ("timeout" if isinstance(reason, socket.timeout) else "refused"
                  if isinstance(reason, ConnectionRefusedError) else
                  "error: " + type(reason).__name__)
        return {"status": None, "result": result, "seconds": round(time.monotonic() - start, 2)}
    is_json = (headers.get("Content-Type") or "").startswith("application/json")
    return {"status": status, "retry_after": headers.get("Retry-After"),
            "body": json.loads(body) if is_json else None}

def token(metadata=True, timeout=5):
    return call(urllib.request.Request(URL, headers={"Metadata": "true"} if metadata else {}),
                timeout)

def feed(url, token):
    pair = base64.b64encode(("any-user:" + token).encode()).decode()
    return call(urllib.request.Request(url, headers={"Authorization": "Basic " + pair}),
                20)["status"]

verb, args = sys.argv[1], sys.argv[2:]
if verb == "token":
    print(json.dumps([token() for _ in range(int(args[0]))]))
elif verb == "nometa":
    print(json.dumps(token(metadata=False)))
elif verb == "unreachable":
    print(json.dumps(token(timeout=3)))
elif verb == "expiry":
    got = token()["body"]
    before = feed(args[0], got["access_token"])
    time.sleep(max(0.0, int(got["expires_on"]) - time.time()) + 0.5)
    print(json.dumps({"expires_in": got["expires_in"], "before": before,
                      "after": feed(args[0], got["access_token"])}))
''').decode()


def imds_client(lab, host: str, *args: str):
    result = lab.testinfra(host).run(f"echo {IMDS_CLIENT} | base64 -d > /tmp/imds_client.py && "
                                     f"python3 /tmp/imds_client.py {shlex.join(args)}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_imds_stand_in_mints_feed_tokens_that_expire_and_goes_away(lab):
    """A host made an Azure VM (lab.start_imds) fetches a token from 169.254.169.254, which the
    feed takes as the Basic password until it expires; IMDS's 429/410/500 come as queued; once
    IMDS is stopped the host cannot reach 169.254.169.254 at all."""
    host = lab.host("deb12-1")
    mark = lab.log_mark(lab.imds_log)
    lab.start_imds()
    try:
        [first] = imds_client(lab, host.name, "token", "1")
        assert first["status"] == 200, first
        token = first["body"]["access_token"]
        assert first["body"]["resource"] == "499b84ac-1321-427f-aa17-267ca6975798"
        assert first["body"]["expires_in"] == "3600"
        assert probe(lab, host.name, "get", lab.feed_url, token)["status"] == 200
        assert probe(lab, host.name, "get", lab.feed_url, token + "x")["status"] == 401

        lab.imds_control(ttl=2)
        assert imds_client(lab, host.name, "expiry", lab.feed_url) == {
            "expires_in": "2", "before": 200, "after": 401}

        missing = imds_client(lab, host.name, "nometa")
        assert (missing["status"], missing["body"]) == (400, {
            "error": "invalid_request",
            "error_description": "Required metadata header not specified"})

        lab.imds_control(fail=[429, 410, 500])
        answers = imds_client(lab, host.name, "token", "4")
        assert [a["status"] for a in answers] == [429, 410, 500, 200]
        assert answers[0]["retry_after"] and answers[1]["retry_after"] is None

        entries = [e for e in lab.read_log(lab.imds_log, mark) if e["client"] == host.ip]
        assert [e["status"] for e in entries] == [200, 200, 400, 429, 410, 500, 200]
        log = lab.imds_log.read_text()
        assert token not in log and answers[3]["body"]["access_token"] not in log
    finally:
        lab.stop_imds()
    gone = imds_client(lab, host.name, "unreachable")
    assert gone["status"] is None and gone["result"] in ("timeout", "refused"), gone
    assert gone["seconds"] < 5
    assert "imds" not in lab.state and "imds" not in lab.state["pids"]

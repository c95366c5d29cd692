"""The lab's Azure-like feed front and recording index, against a real pypiserver on loopback."""
from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import io
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.lab import feed

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ORG, FEED = "lab-org", "python-feed"
RW, RO, WO = "pat-rw-" + "a" * 20, "pat-ro-" + "b" * 20, "pat-wo-" + "c" * 20


# ----- helpers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_wheel(directory: Path, dist: str, version: str, payload: bytes = b"") -> Path:
    """A small but valid wheel, made here so no network is needed."""
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist.lower()}/__init__.py": b"VALUE = 1\n",
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                             "Requires-Python: >=3.8\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: lab\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    if payload:
        files[f"{dist.lower()}/payload.bin"] = payload
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def make_sdist(directory: Path, name: str, version: str) -> Path:
    path = directory / f"{name}-{version}.tar.gz"
    data = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return path


def basic(token: str, user: str = "anything") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)


def call(server: feed.LabHTTPServer, method: str, url: str, token: Optional[str] = None,
         body: Optional[bytes] = None, headers: Optional[dict[str, str]] = None,
         conn: Optional[http.client.HTTPConnection] = None) -> Resp:
    """Send a request to server for url (absolute, or a path), as if its host resolved there."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Host": parts.netloc or f"127.0.0.1:{server.server_port}", "User-Agent": "lab-test/1"}
    if token is not None:
        sent["Authorization"] = basic(token)
    sent.update(headers or {})
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    start = time.monotonic()
    try:
        conn.request(method, target, body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
        return Resp(resp.status, resp.headers, data, time.monotonic() - start)
    finally:
        if own:
            conn.close()


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "lab" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
              f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode())
    out.write(content + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def read_log(path: Path, at_least: int = 0) -> list[dict]:
    return feed.read_jsonl(path, at_least)


# ----- fixtures -----------------------------------------------------------------------------

@dataclass
class Upstream:
    url: str
    dir: Path
    wheel: Path
    sdist: Path
    bulky: Path


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A real pypiserver (no auth, fallback to pypi.org left on) with a few small files."""
    root = tmp_path_factory.mktemp("pypiserver")
    packages = root / "packages"
    packages.mkdir()
    wheel = make_wheel(packages, "Demo_Pkg", "1.0")
    sdist = make_sdist(packages, "demo_pkg", "0.9")
    bulky = make_wheel(packages, "bulky", "2.0", payload=os.urandom(24 * 1024))
    port = free_port()
    log = open(root / "pypiserver.log", "wb")
    proc = subprocess.Popen([str(BIN / "pypi-server"), "run", "-p", str(port), "-i", "127.0.0.1",
                             "-a", ".", "-P", ".", "--server", "wsgiref", str(packages)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/simple/")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "pypiserver.log").read_text())
            time.sleep(0.1)
        yield Upstream(f"http://127.0.0.1:{port}", packages, wheel, sdist, bulky)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@dataclass
class Feed:
    server: feed.LabHTTPServer
    tokens: Path
    control: Path
    log: Path
    secret: bytes
    base: str  # http://feed.lab.test:PORT/<org>/_packaging/<feed>/pypi

    def call(self, method: str, url: str, token: Optional[str] = None, **kw) -> Resp:
        if url.startswith("/"):
            url = self.base + url
        return call(self.server, method, url, token, **kw)

    def control_set(self, **settings) -> None:
        feed.write_control(self.control, **settings)


def write_tokens(path: Path, tokens: dict[str, list[str]]) -> None:
    path.write_text(json.dumps({"tokens": [{"token": t, "scopes": s} for t, s in tokens.items()]}))


def start_feed(tmp_path: Path, upstream: Upstream, project: Optional[str] = None,
               cert: Optional[Path] = None, key: Optional[Path] = None) -> Feed:
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, {RW: ["read", "write"], RO: ["read"], WO: ["write"]})
    secret = tmp_path / "secret"
    secret.write_bytes(os.urandom(32))
    config = feed.FeedConfig(upstream=upstream.url, org=ORG, project=project, feed=FEED,
                             public_base="http://placeholder", blob_base="http://placeholder",
                             tokens_file=tokens, secret_file=secret,
                             control_file=tmp_path / "control.json",
                             access_log=tmp_path / "logs" / "access.jsonl",
                             listen="127.0.0.1:0", cert=cert, key=key)
    server = feed.make_feed_server(config)
    scheme = "https" if cert else "http"
    # The hosts "resolve" to the listener: call() connects to it and sends their Host header.
    config.public_base = f"{scheme}://feed.lab.test:{server.server_port}"
    config.blob_base = f"{scheme}://blob.lab.test:{server.server_port}"
    feed.serve_in_thread(server)
    segment = f"/{ORG}/{project}" if project else f"/{ORG}"
    return Feed(server, tokens, tmp_path / "control.json", tmp_path / "logs" / "access.jsonl",
                secret.read_bytes(),
                f"{config.public_base}{segment}/_packaging/{FEED}/pypi")


@pytest.fixture
def lab(tmp_path: Path, upstream: Upstream) -> Iterator[Feed]:
    front = start_feed(tmp_path, upstream)
    yield front
    feed.stop_server(front.server)


def file_links(page: bytes) -> list[str]:
    return re.findall(r'href="([^"]+)"', page.decode())


def download_link(lab: Feed, filename: str) -> str:
    page = lab.call("GET", "/simple/demo-pkg/", RW)
    assert page.status == 200
    return next(link for link in file_links(page.body) if filename in link)


# ----- pure functions -----------------------------------------------------------------------

def test_parse_filename() -> None:
    assert feed.parse_filename("Demo_Pkg-1.0-py3-none-any.whl") == ("demo-pkg", "1.0")
    assert feed.parse_filename("a.b-2.0-1build-cp311-cp311-manylinux_2_17_x86_64.whl") == \
        ("a-b", "2.0")
    assert feed.parse_filename("demo_pkg-0.9.tar.gz") == ("demo-pkg", "0.9")
    assert feed.parse_filename("zope.interface-6.0.zip") == ("zope-interface", "6.0")
    assert feed.parse_filename("README.txt") is None
    assert feed.parse_filename("broken.whl") is None


def test_write_control_is_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "control.json"
    feed.write_control(path, latency_ms=5)
    assert json.loads(path.read_text()) == {**feed.CONTROL_DEFAULTS, "latency_ms": 5}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    with pytest.raises(TypeError):
        feed.write_control(path, latncy_ms=5)
    control = feed.ControlFile(path)
    assert control.get()["latency_ms"] == 5
    feed.write_control(path, error_status=503)
    assert control.get()["error_status"] == 503 and control.get()["latency_ms"] == 0
    path.unlink()
    assert control.get() == feed.CONTROL_DEFAULTS


def test_rewrite_keeps_attributes_and_fragment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, {})
    app = feed.FeedApp(feed.FeedConfig(upstream="http://127.0.0.1:9", org="o", feed="f",
                                       public_base="https://feed.lab.test",
                                       blob_base="https://blob.lab.test", tokens_file=tokens))
    page = ('<a href="../../packages/Foo.Bar-1.0+lab-py3-none-any.whl#sha256=abc" '
            'data-requires-python="&gt;=3.8" data-x="1">Foo.Bar-1.0+lab-py3-none-any.whl</a>\n'
            "<a href='other-project/'>other</a>")
    out = app.rewrite_simple_html(page, "http://127.0.0.1:9/simple/foo-bar/")
    assert ('<a href="https://feed.lab.test/o/_packaging/f/pypi/download/foo-bar/1.0%2Blab/'
            'Foo.Bar-1.0%2Blab-py3-none-any.whl#sha256=abc" data-requires-python="&gt;=3.8" '
            'data-x="1">Foo.Bar-1.0+lab-py3-none-any.whl</a>') in out
    assert "<a href='other-project/'>other</a>" in out


# ----- authentication -----------------------------------------------------------------------

def test_missing_or_unknown_token_is_401(lab: Feed) -> None:
    for token in (None, "not-a-token", ""):
        resp = lab.call("GET", "/simple/", token)
        assert resp.status == 401
        assert resp.header("WWW-Authenticate").startswith('Basic realm="')
        assert resp.body and len(resp.body) < 200
    garbled = lab.call("GET", "/simple/", headers={"Authorization": "Basic !!!"})
    assert garbled.status == 401
    assert lab.call("GET", "/simple/", headers={"Authorization": f"Bearer {RW}"}).status == 401
    # the user name does not matter, only the token
    assert call(lab.server, "GET", lab.base + "/simple/",
                headers={"Authorization": basic(RW, user="")}).status == 200


def test_scopes_give_403(lab: Feed, upstream: Upstream) -> None:
    body, ctype = multipart({":action": "file_upload"}, "x-1.0.tar.gz", b"x")
    resp = lab.call("POST", "/upload/", RO, body=body, headers={"Content-Type": ctype})
    assert resp.status == 403
    assert lab.call("GET", "/simple/", WO).status == 403
    assert lab.call("GET", "/simple/", RO).status == 200
    assert not (upstream.dir / "x-1.0.tar.gz").exists()


def test_unknown_paths_are_404(lab: Feed) -> None:
    port = lab.server.server_port
    for url in (f"http://feed.lab.test:{port}/other-org/_packaging/{FEED}/pypi/simple/",
                f"http://feed.lab.test:{port}/{ORG}/_packaging/other-feed/pypi/simple/",
                f"http://feed.lab.test:{port}/{ORG}/_packaging/{FEED}/pypi/elsewhere/",
                f"http://feed.lab.test:{port}/simple/",
                f"http://feed.lab.test:{port}/blobs/Demo_Pkg-1.0-py3-none-any.whl"):
        assert call(lab.server, "GET", url, RW).status == 404, url
    # the org and feed names are not case sensitive, as on Azure
    upper = f"http://feed.lab.test:{port}/{ORG.upper()}/_packaging/{FEED.upper()}/pypi/simple/"
    assert call(lab.server, "GET", upper, RW).status == 200


# ----- index pages --------------------------------------------------------------------------

def test_project_list(lab: Feed) -> None:
    resp = lab.call("GET", "/simple/", RO)
    assert resp.status == 200 and resp.header("Content-Type").startswith("text/html")
    assert "demo-pkg/" in file_links(resp.body) and "bulky/" in file_links(resp.body)
    head = lab.call("HEAD", "/simple/", RO)
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == resp.header("Content-Length")


def test_project_page_links_are_download_urls(lab: Feed, upstream: Upstream) -> None:
    resp = lab.call("GET", "/simple/demo-pkg/", RO)
    assert resp.status == 200
    links = file_links(resp.body)
    assert len(links) == 2
    for path in (upstream.wheel, upstream.sdist):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        version = path.name.split("-")[1].removesuffix(".tar.gz")
        assert f"{lab.base}/download/demo-pkg/{version}/{path.name}#sha256={digest}" in links


def test_redirects_stay_in_the_feed(lab: Feed) -> None:
    resp = lab.call("GET", "/simple/Demo.Pkg/", RO)
    assert resp.status in (301, 302, 303)
    assert resp.header("Location") == f"{lab.base}/simple/demo-pkg/"
    resp = lab.call("GET", "/simple/demo-pkg", RO)
    assert resp.header("Location") == f"{lab.base}/simple/demo-pkg/"
    # pypiserver redirects unknown projects to pypi.org; the feed must not
    missing = lab.call("GET", "/simple/no-such-project/", RO)
    assert missing.status == 404 and missing.header("Location") is None


def test_project_segment(tmp_path: Path, upstream: Upstream) -> None:
    front = start_feed(tmp_path, upstream, project="lab-project")
    try:
        assert f"/{ORG}/lab-project/_packaging/" in front.base
        resp = front.call("GET", "/simple/demo-pkg/", RO)
        assert resp.status == 200
        assert all(link.startswith(front.base + "/download/") for link in file_links(resp.body))
        without = front.base.replace("/lab-project", "") + "/simple/"
        assert call(front.server, "GET", without, RO).status == 404
    finally:
        feed.stop_server(front.server)


def test_upstream_down_is_502(tmp_path: Path, upstream: Upstream) -> None:
    front = start_feed(tmp_path, Upstream(f"http://127.0.0.1:{free_port()}", upstream.dir,
                                          upstream.wheel, upstream.sdist, upstream.bulky))
    try:
        assert front.call("GET", "/simple/", RO).status == 502
        assert front.call("GET", "/simple/", None).status == 401
    finally:
        feed.stop_server(front.server)


# ----- downloads and blobs ------------------------------------------------------------------

def test_download_redirects_to_a_fresh_signed_blob_url(lab: Feed, upstream: Upstream) -> None:
    link = download_link(lab, upstream.wheel.name)
    first, second = lab.call("GET", link, RO), lab.call("GET", link, RO)
    assert first.status == second.status == 303
    assert first.header("Location") != second.header("Location")
    location = urlsplit(first.header("Location"))
    assert f"{location.scheme}://{location.netloc}" == lab.server.app.blob_base
    assert location.path == f"/blobs/{upstream.wheel.name}"
    query = parse_qs(location.query)
    assert set(query) == {"se", "sn", "sig"}
    assert abs(int(query["se"][0]) - (time.time() + 300)) < 5
    head = lab.call("HEAD", link, RO)
    assert head.status == 303 and head.header("Location")
    assert lab.call("GET", link, None).status == 401


def test_download_of_a_missing_file_is_404(lab: Feed) -> None:
    assert lab.call("GET", "/download/demo-pkg/3.0/Demo_Pkg-3.0-py3-none-any.whl",
                    RO).status == 404
    # name and version in the URL must match the file name
    assert lab.call("GET", "/download/other/1.0/Demo_Pkg-1.0-py3-none-any.whl",
                    RO).status == 404


def test_blob_url_serves_the_file(lab: Feed, upstream: Upstream) -> None:
    location = lab.call("GET", download_link(lab, upstream.wheel.name), RO).header("Location")
    resp = call(lab.server, "GET", location)  # no credentials
    assert resp.status == 200
    assert resp.body == upstream.wheel.read_bytes()
    assert resp.header("Content-Type") == "application/octet-stream"
    assert int(resp.header("Content-Length")) == upstream.wheel.stat().st_size
    head = call(lab.server, "HEAD", location)
    assert head.status == 200 and head.body == b""
    assert int(head.header("Content-Length")) == upstream.wheel.stat().st_size
    # a Host header naming neither host: routed by the /blobs/ prefix
    parts = urlsplit(location)
    bare = call(lab.server, "GET", f"http://127.0.0.1:{lab.server.server_port}"
                                   f"{parts.path}?{parts.query}")
    assert bare.status == 200 and bare.body == resp.body


def test_blob_signatures_are_checked(lab: Feed, upstream: Upstream) -> None:
    location = lab.call("GET", download_link(lab, upstream.wheel.name), RO).header("Location")
    parts = urlsplit(location)
    blob = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}

    forged = call(lab.server, "GET", f"{blob}?se={query['se']}&sn={query['sn']}&sig={'0' * 64}")
    assert forged.status == 403 and b"Signature did not match" in forged.body
    assert call(lab.server, "GET", blob).status == 403
    longer = call(lab.server, "GET", f"{blob}?se={int(query['se']) + 999}&sn={query['sn']}"
                                     f"&sig={query['sig']}")
    assert longer.status == 403 and b"Signature" in longer.body
    other_file = location.replace(upstream.wheel.name, upstream.sdist.name)
    assert call(lab.server, "GET", other_file).status == 403

    past = int(time.time()) - 10
    sig = feed.sign_blob(lab.secret, upstream.wheel.name, past, "n0nce")
    expired = call(lab.server, "GET", f"{blob}?se={past}&sn=n0nce&sig={sig}")
    assert expired.status == 403 and b"expired" in expired.body
    assert b"Signature" not in expired.body


def test_blob_ttl_control(lab: Feed, upstream: Upstream) -> None:
    lab.control_set(blob_ttl_s=5000)
    location = lab.call("GET", download_link(lab, upstream.wheel.name), RO).header("Location")
    expires = int(parse_qs(urlsplit(location).query)["se"][0])
    assert abs(expires - (time.time() + 5000)) < 5


# ----- uploads ------------------------------------------------------------------------------

def test_twine_upload_then_listed(lab: Feed, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = make_wheel(dist, "twine_made", "1.2.3")
    env = dict(os.environ, TWINE_USERNAME="lab", TWINE_PASSWORD=RW, PIP_CONFIG_FILE=os.devnull,
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", NO_COLOR="1")
    upload_url = f"http://127.0.0.1:{lab.server.server_port}/{ORG}/_packaging/{FEED}/pypi/upload/"
    result = subprocess.run([str(BIN / "twine"), "upload", "--repository-url", upload_url,
                             "--disable-progress-bar", "--non-interactive", str(wheel)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    page = lab.call("GET", "/simple/twine-made/", RO)
    assert page.status == 200
    assert any(link.startswith(f"{lab.base}/download/twine-made/1.2.3/{wheel.name}#sha256=")
               for link in file_links(page.body))
    uploads = [e for e in read_log(lab.log, 2) if e["kind"] == "upload"]
    assert uploads and uploads[-1]["status"] == 200 and uploads[-1]["method"] == "POST"
    assert RW not in lab.log.read_text()


def test_duplicate_upload_conflicts(lab: Feed, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "dup_pkg", "1.0")
    body, ctype = multipart({":action": "file_upload", "name": "dup_pkg", "version": "1.0"},
                            wheel.name, wheel.read_bytes())
    first = lab.call("POST", "/upload", RW, body=body, headers={"Content-Type": ctype})
    assert first.status == 200
    again = lab.call("POST", "/upload/", RW, body=body, headers={"Content-Type": ctype})
    assert again.status == 409
    assert lab.call("GET", "/upload/", RW).status == 405


def test_refused_upload_answers_400_and_stores_nothing(lab: Feed, tmp_path: Path) -> None:
    """The control file names files the feed refuses, as Azure refuses a version it once
    held: twine sees a 400 and the index never lists the file; other files still go in."""
    refused = make_wheel(tmp_path, "refused_pkg", "1.0")
    taken = make_wheel(tmp_path, "refused_pkg", "1.1")
    lab.control_set(refuse_uploads=[refused.name])
    env = dict(os.environ, TWINE_USERNAME="lab", TWINE_PASSWORD=RW, PIP_CONFIG_FILE=os.devnull,
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", NO_COLOR="1")
    upload_url = f"http://127.0.0.1:{lab.server.server_port}/{ORG}/_packaging/{FEED}/pypi/upload/"
    results = [subprocess.run([str(BIN / "twine"), "upload", "--repository-url", upload_url,
                               "--disable-progress-bar", "--non-interactive", str(wheel)],
                              env=env, capture_output=True, text=True, timeout=60)
               for wheel in (refused, taken)]
    assert results[0].returncode != 0 and "400" in results[0].stdout + results[0].stderr
    assert results[1].returncode == 0, results[1].stdout + results[1].stderr
    names = {link.rsplit("/", 1)[-1].split("#")[0]
             for link in file_links(lab.call("GET", "/simple/refused-pkg/", RO).body)}
    assert names == {taken.name}


# ----- tokens, control, log -----------------------------------------------------------------

def test_token_rotation_takes_effect_at_once(lab: Feed) -> None:
    assert lab.call("GET", "/simple/", RO).status == 200
    write_tokens(lab.tokens, {"new-one": ["read"], "new-two": ["read", "write"]})
    assert lab.call("GET", "/simple/", RO).status == 401
    assert lab.call("GET", "/simple/", "new-one").status == 200
    assert lab.call("GET", "/simple/", "new-two").status == 200
    lab.tokens.unlink()
    assert lab.call("GET", "/simple/", "new-one").status == 401


def test_latency_and_stall(lab: Feed) -> None:
    assert lab.call("GET", "/simple/", RO).seconds < 0.3
    lab.control_set(latency_ms=300)
    assert lab.call("GET", "/simple/", RO).seconds >= 0.3
    lab.control_set(stall_s=0.3)
    assert lab.call("GET", "/simple/", RO).seconds >= 0.3
    lab.control_set()
    assert lab.call("GET", "/simple/", RO).seconds < 0.3


def test_error_status(lab: Feed, upstream: Upstream) -> None:
    location = lab.call("GET", download_link(lab, upstream.wheel.name), RO).header("Location")
    lab.control_set(error_status=503)
    assert lab.call("GET", "/simple/", RO).status == 503
    assert lab.call("GET", "/simple/").status == 503
    assert call(lab.server, "GET", location).status == 503
    lab.control_set(error_status=500)
    assert lab.call("GET", "/simple/", RO).status == 500
    lab.control_set()
    assert call(lab.server, "GET", location).status == 200


def test_bandwidth_cap(lab: Feed, upstream: Upstream) -> None:
    link = f"{lab.base}/download/bulky/2.0/{upstream.bulky.name}"
    location = lab.call("GET", link, RO).header("Location")
    size = upstream.bulky.stat().st_size
    lab.control_set(bandwidth_bps=size * 2)  # about half a second
    resp = call(lab.server, "GET", location)
    assert resp.status == 200 and resp.body == upstream.bulky.read_bytes()
    assert 0.4 <= resp.seconds < 1.5


def test_access_log(lab: Feed, upstream: Upstream) -> None:
    lab.call("GET", "/simple/", None)
    link = download_link(lab, upstream.wheel.name)
    location = lab.call("GET", link, RW).header("Location")
    call(lab.server, "GET", location)
    lab.call("GET", "/nothing", RW)
    entries = read_log(lab.log, 5)
    kinds = [(e["kind"], e["status"], e["auth"]) for e in entries]
    assert kinds == [("simple", 401, False), ("simple", 200, True), ("download", 303, True),
                     ("blob", 200, False), ("other", 404, True)]
    keys = {"ts", "client", "method", "host", "path", "kind", "status", "bytes", "auth", "ua",
            "ms"}
    for entry in entries:
        assert set(entry) == keys
        assert entry["client"] == "127.0.0.1" and entry["ua"] == "lab-test/1"
        assert entry["ts"].endswith("Z") and "?" not in entry["path"]
    blob = entries[3]
    assert blob["host"] == "blob.lab.test" and blob["path"] == f"/blobs/{upstream.wheel.name}"
    assert blob["bytes"] == upstream.wheel.stat().st_size
    assert entries[1]["host"] == "feed.lab.test"
    text = lab.log.read_text()
    signature = parse_qs(urlsplit(location).query)["sig"][0]
    for secret in (RW, basic(RW), basic(RW).split()[1], signature, "sig=", "Authorization"):
        assert secret not in text


def test_keep_alive_and_clean_shutdown(tmp_path: Path, upstream: Upstream) -> None:
    front = start_feed(tmp_path, upstream)
    conn = http.client.HTTPConnection("127.0.0.1", front.server.server_port, timeout=5)
    try:
        body, ctype = multipart({":action": "file_upload"}, "nope-1.0.tar.gz", b"data")
        sock = None
        for method, path, token, kw, status in (
                ("GET", "/simple/", None, {}, 401),
                ("POST", "/upload/", None, {"body": body, "headers": {"Content-Type": ctype}}, 401),
                ("GET", "/simple/demo-pkg/", RO, {}, 200),
                ("HEAD", "/simple/", RO, {}, 200),
                ("GET", "/download/demo-pkg/1.0/Demo_Pkg-1.0-py3-none-any.whl", RO, {}, 303)):
            resp = front.call(method, path, token, conn=conn, **kw)
            assert resp.status == status
            assert conn.sock is not None, "connection was closed"
            assert sock is None or conn.sock is sock
            sock = conn.sock
        assert resp.header("Content-Length") == "0"
    finally:
        feed.stop_server(front.server)
    # the idle keep-alive connection is closed with the server
    conn.sock.settimeout(2)
    assert conn.sock.recv(1) == b""
    conn.close()


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "feed.lab.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("feed.lab.test"), x509.DNSName("blob.lab.test"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls(tmp_path: Path, upstream: Upstream) -> None:
    cert, key = make_cert(tmp_path)
    front = start_feed(tmp_path, upstream, cert=cert, key=key)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", front.server.server_port,
                                           context=context, timeout=5)
        try:
            page = front.call("GET", "/simple/demo-pkg/", RO, conn=conn)
            assert page.status == 200
            assert all(link.startswith("https://feed.lab.test:") for link in file_links(page.body))
            link = next(iter(file_links(page.body)))
            location = front.call("GET", link, RO, conn=conn).header("Location")
            assert location.startswith("https://blob.lab.test:")
            blob = front.call("GET", location, conn=conn)
            assert blob.status == 200 and blob.body[:2] in (b"PK", b"\x1f\x8b")
        finally:
            conn.close()
        # a client that does not speak TLS does not upset the server
        with socket.create_connection(("127.0.0.1", front.server.server_port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(OSError):
                while raw.recv(1024):
                    pass
                raise OSError("closed")
    finally:
        feed.stop_server(front.server)


# ----- the recorder -------------------------------------------------------------------------

@pytest.mark.parametrize("challenge", [False, True])
def test_recorder(tmp_path: Path, challenge: bool) -> None:
    root = tmp_path / "other"
    root.mkdir()
    wheel = make_wheel(root, "Other_Only", "1.0.0")
    log = tmp_path / "recorder.jsonl"
    config = feed.RecorderConfig(root=root, public_base="https://other.lab.test:8443",
                                 log=log, challenge=challenge)
    server = feed.make_recorder_server(config)
    feed.serve_in_thread(server)
    try:
        anonymous = call(server, "GET", "/simple/")
        if challenge:
            assert anonymous.status == 401
            assert anonymous.header("WWW-Authenticate").startswith("Basic ")
        else:
            assert anonymous.status == 200 and file_links(anonymous.body) == ["other-only/"]
        page = call(server, "GET", "/simple/other-only/", "leaked-token")
        assert page.status == 200
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert file_links(page.body) == [
            f"https://other.lab.test:8443/files/{wheel.name}#sha256={digest}"]
        moved = call(server, "GET", "/simple/Other_Only/", "leaked-token")
        assert moved.status == 301
        assert moved.header("Location") == "https://other.lab.test:8443/simple/other-only/"
        data = call(server, "GET", f"/files/{wheel.name}", "leaked-token")
        assert data.status == 200 and data.body == wheel.read_bytes()
        assert call(server, "GET", "/files/../x", "leaked-token").status == 404
    finally:
        feed.stop_server(server)
    entries = read_log(log, 5)
    assert [e["status"] for e in entries] == [401 if challenge else 200, 200, 301, 200, 404]
    assert entries[0]["authorization"] is None
    assert all(e["authorization"] == basic("leaked-token") for e in entries[1:])
    assert {"ts", "client", "method", "path", "status", "ua", "authorization"} <= set(entries[0])


# ----- command line -------------------------------------------------------------------------

def test_cli_help() -> None:
    for args in ([], ["feed"], ["recorder"]):
        result = subprocess.run([sys.executable, "-m", "tests.lab.feed", *args, "--help"],
                                cwd=REPO, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout


def test_cli_serves_quietly_and_stops_on_sigterm(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    write_tokens(tokens, {RW: ["read", "write"]})
    log = tmp_path / "access.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.feed", "feed",
                             "--listen", f"127.0.0.1:{port}", "--upstream", upstream.url,
                             "--org", ORG, "--feed", FEED,
                             "--public-base", "https://feed.lab.test",
                             "--blob-base", "https://blob.lab.test",
                             "--tokens-file", str(tokens),
                             "--secret-file", str(tmp_path / "new" / "secret"),
                             "--control-file", str(tmp_path / "control.json"),
                             "--access-log", str(log)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        path = f"/{ORG}/_packaging/{FEED}/pypi/simple/demo-pkg/"
        conn.request("GET", path, headers={"Host": "feed.lab.test", "Authorization": basic(RW)})
        resp = conn.getresponse()
        assert resp.status == 200
        page = resp.read().decode()
        assert f"https://feed.lab.test/{ORG}/_packaging/{FEED}/pypi/download/" in page
        conn.close()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert stdout == b""
    assert b"GET" not in stderr  # no per-request lines
    assert (tmp_path / "new" / "secret").stat().st_size == 32
    assert [e["status"] for e in read_log(log, 1)] == [200]

"""An Azure-Artifacts-like front for the lab's pypiserver, and a second index that records.

The feed front lets the lab exercise what makes Azure Artifacts awkward for pip and uv,
without a real Azure organisation:

* index pages live under ``/<org>[/<project>]/_packaging/<feed>/pypi/simple/`` and need a
  personal access token (HTTP Basic, any user name, the PAT as password) on every request;
* file links on those pages point at ``.../pypi/download/<name>/<version>/<file>``, which
  answers ``303 See Other`` to a short-lived signed blob URL on another host, whose query
  string changes on every request, so a client cache keyed by URL never hits;
* the blob host needs no credentials and must never see them.

The files themselves come from a pypiserver that runs without authentication on loopback.
A control file lets tests slow the feed down, cap its bandwidth, shorten the blob URLs'
lifetime or make it fail, and an access log (JSON lines) records what clients asked for,
never their credentials nor the blob signatures.

The recorder is a plain PEP 503 index over a directory.  It logs every request together with
the Authorization header it carried, because its only job is to prove that a feed token is
never sent to an index it does not belong to.  With ``--challenge`` it answers 401 to requests
without credentials, to tempt a client into sending some.

Routing between the feed and the blob side (both are served by one listener): the host part
of the ``Host`` header decides when it names exactly one of the ``--public-base`` and
``--blob-base`` hosts; when it names neither (a bare IP address, say) or both, a path under
``/blobs/`` is the blob side and anything else the feed side.

Standard library only, so the lab can start it with any Python 3.9+ that runs the tests.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import html
import http.client
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Optional, Union
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

CONTROL_DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "bandwidth_bps": 0,
    "blob_ttl_s": 300,
    "error_status": None,
    "stall_s": 0,
    # File names whose upload the feed refuses (400), as Azure Artifacts refuses a file it
    # will not take although its index does not list it.
    "refuse_uploads": [],
}
SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
UA_MAX = 200
UPSTREAM_TIMEOUT = 60.0
CHUNK = 64 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
REDIRECTS = (301, 302, 303, 307, 308)
CLIENT_GONE = (ConnectionError, TimeoutError, socket.timeout, ssl.SSLError)

PathLike = Union[str, "os.PathLike[str]"]


# ----- small helpers ------------------------------------------------------------------------

def normalize_name(name: str) -> str:
    """PEP 503 normalisation, the form every URL the feed generates uses."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_filename(filename: str) -> Optional[tuple[str, str]]:
    """Return (normalized project name, version) of a wheel or sdist file name, or None.

    Download URLs carry both, as Azure's do, so they are read from the file name alone.
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        if len(parts) < 5 or not parts[0] or not parts[1]:
            return None
        return normalize_name(parts[0]), parts[1]
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            name, sep, version = filename[: -len(suffix)].rpartition("-")
            if sep and name and version:
                return normalize_name(name), version
            return None
    return None


def sign_blob(secret: bytes, filename: str, expires: int, nonce: str) -> str:
    """HMAC-SHA256 (hex) that a blob URL for filename, expiry and nonce carries as ``sig``."""
    message = f"{filename}\n{int(expires)}\n{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def write_control(path: PathLike, **settings: Any) -> None:
    """Write the control file atomically: the defaults overlaid with settings.

    The feed re-reads the file when its modification time changes; a rename makes sure it
    never reads a half-written file.  Unknown settings raise TypeError, to catch typos.
    """
    unknown = sorted(set(settings) - set(CONTROL_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown control settings: {', '.join(unknown)}")
    data = dict(CONTROL_DEFAULTS)
    data.update(settings)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def host_part(value: Optional[str]) -> str:
    """The host of a Host header or URL authority, lower case, without port or brackets."""
    value = (value or "").strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def split_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``[v6]:PORT``) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _now_iso() -> str:
    """UTC time, fixed width to the microsecond, so that sorting the strings orders them."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _read_secret(path: Optional[PathLike]) -> bytes:
    """The blob signing key; a missing file gets a fresh random key so restarts keep it."""
    if path is None:
        return secrets.token_bytes(32)
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    key = target.read_bytes()
    if not key:
        raise ValueError(f"{target}: empty signing key")
    return key


def read_jsonl(path: PathLike, at_least: int = 0, timeout: float = 2.0,
               ordered: bool = True) -> list[dict[str, Any]]:
    """Entries of a JSON-lines log, waiting up to timeout for at least that many.

    A request's line is written just after its response went out, so a reader that looks
    the moment it has its answer may have to wait a little, and requests on different
    connections may land out of order; ``ts`` is when a request arrived, so ordered=True
    sorts by it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        entries = [json.loads(line) for line in lines if line.strip()]
        if len(entries) >= at_least or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if ordered:
        entries.sort(key=lambda entry: str(entry.get("ts", "")))
    return entries


def upload_filename(body: bytes) -> Optional[str]:
    """The file name of the ``content`` part of a twine upload form, or None."""
    match = re.search(rb'name="content"; filename="([^"\r\n]+)"', body)
    return match.group(1).decode("utf-8", "replace") if match else None


class UpstreamError(Exception):
    """pypiserver could not be reached or answered garbage: the client gets 502."""


class ControlFile:
    """The control settings, re-read only when the file changes (a stat per request)."""

    def __init__(self, path: Optional[PathLike]) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stamp: Optional[tuple[int, int, int]] = None
        self._values: dict[str, Any] = dict(CONTROL_DEFAULTS)

    def get(self) -> dict[str, Any]:
        """Current settings; defaults when the file is missing or unreadable."""
        if self.path is None:
            return dict(CONTROL_DEFAULTS)
        try:
            st = self.path.stat()
            stamp: Optional[tuple[int, int, int]] = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                values = dict(CONTROL_DEFAULTS)
                if stamp is not None:
                    try:
                        loaded = json.loads(self.path.read_text())
                        if isinstance(loaded, dict):
                            values.update({k: v for k, v in loaded.items()
                                           if k in CONTROL_DEFAULTS})
                    except (OSError, ValueError) as exc:
                        print(f"feed: ignoring control file {self.path}: {exc}",
                              file=sys.stderr, flush=True)
                self._values, self._stamp = values, stamp
            return dict(self._values)


class JsonLines:
    """An append-only JSON-lines log, shared by threads; each line is flushed at once.

    The file is opened for every line so tests may truncate or remove it between steps.
    """

    def __init__(self, path: Optional[PathLike]) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


class TokenStore:
    """Personal access tokens, read from the JSON file on every request.

    Reading every time makes rotation and revocation take effect at once.  An entry may carry
    ``"expires"`` (seconds since the epoch, as the IMDS stand-in's minted tokens do): from that
    moment on it is no longer accepted (401); an expiry that is not a number fails closed.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    @staticmethod
    def _live(item: dict, now: float) -> bool:
        expires = item.get("expires")
        if expires is None:
            return True
        if isinstance(expires, bool) or not isinstance(expires, (int, float)):
            return False
        return now < expires

    def _entries(self) -> list[tuple[bytes, frozenset[str]]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        entries = []
        now = time.time()
        for item in data.get("tokens", []) if isinstance(data, dict) else []:
            if isinstance(item, dict) and isinstance(item.get("token"), str) and item["token"] \
                    and self._live(item, now):
                scopes = item.get("scopes") or []
                entries.append((item["token"].encode(), frozenset(str(s) for s in scopes)))
        return entries

    @staticmethod
    def password(authorization: Optional[str]) -> Optional[str]:
        """The password of an HTTP Basic header (the user name is ignored, as Azure does)."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None

    def scopes(self, authorization: Optional[str]) -> Optional[frozenset[str]]:
        """Scopes of the token in the header; None when it is missing or unknown."""
        password = self.password(authorization)
        if password is None:
            return None
        given = password.encode()
        found: Optional[frozenset[str]] = None
        for token, scopes in self._entries():
            # Compare against every token, without stopping early, in constant time.
            if hmac.compare_digest(given, token):
                found = scopes if found is None else found | scopes
        return found

    def check(self, authorization: Optional[str], scope: str) -> int:
        """0 when the header grants scope, else the status to answer (401 or 403)."""
        scopes = self.scopes(authorization)
        if scopes is None:
            return 401
        return 0 if scope in scopes else 403


# ----- the server ---------------------------------------------------------------------------

class LabHTTPServer(ThreadingHTTPServer):
    """A threading HTTP/1.1 server with optional TLS and a clean, complete shutdown.

    TLS handshakes happen in the connection's own thread, so one slow client cannot hold up
    accept().  ``server_close()`` also shuts down the connections still open (idle
    keep-alive ones included), so their threads end with the server.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    handshake_timeout = 15.0

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 ssl_context: Optional[ssl.SSLContext] = None, app: Any = None) -> None:
        self.ssl_context = ssl_context
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN, which can hang offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """Base URL of the listener, for tests."""
        host = self.server_name
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.server_port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        if self.ssl_context is not None:
            try:
                request.settimeout(self.handshake_timeout)
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        with self._conns_lock:
            self._conns.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            if conn is not request:
                self.shutdown_request(conn)

    def server_close(self) -> None:
        super().server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            return
        print(f"lab server: error serving {client_address}:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()


def _server_class(host: str) -> type[LabHTTPServer]:
    if ":" in host:
        return type("LabHTTPServer6", (LabHTTPServer,), {"address_family": socket.AF_INET6})
    return LabHTTPServer


def ssl_context(cert: Optional[PathLike], key: Optional[PathLike]) -> Optional[ssl.SSLContext]:
    """A server TLS context when a certificate is given, else None (plain HTTP)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--cert and --key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def serve_in_thread(server: LabHTTPServer) -> threading.Thread:
    """Run serve_forever in a daemon thread (tests, and the CLI's several listeners)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"serve-{server.server_port}", daemon=True)
    server._thread = thread
    thread.start()
    return thread


def stop_server(server: LabHTTPServer, timeout: float = 5.0) -> None:
    """Stop serving, close the listener and every open connection, join the thread."""
    thread = server._thread
    if thread is not None and thread.is_alive():
        server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: HTTP/1.1, Content-Length always, throttled bodies, quiet stderr."""

    protocol_version = "HTTP/1.1"
    server_version = "lab-feed/1"
    sys_version = ""
    timeout = 120
    server: LabHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """The JSON log is the log; nothing per request goes to stderr."""

    # request state, reset by _begin()
    def _begin(self) -> None:
        self._t0 = time.monotonic()
        self._ts = _now_iso()
        self._status = 0
        self._sent = 0
        self._bps = 0
        self._body_read = False
        self._headers_done = False
        target = self.path
        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
        self._raw_path, _, self._query = target.partition("?")

    def _ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 1)

    def _ua(self) -> str:
        return (self.headers.get("User-Agent") or "")[:UA_MAX]

    def _has_body(self) -> bool:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        return chunked or int(self.headers.get("Content-Length") or 0) > 0

    def read_body(self, limit: int = 512 * 1024 * 1024) -> bytes:
        """The request body (Content-Length or chunked); raises ValueError when too big."""
        self._body_read = True
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > limit:
                    self.close_connection = True
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _settle_body(self) -> None:
        """Consume an unread request body before answering, or close the connection.

        Clients such as twine send the whole body before reading the answer; reading it
        keeps them from seeing a reset instead of a 401, and keeps keep-alive in step.
        """
        if self._body_read or not self._has_body():
            return
        try:
            self.read_body(DRAIN_LIMIT)
        except (ValueError, OSError):
            self.close_connection = True

    def start_response(self, status: int, length: int, content_type: Optional[str],
                       headers: Iterable[tuple[str, str]] = ()) -> None:
        self._settle_body()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._status = status
        self._headers_done = True

    def write_chunks(self, chunks: Iterable[bytes]) -> None:
        """Write body chunks, throttled to self._bps bytes per second when set."""
        if self.command == "HEAD":
            return
        start = time.monotonic()
        for chunk in chunks:
            view = memoryview(chunk)
            step = max(256, min(CHUNK, self._bps // 20)) if self._bps > 0 else CHUNK
            for offset in range(0, len(view), step):
                piece = view[offset:offset + step]
                self.wfile.write(piece)
                self._sent += len(piece)
                if self._bps > 0:
                    ahead = self._sent / self._bps - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)

    def respond(self, status: int, body: Union[bytes, str] = b"",
                content_type: Optional[str] = "text/plain; charset=utf-8",
                headers: Iterable[tuple[str, str]] = ()) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.start_response(status, len(data), content_type if data else None, headers)
        self.write_chunks([data])

    def _fail(self, exc: BaseException) -> None:
        """Answer 502 (upstream trouble) or 500 when nothing was sent yet; always hang up.

        A client that went away (reset, timeout, TLS error) gets nothing more.
        """
        self.close_connection = True
        if self._headers_done or isinstance(exc, CLIENT_GONE):
            return
        if isinstance(exc, UpstreamError):
            print(f"feed: upstream: {exc}", file=sys.stderr, flush=True)
            status = 502
        else:
            traceback.print_exc(file=sys.stderr)
            status = 500
        with contextlib.suppress(OSError):
            self.respond(status, f"{status} {'Bad Gateway' if status == 502 else 'Error'}\n")

    def _dispatch(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET


# ----- the feed front -----------------------------------------------------------------------

@dataclasses.dataclass
class FeedConfig:
    """What the feed front needs; mirrors the CLI options."""

    upstream: str
    org: str
    feed: str
    public_base: str
    blob_base: str
    tokens_file: PathLike
    project: Optional[str] = None
    listen: str = "127.0.0.1:0"
    cert: Optional[PathLike] = None
    key: Optional[PathLike] = None
    secret_file: Optional[PathLike] = None
    control_file: Optional[PathLike] = None
    access_log: Optional[PathLike] = None


class FeedApp:
    """State shared by the feed's listeners: tokens, control, log, signing key, routes."""

    def __init__(self, config: FeedConfig) -> None:
        self.config = config
        self._local = threading.local()
        self.tokens = TokenStore(config.tokens_file)
        self.control = ControlFile(config.control_file)
        self.log = JsonLines(config.access_log)
        self.secret = _read_secret(config.secret_file)
        up = urlsplit(config.upstream)
        if up.scheme not in ("http", "https") or not up.hostname:
            raise ValueError(f"upstream must be an http(s) URL: {config.upstream!r}")
        self.upstream_scheme = up.scheme
        self.upstream_netloc = up.netloc
        self.upstream_host = up.hostname
        self.upstream_port = up.port or (443 if up.scheme == "https" else 80)
        self.upstream_prefix = up.path.rstrip("/")
        self.upstream_base = f"{up.scheme}://{up.netloc}{self.upstream_prefix}"

    # -- URL space --
    @property
    def public_base(self) -> str:
        return (getattr(self._local, "base", None) or self.config.public_base).rstrip("/")

    @property
    def blob_base(self) -> str:
        return (getattr(self._local, "base", None) or self.config.blob_base).rstrip("/")

    def use_authority(self, host_header: Optional[str]) -> None:
        """Serve this thread's request for a client that names the feed by IP address.

        The controller cannot resolve the lab's host names (its /etc/hosts is not the lab's
        to change), so it addresses the feed by the address the certificate names; links
        and blob redirects then stay on that address. Clients using the names see no change.
        """
        try:
            ipaddress.ip_address(host_part(host_header))
        except ValueError:
            self._local.base = None
            return
        scheme = urlsplit(self.config.public_base).scheme or "https"
        self._local.base = f"{scheme}://{(host_header or '').strip()}"

    @property
    def feed_path(self) -> str:
        """``/<org>[/<project>]/_packaging/<feed>/pypi`` as generated in links."""
        parts = [self.config.org] + ([self.config.project] if self.config.project else [])
        parts += ["_packaging", self.config.feed, "pypi"]
        return "/" + "/".join(quote(p, safe="") for p in parts)

    def feed_url(self, rest: str) -> str:
        return f"{self.public_base}{self.feed_path}{rest}"

    def download_url(self, filename: str, fragment: str = "") -> Optional[str]:
        parsed = parse_filename(filename)
        if parsed is None:
            return None
        name, version = parsed
        rest = "/download/" + "/".join(quote(part, safe="") for part in (name, version, filename))
        return self.feed_url(rest) + (f"#{fragment}" if fragment else "")

    def blob_url(self, filename: str, ttl: float) -> str:
        expires = int(time.time() + float(ttl))
        nonce = secrets.token_hex(8)
        sig = sign_blob(self.secret, filename, expires, nonce)
        query = f"se={expires}&sn={nonce}&sig={sig}"
        return f"{self.blob_base}/blobs/{quote(filename, safe='')}?{query}"

    def side(self, host_header: Optional[str], path: str) -> str:
        """'blob' or 'feed', by Host header first, by the /blobs/ prefix when that is unclear."""
        host = host_part(host_header)
        is_feed = bool(host) and host == host_part(urlsplit(self.public_base).netloc)
        is_blob = bool(host) and host == host_part(urlsplit(self.blob_base).netloc)
        if is_blob != is_feed:
            return "blob" if is_blob else "feed"
        return "blob" if path.startswith("/blobs/") else "feed"

    def route(self, path: str) -> tuple[str, str]:
        """Classify a feed-side path: (kind, remainder after ``.../pypi``); kind 'other' = 404."""
        match = re.match(r"^/([^/]+)(?:/([^/]+))?/_packaging/([^/]+)/pypi(/.*)?$", path)
        if not match:
            return "other", ""
        org, project, feed = (unquote(match.group(i) or "").lower() for i in (1, 2, 3))
        rest = match.group(4) or ""
        if (org, project, feed) != (self.config.org.lower(), (self.config.project or "").lower(),
                                    self.config.feed.lower()):
            return "other", ""
        if rest == "/simple" or rest.startswith("/simple/"):
            return "simple", rest
        if rest in ("/upload", "/upload/"):
            return "upload", rest
        if re.match(r"^/download/[^/]+/[^/]+/[^/]+$", rest):
            return "download", rest
        return "other", ""

    # -- upstream --
    def upstream_request(self, method: str, path: str, body: Optional[bytes] = None,
                         headers: Optional[dict[str, str]] = None
                         ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One request to pypiserver on a fresh connection (it speaks HTTP/1.0 anyway)."""
        cls = http.client.HTTPSConnection if self.upstream_scheme == "https" else \
            http.client.HTTPConnection
        conn = cls(self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.request(method, self.upstream_prefix + path, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UpstreamError(f"{method} {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    def upstream_fetch(self, method: str, path: str, body: Optional[bytes] = None,
                       headers: Optional[dict[str, str]] = None
                       ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """A whole upstream answer: (status, headers, body)."""
        conn, resp = self.upstream_request(method, path, body, headers)
        try:
            return resp.status, resp.headers, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f"{method} {path}: {exc}") from exc
        finally:
            conn.close()

    def map_upstream_url(self, url: str, base: str) -> Optional[str]:
        """Map an upstream link or Location into the feed's URL space; None if it leaves it.

        ``/simple/...`` stays an index URL, ``/packages/<file>`` becomes a download URL.
        """
        absolute = urljoin(base, url)
        parts = urlsplit(absolute)
        if parts.netloc != self.upstream_netloc:
            return None
        path = parts.path
        if self.upstream_prefix:
            if not path.startswith(self.upstream_prefix + "/"):
                return None
            path = path[len(self.upstream_prefix):]
        if path == "/simple" or path.startswith("/simple/"):
            return self.feed_url(path) + (f"#{parts.fragment}" if parts.fragment else "")
        if path.startswith("/packages/"):
            filename = unquote(path[len("/packages/"):])
            if "/" not in filename:
                return self.download_url(filename, parts.fragment)
        return None

    def rewrite_simple_html(self, text: str, base: str) -> str:
        """Rewrite file links of an upstream simple page into absolute download URLs.

        Only the href value changes (fragment kept); the other attributes and relative links
        between index pages stay as they are.
        """
        def replace(match: re.Match[str]) -> str:
            href = html.unescape(match.group(3))
            target = urljoin(base, href)
            if not href.startswith(("/", "http://", "https://")) and \
                    "/packages/" not in urlsplit(target).path:
                return match.group(0)  # relative index link: still right on the feed
            mapped = self.map_upstream_url(href, base)
            if mapped is None:
                return match.group(0)
            quote_char = match.group(2)
            return f"{match.group(1)}{quote_char}{html.escape(mapped, quote=True)}{quote_char}"

        return re.sub(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", replace, text,
                      flags=re.IGNORECASE | re.DOTALL)


class FeedHandler(_Handler):
    """One connection to the feed front (feed side and blob side)."""

    app: FeedApp

    def _dispatch(self) -> None:
        self.app = self.server.app
        self._begin()
        host_header = self.headers.get("Host")
        path = self._raw_path
        side = self.app.side(host_header, path)
        self.app.use_authority(host_header)
        kind = "other"
        rest = ""
        if side == "blob":
            kind = "blob" if path.startswith("/blobs/") else "other"
        else:
            kind, rest = self.app.route(path)
        try:
            control = self.app.control.get()
            self._bps = int(control.get("bandwidth_bps") or 0)
            delay = float(control.get("latency_ms") or 0) / 1000
            delay += float(control.get("stall_s") or 0)
            if delay > 0:
                time.sleep(delay)
            error_status = control.get("error_status")
            if error_status:
                self.respond(int(error_status), f"injected error {int(error_status)}\n")
            elif side == "blob":
                self._blob(kind, path)
            else:
                self._feed(kind, rest, control)
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            self._fail(exc)
        finally:
            self.app.log.write({
                "ts": self._ts,
                "client": self.client_address[0],
                "method": self.command,
                "host": host_part(host_header),
                "path": path,
                "kind": kind,
                "status": self._status,
                "bytes": self._sent,
                "auth": self.headers.get("Authorization") is not None,
                "ua": self._ua(),
                "ms": self._ms(),
            })

    # -- feed side --
    def _feed(self, kind: str, rest: str, control: dict[str, Any]) -> None:
        scope = "write" if self.command in ("POST", "PUT", "DELETE", "PATCH") else "read"
        verdict = self.app.tokens.check(self.headers.get("Authorization"), scope)
        if verdict == 401:
            realm = f"{self.app.public_base}/"
            self.respond(401, "401 Unauthorized: a personal access token is required\n",
                         headers=[("WWW-Authenticate", f'Basic realm="{realm}"')])
            return
        if verdict == 403:
            self.respond(403, f"403 Forbidden: the token lacks the '{scope}' scope\n")
            return
        if kind == "other":
            self.respond(404, "404 Not Found\n")
        elif kind == "upload":
            if self.command != "POST":
                self.respond(405, "405 Method Not Allowed\n", headers=[("Allow", "POST")])
            else:
                self._upload(control)
        elif self.command not in ("GET", "HEAD"):
            self.respond(405, "405 Method Not Allowed\n", headers=[("Allow", "GET, HEAD")])
        elif kind == "simple":
            self._simple(rest)
        else:
            self._download(rest, control)

    def _simple(self, rest: str) -> None:
        status, headers, body = self.app.upstream_fetch("GET", rest,
                                                        headers={"Accept": "text/html"})
        base = self.app.upstream_base + rest
        if status in REDIRECTS:
            mapped = self.app.map_upstream_url(headers.get("Location") or "", base)
            if mapped is None:
                # e.g. pypiserver's fallback to pypi.org: a feed without upstreams says 404
                self.respond(404, "404 Not Found: no such package in this feed\n")
            else:
                self.respond(status, b"", headers=[("Location", mapped)])
        elif status == 200:
            charset = headers.get_content_charset() or "utf-8"
            text = self.app.rewrite_simple_html(body.decode(charset, "replace"), base)
            self.respond(200, text.encode(charset, "replace"),
                         headers.get("Content-Type") or "text/html; charset=utf-8")
        elif status == 404:
            self.respond(404, "404 Not Found: no such package in this feed\n")
        else:
            self.respond(502, f"502 Bad Gateway: upstream answered {status}\n")

    def _download(self, rest: str, control: dict[str, Any]) -> None:
        name, version, filename = (unquote(part) for part in rest.split("/")[2:5])
        parsed = parse_filename(filename)
        if "/" in filename or filename in (".", "..") or \
                (parsed is not None and parsed != (normalize_name(name), version)):
            self.respond(404, "404 Not Found\n")
            return
        status, _, _ = self.app.upstream_fetch("HEAD", "/packages/" + quote(filename, safe=""))
        if status == 404:
            self.respond(404, "404 Not Found: no such file in this feed\n")
        elif status != 200:
            self.respond(502, f"502 Bad Gateway: upstream answered {status}\n")
        else:
            ttl = control.get("blob_ttl_s")
            ttl = CONTROL_DEFAULTS["blob_ttl_s"] if ttl is None else ttl
            self.respond(303, b"", headers=[("Location", self.app.blob_url(filename, ttl))])

    def _upload(self, control: dict[str, Any]) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.respond(413, "413 Request Entity Too Large\n")
            return
        sent_name = upload_filename(body)
        if sent_name and sent_name in (control.get("refuse_uploads") or []):
            self.respond(400, f"400 Bad Request: the feed refuses {sent_name}\n")
            return
        # Only the form goes upstream: never the client's Authorization header.
        sent = {"Content-Type": self.headers.get("Content-Type") or "application/octet-stream",
                "Content-Length": str(len(body))}
        status, headers, answer = self.app.upstream_fetch("POST", "/", body=body, headers=sent)
        if status == 400 and b"already exists" in answer:
            # pypiserver says 400; Azure Artifacts says 409, which twine's --skip-existing knows.
            self.respond(409, "409 Conflict: the feed already contains this file\n")
        elif 200 <= status < 300:
            self.respond(status, "OK\n")
        else:
            self.respond(status, answer, headers.get("Content-Type") or "text/plain")

    # -- blob side --
    def _blob(self, kind: str, path: str) -> None:
        if kind != "blob":
            self._blob_error(404, "ResourceNotFound", "The specified resource does not exist.")
            return
        if self.command not in ("GET", "HEAD"):
            self._blob_error(405, "UnsupportedHttpVerb", "The resource doesn't support it.")
            return
        filename = unquote(path[len("/blobs/"):])
        if not filename or "/" in filename or filename in (".", ".."):
            self._blob_error(404, "BlobNotFound", "The specified blob does not exist.")
            return
        query = parse_qs(self._query, keep_blank_values=True)
        se, sn, sig = (query.get(k, [""])[0] for k in ("se", "sn", "sig"))
        valid = False
        if re.fullmatch(r"-?[0-9]{1,15}", se) and sn and sig:
            valid = hmac.compare_digest(sign_blob(self.app.secret, filename, int(se), sn), sig)
        if not valid:
            self._blob_error(403, "AuthenticationFailed", "Signature did not match.")
            return
        if time.time() > int(se):
            self._blob_error(403, "AuthenticationFailed", "Signed URL has expired.")
            return
        conn, resp = self.app.upstream_request(self.command,
                                               "/packages/" + quote(filename, safe=""))
        try:
            length = resp.getheader("Content-Length")
            if resp.status != 200 or length is None:
                try:
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    raise UpstreamError(f"reading {filename}: {exc}") from exc
                if resp.status != 200:
                    self._blob_error(404, "BlobNotFound", "The specified blob does not exist.")
                    return
                length = str(len(data))
                chunks: Iterable[bytes] = [data]
            else:
                chunks = iter(lambda: resp.read(CHUNK), b"")
            self.start_response(200, int(length), "application/octet-stream",
                                [("x-ms-blob-type", "BlockBlob")])
            self.write_chunks(chunks)
        finally:
            conn.close()

    def _blob_error(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error>\n")
        self.respond(status, body, "application/xml")


def make_feed_server(config: FeedConfig, listen: Optional[str] = None,
                     app: Optional[FeedApp] = None) -> LabHTTPServer:
    """Bind a feed front (not yet serving); pass app to share state between listeners."""
    host, port = split_listen(listen or config.listen)
    context = ssl_context(config.cert, config.key)
    return _server_class(host)((host, port), FeedHandler, context, app or FeedApp(config))


# ----- the recorder -------------------------------------------------------------------------

@dataclasses.dataclass
class RecorderConfig:
    """What the recording index needs; mirrors the CLI options."""

    root: PathLike
    public_base: str
    log: Optional[PathLike] = None
    challenge: bool = False
    listen: str = "127.0.0.1:0"
    cert: Optional[PathLike] = None
    key: Optional[PathLike] = None


class RecorderApp:
    """A PEP 503 index over a directory, regenerated per request; hashes are cached."""

    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self.log = JsonLines(config.log)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def projects(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                parsed = parse_filename(entry.name)
                if parsed and entry.is_file():
                    found.setdefault(parsed[0], []).append(entry)
        return found

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (path.name, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key in self._hashes:
                return self._hashes[key]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(CHUNK), b""):
                digest.update(block)
        with self._lock:
            self._hashes[key] = digest.hexdigest()
        return digest.hexdigest()


def _page(title: str, links: Iterable[tuple[str, str]]) -> bytes:
    rows = "\n".join(f'    <a href="{html.escape(href, quote=True)}">{html.escape(text)}</a><br>'
                     for href, text in links)
    return (f"<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" "
            f"content=\"1.0\"><title>{html.escape(title)}</title></head>\n  <body>\n"
            f"    <h1>{html.escape(title)}</h1>\n{rows}\n  </body>\n</html>\n").encode()


class RecorderHandler(_Handler):
    """One connection to the recording index."""

    app: RecorderApp

    def _dispatch(self) -> None:
        self.app = self.server.app
        self._begin()
        authorization = self.headers.get("Authorization")
        try:
            if self.app.config.challenge and authorization is None:
                self.respond(401, "401 Unauthorized\n",
                             headers=[("WWW-Authenticate", 'Basic realm="lab index"')])
            elif self.command not in ("GET", "HEAD"):
                self.respond(405, "405 Method Not Allowed\n", headers=[("Allow", "GET, HEAD")])
            else:
                self._serve(self._raw_path)
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            self._fail(exc)
        finally:
            self.app.log.write({
                "ts": self._ts,
                "client": self.client_address[0],
                "method": self.command,
                "host": host_part(self.headers.get("Host")),
                "path": self._raw_path,
                "status": self._status,
                "authorization": authorization,
                "ua": self._ua(),
            })

    def _serve(self, path: str) -> None:
        base = self.app.config.public_base.rstrip("/")
        html_type = "text/html; charset=utf-8"
        if path in ("/simple", "/"):
            self.respond(301, b"", headers=[("Location", f"{base}/simple/")])
            return
        if path == "/simple/":
            names = sorted(self.app.projects())
            self.respond(200, _page("Simple index", ((f"{n}/", n) for n in names)), html_type)
            return
        match = re.match(r"^/simple/([^/]+)(/?)$", path)
        if match:
            asked = unquote(match.group(1))
            name = normalize_name(asked)
            files = self.app.projects().get(name)
            if files is None:
                self.respond(404, "404 Not Found\n")
            elif asked != name or not match.group(2):
                self.respond(301, b"", headers=[("Location", f"{base}/simple/{name}/")])
            else:
                links = ((f"{base}/files/{quote(f.name, safe='')}#sha256={self.app.sha256(f)}",
                          f.name) for f in files)
                self.respond(200, _page(f"Links for {name}", links), html_type)
            return
        if path.startswith("/files/"):
            filename = unquote(path[len("/files/"):])
            target = self.app.root / filename
            if "/" in filename or filename in ("", ".", "..") or not target.is_file():
                self.respond(404, "404 Not Found\n")
                return
            size = target.stat().st_size
            self.start_response(200, size, "application/octet-stream")
            with open(target, "rb") as handle:
                self.write_chunks(iter(lambda: handle.read(CHUNK), b""))
            return
        self.respond(404, "404 Not Found\n")


def make_recorder_server(config: RecorderConfig, listen: Optional[str] = None) -> LabHTTPServer:
    """Bind a recording index (not yet serving)."""
    host, port = split_listen(listen or config.listen)
    context = ssl_context(config.cert, config.key)
    return _server_class(host)((host, port), RecorderHandler, context, RecorderApp(config))


# ----- command line -------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.feed",
        description="Lab servers: an Azure-Artifacts-like feed front for pypiserver, and a "
                    "second index that records every request with its credentials.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{feed,recorder}")

    feed = sub.add_parser("feed", help="the feed front (feed and blob host on one listener)")
    feed.add_argument("--listen", action="append", required=True, metavar="HOST:PORT",
                      help="address to listen on; may be repeated")
    feed.add_argument("--cert", metavar="PEM", help="server certificate (TLS when given)")
    feed.add_argument("--key", metavar="PEM", help="server private key")
    feed.add_argument("--upstream", required=True, metavar="URL",
                      help="pypiserver base URL, e.g. http://127.0.0.1:8080")
    feed.add_argument("--org", required=True)
    feed.add_argument("--project", help="optional project segment in feed URLs")
    feed.add_argument("--feed", required=True)
    feed.add_argument("--public-base", required=True, metavar="URL",
                      help="scheme://host[:port] of the feed in generated links")
    feed.add_argument("--blob-base", required=True, metavar="URL",
                      help="scheme://host[:port] of the blob host in redirects")
    feed.add_argument("--tokens-file", required=True, metavar="JSON",
                      help='{"tokens": [{"token": "...", "scopes": ["read", "write"]}]}')
    feed.add_argument("--secret-file", metavar="FILE",
                      help="blob URL signing key (created when missing; random if omitted)")
    feed.add_argument("--control-file", metavar="JSON", help="latency, bandwidth, errors ...")
    feed.add_argument("--access-log", metavar="JSONL", help="access log, one JSON per line")

    rec = sub.add_parser("recorder", help="a PEP 503 index that logs every request")
    rec.add_argument("--listen", action="append", required=True, metavar="HOST:PORT",
                     help="address to listen on; may be repeated")
    rec.add_argument("--cert", metavar="PEM", help="server certificate (TLS when given)")
    rec.add_argument("--key", metavar="PEM", help="server private key")
    rec.add_argument("--root", required=True, metavar="DIR", help="directory of dist files")
    rec.add_argument("--public-base", required=True, metavar="URL",
                     help="scheme://host[:port] used in file links")
    rec.add_argument("--log", required=True, metavar="JSONL",
                     help="request log, Authorization header included")
    rec.add_argument("--challenge", action="store_true",
                     help="answer 401 to requests that carry no Authorization header")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run the chosen server(s) until SIGTERM or SIGINT, then shut down cleanly."""
    args = _parser().parse_args(argv)
    servers: list[LabHTTPServer] = []
    try:
        if args.command == "feed":
            config = FeedConfig(upstream=args.upstream, org=args.org, project=args.project,
                                feed=args.feed, public_base=args.public_base,
                                blob_base=args.blob_base, tokens_file=args.tokens_file,
                                cert=args.cert, key=args.key, secret_file=args.secret_file,
                                control_file=args.control_file, access_log=args.access_log)
            app = FeedApp(config)
            for listen in args.listen:
                servers.append(make_feed_server(config, listen, app))
        else:
            rconfig = RecorderConfig(root=args.root, public_base=args.public_base, log=args.log,
                                     challenge=args.challenge, cert=args.cert, key=args.key)
            for listen in args.listen:
                servers.append(make_recorder_server(rconfig, listen))
    except (OSError, ValueError, ssl.SSLError) as exc:
        for server in servers:
            server.server_close()
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    for server in servers:
        serve_in_thread(server)
    print(f"{args.command}: listening on {', '.join(s.url for s in servers)}",
          file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    for server in servers:
        stop_server(server)
    print(f"{args.command}: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

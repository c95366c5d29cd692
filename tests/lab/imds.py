"""A stand-in for Azure's Instance Metadata Service (IMDS), managed-identity token endpoint only.

The lab's hosts reach it as ``http://169.254.169.254/metadata/identity/oauth2/token`` (a DNAT
rule in each host's network namespace sends that address to this server on the lab's gateway,
see ``Lab.start_imds``). It answers the way IMDS does:

* ``GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<Azure DevOps>``
  ``[&client_id=...|&object_id=...|&msi_res_id=...]`` with the header ``Metadata: true``;
* on success, a JSON body like IMDS's (every value a string) with a freshly minted token,
  which is at the same moment added, with the identity's scopes and an ``expires`` epoch, to
  the feed's tokens file (``tests/lab/feed.py``'s ``TokenStore``), so that the feed accepts the
  token as a PAT until it expires;
* the errors IMDS answers for a missing header, a missing or unknown api-version or resource,
  and an identity the VM does not have.

A control file, read on every request (``write_control``/``update_control``, which
``Lab.imds_control`` uses), sets the tokens' lifetime (``ttl``), the VM's identities and their
scopes (``identities``), statuses to answer to the next token requests before success
(``fail``: 429 comes with ``Retry-After``; each is taken off the file as it is answered),
whether the service is reachable (``down``) and a delay (``delay_ms``). A JSON-lines access log
records every request, never a token.

Standard library only (plus the feed's server plumbing), like the feed.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Union
from urllib.parse import parse_qsl

from .feed import (JsonLines, LabHTTPServer, _Handler, _server_class, serve_in_thread,
                   split_listen, stop_server)

PathLike = Union[str, "os.PathLike[str]"]

IMDS_ADDRESS = "169.254.169.254"
TOKEN_PATH = "/metadata/identity/oauth2/token"
API_VERSION = "2018-02-01"
# Azure DevOps' resource id: the audience of a token for Azure Artifacts feeds.
DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
ID_PARAMS = ("client_id", "object_id", "msi_res_id")
# The lab's system-assigned identity: a fixed, made-up client id.
SYSTEM_CLIENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://lab.test/pipfeed/imds/system"))

CONTROL_DEFAULTS: dict[str, Any] = {
    "ttl": 3600,
    "identities": {"system": {"scopes": ["read"]}},
    "fail": [],
    "retry_after": 1,
    "down": False,
    "delay_ms": 0,
}
DOWN_VALUES = (False, True, "refuse", "hang")
IDENTITY_KEY_RE = re.compile(r"^(system|(client_id|object_id|msi_res_id):.+)$")
# How long a connection is held without an answer while `down` is "hang".
HANG_S = 60.0
POLL_S = 0.1

# ----- IMDS's answers -----------------------------------------------------------------------
# The error bodies, as Azure documents or as clients have recorded them:
# * missing Metadata header: IMDS FAQ "400 Bad Request, Required metadata header not
#   specified" (learn.microsoft.com/azure/virtual-machines/instance-metadata-service, "Errors
#   and debugging"); today's IMDS says invalid_request where older docs said bad_request_102
#   (learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token,
#   "HTTP response reference").
# * missing api-version: "Bad request. api-version was not specified in the request. For more
#   information refer to aka.ms/azureimds" with "newest-versions" (instance-metadata-service,
#   "Versioning"); an unknown one: "Bad request. api-version is invalid or was not specified in
#   the request." (as IMDS mocks in cloud-init's and others' tests record it).
# * missing resource: {"error":"invalid_request","error_description":"Required query variable
#   'resource' is missing"} (github.com/Azure/aad-pod-identity/pull/450, copying IMDS's answer).
# * unknown resource: 400 invalid_resource, "AADSTS50001: The application named <URI> was not
#   found in the tenant ..." (how-to-use-vm-token, "HTTP response reference").
# * 404 / 410 / 429 / 5xx are transient: retry with backoff (how-to-use-vm-token "Retry
#   guidance"; instance-metadata-service "410 Gone: Retry after some time for a max of 70 s").
# * A request that carries X-Forwarded-For is rejected (instance-metadata-service, "Security and
#   authentication").
NEWEST_VERSIONS = ["2018-02-01"]
TRANSIENT_BODIES = {
    404: {"error": "not_found", "error_description": "IMDS endpoint is updating"},
    410: {"error": "gone", "error_description": "IMDS endpoint is updating; retry after some "
                                                "time for a max of 70 seconds"},
    429: {"error": "too_many_requests", "error_description": "IMDS throttle limit reached"},
    500: {"error": "unknown", "error_description": "Failed to retrieve token from the Active "
                                                   "directory."},
}


def _body(error: str, description: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error}
    if description is not None:
        body["error_description"] = description
    body.update(extra)
    return body


# ----- files shared with the lab: control and tokens ----------------------------------------

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path` (``<name>.lock``), for read-modify-write cycles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path.with_name(path.name + ".lock")), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_json(path: Path, data: Any, mode: int) -> None:
    """Write atomically (a rename), so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_control(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - set(CONTROL_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown IMDS control settings: {', '.join(unknown)}")
    if "ttl" in settings and not (isinstance(settings["ttl"], (int, float))
                                  and not isinstance(settings["ttl"], bool)
                                  and settings["ttl"] > 0):
        raise ValueError(f"ttl must be a positive number of seconds, not {settings['ttl']!r}")
    for status in settings.get("fail", []):
        if not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError(f"fail takes HTTP error statuses (400-599), not {status!r}")
    if settings.get("down", False) not in DOWN_VALUES:
        raise ValueError(f"down must be one of {DOWN_VALUES}, not {settings['down']!r}")
    for key, identity in (settings.get("identities") or {}).items():
        if not IDENTITY_KEY_RE.match(key):
            raise ValueError(f"identity {key!r}: use system, client_id:<id>, object_id:<id> "
                             "or msi_res_id:<id>")
        if not (isinstance(identity, dict) and isinstance(identity.get("scopes", []), list)):
            raise ValueError(f"identity {key!r}: expected {{\"scopes\": [...]}}")


def read_control(path: Optional[PathLike]) -> dict[str, Any]:
    """The settings in force: the defaults overlaid with the file (defaults when unreadable)."""
    values = json.loads(json.dumps(CONTROL_DEFAULTS))
    if path is None:
        return values
    try:
        loaded = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return values
    except (OSError, ValueError) as exc:
        print(f"imds: ignoring control file {path}: {exc}", file=sys.stderr, flush=True)
        return values
    if isinstance(loaded, dict):
        values.update({k: v for k, v in loaded.items() if k in CONTROL_DEFAULTS})
    return values


def write_control(path: PathLike, **settings: Any) -> None:
    """Write the control file: the defaults overlaid with settings (unknown ones: TypeError)."""
    _check_control(settings)
    target = Path(path)
    data = json.loads(json.dumps(CONTROL_DEFAULTS))
    data.update(settings)
    with _locked(target):
        _write_json(target, data, 0o644)


def update_control(path: PathLike, **settings: Any) -> dict[str, Any]:
    """Change some settings and keep the others (what `Lab.imds_control` does); returns all."""
    _check_control(settings)
    target = Path(path)
    with _locked(target):
        data = read_control(target)
        data.update(settings)
        _write_json(target, data, 0o644)
    return data


def take_failure(path: Optional[PathLike]) -> Optional[tuple[int, dict[str, Any]]]:
    """The next queued failure status, taken off the control file; None when none is queued."""
    if path is None:
        return None
    target = Path(path)
    with _locked(target):
        data = read_control(target)
        queue = list(data.get("fail") or [])
        if not queue:
            return None
        status = queue.pop(0)
        data["fail"] = queue
        _write_json(target, data, 0o644)
    return int(status), data


def _expired(entry: dict[str, Any], now: float) -> bool:
    expires = entry.get("expires")
    return isinstance(expires, (int, float)) and expires <= now


def add_token(tokens_file: PathLike, token: str, scopes: list[str], expires: float,
              identity: str) -> None:
    """Add a minted token to the feed's tokens file; minted tokens that expired are pruned.

    Entries that this service did not mint (the lab's PAT, a test's own) are kept as they are.
    """
    target = Path(tokens_file)
    now = time.time()
    with _locked(target):
        try:
            data = json.loads(target.read_text())
        except FileNotFoundError:
            data = {"tokens": []}
        if not isinstance(data, dict) or not isinstance(data.get("tokens", []), list):
            raise ValueError(f"{target}: not a tokens file")
        kept = [e for e in data.get("tokens", [])
                if not (isinstance(e, dict) and e.get("source") == "imds" and _expired(e, now))]
        kept.append({"token": token, "scopes": list(scopes), "expires": expires,
                     "source": "imds", "identity": identity})
        data["tokens"] = kept
        _write_json(target, data, 0o600)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(resource: str, client_id: str, not_before: int, expires_on: int) -> str:
    """A fresh, random, JWT-shaped access token (URL-safe, ~700 characters, as long as real
    ones get): its claims are readable, its signature is random bytes that nobody checks."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "pipfeed-lab"}
    claims = {"aud": resource, "iss": "https://sts.lab.test/pipfeed-lab/", "appid": client_id,
              "iat": not_before, "nbf": not_before, "exp": expires_on,
              "uti": secrets.token_urlsafe(16)}
    parts = [json.dumps(header, separators=(",", ":")).encode(),
             json.dumps(claims, separators=(",", ":")).encode(), secrets.token_bytes(256)]
    return ".".join(_b64url(p) for p in parts)


def identity_client_id(key: str, identity: dict[str, Any]) -> str:
    if isinstance(identity.get("client_id"), str):
        return identity["client_id"]
    if key == "system":
        return SYSTEM_CLIENT_ID
    kind, _, value = key.partition(":")
    if kind == "client_id":
        return value
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://lab.test/pipfeed/imds/{key}"))


def find_identity(identities: dict[str, Any], kind: Optional[str],
                  value: Optional[str]) -> Optional[tuple[str, dict[str, Any]]]:
    """The identity a request names (none named: the system identity), or None."""
    if kind is None:
        identity = identities.get("system")
        return ("system", identity) if isinstance(identity, dict) else None
    wanted = f"{kind}:{value}".lower()
    for key, identity in identities.items():
        if key.lower() == wanted and isinstance(identity, dict):
            return key, identity
    return None


# ----- the server ---------------------------------------------------------------------------

class ImdsApp:
    def __init__(self, control: Optional[PathLike], tokens: PathLike,
                 log: Optional[PathLike]) -> None:
        self.control_path = Path(control) if control is not None else None
        self.tokens_path = Path(tokens)
        self.log = JsonLines(log)

    def control(self) -> dict[str, Any]:
        return read_control(self.control_path)


class ImdsHandler(_Handler):
    server_version = "IMDS/150.870.65.1"
    timeout = 30
    app: ImdsApp

    def _json(self, status: int, body: dict[str, Any], headers=()) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.respond(status, data, "application/json; charset=utf-8", headers)

    def _dispatch(self) -> None:
        self.app = self.server.app
        self._begin()
        self._note: dict[str, Any] = {}
        try:
            control = self.app.control()
            delay = float(control.get("delay_ms") or 0) / 1000
            if delay > 0:
                time.sleep(delay)
            if control.get("down") == "hang":
                self._hang()
            elif control.get("down"):
                # Down but still listening for an instant: hang up without an answer.
                self.close_connection = True
            else:
                self._token(control)
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            self._fail(exc)
        finally:
            self.app.log.write({
                "ts": self._ts,
                "client": self.client_address[0],
                "method": self.command,
                # The query carries no secret (api-version, resource, an identity's id).
                "path": self.path,
                "metadata": self.headers.get("Metadata"),
                "status": self._status,
                "ua": self._ua(),
                "ms": self._ms(),
                **self._note,
            })

    def _hang(self) -> None:
        """IMDS unreachable the slow way: take the connection, never answer."""
        self._note["down"] = "hang"
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline and self.app.control().get("down") == "hang":
            time.sleep(POLL_S)
        self.close_connection = True

    def _error(self, status: int, body: dict[str, Any], headers=()) -> None:
        self._note["error"] = body.get("error")
        self._json(status, body, headers)

    def _token(self, control: dict[str, Any]) -> None:
        if self.headers.get("X-Forwarded-For") is not None:
            self._error(400, _body("invalid_request", "X-Forwarded-For header is not allowed"))
            return
        if (self.headers.get("Metadata") or "").strip() != "true":
            self._error(400, _body("invalid_request", "Required metadata header not specified"))
            return
        if self._raw_path != TOKEN_PATH:
            self._error(404, _body("not_found", "The requested element doesn't exist"))
            return
        if self.command != "GET":
            self._error(405, _body("method_not_allowed", "The HTTP method is not supported"),
                        [("Allow", "GET")])
            return
        pairs = parse_qsl(self._query, keep_blank_values=True)
        query = dict(pairs)
        if len(query) != len(pairs):
            self._error(400, _body("invalid_request", "Duplicate query parameters"))
            return
        version = query.get("api-version")
        if not version:
            self._error(400, _body("Bad request. api-version was not specified in the request. "
                                   "For more information refer to aka.ms/azureimds",
                                   **{"newest-versions": NEWEST_VERSIONS}))
            return
        if version != API_VERSION:
            self._error(400, _body("Bad request. api-version is invalid or was not specified in "
                                   "the request. For more information refer to aka.ms/azureimds",
                                   **{"newest-versions": NEWEST_VERSIONS}))
            return
        resource = query.get("resource")
        if not resource:
            self._error(400, _body("invalid_request",
                                   "Required query variable 'resource' is missing"))
            return
        if resource != DEVOPS_RESOURCE:
            self._error(400, _body(
                "invalid_resource",
                f"AADSTS50001: The application named {resource} was not found in the tenant "
                "named pipfeed-lab. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You might have sent your authentication request to the wrong tenant."))
            return
        named = [p for p in ID_PARAMS if p in query]
        if len(named) > 1:
            self._error(400, _body("invalid_request",
                                   "Only one of client_id, object_id, msi_res_id may be given"))
            return
        kind = named[0] if named else None
        found = find_identity(control.get("identities") or {}, kind,
                              query.get(kind) if kind else None)
        if found is None:
            self._error(400, _body("invalid_request", "Identity not found"))
            return
        key, identity = found
        self._note["identity"] = key
        taken = take_failure(self.app.control_path)
        if taken is not None:
            status, control = taken
            self._note["injected"] = True
            headers = []
            if status == 429:
                headers.append(("Retry-After", str(control.get("retry_after", 1))))
            body = TRANSIENT_BODIES.get(status) or _body("injected", f"injected error {status}")
            self._error(status, dict(body), headers)
            return
        ttl = float(control.get("ttl") or CONTROL_DEFAULTS["ttl"])
        now = time.time()
        not_before, expires_on = int(now), int(math.ceil(now + ttl))
        client_id = identity_client_id(key, identity)
        token = mint_token(resource, client_id, not_before, expires_on)
        add_token(self.app.tokens_path, token, [str(s) for s in identity.get("scopes", [])],
                  now + ttl, key)
        self._note["expires_on"] = expires_on
        seconds = str(int(math.ceil(ttl)))
        self._json(200, {
            "access_token": token,
            "client_id": client_id,
            "expires_in": seconds,
            "expires_on": str(expires_on),
            "ext_expires_in": seconds,
            "not_before": str(not_before),
            "resource": resource,
            "token_type": "Bearer",
        })


class ImdsService:
    """The listener, and what `down` does to it: while `down` is true (or "refuse") nothing
    listens, so connections are refused at once, as on a machine where IMDS is unreachable;
    "hang" keeps listening and never answers. The control file is polled between requests."""

    def __init__(self, listen: str, control: Optional[PathLike], tokens: PathLike,
                 log: Optional[PathLike]) -> None:
        self.host, self.port = split_listen(listen)
        self.app = ImdsApp(control, tokens, log)
        self.server: Optional[LabHTTPServer] = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> None:
        server = _server_class(self.host)((self.host, self.port), ImdsHandler, None, self.app)
        self.port = server.server_port  # port 0: keep the one given, across restarts
        serve_in_thread(server)
        self.server = server

    def sync(self) -> None:
        """Listen or not, as the control file says."""
        with self._lock:
            down = self.app.control().get("down")
            listening = self.server is not None
            if down in (True, "refuse") and listening:
                stop_server(self.server)
                self.server = None
            elif down not in (True, "refuse") and not listening:
                self._bind()

    def start(self) -> "ImdsService":
        with self._lock:
            self._bind()
        self.sync()
        return self

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_S):
            self.sync()

    def close(self) -> None:
        with self._lock:
            if self.server is not None:
                stop_server(self.server)
                self.server = None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.imds",
        description="A stand-in for Azure IMDS's managed-identity token endpoint, minting "
                    "tokens that the lab's feed accepts until they expire.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--control", metavar="JSON",
                        help="ttl, identities, fail, retry_after, down, delay_ms")
    parser.add_argument("--tokens", required=True, metavar="JSON",
                        help="the feed's tokens file, which minted tokens are added to")
    parser.add_argument("--log", metavar="JSONL", help="access log, one JSON per line")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(argv)
    try:
        service = ImdsService(args.listen, args.control, args.tokens, args.log).start()
    except (OSError, ValueError) as exc:
        print(f"imds: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    print(f"imds: serving {service.url}{TOKEN_PATH}", file=sys.stderr, flush=True)
    service.run(stop)
    service.close()
    print("imds: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pipfeed-keyring: hands a private feed's token to pip and uv, from a root-owned file.

Installed as an executable named `keyring` on PATH, so that pip's and uv's subprocess keyring
provider runs it. It stores nothing, caches nothing and never prompts: every call reads the
token file again (a rotated token takes effect at once), and stdin is never read.

Request forms it answers (everything else goes to the next `keyring` on PATH, see below):

    keyring get URL USERNAME                       password on stdout (pip 23.0 to 26.1, uv)
    keyring --mode=creds --output=json get URL [USERNAME]
                                                   {"username": ..., "password": ...} (pip 26.2+)
    keyring get URL --mode creds                   "USERNAME\\nPASSWORD\\n" (uv, no username)

`--mode password|creds` and `--output plain|json` are accepted in either spelling and at any
place, as keyring's own CLI accepts them. The username is the one the caller passed; without
one it is the feed's `username`, else the file's `username`, else "pipfeed" (Azure Artifacts
takes any username with a personal access token).

    keyring --check [URL]                          self-test; never prints the token

checks the configuration and the token file of the feed that URL belongs to (every feed
without a URL), as the calling user, and prints one line per feed on stdout.

Which URLs are "its own": a URL (not a bare host name) whose scheme, host and port equal a
feed's (host names compared case-insensitively, default ports 443/80 filled in) and whose path
lies under the feed's prefix on a segment boundary. The prefix is the feed's `prefix`, else
its URL path with a last `simple/` segment removed: for Azure Artifacts
`/org/_packaging/feed/pypi/simple/` gives `/org/_packaging/feed/pypi/`, which also covers the
feed's download URLs and not `/org/_packaging/feed-other/`. A path with `.` or `..` segments
(also percent-encoded) or a backslash never matches. With several matching feeds, the longest
prefix wins.

A feed may take its token from the VM's Azure managed identity instead of a file
(`"azure_identity": {}` for the system-assigned identity, or `{"client_id": ...}`,
`{"object_id": ...}`, `{"msi_res_id": ...}` for a user-assigned one): each `get` then asks the
instance metadata service (http://169.254.169.254, never through a proxy, with Microsoft's
retries: back off on 404, 429 and 5xx, and on 410 for up to 70 s) for an Entra access token
for Azure DevOps (resource 499b84ac-1321-427f-aa17-267ca6975798), which Azure Artifacts takes as
the password with any user name. Nothing is written to disk: IMDS caches the token and hands
out a fresh one before it expires. The host then holds no secret at all.

    keyring --ask-feeds JSON                       preflight: each feed asked with a token of
                                                   the managed identity; prints statuses

Configuration, `/etc/pipfeed/credential-helper.json` (PIPFEED_HELPER_CONFIG overrides the
path), root-owned, not writable by group or others, not a symlink:

    {
      "username": "pipfeed",                       optional, default "pipfeed"
      "feeds": [
        {
          "name": "python-feed",                   named in every message
          "url": "https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/simple/",
          "token_file": "/etc/pipfeed/tokens/python-feed.token",   or "azure_identity": {}
          "prefix": "/contoso/_packaging/python-feed/pypi/",   optional, see above
          "username": "pipfeed",                   optional
          "insecure_http": false                   optional; true allows an http:// url
        }
      ]
    }

A token file must be a regular file (not a symlink) owned by root, with no permission beyond
0640: 0600 for root only, 0640 with a dedicated group whose members may install. It holds the
token, optionally followed by one newline; an empty token, a second line, or whitespace at
either end is refused.

When the real keyring is installed too: a `get` for a URL that is not one of the feeds, and
any other command (set, del, --help, --list-backends, ...), is handed to the next `keyring`
executable on PATH after this one (or, when this one is not on PATH, the first one), then to
python3-keyring's diverted `/usr/bin/keyring.distrib`, with the same arguments. Each hand-over
adds this program to PIPFEED_HELPER_SEEN; a program already in it is skipped, and a call that
comes back to this program does not hand over again, so copies and wrappers cannot loop.

Exit codes:
    0   answered (or --check passed)
    1   not one of the feeds and no other keyring to ask: nothing on stdout, nothing on
        stderr for `get`; a short message for any other command
    2   the URL is one of the feeds, but its token file is missing, unreadable, unsafe
        (owner, mode, type) or holds no usable token: message on stderr, nothing on stdout
    3   the configuration file is unsafe or invalid
"""
from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from typing import NoReturn, Optional
from urllib.parse import unquote, urlsplit

CONFIG_PATH = "/etc/pipfeed/credential-helper.json"
CONFIG_ENV = "PIPFEED_HELPER_CONFIG"
SEEN_ENV = "PIPFEED_HELPER_SEEN"
PROGRAM = "keyring"
FALLBACK_KEYRINGS = ("/usr/bin/keyring.distrib",)
TRUSTED_UID = 0
DEFAULT_USERNAME = "pipfeed"
# $(NAME): Azure DevOps leaves a macro as it is when the variable does not exist.
MACRO = re.compile(r"^\$\([A-Za-z0-9_.-]+\)$")
TOKEN_MODE_MAX = 0o640
DEFAULT_PORTS = {"https": 443, "http": 80}
NAME = "pipfeed-keyring"

EXIT_OK, EXIT_NOT_OURS, EXIT_TOKEN, EXIT_CONFIG = 0, 1, 2, 3

FEED_KEYS = {"name", "url", "token_file", "azure_identity", "prefix", "username",
             "insecure_http"}
IDENTITY_KEYS = ("client_id", "object_id", "msi_res_id")
# Azure's instance metadata service, as every Azure VM reaches it (never through a proxy), and
# the application ID of Azure DevOps, the resource an Entra token for Azure Artifacts is for.
IMDS_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
IMDS_API = "2018-02-01"
AZURE_DEVOPS = "499b84ac-1321-427f-aa17-267ca6975798"
# Microsoft's retry guidance for IMDS: back off on 404, 429 and 5xx; 410 means IMDS is being
# updated, for up to 70 seconds.
IMDS_RETRY = {404, 429, 410} | set(range(500, 600))
IMDS_UPDATING_SECONDS = 75
IMDS_ATTEMPTS = 6
IMDS_TIMEOUT = 5
TOP_KEYS = {"feeds", "username", "version"}


class HelperError(Exception):
    """A refusal with its exit code; the message never holds a token."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Feed:
    def __init__(self, name: str, scheme: str, host: str, port: int, prefix: str,
                 token_file: Optional[str], username: Optional[str],
                 identity: Optional[dict] = None) -> None:
        self.name, self.scheme, self.host, self.port = name, scheme, host, port
        self.prefix, self.token_file, self.username = prefix, token_file, username
        # {} for the VM's system-assigned identity, {client_id|object_id|msi_res_id: ...} for a
        # user-assigned one; None for a feed whose token is in a file.
        self.identity = identity

    def __repr__(self) -> str:
        return f"Feed({self.name!r}, {self.scheme}://{self.host}:{self.port}{self.prefix})"


class Request:
    """One parsed `get`: the service (URL or host), the username, and the output wanted."""

    def __init__(self, service: str, username: Optional[str], mode: str, output: str) -> None:
        self.service, self.username, self.mode, self.output = service, username, mode, output


# ----- URLs ----------------------------------------------------------------------------------

def split_url(url: str) -> Optional[tuple[str, str, int, str]]:
    """(scheme, host, port, path) with defaults filled in, or None for anything odd."""
    if "://" not in url or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme], parts.path or "/"


def path_is_plain(path: str) -> bool:
    """False for paths a server may resolve elsewhere: dot segments, backslashes."""
    decoded = unquote(path)
    if "\\" in decoded:
        return False
    return not any(seg in (".", "..") for seg in decoded.split("/"))


def default_prefix(path: str) -> str:
    """The index URL's path without a last `simple/` segment, ending in '/'."""
    segments = [s for s in path.split("/") if s]
    if segments and segments[-1].lower() in ("simple", "+simple"):
        segments.pop()
    return "/" + "".join(s + "/" for s in segments)


def under_prefix(path: str, prefix: str) -> bool:
    return path.startswith(prefix) or path == prefix.rstrip("/")


def url_space(url: str) -> str:
    """``scheme://host:port/prefix/``: the part of the URL space a feed of this index URL
    answers for, as find_feed compares it. The controller refuses two feeds with the same
    space, and names the space in messages, with this same function."""
    split = split_url(url)
    if split is None:
        return url
    scheme, host, port, path = split
    return f"{scheme}://{host.lower()}:{port}{default_prefix(path)}"


def find_feed(feeds: list[Feed], service: str) -> Optional[Feed]:
    """The feed whose URL space holds `service`, longest prefix first; None for a host name."""
    split = split_url(service)
    if split is None:
        return None
    scheme, host, port, path = split
    if not path_is_plain(path):
        return None
    matches = [f for f in feeds if (f.scheme, f.host, f.port) == (scheme, host.lower(), port)
               and under_prefix(path, f.prefix)]
    return max(matches, key=lambda f: len(f.prefix)) if matches else None


# ----- files ---------------------------------------------------------------------------------

def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def check_owned(st: os.stat_result, what: str, path: str, allowed: int, required: str) -> None:
    """Refuse a file that someone other than root could have written, or too many could read."""
    if stat.S_ISLNK(st.st_mode):
        raise HelperError(EXIT_TOKEN, f"{what} {path} is a symlink; it must be a regular "
                                      f"file, {required}")
    if not stat.S_ISREG(st.st_mode):
        raise HelperError(EXIT_TOKEN, f"{what} {path} is not a regular file; it must be "
                                      f"{required}")
    if st.st_uid != TRUSTED_UID:
        raise HelperError(EXIT_TOKEN, f"{what} {path} is owned by uid {st.st_uid}; it must "
                                      f"be {required}")
    if stat.S_IMODE(st.st_mode) & ~allowed:
        raise HelperError(EXIT_TOKEN, f"{what} {path} has mode {_mode(st)}; it must be "
                                      f"{required}")


def read_checked(path: str, what: str, allowed: int, required: str, code: int) -> bytes:
    """Read a file after checking it, on the same open file (no swap between check and read)."""
    try:
        before = os.lstat(path)
        check_owned(before, what, path, allowed, required)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except HelperError as err:
        raise HelperError(code, str(err)) from None
    except FileNotFoundError:
        raise HelperError(code, f"{what} {path} does not exist") from None
    except PermissionError:
        raise HelperError(code, f"{what} {path} is not readable by uid {os.getuid()} "
                                f"(it must be {required}, and this user in that group)") \
            from None
    except OSError as err:
        raise HelperError(code, f"{what} {path} cannot be opened: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise HelperError(code, f"{what} {path} changed while it was read; try again")
        try:
            check_owned(st, what, path, allowed, required)
        except HelperError as err:
            raise HelperError(code, str(err)) from None
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise HelperError(code, f"{what} {path} is larger than 1 MiB")
        return b"".join(chunks)
    except OSError as err:
        raise HelperError(code, f"{what} {path} cannot be read: {err.strerror}") from None
    finally:
        os.close(fd)


TOKEN_REQUIRED = "owned by root with mode 0600, or 0640 with a dedicated group"
CONFIG_REQUIRED = "owned by root and writable by root only (0644 or stricter)"


def token_problem(token) -> str:
    """'' for a usable token, else what is wrong with it, never any part of it. The one shape
    rule of the project: the controller checks every token source with it before anything is
    written, and this program checks every token file with it before answering."""
    if not isinstance(token, str):
        return "is not a string"
    if token == "":
        return "is empty"
    if "\n" in token or "\r" in token:
        return "holds a line break (more than one line)"
    if any(ch.isspace() for ch in token):
        return "holds whitespace"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        return "holds control characters"
    if MACRO.match(token):
        return ("is an Azure DevOps macro that was never expanded (the pipeline has no such "
                "variable, or it is secret and was not mapped into the step's env)")
    return ""


def token_from_text(text: str) -> str:
    """The token a file or a variable holds: the one trimming rule is that a single line break
    at the end is dropped (``echo TOKEN > file`` writes one); anything else around the token is
    refused by token_problem. Raises ValueError with the problem."""
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    problem = token_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def read_token(feed: Feed) -> str:
    """The feed's token, read now; the message of any refusal names the feed and the file."""
    where = f"feed {feed.name!r}: token file"
    data = read_checked(feed.token_file, where, TOKEN_MODE_MAX, TOKEN_REQUIRED, EXIT_TOKEN)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HelperError(EXIT_TOKEN, f"{where} {feed.token_file} is not UTF-8 text") \
            from None
    try:
        return token_from_text(text)
    except ValueError as err:
        raise HelperError(EXIT_TOKEN, f"{where} {feed.token_file} {err}; it must hold the "
                                      "token only, on one line") from None


def imds_token(identity: dict, sleep=time.sleep, clock=time.monotonic) -> str:
    """An Entra access token for Azure DevOps from the VM's managed identity, asked of the
    instance metadata service now: never through a proxy, with short timeouts, and with
    Microsoft's retries (back off on 404, 429 and 5xx; on 410, IMDS is being updated, keep
    asking for up to 70 s). Nothing is written to disk: IMDS caches tokens itself and answers
    with a cached one until shortly before it expires, so each call is cheap and a token that
    expired is simply not handed out again."""
    # Imported here: a `get` for a feed whose token is in a file needs none of it.
    import urllib.error
    import urllib.parse
    import urllib.request
    query = {"api-version": IMDS_API, "resource": AZURE_DEVOPS, **identity}
    request = urllib.request.Request(f"{IMDS_URL}?{urllib.parse.urlencode(query)}",
                                     headers={"Metadata": "true",
                                              "User-Agent": "pipfeed-keyring"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    which = ("the system-assigned identity" if not identity
             else "the user-assigned identity " + ", ".join(f"{k} {v}" for k, v in identity.items()))
    started, attempt, delay, last = clock(), 0, 1.0, ""
    while True:
        attempt += 1
        status, retry_after = 0, None
        try:
            with opener.open(request, timeout=IMDS_TIMEOUT) as answer:
                body = json.loads(answer.read().decode("utf-8"))
            token = body.get("access_token") if isinstance(body, dict) else None
            problem = token_problem(token)
            if problem:
                raise HelperError(EXIT_TOKEN, f"the instance metadata service answered "
                                              f"without a usable access token (it {problem})")
            return token
        except urllib.error.HTTPError as err:
            status = err.code
            retry_after = err.headers.get("Retry-After") if err.headers else None
            try:
                detail = json.loads(err.read().decode("utf-8", "replace"))
                last = f"HTTP {status}: {detail.get('error_description') or detail.get('error')}"
            except (ValueError, AttributeError, OSError):
                last = f"HTTP {status}"
            if status == 400:
                raise HelperError(EXIT_TOKEN, f"the instance metadata service has no token of "
                                              f"{which} ({last}): give the VM that managed "
                                              "identity (az vm identity assign), or name the "
                                              "feed's user-assigned identity in its "
                                              "azure_identity") from None
            if status not in IMDS_RETRY:
                raise HelperError(EXIT_TOKEN, f"the instance metadata service answered {last} "
                                              f"for {which}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            if attempt >= 2:
                raise HelperError(EXIT_TOKEN, f"the instance metadata service "
                                              f"(169.254.169.254) does not answer ({reason}): "
                                              "this host is not an Azure VM with a managed "
                                              "identity, or cannot reach IMDS") from None
            last = str(reason)
        elapsed = clock() - started
        limit_reached = (elapsed >= IMDS_UPDATING_SECONDS if status == 410
                         else attempt >= IMDS_ATTEMPTS)
        if limit_reached:
            raise HelperError(EXIT_TOKEN, f"the instance metadata service kept answering "
                                          f"{last} for {which}; tried {attempt} times in "
                                          f"{elapsed:.0f} s")
        wait = delay
        if retry_after and retry_after.isdigit():
            wait = max(wait, min(float(retry_after), 10.0))
        sleep(wait)
        delay = min(delay * 2, 8.0)


def feed_token(feed: Feed) -> str:
    """The feed's token: from its file, or from the VM's managed identity."""
    if feed.identity is not None:
        try:
            return imds_token(feed.identity)
        except HelperError as err:
            raise HelperError(err.code, f"feed {feed.name!r}: {err}") from None
    return read_token(feed)


def config_path() -> str:
    return os.environ.get(CONFIG_ENV) or CONFIG_PATH


def load_feeds(path: str) -> tuple[list[Feed], Optional[str]]:
    """The configured feeds and the default username; no file means no feeds."""
    if not os.path.lexists(path):
        return [], None
    data = read_checked(path, "configuration", 0o644, CONFIG_REQUIRED, EXIT_CONFIG)

    def bad(message: str) -> HelperError:
        return HelperError(EXIT_CONFIG, f"configuration {path}: {message}")

    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("feeds"), list):
        raise bad('expected an object with a list "feeds"')
    unknown = set(config) - TOP_KEYS
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}")
    default_user = config.get("username")
    if default_user is not None and (not isinstance(default_user, str) or not default_user):
        raise bad('"username" must be a non-empty string')
    feeds: list[Feed] = []
    for index, item in enumerate(config["feeds"]):
        if not isinstance(item, dict):
            raise bad(f"feeds[{index}] is not an object")
        name = item.get("name")
        label = f"feed {name!r}" if isinstance(name, str) and name else f"feeds[{index}]"
        unknown = set(item) - FEED_KEYS
        if unknown:
            raise bad(f"{label}: unknown keys {sorted(unknown)}")
        for key in ("name", "url"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise bad(f'{label}: "{key}" must be a non-empty string')
        identity = item.get("azure_identity")
        if ("token_file" in item) == (identity is not None):
            raise bad(f'{label}: give either "token_file" or "azure_identity"')
        if identity is not None:
            if not isinstance(identity, dict) or set(identity) - set(IDENTITY_KEYS) \
                    or len(identity) > 1 or not all(isinstance(v, str) and v
                                                    for v in identity.values()):
                raise bad(f'{label}: "azure_identity" must be {{}} (the system-assigned '
                          f'identity) or one of {", ".join(IDENTITY_KEYS)} of a user-assigned one')
        elif not isinstance(item.get("token_file"), str) or not item["token_file"]:
            raise bad(f'{label}: "token_file" must be a non-empty string')
        split = split_url(item["url"])
        if split is None or urlsplit(item["url"]).username is not None:
            raise bad(f"{label}: url must be an https:// URL without credentials")
        scheme, host, port, url_path = split
        if scheme == "http" and item.get("insecure_http") is not True:
            raise bad(f'{label}: url is http://; set "insecure_http": true to allow it')
        prefix = item.get("prefix", default_prefix(url_path))
        if not isinstance(prefix, str) or not prefix.startswith("/") \
                or not path_is_plain(prefix):
            raise bad(f'{label}: "prefix" must be a URL path starting with "/"')
        if not prefix.endswith("/"):
            prefix += "/"
        if identity is None and not os.path.isabs(item["token_file"]):
            raise bad(f'{label}: "token_file" must be an absolute path')
        username = item.get("username")
        if username is not None and (not isinstance(username, str) or not username):
            raise bad(f'{label}: "username" must be a non-empty string')
        feed = Feed(item["name"], scheme, host.lower(), port, prefix, item.get("token_file"),
                    username, identity)
        for other in feeds:
            if other.name == feed.name:
                raise bad(f"{label}: the name is used twice")
            if (other.scheme, other.host, other.port, other.prefix) == \
                    (feed.scheme, feed.host, feed.port, feed.prefix):
                raise bad(f"{label}: same URL space as feed {other.name!r}")
        feeds.append(feed)
    return feeds, default_user


# ----- arguments -----------------------------------------------------------------------------

def parse_get(args: list[str]) -> Optional[Request]:
    """A `get` request in any of the forms pip, uv and keyring's CLI use; None otherwise."""
    mode, output, positional = "password", "plain", []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--mode", "--output"):
            if i + 1 >= len(args):
                return None
            key, value, i = arg[2:], args[i + 1], i + 2
        elif arg.startswith(("--mode=", "--output=")):
            key, value = arg[2:].split("=", 1)
            i += 1
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
            i += 1
            continue
        if key == "mode" and value in ("password", "creds"):
            mode = value
        elif key == "output" and value in ("plain", "json"):
            output = value
        else:
            return None
    if len(positional) not in (2, 3) or positional[0] != "get" or not positional[1]:
        return None
    username = positional[2] if len(positional) == 3 and positional[2] else None
    return Request(positional[1], username, mode, output)


# ----- hand-over -----------------------------------------------------------------------------

def own_path() -> str:
    return os.path.realpath(os.path.abspath(__file__))


def next_keyring() -> Optional[str]:
    """The keyring to hand over to: after this program on PATH, then the diverted one."""
    me = own_path()
    seen = {p for p in os.environ.get(SEEN_ENV, "").split(os.pathsep) if p}
    if me in seen:
        return None  # handed back to itself (through a wrapper, say): stop the loop here
    seen.add(me)
    dirs = [d or "." for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    for index, directory in enumerate(dirs):
        candidate = os.path.join(directory, PROGRAM)
        if os.path.realpath(candidate) == me:
            dirs = dirs[index + 1:]
            break
    candidates = [os.path.join(d, PROGRAM) for d in dirs] + list(FALLBACK_KEYRINGS)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK) \
                and os.path.realpath(candidate) not in seen:
            return candidate
    return None


def hand_over(args: list[str], quiet: bool) -> NoReturn:
    target = next_keyring()
    if target is None:
        if not quiet:
            print(f"{NAME}: answers only `keyring get URL [USERNAME]` for its feeds "
                  f"({config_path()}), and no other keyring is installed",
                  file=sys.stderr)
        sys.exit(EXIT_NOT_OURS)
    seen = [p for p in os.environ.get(SEEN_ENV, "").split(os.pathsep) if p] + [own_path()]
    os.environ[SEEN_ENV] = os.pathsep.join(seen)
    sys.stdout.flush()
    try:
        os.execv(target, [target, *args])
    except OSError as err:
        print(f"{NAME}: cannot run the next keyring {target}: {err.strerror}",
              file=sys.stderr)
        sys.exit(EXIT_NOT_OURS)


# ----- commands ------------------------------------------------------------------------------

def emit(request: Request, username: str, token: str) -> None:
    if request.output == "json":
        text = json.dumps({"username": username, "password": token}) + "\n"
    elif request.mode == "creds":
        text = f"{username}\n{token}\n"
    else:
        text = f"{token}\n"
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()


def answer(request: Request, args: list[str]) -> int:
    feeds, default_user = load_feeds(config_path())
    feed = find_feed(feeds, request.service)
    if feed is None:
        hand_over(args, quiet=True)
    token = feed_token(feed)
    username = request.username or feed.username or default_user or DEFAULT_USERNAME
    emit(request, username, token)
    return EXIT_OK


def check(urls: list[str]) -> int:
    """Self-test for people and playbooks: which feed a URL belongs to and whether its token
    file is usable, as this user. Prints no token, and no length of one."""
    path = config_path()
    feeds, _ = load_feeds(path)
    if not feeds:
        print(f"{NAME}: no feeds configured in {path}", file=sys.stderr)
        return EXIT_NOT_OURS
    if urls:
        chosen = []
        for url in urls:
            feed = find_feed(feeds, url)
            if feed is None:
                print(f"{NAME}: {url} is not under any feed in {path}", file=sys.stderr)
                return EXIT_NOT_OURS
            chosen.append(feed)
    else:
        chosen = feeds
    worst = EXIT_OK
    for feed in chosen:
        try:
            feed_token(feed)
        except HelperError as err:
            print(f"{NAME}: {err}", file=sys.stderr)
            worst = max(worst, err.code)
            continue
        if feed.identity is not None:
            print(f"ok: feed {feed.name!r} {feed.scheme}://{feed.host}:{feed.port}{feed.prefix} "
                  f"token from the VM's managed identity "
                  f"({', '.join(f'{k} {v}' for k, v in feed.identity.items()) or 'system-assigned'})"
                  f" for uid {os.getuid()}")
            continue
        st = os.stat(feed.token_file)
        print(f"ok: feed {feed.name!r} {feed.scheme}://{feed.host}:{feed.port}{feed.prefix} "
              f"token file {feed.token_file} (uid {st.st_uid}, gid {st.st_gid}, "
              f"mode {_mode(st)}) readable by uid {os.getuid()}")
    return worst


def ask_feeds(spec: dict) -> int:
    """For the role's preflight, before the helper is configured on this host: each feed of
    ``spec`` (name, url, username, azure_identity) asked with a token of the VM's managed
    identity, as pip would send it (HTTP Basic). Prints [{name, status, error?}]; never a
    token. A redirect is followed only within the feed's scheme, host and port."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request
    answers = []
    for feed in spec.get("feeds", []):
        origin = urllib.parse.urlsplit(feed["url"])[:2]

        class SameOrigin(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, req, fp, code, msg, headers, newurl):
                if urllib.parse.urlsplit(newurl)[:2] != origin:
                    return None
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        try:
            token = imds_token(feed.get("azure_identity") or {})
        except HelperError as err:
            answers.append({"name": feed["name"], "status": -2, "error": str(err)})
            continue
        pair = base64.b64encode(f"{feed.get('username') or DEFAULT_USERNAME}:{token}".encode())
        request = urllib.request.Request(feed["url"], headers={
            "Authorization": "Basic " + pair.decode(), "User-Agent": "pipfeed-token-check"})
        try:
            with urllib.request.build_opener(SameOrigin()).open(
                    request, timeout=float(spec.get("timeout", 20))) as answer:
                answers.append({"name": feed["name"], "status": answer.status})
        except urllib.error.HTTPError as err:
            answers.append({"name": feed["name"], "status": err.code})
        except Exception as err:  # noqa: BLE001 - any failure to ask is the answer
            reason = getattr(err, "reason", None) or err
            answers.append({"name": feed["name"], "status": -1,
                            "error": " ".join(str(reason).split())})
    print(json.dumps(answers))
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "--check":
            return check(args[1:])
        if len(args) == 2 and args[0] == "--ask-feeds":
            return ask_feeds(json.loads(args[1]))
        request = parse_get(args)
        if request is None:
            hand_over(args, quiet=False)
        return answer(request, args)
    except HelperError as err:
        print(f"{NAME}: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())

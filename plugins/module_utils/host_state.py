# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host side of the roles' probe-and-apply: one read-only call that reports everything a
role decides on, and one call that makes only the changes the controller decided. Standard
library only, Python 3.9 or later (Debian 11's), as every program the collection runs on a host.

The actions pipfeed.feed.host_probe and pipfeed.feed.host_apply send this script to the host's
Python on its standard input (see plugins/action/host_script.py), so each call is one pipelined
SSH round trip. A run that changes nothing makes one probe per role and no apply at all.

``probe SPEC``  (SPEC a JSON object; read-only, also in check mode)
    paths       [{path, content?, secret?, redact?, user?}]: for each (with user, a path in
                that account's home), its type (file, link,
                directory, other, or missing), mode, owner and group names, link target, and
                for a file its SHA-256 (or, for a secret one, an HMAC-SHA256 under the probe's
                own random salt, which goes back with the answer: a hash of a short secret
                could be guessed from the output, an HMAC under a one-time key cannot) and, when
                asked and the file is small text, its content (for --diff), with any password
                in a URL replaced by *** when redact is set.
    pythons     [command or path]: each one's executable, version, the version of the pip it
                runs (read from pip's own files, without importing pip: a fraction of the time
                of "python -m pip --version"), whether it makes venvs (venv and ensurepip, which
                Debian and Ubuntu ship in python3-venv) and the pip a new venv gets
                (ensurepip), the pip wheels of /usr/share/python-wheels (python3-pip-whl), its
                libc and machine.
    groups      [name]: whether the group exists and its members.
    users       [name]: whether the account exists, its home, and the groups it is in.
    diversions  [path]: where dpkg diverts the path (read from dpkg's own database).
    listdir     [directory]: the names in each (none when it does not exist).
    writable    [path]: whether root may write into the directory.
    os          true: /etc/os-release (ID, VERSION_ID, ID_LIKE, PRETTY_NAME) and the machine.
    http        [{url, timeout, cafile?, proxy?}]: whether the URL answers (for the PyPI probe).
    wheelhouse  path: what the wheelhouse's own probe reports (wheelhouse_host.py's probe: the
                platform of this Python, free space, the current wheelhouse's files and
                manifest). Needs wheelhouse_host.py importable beside this program, which
                pipfeed.feed.host_probe sends along when a spec asks for it.

``apply SPEC -``  (the content of the files follows on standard input, or is in the file
    named instead of "-" where Ansible does not pipeline; see read_bundle)
    items, in order, each one of:
      {kind: directory, path, owner, group, mode}
      {kind: file, path, owner, group, mode, content: <index into the bundle>, backup?: bool,
       validate?: "command with %s",   written to a temporary file in the same directory,
       parse?: {parser: ini|toml,      checked, then renamed over the old one; parse: by
                executable}}           the parser in this program, when this Python is
                                       that executable (else the validate command)
      {kind: link, path, src}          a symlink made beside and renamed over the old path
      {kind: absent, path}             a file or link removed
      {kind: group, name, members?: [user]}   created (system group) where missing; the
                                       members added (never removed)
      {kind: divert, path, to}         dpkg-divert --local --rename
    verify: [[argv...]]: commands run after every change; a failing one fails the call.
    Prints {"done": [index of each item that changed]}; on failure, exits 1 with the reason
    on stderr and what was done before it on stdout.

``feeds SPEC -``  (the tokens follow on standard input, in the bundle format of apply)
    feeds: [{name, url, username, token: <index into the bundle>}], timeout: seconds.
    GETs each feed's index URL with its token (HTTP Basic, as pip sends it), from this host,
    through its proxy settings, and prints [{name, status, error?}]: whether the feed takes
    the token before it is installed. A redirect is followed only within the same scheme, host
    and port, so the token goes nowhere else. Never prints or logs a token.
"""
from __future__ import annotations

import grp
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time

CONTENT_LIMIT = 256 << 10
CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*):[^/@\s]*@")
CHUNK = 1 << 16
DIVERSIONS = "/var/lib/dpkg/diversions"
# Prints the interpreter, its version and its pip's version without importing pip (pip's
# __init__ is read as text for its __version__ line), and the pips a venv of it would get.
PYTHON_PROBE = r"""
import glob, importlib.util, json, os, platform, re, sys
def version_in(path):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return ""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else ""
found = importlib.util.find_spec("pip")
pip = version_in(found.origin) if found is not None and found.origin else ""
venv = importlib.util.find_spec("venv") is not None and importlib.util.find_spec("ensurepip") is not None
bundled = ""
if venv:
    try:
        import ensurepip
        bundled = ensurepip.version()
    except Exception:
        bundled = ""
wheels = sorted(os.path.basename(w).split("-")[1]
                for w in glob.glob("/usr/share/python-wheels/pip-*.whl"))
print(json.dumps({"executable": sys.executable, "version": platform.python_version(),
                  "pip": pip, "venv": venv, "ensurepip": bundled, "wheels": wheels,
                  "libc": list(platform.libc_ver()), "machine": platform.machine()}))
"""


class ApplyError(Exception):
    """An item could not be applied; the message names it, ``done`` lists the items (by
    index) that were applied before it."""

    def __init__(self, message: str, done=()) -> None:
        super().__init__(message)
        self.done = list(done)


# ----- probe -------------------------------------------------------------------------------

def owner_names(st: os.stat_result) -> tuple:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return user, group


def digest(path: str, salt: bytes, secret: bool) -> str:
    mac = hmac.new(salt, digestmod=hashlib.sha256) if secret else hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            mac.update(block)
    return mac.hexdigest()


def path_state(item: dict, salt: bytes) -> dict:
    path = item["path"]
    if item.get("user"):
        # A path in an account's home (~/.netrc): the home comes from the host's passwd.
        try:
            path = os.path.join(pwd.getpwnam(item["user"]).pw_dir, path)
        except KeyError:
            return {"path": item["path"], "user": item["user"], "type": "missing",
                    "error": "no such account"}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return dict({"path": path, "type": "missing"}, **({"user": item["user"]}
                                                          if item.get("user") else {}))
    except OSError as err:
        return {"path": path, "type": "unreadable", "error": err.strerror}
    user, group = owner_names(st)
    state = {"path": path, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "owner": user,
             "group": group}
    if item.get("user"):
        state["user"] = item["user"]
    if stat.S_ISLNK(st.st_mode):
        state.update(type="link", src=os.readlink(path))
    elif stat.S_ISDIR(st.st_mode):
        state["type"] = "directory"
    elif stat.S_ISREG(st.st_mode):
        secret = bool(item.get("secret"))
        state.update(type="file", size=st.st_size)
        try:
            state["hmac" if secret else "sha256"] = digest(path, salt, secret)
            if item.get("content") and not secret and st.st_size <= CONTENT_LIMIT:
                with open(path, "rb") as handle:
                    text = handle.read().decode("utf-8")
                if item.get("redact"):
                    # A hand-written file may hold https://user:token@...: the password never
                    # leaves the host (the controller only needs to know one was there).
                    text = CREDENTIALS.sub(r"\1:***@", text)
                state["content"] = text
        except UnicodeDecodeError:
            state["binary"] = True
        except OSError as err:
            state["error"] = err.strerror
    else:
        state["type"] = "other"
    return state


def python_state(command: str) -> dict:
    try:
        done = subprocess.run([command, "-c", PYTHON_PROBE], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PYTHONNOUSERSITE="1"))
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"command": command, "error": getattr(err, "strerror", None) or str(err)}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return {"command": command, "error": last}
    answer = json.loads(done.stdout)
    answer["command"] = command
    return answer


def group_state(name: str) -> dict:
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        return {"name": name, "exists": False, "members": []}
    return {"name": name, "exists": True, "gid": entry.gr_gid, "members": list(entry.gr_mem)}


def user_state(name: str) -> dict:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"name": name, "exists": False}
    groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
    try:
        groups.insert(0, grp.getgrgid(entry.pw_gid).gr_name)
    except KeyError:
        pass
    return {"name": name, "exists": True, "home": entry.pw_dir, "groups": groups}


def diversions() -> dict:
    """{diverted path: where it went}, from dpkg's database (three lines per diversion)."""
    try:
        with open(DIVERSIONS, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    return {lines[i]: lines[i + 1] for i in range(0, len(lines) - 2, 3)}


def os_state() -> dict:
    found = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                if key in ("ID", "VERSION_ID", "ID_LIKE", "PRETTY_NAME", "VERSION_CODENAME"):
                    found[key.lower()] = value.strip().strip('"')
    except OSError:
        pass
    found["machine"] = os.uname().machine
    return found


def http_state(check: dict) -> dict:
    import ssl
    import urllib.error
    import urllib.request
    handlers = []
    if check.get("proxy"):
        handlers.append(urllib.request.ProxyHandler({"http": check["proxy"],
                                                     "https": check["proxy"]}))
    context = ssl.create_default_context(cafile=check.get("cafile") or None)
    handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(check["url"], method="HEAD",
                                     headers={"User-Agent": "pipfeed-probe"})
    started = time.monotonic()
    try:
        opener.open(request, timeout=float(check.get("timeout", 5))).close()
        answer = {"answers": True}
    except urllib.error.HTTPError as err:
        answer = {"answers": True, "status": err.code}
    except Exception as err:  # noqa: BLE001 - any failure to connect is the answer
        answer = {"answers": False, "error": str(getattr(err, "reason", None) or err)}
    answer.update(url=check["url"], seconds=round(time.monotonic() - started, 2))
    return answer


def probe(spec: dict, pythons: dict | None = None) -> dict:
    """What ``spec`` asks for; under ``also``, other specs read in the same call (each with
    its own salt), a Python asked about once for all of them (``pythons``)."""
    pythons = {} if pythons is None else pythons
    salt = secrets.token_bytes(32)
    result: dict = {"salt": salt.hex()}
    result["paths"] = [path_state(item, salt) for item in spec.get("paths", [])]
    if spec.get("pythons"):
        for command in spec["pythons"]:
            if command not in pythons:
                pythons[command] = python_state(command)
        result["pythons"] = {c: pythons[c] for c in spec["pythons"]}
    if spec.get("groups"):
        result["groups"] = {name: group_state(name) for name in spec["groups"]}
    if spec.get("users"):
        result["users"] = {name: user_state(name) for name in spec["users"]}
    if spec.get("diversions"):
        known = diversions()
        result["diversions"] = {path: known.get(path) for path in spec["diversions"]}
    if spec.get("listdir"):
        result["listdir"] = {}
        for directory in spec["listdir"]:
            try:
                result["listdir"][directory] = sorted(os.listdir(directory))
            except OSError:
                result["listdir"][directory] = []
    if spec.get("writable"):
        result["writable"] = {path: os.path.isdir(path) and os.access(path, os.W_OK)
                              for path in spec["writable"]}
    if spec.get("os"):
        result["os"] = os_state()
    if spec.get("http"):
        result["http"] = [http_state(check) for check in spec["http"]]
    if spec.get("wheelhouse"):
        import wheelhouse_host  # sent along by pipfeed.feed.host_probe
        result["wheelhouse"] = wheelhouse_host.probe(spec["wheelhouse"])
    if spec.get("also"):
        result["also"] = {name: probe(other, pythons) for name, other in spec["also"].items()}
    return result


# ----- feeds -------------------------------------------------------------------------------

def check_feed(feed: dict, token: str, timeout: float) -> dict:
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    origin = urllib.parse.urlsplit(feed["url"])[:2]

    class SameOrigin(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urllib.parse.urlsplit(newurl)[:2] != origin:
                return None  # the 3xx itself is then the answer
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    pair = base64.b64encode(f"{feed['username']}:{token}".encode()).decode()
    request = urllib.request.Request(feed["url"], headers={
        "Authorization": f"Basic {pair}", "User-Agent": "pipfeed-token-check"})
    opener = urllib.request.build_opener(SameOrigin())
    try:
        with opener.open(request, timeout=timeout) as answer:
            return {"name": feed["name"], "status": answer.status}
    except urllib.error.HTTPError as err:
        return {"name": feed["name"], "status": err.code}
    except Exception as err:  # noqa: BLE001 - any failure to ask is the answer
        reason = getattr(err, "reason", None) or err
        return {"name": feed["name"], "status": -1, "error": " ".join(str(reason).split())}


def feeds(spec: dict, contents: list) -> list:
    timeout = float(spec.get("timeout", 20))
    return [check_feed(feed, contents[feed["token"]].decode("utf-8"), timeout)
            for feed in spec.get("feeds", [])]


# ----- apply -------------------------------------------------------------------------------

def read_bundle(stream) -> list:
    """The contents the items refer to: a line of JSON with each content's length, then the
    contents' bytes, in order."""
    header = stream.readline(1 << 20)
    if not header.endswith(b"\n"):
        raise ApplyError("the contents did not arrive (no header line)")
    sizes = json.loads(header)
    contents = []
    for size in sizes:
        data = stream.read(size)
        if len(data) != size:
            raise ApplyError("the contents were cut short: nothing after the last complete "
                             "item was written")
        contents.append(data)
    return contents


def ids(item: dict) -> tuple:
    uid = pwd.getpwnam(item.get("owner", "root")).pw_uid
    gid = grp.getgrnam(item.get("group", "root")).gr_gid
    return uid, gid


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_directory(item: dict) -> None:
    path, mode = item["path"], int(item["mode"], 8)
    if not os.path.isdir(path) or os.path.islink(path):
        os.makedirs(path, mode=mode, exist_ok=True)
    uid, gid = ids(item)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def backup_name(path: str) -> str:
    """The name ansible.builtin.copy gives its backups: path.<pid>.<time>~."""
    return f"{path}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"


# What a file is checked with in this process (the parse item option), by the parser its
# reader uses: pip reads pip.conf with configparser's RawConfigParser in the locale's encoding,
# uv reads uv.toml as TOML (tomllib, Python 3.11 and later).
def _parse_ini(path: str) -> None:
    import configparser
    with open(path) as handle:
        configparser.RawConfigParser().read_file(handle)


def _parse_toml(path: str) -> None:
    import tomllib
    with open(path, "rb") as handle:
        tomllib.load(handle)


PARSERS = {"ini": _parse_ini, "toml": _parse_toml}


def parsed_here(parse, temporary: str, path: str) -> bool:
    """Check the new file in this process when the parse option names this very Python (the
    one whose parser reads the file: no second Python is started); False when it names
    another Python, which then checks it through the validate command."""
    if not parse:
        return False
    executable = parse.get("executable") or ""
    if parse.get("parser") not in PARSERS or not executable or \
            (parse["parser"] == "toml" and sys.version_info < (3, 11)) or \
            os.path.realpath(executable) != os.path.realpath(sys.executable):
        return False
    try:
        PARSERS[parse["parser"]](temporary)
    except Exception as error:  # the parser's own refusal, said as the validate command's
        reason = " ".join(str(error).split())
        raise ApplyError(f"{path}: the new content failed its check ({parse['parser']} parser "
                         f"of {executable}): {reason}; the old file stays") from None
    return True


def apply_file(item: dict, data: bytes) -> None:
    path = item["path"]
    directory = os.path.dirname(path) or "."
    uid, gid = ids(item)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.pipfeed-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, int(item["mode"], 8))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if not parsed_here(item.get("parse"), temporary, path) and item.get("validate"):
            command = item["validate"].replace("%s", temporary)
            done = subprocess.run(command, shell=True, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
                raise ApplyError(f"{path}: the new content failed its check ({command}): "
                                 f"{' '.join(said) or 'exit code ' + str(done.returncode)}; "
                                 "the old file stays")
        if item.get("backup") and os.path.isfile(path) and not os.path.islink(path):
            shutil.copy2(path, backup_name(path))
        os.rename(temporary, path)
        fsync_dir(directory)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def apply_link(item: dict) -> None:
    path = item["path"]
    temporary = os.path.join(os.path.dirname(path),
                             f".{os.path.basename(path)}.pipfeed-{os.getpid()}")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(item["src"], temporary)
    os.rename(temporary, path)
    fsync_dir(os.path.dirname(path))


def apply_absent(item: dict) -> None:
    path = item["path"]
    if os.path.isdir(path) and not os.path.islink(path):
        raise ApplyError(f"{path} is a directory; it is left alone")
    if os.path.lexists(path):
        os.unlink(path)


def run_checked(argv: list, what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        said = " ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-3:])
        raise ApplyError(f"{what} failed ({' '.join(argv)}): "
                         f"{said or 'exit code ' + str(done.returncode)}")


def apply_group(item: dict) -> None:
    name = item["name"]
    try:
        members = set(grp.getgrnam(name).gr_mem)
    except KeyError:
        run_checked(["groupadd", "--system", name], f"creating group {name}")
        members = set()
    for user in item.get("members", []):
        if user not in members:
            run_checked(["usermod", "--append", "--groups", name, user],
                        f"adding {user} to group {name}")


def apply_divert(item: dict) -> None:
    run_checked(["dpkg-divert", "--local", "--rename", "--divert", item["to"], "--add",
                 item["path"]], f"diverting {item['path']}")


APPLY = {"directory": apply_directory, "link": apply_link, "absent": apply_absent,
         "group": apply_group, "divert": apply_divert}


def apply(spec: dict, contents: list) -> list:
    """Each item in order; stops at the first that fails (ApplyError, with what was done)."""
    done: list = []
    for index, item in enumerate(spec.get("items", [])):
        try:
            if item["kind"] == "file":
                apply_file(item, contents[item["content"]])
            else:
                APPLY[item["kind"]](item)
        except ApplyError as err:
            raise ApplyError(str(err), done) from None
        except (OSError, KeyError, IndexError, subprocess.SubprocessError) as err:
            where = item.get("path") or item.get("name")
            reason = getattr(err, "strerror", None) or str(err)
            raise ApplyError(f"{where}: {reason}", done) from None
        done.append(index)
    for argv in spec.get("verify", []):
        try:
            run_checked(argv, "the check after the change")
        except (ApplyError, OSError, subprocess.SubprocessError) as err:
            raise ApplyError(str(err), done) from None
    return done


def contents_from(argv: list) -> list:
    """The contents after the spec: "-" when they follow the program on stdin, else the path
    of the file they were sent in (where Ansible does not pipeline)."""
    if len(argv) < 3:
        return []
    if argv[2] == "-":
        return read_bundle(sys.stdin.buffer)
    with open(argv[2], "rb") as handle:
        return read_bundle(handle)


def main(argv: list) -> int:
    if len(argv) < 2 or argv[0] not in ("probe", "apply", "feeds"):
        print("usage: host_state.py probe SPEC | apply SPEC - | feeds SPEC -", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    if argv[0] == "probe":
        print(json.dumps(probe(spec), sort_keys=True))
        return 0
    if argv[0] == "feeds":
        try:
            print(json.dumps(feeds(spec, contents_from(argv))))
        except (ApplyError, ValueError, OSError) as err:
            print(f"host_state: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        contents = contents_from(argv)
        done = apply(spec, contents)
    except (ApplyError, ValueError, OSError) as err:
        print(json.dumps({"done": getattr(err, "done", [])}))
        print(f"host_state: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"done": done}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

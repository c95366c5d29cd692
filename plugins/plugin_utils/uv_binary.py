# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""uv for hosts that have no pip: its standalone binary, taken from uv's wheel on the feed.

uv's wheels carry the whole program as one static executable (``uv-<version>.data/scripts/uv``,
and ``uvx`` beside it), so a host with python3 alone (no pip, no python3-venv, as some cloud
images ship) can install from the feed once the binary is in /usr/local/bin: it reads
/etc/uv/uv.toml and asks the credential helper for the token through keyring-provider =
subprocess.

The controller fetches the wheel for each host platform once: it reads the feed's index page
for uv (PEP 503), picks the wheel of the pinned version whose platform tag fits the host (the
highest manylinux glibc at or below the host's, or musllinux on musl; ties by file name),
downloads it with the feed's token (never sent on to another host: a redirect to the feed's
blob storage goes without it), checks its SHA-256 against the index's, and keeps the wheel and
the extracted binaries in a cache. A cached platform needs no network at all.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from ansible_collections.pipfeed.feed.plugins.plugin_utils.wheel_choice import parse_simple_page

MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(.+)$")
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
PROGRAMS = ("uv", "uvx")


class UvError(Exception):
    """The binary cannot be had; the message says why and what to do, never the token."""


def platform_key(platform: dict) -> str:
    return f"{platform.get('libc', 'glibc')}{platform.get('libc_version', '')}-{platform['machine']}"


def tag_fit(tag: str, platform: dict) -> tuple | None:
    """How well one platform tag fits the host: (libc major, minor) for a manylinux or
    musllinux tag the host can run, else None."""
    machine, libc = platform["machine"], platform.get("libc", "glibc")
    version = tuple(int(x) for x in str(platform.get("libc_version") or "0.0").split(".")[:2])
    if libc == "glibc":
        for legacy, glibc in LEGACY.items():
            if tag == f"{legacy}_{machine}":
                return glibc if glibc <= version else None
        match = MANYLINUX.match(tag)
        if match and match.group(3) == machine:
            wanted = (int(match.group(1)), int(match.group(2)))
            return wanted if wanted <= version else None
    elif libc == "musl":
        match = re.match(r"^musllinux_(\d+)_(\d+)_(.+)$", tag)
        if match and match.group(3) == machine:
            wanted = (int(match.group(1)), int(match.group(2)))
            return wanted if wanted <= version else None
    return None


def choose(files: list, version: str, platform: dict) -> dict:
    """The wheel of uv ``version`` that fits ``platform`` best, from the index's files
    ([{filename, url, sha256}]): the highest libc requirement the host meets; ties by the
    smallest file name, so every controller picks the same."""
    candidates = []
    for entry in files:
        name = entry["filename"]
        if not name.endswith(".whl"):
            continue
        parts = name[:-4].split("-")
        if len(parts) != 5 or parts[0] != "uv" or parts[1] != version:
            continue
        fits = [fit for fit in (tag_fit(tag, platform) for tag in parts[4].split("."))
                if fit is not None]
        if not fits:
            continue
        best_fit = max(fits)
        candidates.append(((-best_fit[0], -best_fit[1]), name, entry))
    if not candidates:
        raise UvError(f"the feed has no wheel of uv {version} for {platform_key(platform)}. "
                      f"Publish it there (playbooks/publish.yml with pipfeed_publish_packages: "
                      f"['uv=={version}']), or set pipfeed_config_uv_version to a version the "
                      "feed has.")
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """On a redirect to another scheme, host or port (the feed's blob storage), the token is
    not sent on: only the signed URL authorizes the download."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl)[:2] != \
                urllib.parse.urlsplit(req.full_url)[:2]:
            new.remove_header("Authorization")
        return new


def _open(url: str, token: str, username: str, cert: str, timeout: float = 120):
    request = urllib.request.Request(url, headers={"User-Agent": "pipfeed-uv"})
    if token:
        pair = base64.b64encode(f"{username}:{token}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    context = ssl.create_default_context(cafile=cert or None)
    opener = urllib.request.build_opener(_SameOrigin(),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise UvError(f"{url.split('?')[0]} answered HTTP {err.code}"
                      + (" (the feed's token was refused: check it as site.yml's helper does)"
                         if err.code in (401, 403) else "")) from None
    except (urllib.error.URLError, OSError) as err:
        raise UvError(f"{url.split('?')[0]} does not answer: "
                      f"{getattr(err, 'reason', None) or err}") from None


def index_files(index_url: str, token: str, username: str, cert: str) -> list:
    """uv's files on the index: [{filename, url, sha256}]."""
    page_url = index_url.rstrip("/") + "/uv/"
    with _open(page_url, token, username, cert) as answer:
        page = answer.read().decode(answer.headers.get_content_charset() or "utf-8", "replace")
        return [{"filename": item.filename, "url": item.url, "sha256": item.sha256}
                for item in parse_simple_page(page, answer.geturl())]


def fetch(spec: dict, token: str) -> dict:
    """{platform key: {wheel, sha256, programs: {uv: {path, sha256}, uvx: ...}}} for every
    platform of the spec (version, platforms, index_url, cert, username, cache_dir)."""
    version = str(spec["version"])
    cache = os.path.join(os.path.expanduser(spec["cache_dir"]), "uv", version)
    answers, files = {}, None
    for platform in spec["platforms"]:
        key = platform_key(platform)
        record = os.path.join(cache, key, "binaries.json")
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as handle:
                known = json.load(handle)
            if all(os.path.isfile(p["path"]) and _sha256(p["path"]) == p["sha256"]
                   for p in known["programs"].values()):
                answers[key] = known
                continue
        if files is None:
            files = index_files(spec["index_url"], token, spec.get("username", "pipfeed"),
                                spec.get("cert", ""))
        entry = choose(files, version, platform)
        if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
            raise UvError(f"the feed lists {entry['filename']} without its sha256, so it cannot "
                          "be checked; a PEP 503 index gives #sha256= with each file.")
        answers[key] = _download(entry, token, spec, os.path.join(cache, key), record)
    return answers


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(entry: dict, token: str, spec: dict, directory: str, record: str) -> dict:
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".whl.part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, \
                _open(entry["url"], token, spec.get("username", "pipfeed"),
                      spec.get("cert", "")) as answer:
            for block in iter(lambda: answer.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != entry["sha256"]:
            raise UvError(f"{entry['filename']} from the feed has sha256 {digest.hexdigest()}, "
                          f"the index lists {entry['sha256']}: refused")
        programs = {}
        with zipfile.ZipFile(temporary) as wheel:
            names = wheel.namelist()
            for program in PROGRAMS:
                inside = [n for n in names if n.endswith(f".data/scripts/{program}")]
                if not inside:
                    continue
                target = os.path.join(directory, program)
                with wheel.open(inside[0]) as source, open(target + ".part", "wb") as out:
                    out.write(source.read())
                os.chmod(target + ".part", 0o755)
                os.replace(target + ".part", target)
                programs[program] = {"path": target, "sha256": _sha256(target)}
        if "uv" not in programs:
            raise UvError(f"{entry['filename']} holds no uv program (.data/scripts/uv)")
        answer = {"wheel": entry["filename"], "sha256": entry["sha256"], "programs": programs}
        with open(record + ".part", "w", encoding="utf-8") as out:
            json.dump(answer, out, sort_keys=True)
        os.replace(record + ".part", record)
        return answer
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)

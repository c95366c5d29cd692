# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for the pipfeed_wheelhouse role: what a host lacks.

The comparison runs on the controller from one listing per host (file name, SHA-256, size, and
the wheelhouse's own manifest.json), so that a host whose wheelhouse is complete costs one
task, whatever the number of wheels.

A host's wheelhouse that another controller built is kept when it already answers the same
lock (host_answer_problem says why not, when it does not): every controller chooses the same
files by the rule of plugin_utils/wheel_choice.py, but a wheelhouse built before that rule, or
by a controller whose index listed other files, may hold another wheel of a pinned release
(cryptography's manylinux2014 wheel where this controller takes its manylinux_2_28 one). Both
install the same release on the host, so re-sending it would change nothing but the bytes,
on every host, at every switch of controller.
"""
from __future__ import annotations

import importlib
import os
import re

from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import feed_url, redact_url
from ansible_collections.pipfeed.feed.plugins.plugin_utils.lazy import PACKAGE, lazy

# The wheel rules (and packaging) are imported when a filter first runs (plugin_utils/lazy.py
# says why).
parse_wheel_name = lazy("wheel_choice", "parse_wheel_name")
same_version = lazy("wheel_choice", "same_version")
target_tags = lazy("wheel_choice", "target_tags")

MANIFEST = "manifest.json"
REQUIREMENTS = "requirements.txt"
_TAGS: dict[str, frozenset] = {}


def _accepted(platform: dict) -> frozenset:
    """The tags a host of the platform accepts (cached per platform for the play)."""
    key = repr(sorted(platform.items()))
    if key not in _TAGS:
        _TAGS[key] = frozenset(target_tags(platform))
    return _TAGS[key]


def host_answer_problem(host: dict, build: dict, prune: bool = True) -> str:
    """Why the host's current wheelhouse is not a valid answer to the build's lock; "" when it
    is. Valid means, from the host's own manifest.json (which the probe returns) and its listing:

    - the manifest is of the current format and names the same lock identity (the pins that
      apply to the platform, with extras and the lock's hashes, the constraints' pins, the
      platform and the path on the host: see wheelhouse_build.lock_id) and the same platform;
    - every file it names is on the host with the sha256 it names (requirements.txt among them),
      and, with prune on, nothing else is but manifest.json;
    - its wheels are exactly one per project of the set, each of the pinned version, with a tag
      the platform accepts (the same tag rules as the choice), and with a sha256 among the
      lock's hashes for that project where the lock lists any (for a wheel a host built, the
      sha256 of the sdist it was built from).

    Then the host holds what the lock asks, checked by hash, with a requirements.txt that pins
    and hashes exactly its files; which file of a release another controller chose does not
    matter."""
    answer = build.get("answer")
    manifest = host.get("manifest")
    if not answer:
        return "the build carries no answer to compare with"
    if not isinstance(manifest, dict):
        return "the host's wheelhouse has no readable manifest"
    if manifest.get("format") != answer["format"] or manifest.get("lock") != answer["lock"]:
        return "the host's wheelhouse was built for another lock (or by an older release)"
    if manifest.get("platform") != answer["platform"]:
        return "the host's wheelhouse was built for another platform"
    named = manifest.get("files")
    have = host.get("files") or {}
    if not isinstance(named, dict) or REQUIREMENTS not in named:
        return "the host's manifest names no requirements.txt"
    for name, entry in sorted(named.items()):
        if not isinstance(entry, dict) or have.get(name, {}).get("sha256") != entry.get("sha256"):
            return f"{name} is missing on the host or differs from its manifest"
    extra = sorted(set(have) - set(named) - {MANIFEST})
    if extra and prune:
        return f"the host holds files its manifest does not name ({', '.join(extra)})"
    accepted = _accepted(answer["platform"])
    pins = answer["pins"]
    seen = set()
    for name, entry in sorted(named.items()):
        if name == REQUIREMENTS:
            continue
        try:
            wheel = parse_wheel_name(name)
        except importlib.import_module(f"{PACKAGE}.wheel_choice").ChoiceError:
            return f"{name} is no wheel"
        pin = pins.get(wheel.project)
        if pin is None or not same_version(wheel.version, pin["version"]):
            return f"{name} is no release the lock pins"
        if wheel.project in seen:
            return f"the host holds two wheels of {wheel.project}"
        seen.add(wheel.project)
        if not wheel.tags & accepted:
            return f"{name} does not fit {answer['platform'].get('key')}"
        locked = entry.get("built_from_sha256") if entry.get("built_from") else entry.get("sha256")
        if pin["hashes"] and locked not in pin["hashes"]:
            return f"{name} matches none of the lock's hashes"
    if seen != set(pins):
        return "the host lacks " + ", ".join(sorted(set(pins) - seen))
    return ""


def delta(host: dict, build: dict, prune: bool = True) -> dict:
    """What one host needs: the files it lacks or holds damaged (sent in one bundle), the files
    no longer wanted (pruned), and whether anything must change at all. A host whose
    wheelhouse differs from the build but is a valid answer to the same lock (see
    host_answer_problem) needs nothing, and keeps it."""
    have = host.get("files") or {}
    want = build["files"]
    missing = sorted(name for name, entry in want.items()
                     if have.get(name, {}).get("sha256") != entry["sha256"])
    extra = sorted(name for name in have if name not in want)
    healthy = host.get("exists") and host.get("is_link") and not host.get("stale")
    needed = bool(missing or (prune and extra) or host.get("stale")
                  or (host.get("exists") and not host.get("is_link")))
    if needed and healthy and not host_answer_problem(host, build, prune):
        return {"missing": [], "extra": [], "bytes": 0, "send": [], "needed": False,
                "kept": True}
    return {
        "missing": missing,
        "extra": extra,
        "bytes": sum(want[name]["size"] for name in missing),
        # What the host action sends, in one bundle: [name, file in the controller's cache].
        "send": [[name, want[name]["src"]] for name in missing],
        "needed": needed,
        "kept": False,
    }


def builders(host_platforms: dict, pending: list) -> dict:
    """For each platform with sdist-only releases, the host that builds them: the first of the
    play's hosts of that platform ({platform key: host})."""
    out = {}
    for host, key in host_platforms.items():
        if key in pending and key not in out:
            out[key] = host
    return out


def _bytes(value) -> int:
    """A number of bytes as Jinja's int filter reads it (0 where it reads none)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def index(feeds, name, url="") -> dict:
    """Where the controller downloads from: the feed of pipfeed_feeds that ``name`` names ({}
    when none is named, or none has that name) and the index URL, ``url`` when it is set, else
    that feed's."""
    feed = {}
    if name and isinstance(feeds, list):
        feed = next((f for f in feeds if isinstance(f, dict) and f.get("name") == name), {})
    return {"feed": feed, "url": str(url) if url else feed_url(feed)}


def setting_problems(settings: dict, feeds) -> list:
    """Everything wrong with the role's settings and the index the controller downloads from,
    one message each (each names the variable and the fix); [] when they are usable.
    ``settings``: requirements, path, min_free_bytes, stream_max_bytes, venvs, index_feed,
    index_url (the role's variables without their prefix); ``feeds``: pipfeed_feeds.

    In Python, so that a host's check templates one expression: Jinja resolves every variable
    a template names before it renders, and Ansible then renders each, messages included."""
    path = settings.get("path")
    venvs = settings.get("venvs") or []
    problems = []
    if not (settings.get("requirements")
            and isinstance(path, str) and re.match(r"^/.+[^/]$", path)
            and os.path.dirname(path) != "/"
            and _bytes(settings.get("min_free_bytes")) >= 0
            and _bytes(settings.get("stream_max_bytes")) >= 0
            and isinstance(venvs, list)
            and all(isinstance(venv, dict) and isinstance(venv.get("path"), str)
                    and venv["path"].startswith("/") for venv in venvs)):
        problems.append(
            f"pipfeed_wheelhouse_requirements must name the requirement file on the controller "
            f"(it is '{settings.get('requirements')}'); pipfeed_wheelhouse_path must be an "
            f"absolute path below a directory, without a trailing slash (it is '{path}'); "
            "pipfeed_wheelhouse_min_free_bytes and pipfeed_wheelhouse_stream_max_bytes numbers "
            "of bytes (0 or more); each item of pipfeed_wheelhouse_venvs a mapping with an "
            "absolute path ({path: /opt/app/venv}).")
    feeds = feeds if isinstance(feeds, list) else []
    name = settings.get("index_feed") or ""
    source = index(feeds, name, settings.get("index_url"))
    if name and not source["feed"]:
        problems.append(
            f"pipfeed_wheelhouse_index_feed is '{name}', which no feed of pipfeed_feeds "
            f"(pipfeed_feeds) is named. Name one of "
            f"{[f.get('name') for f in feeds if isinstance(f, dict)]}.")
    elif not re.match(r"^https?://[^/@\s]+/\S*$", source["url"]):
        problems.append(
            f"The controller has no usable index URL ('{redact_url(source['url'])}'): set "
            "pipfeed_wheelhouse_index_url to the index's PEP 503 URL, without credentials (the "
            "token comes from the feed's token source), or define the feed in pipfeed_feeds.")
    return problems


class FilterModule:
    def filters(self):
        return {"wheelhouse_delta": delta,
                "wheelhouse_builders": builders,
                "wheelhouse_setting_problems": setting_problems,
                "wheelhouse_index": index}

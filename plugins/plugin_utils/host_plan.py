# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller's decision between a host's probe (plugins/module_utils/host_state.py) and
the state a role wants: which items differ, what --diff shows for each, and what the apply
call sends. Pure functions: the actions pipfeed.feed.host_apply and pipfeed.feed.feed_check
call them, and the unit tests check them without a host.

An item (what a role wants), by kind:
    file       path, content (text, or bytes for a binary), owner, group, mode ("0644"),
               backup, validate, parse, secret
    directory  path, owner, group, mode
    link       path, src
    absent     path
    group      name, members
    divert     path, to

A secret file's content never leaves this module but on its way to the host: the probe gave
an HMAC of the host's file under a one-time salt, and the comparison is with the HMAC of the
wanted content under the same salt. Its diff and its change say only that it changed.
"""
from __future__ import annotations

import hashlib
import hmac

KINDS = ("file", "directory", "link", "absent", "group", "divert")


class PlanError(Exception):
    """An item that cannot be decided: the message names it and what is wrong."""


def probe_spec(items: list, diff: bool) -> dict:
    """What the probe must report to decide these items (and to show their diff)."""
    spec: dict = {"paths": []}
    for item in items:
        kind = item.get("kind")
        if kind in ("file", "directory", "link", "absent"):
            spec["paths"].append({"path": item["path"], "secret": bool(item.get("secret")),
                                  "content": bool(diff and kind == "file"
                                                  and not item.get("secret")
                                                  and not isinstance(item.get("content"), bytes))})
        elif kind == "group":
            spec.setdefault("groups", []).append(item["name"])
        elif kind == "divert":
            spec.setdefault("diversions", []).append(item["path"])
    return spec


def _paths(current: dict) -> dict:
    return {entry["path"]: entry for entry in current.get("paths", [])}


def known(items: list, current: dict | None, diff: bool) -> bool:
    """Whether the probe ``current`` holds what every item needs (else the action probes)."""
    if not current:
        return False
    paths = _paths(current)
    for item in items:
        kind = item.get("kind")
        if kind in ("file", "directory", "link", "absent"):
            entry = paths.get(item["path"])
            if entry is None:
                return False
            if kind == "file" and entry.get("type") == "file":
                if item.get("secret") and "hmac" not in entry:
                    return False
                if not item.get("secret") and "sha256" not in entry:
                    return False
                if diff and not item.get("secret") and not isinstance(item.get("content"), bytes) \
                        and "content" not in entry and not entry.get("binary") \
                        and "error" not in entry:
                    return False
        elif kind == "group" and item["name"] not in current.get("groups", {}):
            return False
        elif kind == "divert" and item["path"] not in current.get("diversions", {}):
            return False
    return True


def _attrs(entry: dict, item: dict) -> list:
    wrong = []
    for key in ("owner", "group", "mode"):
        if key in item and str(entry.get(key)) != str(item[key]):
            wrong.append(f"{key} {entry.get(key)} -> {item[key]}")
    return wrong


def _describe(entry: dict | None) -> str:
    if not entry or entry.get("type") == "missing":
        return "absent"
    if entry.get("type") == "link":
        return f"link to {entry.get('src')}"
    extra = f" ({entry.get('owner')}:{entry.get('group')} {entry.get('mode')})"
    return f"{entry.get('type')}{extra}"


def decide(items: list, current: dict) -> list:
    """The items that differ, each as {index, item, reason, diff}; the rest need nothing."""
    salt = bytes.fromhex(current.get("salt", "")) if current.get("salt") else b""
    paths = _paths(current)
    changes = []
    for index, item in enumerate(items):
        kind = item.get("kind")
        if kind not in KINDS:
            raise PlanError(f"item {index} has kind {kind!r}; it must be one of {', '.join(KINDS)}")
        reason, diff = "", None
        if kind == "file":
            entry = paths.get(item["path"], {"type": "missing"})
            data = _data(item)
            if entry.get("type") == "directory":
                raise PlanError(f"{item['path']} is a directory on the host; a file belongs "
                                "there. Move it away, then run again.")
            if entry.get("type") != "file":
                reason = "created" if entry.get("type") == "missing" else \
                    f"replaces a {entry.get('type')}"
            elif item.get("secret"):
                if not hmac.compare_digest(
                        entry.get("hmac", ""),
                        hmac.new(salt, data, hashlib.sha256).hexdigest()):
                    reason = "content changed"
            elif entry.get("sha256") != hashlib.sha256(data).hexdigest():
                reason = "content changed"
            wrong = _attrs(entry, item) if entry.get("type") == "file" else []
            if not reason and wrong:
                reason = ", ".join(wrong)
            if reason:
                header = f"{item['path']}"
                if item.get("secret"):
                    diff = {"before_header": header, "after_header": header,
                            "before": f"({_describe(entry)}: not shown, it holds a secret)\n",
                            "after": f"(file {item.get('owner')}:{item.get('group')} "
                                     f"{item.get('mode')}: not shown, it holds a secret)\n"}
                elif isinstance(item.get("content"), bytes):
                    digest = hashlib.sha256(data).hexdigest()
                    diff = {"before_header": header, "after_header": header,
                            "before": (f"(binary, sha256 {entry.get('sha256')})\n"
                                       if entry.get("type") == "file" else ""),
                            "after": f"(binary, {len(data)} bytes, sha256 {digest})\n"}
                else:
                    diff = {"before_header": header, "after_header": header,
                            "before": entry.get("content", "") if entry.get("type") == "file"
                            else "", "after": data.decode("utf-8")}
                    if entry.get("binary"):
                        diff["before"] = "(binary content)\n"
        elif kind == "directory":
            entry = paths.get(item["path"], {"type": "missing"})
            if entry.get("type") != "directory":
                reason = "created" if entry.get("type") == "missing" else \
                    f"{item['path']} is a {entry.get('type')}, not a directory"
                if entry.get("type") not in ("missing",):
                    raise PlanError(f"{item['path']} is a {entry.get('type')} on the host; a "
                                    "directory belongs there. Move it away, then run again.")
            else:
                reason = ", ".join(_attrs(entry, item))
        elif kind == "link":
            entry = paths.get(item["path"], {"type": "missing"})
            if entry.get("type") == "directory":
                raise PlanError(f"{item['path']} is a directory on the host; a link belongs "
                                "there. Move it away, then run again.")
            if entry.get("type") != "link" or entry.get("src") != item["src"]:
                reason = f"{_describe(entry)} -> link to {item['src']}"
        elif kind == "absent":
            entry = paths.get(item["path"], {"type": "missing"})
            if entry.get("type") == "directory":
                raise PlanError(f"{item['path']} is a directory on the host; the role removes "
                                "only files and links there.")
            if entry.get("type") != "missing":
                reason = f"{_describe(entry)} -> absent"
        elif kind == "group":
            group = current.get("groups", {}).get(item["name"], {})
            missing = [u for u in item.get("members", []) if u not in group.get("members", [])]
            if not group.get("exists"):
                reason = "created" + (f", with {', '.join(missing)}" if missing else "")
            elif missing:
                reason = f"{', '.join(missing)} added"
        elif kind == "divert":
            if current.get("diversions", {}).get(item["path"]) != item["to"]:
                reason = f"diverted to {item['to']}"
        if reason:
            if diff is None:
                diff = _state_diff(item, current, paths)
            changes.append({"index": index, "item": item, "reason": reason, "diff": diff})
    return changes


def _data(item: dict) -> bytes:
    """A file item's content as bytes (a binary's as it is, text as UTF-8)."""
    content = item.get("content", "")
    return content if isinstance(content, bytes) else str(content).encode("utf-8")


def _state_diff(item: dict, current: dict, paths: dict) -> dict:
    """What --diff shows for an item that is not a file's content: its state before and after,
    one line each."""
    kind = item["kind"]
    where = item.get("path") or item.get("name")
    if kind == "group":
        group = current.get("groups", {}).get(item["name"], {})
        before = (f"group {item['name']}: " + ", ".join(group.get("members", []))
                  if group.get("exists") else f"group {item['name']}: absent")
        members = sorted(set(group.get("members", [])) | set(item.get("members", [])))
        after = f"group {item['name']}: " + ", ".join(members)
    elif kind == "divert":
        was = current.get("diversions", {}).get(item["path"])
        before = f"diverted to {was}" if was else "not diverted"
        after = f"diverted to {item['to']}"
    else:
        before = _describe(paths.get(item["path"]))
        after = {"directory": f"directory ({item.get('owner')}:{item.get('group')} "
                              f"{item.get('mode')})",
                 "link": f"link to {item.get('src')}", "absent": "absent"}[kind]
    return {"before_header": where, "after_header": where, "before": before + "\n",
            "after": after + "\n"}


def apply_spec(changes: list, verify: list | None = None) -> tuple:
    """The apply call's spec (no content in it) and the contents that follow it on stdin, in
    the order the spec's items refer to them."""
    items, contents = [], []
    for change in changes:
        item = {k: v for k, v in change["item"].items()
                if k not in ("content", "secret")}
        if change["item"]["kind"] == "file":
            item["content"] = len(contents)
            contents.append(_data(change["item"]))
        items.append(item)
    return {"items": items, "verify": verify or []}, contents


def bundle(contents: list) -> list:
    """The bytes that follow the program on stdin: a JSON line of the sizes, then the data."""
    import json
    return [(json.dumps([len(c) for c in contents]) + "\n").encode(), *contents]


def summary(change: dict) -> dict:
    """What the result says about one change (no content, no secret)."""
    item = change["item"]
    return {"kind": item["kind"], "path": item.get("path") or item.get("name"),
            "reason": change["reason"]}

"""Filters for the pip_wheelhouse role: what a host lacks.

The comparison runs on the controller from one listing per host (file name, SHA-256, size), so
that a host whose wheelhouse is complete costs one task, whatever the number of wheels.
"""
from __future__ import annotations

import hashlib
import json


def delta(host: dict, build: dict, prune: bool = True) -> dict:
    """What one host needs: the files it lacks or holds damaged (sent in one bundle), the files
    no longer wanted (pruned), and whether anything must change at all."""
    have = host.get("files") or {}
    want = build["files"]
    missing = sorted(name for name, entry in want.items()
                     if have.get(name, {}).get("sha256") != entry["sha256"])
    extra = sorted(name for name in have if name not in want)
    bundle = ""
    if missing:
        material = json.dumps([build["key"], [(n, want[n]["sha256"]) for n in missing]])
        bundle = (f"{build['dir']}/bundles/"
                  f"{hashlib.sha256(material.encode()).hexdigest()[:16]}.tar")
    return {
        "missing": missing,
        "extra": extra,
        "bytes": sum(want[name]["size"] for name in missing),
        "bundle": bundle,
        "needed": bool(missing or (prune and extra) or host.get("stale")
                       or (host.get("exists") and not host.get("is_link"))),
    }


def bundles(deltas: list, builds: list) -> list:
    """One archive per platform and set of missing files, however many hosts share it."""
    out, seen = [], set()
    for host_delta, build in zip(deltas, builds):
        if not host_delta or not host_delta.get("bundle") or host_delta["bundle"] in seen:
            continue
        seen.add(host_delta["bundle"])
        out.append({"bundle": host_delta["bundle"], "names": host_delta["missing"],
                    "files": {n: build["files"][n] for n in host_delta["missing"]}})
    return out


def builders(host_platforms: dict, pending: list) -> dict:
    """For each platform with sdist-only releases, the host that builds them: the first of the
    play's hosts of that platform ({platform key: host})."""
    out = {}
    for host, key in host_platforms.items():
        if key in pending and key not in out:
            out[key] = host
    return out


class FilterModule:
    def filters(self):
        return {"pip_wheelhouse_delta": delta,
                "pip_wheelhouse_bundles": bundles,
                "pip_wheelhouse_builders": builders}

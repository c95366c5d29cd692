# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for the pipfeed_wheelhouse role: what a host lacks.

The comparison runs on the controller from one listing per host (file name, SHA-256, size), so
that a host whose wheelhouse is complete costs one task, whatever the number of wheels.
"""
from __future__ import annotations


def delta(host: dict, build: dict, prune: bool = True) -> dict:
    """What one host needs: the files it lacks or holds damaged (sent in one bundle), the files
    no longer wanted (pruned), and whether anything must change at all."""
    have = host.get("files") or {}
    want = build["files"]
    missing = sorted(name for name, entry in want.items()
                     if have.get(name, {}).get("sha256") != entry["sha256"])
    extra = sorted(name for name in have if name not in want)
    return {
        "missing": missing,
        "extra": extra,
        "bytes": sum(want[name]["size"] for name in missing),
        # What the host action sends, in one bundle: [name, file in the controller's cache].
        "send": [[name, want[name]["src"]] for name in missing],
        "needed": bool(missing or (prune and extra) or host.get("stale")
                       or (host.get("exists") and not host.get("is_link"))),
    }


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
        return {"wheelhouse_delta": delta,
                "wheelhouse_builders": builders}

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The argument specs of the collection's roles (each role's meta/argument_specs.yml), read
once per process: preload.py reads them in Ansible's main process, so that the workers it forks
have them already. A template that reads them (query('file') and from_yaml) parses the files
again for every host."""
from __future__ import annotations

from pathlib import Path

import yaml

from ansible.errors import AnsibleActionFail

ROLES = Path(__file__).resolve().parents[2] / "roles"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_specs: dict = {}


def entry_points(role: str) -> dict:
    """The entry points of one of the collection's roles, by name."""
    if role not in _specs:
        path = ROLES / role / "meta" / "argument_specs.yml"
        try:
            with open(path, encoding="utf-8") as handle:
                _specs[role] = (yaml.load(handle, Loader=_LOADER) or {}).get("argument_specs") or {}
        except OSError as err:
            raise AnsibleActionFail(f"{role} is not a role of the collection pipfeed.feed "
                                    f"({path}: {err.strerror})") from None
    return _specs[role]


def options(role: str, entry: str) -> dict:
    """The options of a role's entry point (its argument spec)."""
    points = entry_points(role)
    if entry not in points:
        raise AnsibleActionFail(f"the role {role} has no entry point {entry} in its argument "
                                f"specs (it has {', '.join(sorted(points))})")
    return points[entry].get("options") or {}


def load_all() -> list:
    """Read every role's argument specs; the roles read."""
    roles = [path.parent.parent.name for path in sorted(ROLES.glob("*/meta/argument_specs.yml"))]
    for role in roles:
        entry_points(role)
    return roles

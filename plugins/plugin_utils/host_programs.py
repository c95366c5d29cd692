# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The programs the collection runs or installs on hosts. Each is one file of
plugins/module_utils that uses the standard library only (a locked-down VM has nothing else),
read here as package data, so that the controller can also import the rules it holds (the
credential helper's URL scope and token shape) instead of keeping a copy."""
from __future__ import annotations

import importlib.util
import pkgutil

PACKAGE = "ansible_collections.pipfeed.feed.plugins.module_utils"
# name on the host -> the module_utils file
PROGRAMS = {
    "pipfeed-keyring": "pipfeed_keyring.py",
    "wheelhouse_host.py": "wheelhouse_host.py",
    "host_state.py": "host_state.py",
    "pip_config.py": "pip_config.py",
}
SHEBANG = b"#!/usr/bin/python3\n"


def source(name: str) -> bytes:
    """The program's source, as the collection ships it."""
    if name not in PROGRAMS:
        raise KeyError(f"no host program named {name!r}; the collection has "
                       f"{', '.join(sorted(PROGRAMS))}")
    # Ansible's collection loader reads package data; a plain import of the collection (the
    # tests) has a namespace package there, whose module specs name their files instead.
    data = pkgutil.get_data(PACKAGE, PROGRAMS[name])
    if data is None:
        spec = importlib.util.find_spec(f"{PACKAGE}.{PROGRAMS[name][:-3]}")
        if spec is None or not spec.origin:
            raise FileNotFoundError(f"{PROGRAMS[name]} is missing from {PACKAGE}")
        with open(spec.origin, "rb") as handle:
            data = handle.read()
    return data


def installable(name: str) -> bytes:
    """The program as it is installed on a host: an executable file run by the system's
    python3 (Debian's and Ubuntu's /usr/bin/python3, 3.9 or later)."""
    return SHEBANG + source(name)

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters for the pipfeed_config role: build a feed's index URL, and keep the settings of an
existing pip.conf that the role does not own.

pip reads its configuration with ``configparser.RawConfigParser`` and normalises key names
(lower case, ``_`` as ``-``, no leading ``--``); the merge below does the same, so that "a key
the role owns" means what pip means by it.
"""
from __future__ import annotations

import configparser
import re
from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def normalize_key(name: str) -> str:
    """The key as pip compares it (pip's ``_normalize_name``)."""
    name = name.lower().replace("_", "-")
    return name[2:] if name.startswith("--") else name


def with_username(url: str, username: str = "") -> str:
    """The index URL with a user name (no password) in it, for pip's and uv's keyring lookup:
    pip 23.1 to 26.1 and uv ask a keyring only for a URL that carries one. The input URL
    carries no credentials (preflight refuses them)."""
    if not username or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(str(username), safe='')}@{rest}"


def ini_value(value) -> str:
    """A value as pip.conf holds it: booleans as true/false, lists one item per line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "\n".join(ini_value(item) for item in value)
    return str(value)


def kept_settings(existing: str, owned_keys: list, extra_settings: dict | None = None,
                  keep_existing: bool = True) -> list:
    """The sections of the merged pip.conf besides the role's own [global] keys.

    Returns ``[[section, [[key, value], ...]], ...]``, the existing file's order first, then
    sections that only ``extra_settings`` brings. From the existing file, every key in
    ``owned_keys`` is dropped from every section (a command section such as ``[install]``
    would otherwise override the role's ``[global]`` value), and so is every key that
    ``extra_settings`` sets in that section; everything else is kept as it was.
    """
    owned = {normalize_key(k) for k in owned_keys}
    extra = {str(section).lower(): {normalize_key(str(k)): ini_value(v)
                                    for k, v in (keys or {}).items()}
             for section, keys in (extra_settings or {}).items()}
    sections: list[list] = []
    if keep_existing and existing and existing.strip():
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(existing, source="pip.conf")
        except configparser.Error as error:
            raise AnsibleFilterError(f"the existing pip configuration cannot be parsed "
                                     f"(pip could not read it either): {error}") from error
        for section in parser.sections():
            replaced = owned | set(extra.get(section.lower(), {}))
            items = [[key, value.strip()] for key, value in parser.items(section)
                     if normalize_key(key) not in replaced]
            sections.append([section, items])
    for section, keys in extra.items():
        for entry in sections:
            if entry[0].lower() == section:
                entry[1] += [[k, v] for k, v in keys.items()]
                break
        else:
            sections.append([section, [[k, v] for k, v in keys.items()]])
    global_first = sorted(sections, key=lambda entry: entry[0].lower() != "global")
    return [entry for entry in global_first if entry[1] or entry[0].lower() != "global"]


CREDENTIALS_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


def existing_problem(existing: str, keep_existing: bool = True) -> str:
    """'' when the role may take over an existing pip.conf, else what is wrong with it and the
    fix, as one sentence for preflight's message. Never quotes a value: a hand-written file may
    carry a token.

    A file pip cannot parse stops the run when its settings are to be kept. A file with a
    password in a URL stops it always: the role would keep that file as its backup, and keep a
    setting that is not an index key, in world-readable files.
    """
    if not existing or not existing.strip():
        return ""
    places = []
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(existing, source="pip.conf")
    except configparser.Error as error:
        if CREDENTIALS_IN_URL.search(existing):
            places.append("a line of it")
        elif keep_existing:
            summary = str(error).splitlines()[0]
            return (f"cannot be parsed, so pip cannot read it either ({summary}). Correct "
                    "the file by hand, or set pipfeed_config_keep_existing: false to replace it "
                    "with the role's settings only (the file's other settings are then lost).")
        else:
            return ""
    else:
        for section in parser.sections():
            for key, value in parser.items(section):
                if CREDENTIALS_IN_URL.search(value):
                    places.append(f"[{section}] {key}")
    if not places:
        return ""
    return (f"carries a password or token in a URL ({', '.join(places)}), in a file every user "
            "can read. The role does not take over such a file: it would keep it as its backup. "
            "Remove the credentials from it by hand (and revoke that token: it was readable by "
            "everyone), give the feed's token to the credential helper through the feed's "
            "token_var, token_env or token_file in pipfeed_feeds, then run again.")


def ini_lines(key: str, value) -> str:
    """``key = value`` with continuation lines for multi-line values, as configparser reads."""
    lines = [line.strip() for line in ini_value(value).split("\n") if line.strip()]
    if not lines:
        return f"{key} ="
    return f"{key} = " + "\n    ".join(lines)


def list_line(item: list, section: str = "global") -> str:
    """The line ``pip config list`` prints for a [key, value] the role wrote: key=repr(value)."""
    key, value = item
    lines = [line.strip() for line in ini_value(value).split("\n") if line.strip()]
    return f"{section}.{key}={chr(10).join(lines)!r}"


class FilterModule:
    def filters(self):
        return {
            "with_username": with_username,
            "pip_conf_kept_settings": kept_settings,
            "pip_conf_existing_problem": existing_problem,
            "pip_conf_ini_lines": ini_lines,
            "pip_conf_normalize_key": normalize_key,
            "pip_conf_list_line": list_line,
        }

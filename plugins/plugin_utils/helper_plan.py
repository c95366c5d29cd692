# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the credential helper role reads from a host and what it wants there, as data: the
probe's spec, and from the probe's answer the problems (that stop the host before anything
changes), the warnings, and the items of its three changes (install, tokens, configure) for
pipfeed.feed.host_apply. The role's tasks call these through the filters of
plugins/filter/helper.py; the unit tests call them directly.

No token passes through here but in token_items, whose result goes straight into a no_log
task's arguments.
"""
from __future__ import annotations

import json
import re

from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import (
    helper_config, identity, netrc_hosts)
from ansible_collections.pipfeed.feed.plugins.plugin_utils.platforms import (
    oldest_pip, os_problem, version_tuple)

PROGRAM_DIR = "/usr/local/lib/pipfeed"
PROGRAM = f"{PROGRAM_DIR}/pipfeed-keyring"
# pip 23.1+ on Debian drops its scripts directory (/usr/local/bin) from PATH when it looks for
# keyring, so the helper is on PATH twice.
LINKS = ("/usr/local/bin/keyring", "/usr/bin/keyring")
DISTRO_KEYRING = "/usr/bin/keyring"
# Where python3-keyring's own /usr/bin/keyring goes; the helper hands other requests to it.
DIVERTED = "/usr/bin/keyring.distrib"
ETC = "/etc/pipfeed"
CONFIG = f"{ETC}/credential-helper.json"
TOKEN_DIR = f"{ETC}/tokens"
NETRC = f"{ETC}/netrc"
# pips older than this never ask a keyring: they read ~/.netrc.
KEYRING_PIP = (23, 1)


def token_path(feed: dict) -> str:
    return f"{TOKEN_DIR}/{feed['name']}.token"


def modes(group: str) -> dict:
    """Owner group and modes of the token files and their directory: a dedicated group may
    read them (0640), or root only (0600)."""
    if group:
        return {"group": group, "file": "0640", "dir": "0750"}
    return {"group": "root", "file": "0600", "dir": "0700"}


def probe_spec(feeds: list, users: list, group: str, python: str, pythons: list = ()) -> dict:
    """Everything the role decides on, for one host_probe call. ``pythons``: more Pythons whose
    pips will run on the host (the wheelhouse's venvs)."""
    paths = [{"path": PROGRAM}, {"path": LINKS[0]}, {"path": LINKS[1]},
             {"path": CONFIG, "content": True}, {"path": NETRC, "secret": True},
             {"path": PROGRAM_DIR}, {"path": ETC}, {"path": TOKEN_DIR}]
    paths += [{"path": token_path(feed), "secret": True} for feed in feeds
              if identity(feed) is None]
    paths += [{"path": ".netrc", "user": account} for account in ["root", *users]]
    return {"paths": paths, "pythons": [python, *pythons], "groups": [group] if group else [],
            "users": list(users), "diversions": [DISTRO_KEYRING], "listdir": [TOKEN_DIR],
            "os": True}


def netrc_wanted(setting: str, probe: dict, python: str = "") -> bool:
    """netrc for pips older than 23.1: always, never, or (auto) where any pip that will run on
    the host is older than 23.1 (the system's, the one a venv gets from ensurepip, the distro's
    pip wheel, a venv's), or none is known (an unknown pip gets both ways)."""
    if setting in ("always", "never"):
        return setting == "always"
    oldest = oldest_pip(list(probe.get("pythons", {}).values()))
    return not oldest or version_tuple(oldest) < KEYRING_PIP


def setting_problems(feeds, group, users) -> list:
    """What is wrong with the role's settings, one message (the feeds, the group, the users);
    [] when they fit together. The feeds' own check is pipfeed_common's, and each token's is
    the token lookup's."""
    if not isinstance(feeds, list) or not feeds:
        return ["pipfeed_feeds is empty: the credential helper has no feed to answer for. Define "
                "the feeds in group_vars (see inventory/sample/group_vars/all/feed.yml), or leave "
                "pipfeed_credential_helper off."]
    group_ok = isinstance(group, str) and (
        group == "" or re.match(r"^[a-z_][a-z0-9_-]{0,31}$", group) is not None)
    users_ok = isinstance(users, list) and all(isinstance(user, str) for user in users)
    if group_ok and users_ok and (not users or group):
        return []
    return ["The credential helper's settings do not fit together: "
            "pipfeed_credential_helper_group must be a group name, or \"\" for root-only token "
            "files; pipfeed_credential_helper_users a list of account names, which needs a group "
            "(with group \"\" only root reads the tokens)."]


def plan(probe: dict, feeds: list, settings: dict) -> dict:
    """The decision for one host: problems, warnings, netrc on or off, and the non-secret
    items of the install and configure steps. ``settings``: username, group, users, netrc,
    python."""
    paths = {entry["path"]: entry for entry in probe.get("paths", [])}
    homes = [entry for entry in probe.get("paths", []) if entry.get("user")]
    group, users = settings.get("group", ""), list(settings.get("users", []))
    owner = modes(group)
    problems, warnings = [], []
    unsupported = os_problem(probe.get("os", {}))
    if unsupported:
        problems.append(unsupported)

    missing = [u for u in users if not probe.get("users", {}).get(u, {}).get("exists")]
    if missing:
        problems.append(
            f"pipfeed_credential_helper_users names {', '.join(missing)}, which "
            f"{'does' if len(missing) == 1 else 'do'} not exist on this host. The role adds "
            f"existing accounts to the group {group} and does not create accounts: create "
            "them first, or remove them from the list.")

    local = paths.get(LINKS[0], {"type": "missing"})
    if local.get("type") != "missing" and not (local.get("type") == "link"
                                               and local.get("src") == PROGRAM):
        problems.append(
            f"{LINKS[0]} on this host is not the credential helper: it is most likely the "
            "keyring package installed with pip as root. The helper must be the `keyring` that "
            "pip and uv find first, and this file would take its place. Remove it (python3 -m "
            "pip uninstall keyring; on Debian 12 and later add --break-system-packages), or "
            "install keyring into a virtual environment or with pipx instead; Debian's "
            "python3-keyring (/usr/bin/keyring) is fine and keeps working for other services.")

    distro = paths.get(LINKS[1], {"type": "missing"})
    diverted_to = probe.get("diversions", {}).get(DISTRO_KEYRING)
    foreign = distro.get("type") != "missing" and not (distro.get("type") == "link"
                                                       and distro.get("src") == PROGRAM)
    divert = foreign and diverted_to is None
    if foreign and diverted_to not in (None, DIVERTED):
        problems.append(
            f"{DISTRO_KEYRING} on this host is another program (python3-keyring?), and it "
            f"cannot be diverted to {DIVERTED}: it is already diverted to {diverted_to}. Remove "
            "that diversion (dpkg-divert --rename --remove /usr/bin/keyring), or uninstall the "
            "program.")

    netrc = netrc_wanted(settings.get("netrc", "auto"), probe, settings.get("python", ""))
    identities = [feed["name"] for feed in feeds if identity(feed) is not None]
    if netrc and identities:
        problems.append(
            f"feeds {', '.join(identities)} take their token from the VM's managed identity, "
            "which only pip 23.1 and later and uv ask for (through the helper); this host "
            f"also has an older pip (or none known: {settings.get('python', 'python3')}'s own, "
            "or the one its venvs get), which reads a static ~/.netrc and so would get no "
            "token. Give the host pip 23.1 or later (python3 -m pip install --upgrade pip in its "
            "venvs) or use uv, then set pipfeed_credential_helper_netrc: never to accept that "
            "older pips get no token there; or give these feeds a token_var, token_env or "
            "token_file instead of azure_identity.")
        netrc = False
    if netrc:
        for host, first, others in netrc_hosts(feeds):
            if others:
                warnings.append(
                    f"feeds {', '.join([feeds[first]['name'], *others])} are all on {host}. "
                    "netrc has one entry per host, so pips older than 23.1 get the token of "
                    f"{feeds[first]['name']} for every one of them (and send it to any feed on "
                    "that host); pip 23.1 and later and uv get each feed's own token through "
                    "the helper.")
        for entry in homes:
            if entry.get("type") not in ("missing",) and not (
                    entry.get("type") == "link" and entry.get("src") == NETRC):
                warnings.append(
                    f"{entry['path']} of {entry['user']} is not the helper's link to {NETRC}, "
                    "so the role leaves it alone and pips older than 23.1 run by "
                    f"{entry['user']} do not get the feed's token. Remove it (or move its "
                    "entries elsewhere) and run the role again; pip 23.1 and later and uv use "
                    "the helper anyway.")

    install = []
    if group:
        install.append({"kind": "group", "name": group, "members": users})
    install += [{"kind": "directory", "path": PROGRAM_DIR, "owner": "root", "group": "root",
                 "mode": "0755"},
                {"kind": "file", "path": PROGRAM, "owner": "root", "group": "root",
                 "mode": "0755", "program": "pipfeed-keyring"}]
    if divert:
        install.append({"kind": "divert", "path": DISTRO_KEYRING, "to": DIVERTED})
    install += [{"kind": "link", "path": link, "src": PROGRAM} for link in LINKS]
    install += [{"kind": "directory", "path": ETC, "owner": "root", "group": "root",
                 "mode": "0755"},
                {"kind": "directory", "path": TOKEN_DIR, "owner": "root",
                 "group": owner["group"], "mode": owner["dir"]}]

    wanted = {token_path(feed) for feed in feeds if identity(feed) is None}
    present = probe.get("listdir", {}).get(TOKEN_DIR, [])
    config = json.dumps(helper_config(feeds, settings.get("username", "pipfeed"), TOKEN_DIR),
                        indent=2) + "\n"
    configure = [{"kind": "file", "path": CONFIG, "owner": "root", "group": "root",
                  "mode": "0644", "content": config,
                  "validate": f"env PIPFEED_HELPER_CONFIG=%s {PROGRAM} --check"}]
    configure += [{"kind": "absent", "path": f"{TOKEN_DIR}/{name}"} for name in present
                  if name.endswith(".token") and f"{TOKEN_DIR}/{name}" not in wanted]
    for entry in homes:
        ours = entry.get("type") == "link" and entry.get("src") == NETRC
        if netrc and (entry.get("type") == "missing" and not entry.get("error") or ours):
            configure.append({"kind": "link", "path": entry["path"], "src": NETRC})
        elif not netrc and ours:
            configure.append({"kind": "absent", "path": entry["path"]})

    # After a change, the helper's self-test as root and as each member of the group; the
    # configuration's own check (validate, above) is already the test as root where the
    # configuration is written in the same call.
    config_changes = paths.get(CONFIG, {}).get("content") != config
    verify = ([] if config_changes else [[PROGRAM, "--check"]]) + [
        ["runuser", "-u", user, "--", PROGRAM, "--check"] for user in users]
    return {"problems": problems, "warnings": warnings, "netrc": netrc,
            "installed": paths.get(CONFIG, {}).get("type") == "file",
            # The helper's configuration changes on this host (a feed of the managed identity
            # is then asked from the host before anything is installed).
            "config_changes": config_changes,
            "install": install, "configure": configure, "verify": verify,
            "token_owner": owner}


def token_items(feeds: list, tokens: list, decided: dict, username: str) -> list:
    """The token files and the netrc (or its removal), with their secret content."""
    owner = decided["token_owner"]
    items = [{"kind": "file", "path": token_path(feed), "content": f"{token}\n",
              "owner": "root", "group": owner["group"], "mode": owner["file"], "secret": True}
             for feed, token in zip(feeds, tokens) if identity(feed) is None]
    if decided["netrc"]:
        # Two lines per host: the plain host for current pips, and user@host for pip 20.3 and
        # 23.0, whose netrc lookup uses the URL's netloc with the user name in it (the feed
        # URLs in pip.conf carry it for the helper).
        lines = []
        for host, first, _ in netrc_hosts(feeds):
            for machine in (host, f"{username}@{host}"):
                lines.append(f"machine {machine} login {username} password {tokens[first]}\n")
        items.append({"kind": "file", "path": NETRC, "content": "".join(lines),
                      "owner": "root", "group": owner["group"], "mode": owner["file"],
                      "secret": True})
    else:
        items.append({"kind": "absent", "path": NETRC})
    return items


def feed_check_message(verdict: dict, hostname: str, feeds: list) -> str:
    """What a host's check of a new token against its feed means, and the fix."""
    from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import token_source
    feed = next((f for f in feeds if f.get("name") == verdict["name"]), {})
    status = verdict.get("status", -1)
    if verdict.get("identity"):
        if status == -2:
            return (f"{hostname}: no token for feed {verdict['name']} from the VM's managed "
                    f"identity: {verdict.get('error', 'no answer')}. Nothing was changed.")
        if status in (401, 403):
            return (f"{hostname}: feed {verdict['name']} ({verdict['url']}) answered {status} to "
                    "the token of the VM's managed identity. The usual causes: the identity was "
                    "not added to the Azure DevOps organization (Organization settings, Users: "
                    "add its service principal), or it has no Reader (or Feed Reader) "
                    "permission on the feed (Artifacts, the feed's settings, Permissions). "
                    "Nothing was changed.")
    if status in (401, 403):
        meaning = ("token not accepted" if status == 401
                   else "token accepted but not allowed to read the feed")
        return (f"{hostname}: feed {verdict['name']} ({verdict['url']}) answered {status} "
                f"({meaning}) to the token from {token_source(feed)}. Give it a valid personal "
                "access token with the scope Packaging (Read) for this feed (Azure DevOps: User "
                "settings, Personal access tokens; the token's organization must own the feed, "
                "and it must not have expired). The token on the host was left as it was.")
    said = f"HTTP {status}" if status > 0 else " ".join(
        str(verdict.get("error") or "no answer").split())[:200]
    return (f"{hostname} cannot ask feed {verdict['name']} ({verdict['url']}) whether its token "
            f"is valid: {said}. Check the URL, DNS, the proxy and the firewall from the host "
            "(and that the feed's CA is in the system store). To install without asking, set "
            "pipfeed_credential_helper_check_token: false. The token on the host was left as "
            "it was.")

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the pipfeed_config role decides, as data: the problems of its settings, and from the
host's probe the problems (that stop the host before anything changes), the warnings, the
platform line of the report, and the content of /etc/pip.conf and /etc/uv/uv.toml. The role's
tasks call these through the filters of plugins/filter/config.py; the unit tests call them
directly.

Each task of a play costs every host a worker process, and a worker compiles every template it
evaluates: the decisions live here, so that each task of the role evaluates one expression.

``settings`` is a dict of the role's variables without their prefix (``mode`` for
pipfeed_mode, ``feeds`` for pipfeed_feeds, ``cert`` for pipfeed_config_cert, ...; see
SETTINGS). No token passes through here but in setting_problems' ``tokens``, of which only
whether one appears in the written settings is returned.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.pipfeed.feed.plugins.filter.config import (
    ini_lines, kept_settings, existing_problem, normalize_key, with_username)
from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import feed_url
from ansible_collections.pipfeed.feed.plugins.plugin_utils.platforms import (
    no_pip_can_use, os_problem, pip_summary, version_tuple)

PIP_CONF = "/etc/pip.conf"
UV_DIR = "/etc/uv"
UV_TOML = "/etc/uv/uv.toml"

# The role's variables a plan reads: the name in ``settings`` and the variable it comes from.
SETTINGS = {
    "feeds": "pipfeed_feeds", "mode": "pipfeed_mode",
    "credential_helper": "pipfeed_credential_helper",
    "wheelhouse": "pipfeed_wheelhouse", "wheelhouse_path": "pipfeed_wheelhouse_path",
    "index_username": "pipfeed_config_index_username", "cert": "pipfeed_config_cert",
    "proxy": "pipfeed_config_proxy", "timeout": "pipfeed_config_timeout",
    "retries": "pipfeed_config_retries", "no_input": "pipfeed_config_no_input",
    "extra_settings": "pipfeed_config_extra_settings",
    "keep_existing": "pipfeed_config_keep_existing", "uv_enabled": "pipfeed_config_uv_enabled",
    "uv_install": "pipfeed_config_uv_install", "uv_version": "pipfeed_config_uv_version",
    "uv_system_certs": "pipfeed_config_uv_system_certs",
    "uv_extra_settings": "pipfeed_config_uv_extra_settings", "python": "pipfeed_config_python",
    "pypi_probe_url": "pipfeed_config_pypi_probe_url",
    "fail_on_unreachable_pypi": "pipfeed_config_fail_on_unreachable_pypi",
}

# Index selection belongs to the role whatever it renders: these keys are removed from every
# section of an existing pip.conf.
INDEX_KEYS = ["index-url", "extra-index-url", "no-index", "find-links", "trusted-host"]
# pip.conf keys the role writes itself; pipfeed_config_extra_settings may not set them.
OWNED_KEYS = INDEX_KEYS + ["cert", "proxy", "timeout", "retries", "no-input", "keyring-provider"]
# uv.toml keys the role writes itself; pipfeed_config_uv_extra_settings may not set them.
UV_OWNED_KEYS = ["index", "index-url", "extra-index-url", "find-links", "no-index", "offline",
                 "keyring-provider", "system-certs", "native-tls", "allow-insecure-host"]

USERNAME = re.compile(r"^[A-Za-z0-9._~-]+$")
PROXY = re.compile(r"^((https?|socks5h?)://)?[A-Za-z0-9.\[\]:-]+(:[0-9]+)?/?$")


def feed_list(settings: dict) -> list:
    return [feed_url(feed) for feed in settings["feeds"]]


def index_urls(settings: dict) -> list:
    """The feed URLs as pip.conf and uv.toml carry them: with the index user name, if any."""
    return [with_username(url, settings["index_username"]) for url in feed_list(settings)]


def insecure_hosts(settings: dict) -> list:
    """Host (and port) of every feed that is served over plain http on purpose."""
    found = []
    for feed, url in zip(settings["feeds"], feed_list(settings)):
        if isinstance(feed, dict) and feed.get("insecure_http"):
            netloc = urlsplit(url).netloc
            if netloc not in found:
                found.append(netloc)
    return found


def _path_type(probe: dict, index: int) -> str:
    paths = (probe or {}).get("paths") or []
    return paths[index].get("type", "missing") if len(paths) > index else "missing"


def find_links(settings: dict, probe: dict) -> bool:
    return (settings["mode"] == "offline" or boolean(settings["wheelhouse"], strict=False)
            or _path_type(probe, 3) == "directory")


def global_keys(settings: dict, probe: dict) -> list:
    """The pip.conf [global] keys the role renders, in order: [[key, value], ...]."""
    mode, urls = settings["mode"], index_urls(settings)
    keys: list = []
    if mode == "primary" and urls:
        keys.append(["index-url", urls[0]])
    if mode == "extra" and urls:
        keys.append(["extra-index-url", urls])
    if mode == "primary" and len(urls) > 1:
        keys.append(["extra-index-url", urls[1:]])
    if mode == "offline":
        keys.append(["no-index", True])
    if find_links(settings, probe):
        keys.append(["find-links", settings["wheelhouse_path"]])
    insecure = insecure_hosts(settings)
    if mode != "offline" and insecure:
        keys.append(["trusted-host", insecure])
    for key in ("cert", "proxy"):
        if len(settings[key]) > 0:
            keys.append([key, settings[key]])
    for key in ("timeout", "retries"):
        if settings[key] is not None:
            keys.append([key, settings[key]])
    keys.append(["no-input", boolean(settings["no_input"], strict=False)])
    if boolean(settings["credential_helper"], strict=False):
        keys.append(["keyring-provider", "subprocess"])
    return keys


def _existing(probe: dict) -> str:
    paths = (probe or {}).get("paths") or []
    return (paths[0].get("content") or "") if paths else ""


def kept(settings: dict, probe: dict) -> list:
    """The settings of an existing /etc/pip.conf that the role keeps (pip_conf_kept_settings)."""
    owned = INDEX_KEYS + [key for key, _ in global_keys(settings, probe)]
    return kept_settings(_existing(probe), owned, settings["extra_settings"],
                         settings["keep_existing"])


def _header(managed: str) -> str:
    # What ``{{ ansible_managed | comment }}`` renders.
    from ansible.plugins.filter.core import comment
    return comment(managed)


def pip_conf(settings: dict, probe: dict, managed: str) -> str:
    mode = settings["mode"]
    lines = [_header(managed),
             f"# pip's system-wide configuration, mode \"{mode}\" (role pipfeed_config).",
             "# The index settings here are replaced on every run; other settings are kept. No "
             "credentials",
             "# belong in this file: the feed's token is answered by the credential helper.",
             "[global]"]
    lines += [ini_lines(key, value) for key, value in global_keys(settings, probe)]
    for section, items in kept(settings, probe):
        if str(section).lower() != "global":
            lines += ["", f"[{section}]"]
        lines += [ini_lines(key, value) for key, value in items]
    return "\n".join(lines) + "\n"


def _json(value) -> str:
    # What Ansible's ``to_json`` writes, which TOML reads as the same string, list or number.
    return json.dumps(value)


def uv_toml(settings: dict, probe: dict, managed: str) -> str:
    mode = settings["mode"]
    lines = [_header(managed),
             f"# uv's system-wide configuration, mode \"{mode}\" (role pipfeed_config).",
             "# uv does not read pip.conf. No credentials belong in this file: the feed's token "
             "is answered",
             "# by the credential helper (or netrc, or UV_INDEX_<NAME>_USERNAME/_PASSWORD)."]
    if mode == "offline":
        lines += ["offline = true", "no-index = true"]
    if find_links(settings, probe):
        lines.append(f"find-links = {_json([settings['wheelhouse_path']])}")
    if boolean(settings["credential_helper"], strict=False):
        lines.append('keyring-provider = "subprocess"')
    if boolean(settings["uv_system_certs"], strict=False):
        lines.append("system-certs = true")
    insecure = insecure_hosts(settings)
    if mode != "offline" and insecure:
        lines.append(f"allow-insecure-host = {_json(insecure)}")
    # Jinja's dictsort: by key, case-insensitively.
    for key, value in sorted(settings["uv_extra_settings"].items(),
                             key=lambda item: str(item[0]).lower()):
        lines.append(f"{key} = {_json(value)}")
    if mode != "offline":
        urls = index_urls(settings)
        for number, feed in enumerate(settings["feeds"]):
            lines += ["", "[[index]]", f"name = {_json(feed['name'])}",
                      f"url = {_json(urls[number])}"]
            if mode == "primary" and number == 0:
                lines += ["# The only default index: uv does not ask PyPI.", "default = true"]
    return "\n".join(lines) + "\n"


def _extra_keys(extra: dict) -> list:
    if not isinstance(extra, dict):
        return []
    return [normalize_key(str(key)) for keys in extra.values() if isinstance(keys, dict)
            for key in keys]


def setting_problems(settings: dict, tokens: list) -> list:
    """Everything wrong with the role's settings, one sentence each (naming the variable and
    the fix); empty when they are usable. ``tokens``: the feeds' usable tokens, of which only
    whether one appears in the settings written to world-readable files is said."""
    s = settings
    problems = []
    if not (s["mode"] == "offline" or len(s["feeds"]) > 0):
        problems.append(
            f"pipfeed_feeds is empty, so mode '{s['mode']}' has no index to point at. Define the "
            "feed in group_vars (see inventory/sample/group_vars/all/feed.yml), or use "
            "pipfeed_mode: offline.")
    username = s["index_username"]
    if not (isinstance(username, str) and (username == "" or USERNAME.match(username))):
        problems.append(
            "pipfeed_config_index_username must be empty or a plain user name (letters, digits, "
            "'.', '_', '~', '-'), never a token: it is written into the feed URLs of "
            "world-readable files.")
    proxy = s["proxy"]
    if not (len(proxy) == 0 or ("@" not in str(proxy) and PROXY.match(str(proxy)))):
        problems.append(
            "pipfeed_config_proxy must be a proxy URL without credentials "
            "(http://proxy.example:3128); /etc/pip.conf is world-readable. Use a proxy that "
            "authenticates the host, or give pip the proxy credentials through a root-only "
            "environment instead.")
    extra = s["extra_settings"]
    if not (isinstance(extra, dict) and all(isinstance(v, dict) for v in extra.values())
            and not set(_extra_keys(extra)) & set(OWNED_KEYS)):
        problems.append(
            "pipfeed_config_extra_settings must map pip.conf sections to settings "
            "({global: {disable-pip-version-check: true}}), and may not set what the role owns "
            f"({', '.join(OWNED_KEYS)}): use the pipfeed_config_* variable for it instead.")
    uv_extra = s["uv_extra_settings"]
    if not (isinstance(uv_extra, dict) and not set(uv_extra) & set(UV_OWNED_KEYS)
            and not any(isinstance(v, dict) for v in uv_extra.values())):
        problems.append(
            "pipfeed_config_uv_extra_settings must map top-level uv.toml keys to strings, "
            "numbers, booleans or lists, and may not set what the role writes "
            f"({', '.join(UV_OWNED_KEYS)}).")
    written = json.dumps([feed_list(s), s["proxy"], s["cert"], s["extra_settings"],
                          s["uv_extra_settings"]])
    if any(len(token) >= 6 and token in written for token in tokens or [] if token):
        problems.append(
            "A feed's token appears in the pipfeed_config settings (a feed URL, "
            "pipfeed_config_proxy, pipfeed_config_cert, pipfeed_config_extra_settings or "
            "pipfeed_config_uv_extra_settings). Remove it: the token belongs to the credential "
            "helper (role pipfeed_credential_helper) only.")
    return problems


def _python(settings: dict, probe: dict) -> dict:
    return ((probe or {}).get("pythons") or {}).get(settings["python"]) or {}


def _pypi_message(settings: dict, probe: dict, hostname: str) -> str:
    error = (((probe or {}).get("http") or [{}])[0] or {}).get("error", "")
    return (f"{settings['pypi_probe_url']} does not answer from {hostname} ({error}). In "
            "pipfeed_mode extra, pip asks PyPI as well as the feed for every package and waits "
            "for its timeout each time. Set pipfeed_mode: primary for this host or group (the feed "
            "as the only index), or make PyPI reachable.")


def _pypi_silent(settings: dict, probe: dict) -> bool:
    answers = (((probe or {}).get("http") or [{}])[0] or {}).get("answers", True)
    return settings["mode"] == "extra" and not answers


def host_problems(settings: dict, probe: dict, hostname: str) -> list:
    """Everything wrong with the host, one sentence each; empty when the role may go on. A host
    with no pip is fine (the configuration is for its venvs, and for uv); a host whose Python
    does not run, or whose OS family the roles do not support, stops here."""
    s, probe = settings, probe or {}
    problems = []
    os_said = os_problem(probe.get("os") or {}, hostname)
    if os_said:
        problems.append(os_said)
    python = _python(s, probe)
    if "error" in python:
        problems.append(
            f"pipfeed_config_python is {s['python']}, which does not run on {hostname} "
            f"({python['error']}). Install python3 there, or point pipfeed_config_python at the "
            "host's Python.")
    writable = probe.get("writable") or {}
    if not all(writable.values()):
        refused = ", ".join(path for path, ok in writable.items() if not ok)
        problems.append(
            f"{refused} on {hostname} is not writable, even for root (a read-only file system, "
            f"or an immutable image), so {PIP_CONF} cannot be written. Make it writable (mount "
            "-o remount,rw; on an immutable image, bake the configuration into the image), then "
            "run again. Nothing was changed.")
    if not (len(s["cert"]) == 0 or _path_type(probe, 4) == "file"):
        problems.append(
            f"pipfeed_config_cert is {s['cert']}, which is not a file on {hostname}. Put the CA "
            "bundle there first (for the system store on Debian: "
            "/etc/ssl/certs/ca-certificates.crt), or leave pipfeed_config_cert empty.")
    existing = existing_problem(_existing(probe), s["keep_existing"])
    if existing:
        problems.append(f"{PIP_CONF} on {hostname} (written by hand, or by another tool) "
                        f"{existing}")
    if _pypi_silent(s, probe) and s["fail_on_unreachable_pypi"]:
        problems.append("pipfeed_config_pypi_probe_url " + _pypi_message(s, probe, hostname))
    return problems


def warnings(settings: dict, probe: dict, hostname: str) -> list:
    """What makes installs slow or empty on the host; the run goes on."""
    s, probe = settings, probe or {}
    said = []
    if no_pip_can_use(_python(s, probe), boolean(s["uv_install"], strict=False)):
        said.append(
            f"{hostname} has no pip that can use the configuration yet: {s['python']} has no pip "
            "and no venv module. The files are written; install python3-venv (venvs then get pip "
            "from python3-pip-whl) or python3-pip, or set pipfeed_config_uv_install: true for "
            "uv.")
    if s["mode"] == "offline" and _path_type(probe, 3) != "directory":
        said.append(
            f"pipfeed_mode is offline but {s['wheelhouse_path']} does not exist on {hostname} "
            "yet: pip and uv will find nothing to install until the wheelhouse is synced there.")
    if _pypi_silent(s, probe) and not s["fail_on_unreachable_pypi"]:
        said.append(_pypi_message(s, probe, hostname))
    return said


def platform(settings: dict, probe: dict) -> str:
    """One line for the report: the OS, Python, machine and pips."""
    probe = probe or {}
    host_os = probe.get("os") or {}
    python = _python(settings, probe)
    line = (f"{host_os.get('pretty_name', 'unknown OS')}, Python {python.get('version', '?')} "
            f"({host_os.get('machine', '?')}), {pip_summary(python, settings['python'])}")
    if boolean(settings["uv_install"], strict=False):
        line += f", uv {settings['uv_version']} installed by this role"
    return line


def report(settings: dict, probe: dict, hostname: str) -> dict:
    """The host check of preflight: problems, and when there are none, the report's lines."""
    problems = host_problems(settings, probe, hostname)
    lines = []
    if not problems:
        said = warnings(settings, probe, hostname)
        lines = [platform(settings, probe)] + [
            "WARNING: " + re.sub(r"\s+", " ", line) for line in said]
    return {"problems": problems, "lines": lines}


def _checks(settings: dict, probe: dict) -> tuple:
    """How the new pip.conf and uv.toml are checked before they replace the old ones (None:
    not at all), as item options of pipfeed.feed.host_apply. pip.conf: by the parser pip reads
    it with (configparser's RawConfigParser, in the locale's encoding; pip refuses a file only
    when that parser does), on every host, with or without pip; importing pip's own loader
    would cost Debian 11's pip half a second per host. After the change, the verify step asks
    pip itself, as the login user. uv.toml: by tomllib, on Python 3.11 and later. Each check
    is the parser of pipfeed_config_python: in the apply call's own process when that is the
    Python the call runs in (parse, decided on the host), else in a process of its own
    (validate)."""
    python = settings["python"]
    found = _python(settings, probe)
    executable = found.get("executable") or ""
    pip_check = {"validate": f"{python} -c \"import configparser, sys; "
                             "configparser.RawConfigParser().read_file(open(sys.argv[1]))\" %s",
                 "parse": {"parser": "ini", "executable": executable}}
    toml_check = ({"validate": f"{python} -c \"import sys, tomllib; "
                               "tomllib.load(open(sys.argv[1], 'rb'))\" %s",
                   "parse": {"parser": "toml", "executable": executable}}
                  if version_tuple(found.get("version") or "3.0") >= (3, 11) else None)
    return pip_check, toml_check


def items(settings: dict, probe: dict, managed: str, uv_items: list = ()) -> list:
    """What pipfeed.feed.host_apply writes: pip.conf, and with uv enabled /etc/uv and uv.toml,
    and with pipfeed_config_uv_install uv's programs (``uv_items``)."""
    pip_check, toml_check = _checks(settings, probe)
    wanted = [{"kind": "file", "path": PIP_CONF, "owner": "root", "group": "root",
               "mode": "0644", "backup": True, "content": pip_conf(settings, probe, managed),
               **pip_check}]
    if settings["uv_enabled"]:
        toml = {"kind": "file", "path": UV_TOML, "owner": "root", "group": "root",
                "mode": "0644", "backup": True, "content": uv_toml(settings, probe, managed)}
        if toml_check:
            toml.update(toml_check)
        wanted += [{"kind": "directory", "path": UV_DIR, "owner": "root", "group": "root",
                    "mode": "0755"}, toml]
    if boolean(settings["uv_install"], strict=False):
        wanted += list(uv_items)
    return wanted

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The feed model: what an item of ``pipfeed_feeds`` is, how it becomes an index URL, which
token source it names, and what a role's check says when it is wrong. Every role, the filters,
the token lookup and the tests use this module, so a feed means the same thing everywhere.

An item (documented in roles/pipfeed_common/meta/argument_specs.yml, which argument validation
reads, and in inventory/sample/group_vars/all/feed.yml)::

    name:           letters, digits, '.', '_', '-'; names the uv index and the token file
    url:            a PEP 503 index URL (https; no credentials, query or fragment), or
    azure:          {organization, project (optional), feed}: the Azure Artifacts index URL
    token_var:      the name of an inventory variable holding the token (keep it in Vault), or
    token_env:      the name of a controller environment variable holding it, or
    token_file:     a file on the controller holding it (one line)
    azure_identity: {} (or {client_id | object_id | msi_res_id: ...}): each host's token comes
                    from the VM's Azure managed identity, asked of IMDS at every use; the host
                    holds no secret. The feed may then also name one of the three sources
                    above, for the controller's own requests (wheelhouse build, publish).
    insecure_http:  true allows an http:// url (the token then crosses the network in clear)

The URL scope rule (which URLs are a feed's own) and the token shape rule live in the
credential helper (plugins/module_utils/pipfeed_keyring.py), which runs on the hosts with the
standard library only; this module imports them from there, so the controller and the helper
can never disagree.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.pipfeed.feed.plugins.module_utils.pipfeed_keyring import (
    token_from_text, token_problem, url_space)

AZURE_HOST = "https://pkgs.dev.azure.com"
TOKEN_SOURCES = ("token_var", "token_env", "token_file")
FEED_KEYS = ("name", "url", "azure") + TOKEN_SOURCES + ("azure_identity", "insecure_http")
IDENTITY_KEYS = ("client_id", "object_id", "msi_res_id")
AZURE_DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
AZURE_KEYS = ("organization", "project", "feed")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What an example in a message looks like.
EXAMPLE = ("{name: python-feed, azure: {organization: contoso, feed: python-feed}, "
           "token_var: pipfeed_token_python_feed}")

__all__ = ["TokenError", "feed_url", "feed_problems", "token_sources", "token_source",
           "token_problem", "token_from_text", "resolve_token", "url_space", "helper_config",
           "netrc_hosts", "redact_url"]


class TokenError(Exception):
    """A token that cannot be used; the message names the feed, its source and the fix, and
    never holds any part of the token."""


def feed_url(feed) -> str:
    """The feed's PEP 503 index URL: its ``url``, or the Azure Artifacts URL built from the
    shorthand, ``https://pkgs.dev.azure.com/<org>[/<project>]/_packaging/<feed>/pypi/simple/``.
    An incomplete entry gives "" (feed_problems says what is missing)."""
    if not isinstance(feed, dict):
        return ""
    if feed.get("url"):
        return str(feed["url"])
    azure = feed.get("azure")
    if not isinstance(azure, dict) or not azure.get("organization") or not azure.get("feed"):
        return ""
    parts = [AZURE_HOST, str(azure["organization"])]
    if azure.get("project"):
        parts.append(str(azure["project"]))
    return "/".join(parts + ["_packaging", str(azure["feed"]), "pypi", "simple", ""])


def redact_url(url: str) -> str:
    """The URL with anything between // and @ replaced, for messages."""
    return re.sub(r"//[^/@]*@", "//***@", str(url))


def token_sources(feed) -> list:
    """Which of token_var, token_env and token_file the feed names."""
    if not isinstance(feed, dict):
        return []
    return [key for key in TOKEN_SOURCES if feed.get(key) not in (None, "")]


def identity(feed):
    """The feed's managed identity ({} for the system-assigned one), or None."""
    if isinstance(feed, dict) and isinstance(feed.get("azure_identity"), dict):
        return feed["azure_identity"]
    return None


def token_source(feed, hosts: bool = False) -> str:
    """How a message names the token's source: "the variable x (token_var)". With ``hosts``,
    the source of the hosts' token: the managed identity of a feed that has one, even where the
    feed names a controller source too."""
    sources = token_sources(feed)
    if identity(feed) is not None and (hosts or not sources):
        return "the VM's managed identity (azure_identity)"
    if len(sources) != 1:
        return "no single token source"
    key = sources[0]
    label = {"token_var": "the variable", "token_env": "the controller environment variable",
             "token_file": "the controller file"}[key]
    return f"{label} {feed[key]} ({key})"


def _url_problem(feed: dict, url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "it is not a URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return ("it carries credentials. Remove them: pip.conf and uv.toml are world-readable, "
                "and the feed's token belongs to the credential helper (role "
                "pipfeed_credential_helper, through the feed's token_var, token_env or "
                "token_file)")
    if parts.scheme == "http" and feed.get("insecure_http") is not True:
        return ("it is plain http. Use https, or set insecure_http: true on this feed if the "
                "index really has no TLS (the token would then cross the network in clear)")
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query \
            or parts.fragment or re.search(r"\s", url):
        return ("it must be an absolute https URL with a host name and no query or fragment, "
                "such as https://pkgs.dev.azure.com/ORG/_packaging/FEED/pypi/simple/")
    return ""


def feed_problems(feeds, need_token: bool = False) -> list:
    """Everything wrong with a ``pipfeed_feeds`` list, one sentence per problem, each naming
    the item (``pipfeed_feeds[0] (python-feed)``) and the fix; [] when it is usable. Never
    quotes a token and never a URL's credentials. ``need_token``: every feed must name exactly
    one token source (the roles that hand a token out); otherwise at most one."""
    if feeds is None:
        feeds = []
    if not isinstance(feeds, list):
        return [f"pipfeed_feeds must be a list of feeds, such as [{EXAMPLE}]."]
    problems: list = []
    seen_names: dict = {}
    seen_spaces: dict = {}
    for index, feed in enumerate(feeds):
        if not isinstance(feed, dict):
            problems.append(f"pipfeed_feeds[{index}] is not a mapping; each feed is one, such "
                            f"as {EXAMPLE}.")
            continue
        name = feed.get("name")
        label = f"pipfeed_feeds[{index}] ({name if isinstance(name, str) and name else 'no name'})"
        unknown = sorted(str(key) for key in feed if key not in FEED_KEYS)
        if unknown:
            problems.append(f"{label} has unknown keys {', '.join(unknown)}; a feed has "
                            f"{', '.join(FEED_KEYS)}.")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(f"{label} is not a valid feed: it needs a name of letters, digits, "
                            "'.', '_' and '-' (it names the uv index and the token file).")
        if ("url" in feed) == ("azure" in feed):
            problems.append(f"{label} is not a valid feed: it needs either url (the PEP 503 "
                            "index URL) or azure: {organization, project (optional), feed}, "
                            "not both.")
        elif "azure" in feed:
            azure = feed["azure"]
            missing = [key for key in ("organization", "feed")
                       if not isinstance(azure, dict) or not azure.get(key)]
            extra = sorted(str(k) for k in azure if k not in AZURE_KEYS) \
                if isinstance(azure, dict) else []
            if missing or extra:
                problems.append(f"{label} is not a valid feed: azure: {{organization, project "
                                f"(optional), feed}} "
                                + (f"lacks {', '.join(missing)}." if missing
                                   else f"has unknown keys {', '.join(extra)}."))
        if "azure_identity" in feed:
            found = feed["azure_identity"]
            if not isinstance(found, dict) or len(found) > 1 \
                    or set(found) - set(IDENTITY_KEYS) \
                    or not all(isinstance(v, str) and v for v in found.values()):
                problems.append(f"{label}: azure_identity must be {{}} (the VM's system-assigned "
                                "identity) or one of client_id, object_id, msi_res_id of a "
                                "user-assigned identity, such as {client_id: 00000000-...}.")
        if "insecure_http" in feed and not isinstance(feed["insecure_http"], bool):
            problems.append(f"{label}: insecure_http must be true or false.")
        url = feed_url(feed)
        if ("url" in feed) != ("azure" in feed) and url:
            problem = _url_problem(feed, url)
            if problem:
                problems.append(f"{label} has the index URL '{redact_url(url)}', which is not "
                                f"usable: {problem}.")
            else:
                space = url_space(url)
                if space in seen_spaces:
                    problems.append(f"{label} has the URL space {space} of "
                                    f"pipfeed_feeds[{seen_spaces[space]}]: the credential "
                                    "helper picks a feed's token by its URL, so each feed "
                                    "needs a URL of its own.")
                seen_spaces.setdefault(space, index)
        sources = token_sources(feed)
        for key in sources:
            if not isinstance(feed[key], str):
                problems.append(f"{label}: {key} must be a string (the name of the variable, "
                                "the environment variable or the file).")
            elif key in ("token_var", "token_env") and not VARIABLE.match(feed[key]):
                problems.append(f"{label}: {key} is '{feed[key]}', which is not a variable "
                                "name; it names the variable that holds the token, not the "
                                "token itself.")
        if len(sources) > 1 or (need_token and len(sources) != 1
                                and "azure_identity" not in feed):
            problems.append(f"{label} must name exactly one token source, token_var (an "
                            "inventory or Vault variable), token_env (an environment variable "
                            "of the controller) or token_file (a file on the controller); it "
                            f"names {', '.join(sources) or 'none'}.")
        if isinstance(name, str) and name:
            if name.lower() in seen_names:
                problems.append(f"pipfeed_feeds has two feeds named the same ({name}, items "
                                f"{seen_names[name.lower()]} and {index}); give each a name of "
                                "its own: uv and the credential helper tell feeds apart by it.")
            seen_names.setdefault(name.lower(), index)
    return problems


def resolve_token(feed: dict, variables: dict, template, environ: dict,
                  read_file) -> str:
    """The feed's token from its one source, by the project's one rule: a single line break
    at the end is dropped, and the rest must pass token_problem. Raises TokenError naming the
    feed, the source and the fix.

    ``template`` turns a variable's value into text (the lookup's templar, which also decrypts
    Vault); ``read_file`` reads a controller file as text."""
    name = feed.get("name", "?") if isinstance(feed, dict) else "?"
    sources = token_sources(feed)
    if not sources and identity(feed) is not None:
        raise TokenError(f"Feed {name} takes its token from each VM's managed identity "
                         "(azure_identity), and the controller has none of its own. For the "
                         "controller's requests (the wheelhouse build, publish, the project "
                         "wheel's upload) give the feed a token_env too, holding an Entra token "
                         "(az account get-access-token --resource "
                         f"{AZURE_DEVOPS_RESOURCE} --query accessToken -o tsv; in Azure DevOps, "
                         "an AzureCLI@2 step of a service connection).")
    if len(sources) != 1:
        raise TokenError(f"Feed {name} must name exactly one token source (token_var, "
                         f"token_env or token_file); it names {', '.join(sources) or 'none'}.")
    key = sources[0]
    where = f"The token of feed {name}, from {token_source(feed)},"
    fix = "Set it to the personal access token alone (one line, no spaces)."
    if key == "token_var":
        if feed[key] not in variables:
            raise TokenError(f"{where} is not defined. Define {feed[key]} in the inventory "
                             "(keep it in Ansible Vault) or pass it with -e @file.")
        raw = template(variables[feed[key]])
        if raw is None:
            raise TokenError(f"{where} is not defined (it is null). {fix}")
    elif key == "token_env":
        if feed[key] not in environ:
            raise TokenError(f"{where} is not set. It must be exported where ansible-playbook "
                             "runs (in a pipeline: map the secret into the step's env).")
        raw = environ[feed[key]]
    else:
        try:
            raw = read_file(feed[key])
        except OSError as err:
            raise TokenError(f"Feed {name} takes its token from token_file {feed[key]}, which "
                             f"is not a file on the controller ({err.strerror or err}). Write "
                             "the token there (one line), or name another source.") from None
    if not isinstance(raw, str):
        raise TokenError(f"{where} is not a string. {fix}")
    try:
        return token_from_text(raw)
    except ValueError as err:
        extra = (" An environment variable must be exported where ansible-playbook runs (in a "
                 "pipeline: map the secret into the step's env).") if key == "token_env" else ""
        raise TokenError(f"{where} {err}. {fix}{extra}") from None


def helper_config(feeds: list, username: str, directory: str) -> dict:
    """The helper's /etc/pipfeed/credential-helper.json: each feed's URL and token file (no
    token)."""
    entries = []
    for feed in feeds:
        entry = {"name": feed["name"], "url": feed_url(feed)}
        if identity(feed) is not None:
            entry["azure_identity"] = identity(feed)
        else:
            entry["token_file"] = f"{directory.rstrip('/')}/{feed['name']}.token"
        if feed.get("insecure_http") is True:
            entry["insecure_http"] = True
        entries.append(entry)
    return {"username": username, "feeds": entries}


def netrc_hosts(feeds: list) -> list:
    """One netrc entry per host name: [host, index of the first feed there, [names of the
    later feeds on the same host, which netrc cannot tell apart]]. netrc has no port and no
    path: a line is for the whole host."""
    entries: list = []
    for index, feed in enumerate(feeds):
        host = (urlsplit(feed_url(feed)).hostname or "").lower()
        if not host or identity(feed) is not None:
            continue  # a managed identity's token is never written to a file
        for entry in entries:
            if entry[0] == host:
                entry[2].append(feed["name"])
                break
        else:
            entries.append([host, index, []])
    return entries

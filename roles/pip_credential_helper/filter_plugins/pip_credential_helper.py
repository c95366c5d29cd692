"""Filters for the pip_credential_helper role: the helper's configuration, the netrc entries,
and a token's shape, computed from the shared ``pipfeed_feeds`` data model.

Kept free of tokens where possible: the configuration names token files, never tokens, and
``token_problem`` answers with a description of what is wrong, never with the value.
"""
from __future__ import annotations

from urllib.parse import urlsplit

TOKEN_SOURCES = ("token_var", "token_env", "token_file")


def token_sources(feed: dict) -> list:
    """Which of token_var, token_env and token_file the feed names (exactly one is valid)."""
    if not isinstance(feed, dict):
        return []
    return [key for key in TOKEN_SOURCES if feed.get(key) not in (None, "")]


def token_source(feed: dict) -> str:
    """How a message names the token's source: "token_var pipfeed_token_x" and so on."""
    sources = token_sources(feed)
    if len(sources) != 1:
        return "no single token source"
    key = sources[0]
    label = {"token_var": "the variable", "token_env": "the controller environment variable",
             "token_file": "the controller file"}[key]
    return f"{label} {feed[key]} ({key})"


def token_problem(token) -> str:
    """'' for a usable token, else what is wrong with it. Never returns any part of it."""
    if not isinstance(token, str):
        return "is not a string"
    if token == "":
        return "is empty"
    if "\n" in token or "\r" in token:
        return "holds a line break (more than one line)"
    if any(ch.isspace() for ch in token):
        return "holds whitespace"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in token):
        return "holds control characters"
    return ""


def token_file(feed: dict, directory: str) -> str:
    return f"{directory.rstrip('/')}/{feed['name']}.token"


def helper_config(feeds: list, urls: list, username: str, directory: str) -> dict:
    """The helper's /etc/pipfeed/credential-helper.json: each feed's URL and token file.
    ``urls`` are the feeds' index URLs in the same order (filter pipfeed_feed_url)."""
    entries = []
    for feed, url in zip(feeds, urls):
        entry = {"name": feed["name"], "url": url,
                 "token_file": token_file(feed, directory)}
        if feed.get("insecure_http") is True:
            entry["insecure_http"] = True
        entries.append(entry)
    return {"username": username, "feeds": entries}


def url_space(url: str) -> str:
    """scheme://host:port/prefix, as the helper tells feeds apart (path without simple/)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
    except ValueError:
        return url
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[-1].lower() in ("simple", "+simple"):
        segments.pop()
    host = (parts.hostname or "").lower().rstrip(".")
    return f"{parts.scheme.lower()}://{host}:{port}/" + "".join(s + "/" for s in segments)


def netrc_hosts(feeds: list, urls: list) -> list:
    """One netrc entry per host name: [host, index of the first feed there, [names of the
    later feeds on the same host, which netrc cannot tell apart]]. netrc has no port and no
    path: a line is for the whole host. ``urls`` are the feeds' index URLs, in order."""
    entries: list = []
    for index, (feed, url) in enumerate(zip(feeds, urls)):
        host = (urlsplit(url).hostname or "").lower()
        if not host:
            continue
        for entry in entries:
            if entry[0] == host:
                entry[2].append(feed["name"])
                break
        else:
            entries.append([host, index, []])
    return entries


class FilterModule:
    def filters(self):
        return {
            "pip_credential_helper_token_sources": token_sources,
            "pip_credential_helper_token_source": token_source,
            "pip_credential_helper_token_problem": token_problem,
            "pip_credential_helper_config": helper_config,
            "pip_credential_helper_url_space": url_space,
            "pip_credential_helper_netrc_hosts": netrc_hosts,
        }

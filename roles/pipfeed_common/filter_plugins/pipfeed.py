"""Filters shared by every role of the project: how a feed of the ``pipfeed_feeds`` data model
turns into its index URL. One place, so that pip.conf, uv.toml, the credential helper and the
wheelhouse build never disagree about a feed's address.

A feed is ``{name, url}`` or ``{name, azure: {organization, project (optional), feed}}``; see
inventory/sample/group_vars/all/feed.yml.
"""
from __future__ import annotations

AZURE_HOST = "https://pkgs.dev.azure.com"


def feed_url(feed) -> str:
    """The feed's PEP 503 index URL: its ``url``, or the Azure Artifacts URL built from the
    shorthand, ``https://pkgs.dev.azure.com/<org>[/<project>]/_packaging/<feed>/pypi/simple/``.
    An incomplete entry gives an empty string: the roles' preflights name what is missing."""
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


class FilterModule:
    def filters(self):
        return {"pipfeed_feed_url": feed_url}

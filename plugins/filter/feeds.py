# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the feed model (plugins/plugin_utils/feeds.py), for the roles' templates and
checks: a feed's URL, what is wrong with a feed list, the URL scope rule, and the credential
helper's configuration and netrc entries. No filter here sees or returns a token. Each is
imported when it first runs (plugin_utils/lazy.py says why)."""
from __future__ import annotations

from ansible_collections.pipfeed.feed.plugins.plugin_utils.lazy import filters


class FilterModule:
    def filters(self):
        return dict(filters("feeds", "feed_url", "feed_problems", "token_source",
                            "token_sources", "url_space", "helper_config", "netrc_hosts",
                            "redact_url"),
                    **filters("renamed", "renamed_variables"))

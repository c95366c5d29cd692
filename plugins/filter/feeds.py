# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the feed model (plugins/plugin_utils/feeds.py), for the roles' templates and
checks: a feed's URL, what is wrong with a feed list, the URL scope rule, and the credential
helper's configuration and netrc entries. No filter here sees or returns a token."""
from __future__ import annotations

from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import (
    feed_problems, feed_url, helper_config, netrc_hosts, redact_url, token_source, token_sources, url_space)
from ansible_collections.pipfeed.feed.plugins.plugin_utils.renamed import renamed_variables


class FilterModule:
    def filters(self):
        return {
            "feed_url": feed_url,
            "feed_problems": feed_problems,
            "token_source": token_source,
            "token_sources": token_sources,
            "url_space": url_space,
            "helper_config": helper_config,
            "netrc_hosts": netrc_hosts,
            "redact_url": redact_url,
            "renamed_variables": renamed_variables,
        }

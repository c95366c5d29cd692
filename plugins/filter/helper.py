# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the credential helper role (plugins/plugin_utils/helper_plan.py): what it reads
from a host, and what it decides from that. Only helper_token_items sees a token; the role uses
it in no_log tasks only."""
from __future__ import annotations

from ansible_collections.pipfeed.feed.plugins.plugin_utils.lazy import lazy

# Imported when a filter first runs (plugin_utils/lazy.py says why).
feed_check_message = lazy("helper_plan", "feed_check_message")
plan = lazy("helper_plan", "plan")
probe_spec = lazy("helper_plan", "probe_spec")
helper_setting_problems = lazy("helper_plan", "setting_problems")
token_items = lazy("helper_plan", "token_items")


def helper_probe_spec(feeds, users, group, python, pythons=None):
    return probe_spec(list(feeds or []), list(users or []), str(group or ""), str(python),
                      [str(p) for p in pythons or []])


def helper_plan(probe, feeds, username, group, users, netrc, python):
    return plan(probe or {}, list(feeds or []), {
        "username": str(username), "group": str(group or ""), "users": list(users or []),
        "netrc": str(netrc), "python": str(python)})


def helper_token_items(feeds, tokens, decided, username):
    return token_items(list(feeds or []), list(tokens or []), decided, str(username))


class FilterModule:
    def filters(self):
        return {"helper_probe_spec": helper_probe_spec, "helper_plan": helper_plan,
                "helper_token_items": helper_token_items,
                "helper_setting_problems": helper_setting_problems,
                "feed_check_message": feed_check_message}

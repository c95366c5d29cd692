# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the pipfeed_config role (plugins/plugin_utils/config_plan.py): the problems of
its settings, the host check and report, and what it writes. Each takes the role's settings as
one dict (the role's __pipfeed_config_settings)."""
from __future__ import annotations

import importlib

from ansible.errors import AnsibleFilterError

from ansible_collections.pipfeed.feed.plugins.plugin_utils.lazy import PACKAGE


def _plan():
    # Imported when a filter first runs (plugin_utils/lazy.py says why).
    return importlib.import_module(f"{PACKAGE}.config_plan")


def _settings(settings) -> dict:
    if not isinstance(settings, dict) or set(_plan().SETTINGS) - set(settings):
        missing = sorted(set(_plan().SETTINGS) - set(settings or {}))
        raise AnsibleFilterError(f"the pipfeed_config settings lack {', '.join(missing)}")
    return dict(settings, feeds=list(settings["feeds"] or []))


def config_setting_problems(settings, tokens=None):
    return _plan().setting_problems(_settings(settings), list(tokens or []))


def config_report(settings, probe, hostname):
    return _plan().report(_settings(settings), probe or {}, str(hostname))


def config_items(settings, probe, managed=None, uv_items=None):
    return _plan().items(_settings(settings), probe or {}, _managed(managed),
                         list(uv_items or []))


def config_global(settings, probe):
    return _plan().global_keys(_settings(settings), probe or {})


def _managed(managed) -> str:
    """``ansible_managed`` when the inventory sets it, else the configuration's string
    (DEFAULT_MANAGED_STR, "Ansible managed"), as the template module would render it."""
    if managed is not None:
        return str(managed)
    from ansible import constants
    return str(constants.config.get_config_value("DEFAULT_MANAGED_STR"))


class FilterModule:
    def filters(self):
        return {"config_setting_problems": config_setting_problems,
                "config_report": config_report, "config_items": config_items,
                "config_global": config_global}

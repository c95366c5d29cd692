# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of what a host is (plugins/plugin_utils/platforms.py): the OS family check and the
pips that will run there, from a role's probe."""
from __future__ import annotations

from ansible_collections.pipfeed.feed.plugins.plugin_utils.platforms import (
    no_pip_can_use, oldest_pip, os_problem, pip_summary, uv_platform)


class FilterModule:
    def filters(self):
        return {"os_problem": os_problem, "pip_summary": pip_summary,
                "oldest_pip": oldest_pip, "no_pip_can_use": no_pip_can_use,
                "uv_platform": uv_platform}

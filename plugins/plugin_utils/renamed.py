# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Variables that release 1.0.0 renamed or merged into the shared settings: an inventory that
still sets one would otherwise be ignored without a word, and a host would quietly get a
default where its owner chose a value."""
from __future__ import annotations

import re

# Merged into one shared setting of pipfeed_common.
MERGED = {
    "pip_config_mode": "pipfeed_mode",
    "pipfeed_verify_mode": "pipfeed_mode",
    "pip_config_feeds": "pipfeed_feeds",
    "pip_credential_helper_feeds": "pipfeed_feeds",
    "pip_wheelhouse_feeds": "pipfeed_feeds",
    "pipfeed_publish_feeds": "pipfeed_feeds",
    "pipfeed_verify_feeds": "pipfeed_feeds",
    "pip_config_no_log": "pipfeed_no_log",
    "pip_credential_helper_no_log": "pipfeed_no_log",
    "pip_wheelhouse_no_log": "pipfeed_no_log",
    "pipfeed_publish_no_log": "pipfeed_no_log",
    "pipfeed_cloud_init_no_log": "pipfeed_no_log",
    "pip_config_wheelhouse_path": "pipfeed_wheelhouse_path",
    "pip_wheelhouse_path": "pipfeed_wheelhouse_path",
    "pipfeed_verify_wheelhouse_path": "pipfeed_wheelhouse_path",
    "pipfeed_verify_wheelhouse": "pipfeed_wheelhouse",
    "pip_config_wheelhouse_enabled": "pipfeed_wheelhouse",
    "pip_config_credential_helper": "pipfeed_credential_helper",
    "pipfeed_verify_credential_helper": "pipfeed_credential_helper",
    "pip_credential_helper_username": "pipfeed_username",
    "pipfeed_credential_helper_username": "pipfeed_username",
    "pipfeed_publish_username": "pipfeed_username",
    "pipfeed_verify_username": "pipfeed_username",
}
# Roles renamed to the pipfeed_ scheme: every variable of theirs moved with them.
PREFIXES = re.compile(r"^pip_(config|credential_helper|wheelhouse)_")


def new_name(name: str) -> str:
    """The name a 1.0.0 inventory uses for an old variable; "" when the name is current."""
    if name in MERGED:
        return MERGED[name]
    if PREFIXES.match(name):
        return "pipfeed_" + name[len("pip_"):]
    return ""


def renamed_variables(names) -> list:
    """One sentence per old variable among ``names`` (the variables a host has), naming the
    one to set instead."""
    return [f"{name} is set, but this collection reads {new_name(name)} instead (renamed in "
            "1.0.0, see CHANGELOG.md): rename it in the inventory or the -e file."
            for name in sorted(set(names)) if new_name(name)]

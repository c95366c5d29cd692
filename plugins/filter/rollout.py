# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filter of the playbooks' rollout keywords: pipfeed_serial, checked before any host is
contacted, in Ansible's main process (which evaluates play keywords)."""
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

BATCH = re.compile(r"^[0-9]+%?$")


def _batch_ok(item) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return item >= 0
    return isinstance(item, str) and BATCH.match(item.strip()) is not None


def serial(value, variable: str = "pipfeed_serial"):
    """``value`` when Ansible can use it as a play's serial (a number of hosts, a percentage
    such as "25%", or a list of those for growing batches), else an error naming
    ``variable``. It also imports the collection's per-host controller code into the process
    that runs it (plugins/plugin_utils/preload.py says why)."""
    items = value if isinstance(value, list) else [value]
    wrong = [item for item in items if not _batch_ok(item)]
    if wrong:
        raise AnsibleFilterError(
            f"{variable} is {value!r}: it must be a number of hosts per batch (5), a "
            f"percentage of the play's hosts ('25%'), or a list of them for batches that grow "
            f"([1, '10%', '100%']); {wrong[0]!r} is neither. Leave it unset for one batch of "
            f"every host.")
    from ansible_collections.pipfeed.feed.plugins.plugin_utils import preload
    preload.load()
    return value


class FilterModule:
    def filters(self):
        return {"serial": serial}

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.uv_binary: uv's standalone binary for each host platform, taken from
uv's wheel on the feed and cached on the controller (plugins/plugin_utils/uv_binary.py).

    pipfeed.feed.uv_binary:
      version: 0.13.9
      platforms: [{libc: glibc, libc_version: "2.36", machine: x86_64}]
      index_url: https://feed.example/org/_packaging/feed/pypi/simple/
      cert: ""                       # CA bundle for the controller's requests
      username: pipfeed
      token: "{{ lookup('pipfeed.feed.token', feed) }}"   # the task is no_log
      cache_dir: ~/.cache/pipfeed

It never contacts a host, and a platform already in the cache needs no network. The result's
``binaries`` maps each platform key (glibc2.36-x86_64) to the wheel, its SHA-256 and the paths
of the extracted programs, which pipfeed.feed.host_apply installs with ``src``. The message of a
failure never holds the token; it is in ``error`` too, for a task that registers a no_log one.
"""
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import uv_binary


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("version", "platforms", "index_url", "cert", "username", "token",
                             "cache_dir"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        for key in ("version", "platforms", "index_url", "cache_dir"):
            if not args.get(key):
                raise AnsibleActionFail(f"pipfeed.feed.uv_binary needs {key}")
        spec = {key: args.get(key) for key in ("version", "platforms", "index_url", "cert",
                                               "username", "cache_dir")}
        try:
            binaries = uv_binary.fetch(spec, str(args.get("token") or ""))
        except (uv_binary.UvError, OSError, KeyError, ValueError) as err:
            message = f"uv: {err}"
            result.update(failed=True, msg=message, error=message)
            return result
        result.update(changed=False, binaries=binaries)
        return result

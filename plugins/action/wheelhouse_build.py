# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.wheelhouse_build: the controller side of the wheelhouse
(plugins/plugin_utils/wheelhouse_build.py), run in the controller's Ansible process.

    pipfeed.feed.wheelhouse_build:
      command: check | build
      spec: {requirements, constraints, cache_dir, index_url, cert, host_path, platforms, ...}
      token: the index feed's token, for build (the task is no_log)

No host is contacted and no command is started for the check: a run that changes nothing pays
for one task, once. For build, the controller reads the index's pages and downloads the files
it chooses in this process, with the token as HTTP Basic authentication to the index's own
origin (it stays in memory, never on a command line or in a file); pip, which fetches the
build dependencies of sdist-only releases, reads it from a netrc file in a private temporary
directory for the length of the call (through NETRC, for the index's host only), and the
directory is removed whatever happens.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from urllib.parse import urlsplit

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils.wheelhouse_build import (
    COMMANDS, BuildError)


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("command", "spec", "token", "username"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        command = self._task.args.get("command")
        spec = self._task.args.get("spec")
        if command not in ("check", "build") or not isinstance(spec, dict):
            raise AnsibleActionFail("pipfeed.feed.wheelhouse_build needs command (check or "
                                    "build) and spec (a mapping)")
        token = self._task.args.get("token") or ""
        user = self._task.args.get("username") or "pipfeed"
        private = None
        try:
            if command == "build" and token:
                private = tempfile.mkdtemp(prefix="pipfeed-netrc-")
                netrc = os.path.join(private, "netrc")
                host = urlsplit(spec.get("index_url", "")).hostname or ""
                descriptor = os.open(netrc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(f"machine {host} login {user} password {token}\n")
                spec = dict(spec, netrc=netrc, credentials=[user, token])
            outcome = COMMANDS[command](spec)
        except (BuildError, OSError, ValueError) as error:
            # error as well as msg: a no_log task that registers this with failed_when: false
            # keeps what went wrong (pip's output names the index URL, never the token) for a
            # task that shows it.
            result.update(failed=True, msg=f"wheelhouse: {error}", error=f"wheelhouse: {error}")
            return result
        finally:
            if private:
                shutil.rmtree(private, ignore_errors=True)
        result.update(changed=False, result=outcome)
        return result

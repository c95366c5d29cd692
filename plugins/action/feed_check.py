# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action pipfeed.feed.feed_check: ask each feed, from the host, whether it takes the token
that is about to be installed there (plugins/module_utils/host_state.py, command feeds).

    pipfeed.feed.feed_check:
      python: /usr/bin/python3
      feeds: "{{ pipfeed_feeds }}"
      tokens: "{{ query('pipfeed.feed.token', *pipfeed_feeds) }}"   # the task is no_log
      username: pipfeed
      current: "{{ probe.probe }}"      # a host_probe with each token file (secret: true)
      token_dir: /etc/pipfeed/tokens
      timeout: 20
      check: true                       # false: ask nothing (pipfeed_credential_helper_check_token)
      every: false                      # true: ask about every token, changed or not (rotation)
      plan: "{{ decision }}"            # optional: the helper's decision, handed on as plan

Only the feeds whose token differs from the host's token file are asked (the probe's HMAC
under its one-time salt against the HMAC of the new token): a run that installs nothing new
asks nothing and costs no round trip. A rotation asks about every token (``every``): its
point is to put the new tokens in use, and the feed is the judge of that. The tokens of the feeds asked go to the host on the
program's standard input, never on a command line. The result names, per feed, whether its
token changes and what the feed answered; it never holds a token, and the action never fails
by itself, so that a task after the no_log one can show what is wrong.
"""
from __future__ import annotations

import hashlib
import hmac
import json

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils import host_plan, host_run
from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import feed_url


class ActionModule(ActionBase):
    _VALID_ARGS = frozenset(("python", "feeds", "tokens", "username", "current", "token_dir",
                             "timeout", "check", "every", "identities", "plan"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        feeds = args.get("feeds") or []
        tokens = args.get("tokens") or []
        if len(feeds) != len(tokens):
            raise AnsibleActionFail("pipfeed.feed.feed_check needs one token per feed")
        current = args.get("current") or {}
        salt = bytes.fromhex(current.get("salt", "")) if current.get("salt") else b""
        paths = {entry["path"]: entry for entry in current.get("paths", [])}
        directory = str(args.get("token_dir") or "/etc/pipfeed/tokens").rstrip("/")
        verdicts, asked, contents, by_identity = [], [], [], []
        check, every = boolean(args.get("check", True)), boolean(args.get("every", False))
        username = str(args.get("username") or "pipfeed")
        plan = args.get("plan")
        if plan is not None and not isinstance(plan, dict):
            raise AnsibleActionFail("pipfeed.feed.feed_check: plan must be a mapping")
        identities = args.get("identities", (plan or {}).get("config_changes", False))
        for feed, token in zip(feeds, tokens):
            if isinstance(feed.get("azure_identity"), dict):
                # No token on the controller: the host asks its managed identity, with the
                # helper program itself, when the helper's configuration changes there.
                differs = boolean(identities)
                verdicts.append({"name": feed["name"], "url": feed_url(feed), "changes": differs,
                                 "identity": True})
                if (differs or every) and check:
                    by_identity.append({"name": feed["name"], "url": feed_url(feed),
                                        "username": username,
                                        "azure_identity": feed["azure_identity"]})
                continue
            entry = paths.get(f"{directory}/{feed['name']}.token", {})
            wanted = hmac.new(salt, f"{token}\n".encode(), hashlib.sha256).hexdigest()
            differs = not (salt and hmac.compare_digest(entry.get("hmac", ""), wanted))
            verdicts.append({"name": feed["name"], "url": feed_url(feed), "changes": differs})
            if (differs or every) and check:
                asked.append({"name": feed["name"], "url": feed_url(feed),
                              "username": username, "token": len(contents)})
                contents.append(str(token).encode("utf-8"))
        result.update(changed=False, feeds=verdicts)
        if plan is not None:
            result["plan"] = plan
        python = str(args.get("python") or "/usr/bin/python3")
        answers: dict = {}
        timeout = float(args.get("timeout", 20))
        if asked:
            blocks = host_plan.bundle(contents)
            done = host_run.run(self, python, "host_state.py",
                                ["feeds", json.dumps({"feeds": asked, "timeout": timeout})],
                                blocks, sum(len(b) for b in blocks))
            if not self._answers(done, answers, result):
                return result
        if by_identity:
            done = host_run.run(self, python, "pipfeed-keyring",
                                ["--ask-feeds", json.dumps({"feeds": by_identity,
                                                            "timeout": timeout})])
            if not self._answers(done, answers, result):
                return result
        for verdict in verdicts:
            if verdict["name"] in answers:
                answer = answers[verdict["name"]]
                verdict["status"] = answer["status"]
                if answer.get("error"):
                    verdict["error"] = answer["error"]
        return result

    @staticmethod
    def _answers(done: dict, answers: dict, result: dict) -> bool:
        """The host's answers into ``answers`` by feed name; False (with ``error`` in the
        result) when the host could not ask."""
        if done["rc"] != 0:
            result["error"] = host_run.failure(done, "The feeds could not be asked from the host")
            return False
        try:
            answers.update({a["name"]: a
                            for a in json.loads(done["stdout"].strip().splitlines()[-1])})
        except (ValueError, IndexError, KeyError, TypeError):
            result["error"] = (f"The feeds could not be asked from the host: its answer is not "
                               f"JSON: {done['stdout'][-300:]!r}")
            return False
        return True

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: token
author: pipfeed contributors (@pipfeed)
short_description: A feed's token, from the one source its pipfeed_feeds item names
version_added: 1.0.0
description:
  - The one way every role of the collection reads a feed's token on the controller.
  - Each term is an item of C(pipfeed_feeds). Its token comes from exactly one of C(token_var)
    (an inventory variable, Vault-encrypted or not), C(token_env) (an environment variable of
    the controller) or C(token_file) (a file on the controller).
  - One trimming rule for every source, the same as the credential helper's on the host. A
    single line break at the end is dropped; anything else is refused with a message that names
    the feed, the source and the fix, never the token. Empty, more than one line, whitespace,
    control characters, and an Azure DevOps macro that was never expanded (such as
    C($(FEED_TOKEN))) are refused.
  - Use it only in tasks with C(no_log), or with C(check=true), which returns what is wrong
    instead of the token.
options:
  _terms:
    description: Items of C(pipfeed_feeds).
    required: true
    type: list
    elements: dict
  check:
    description:
      - Return, for each feed, what is wrong with its token (an empty string when nothing is),
        never the token. Preflight checks use it, so that their message can be shown.
    type: bool
    default: false
  for_hosts:
    description:
      - The tokens the hosts get; an empty string for a feed whose hosts take theirs from the
        VM's managed identity (C(azure_identity)), which has no token on the controller.
    type: bool
    default: false
  skip_unusable:
    description:
      - Return an empty string for a feed whose token cannot be read or is unusable, instead of
        failing. For checks that only need the tokens that exist (such as "no token is written
        into a world-readable file").
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Write a feed's token into a root-only file
  ansible.builtin.copy:
    content: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}\n"
    dest: /etc/pipfeed/tokens/python-feed.token
    mode: "0600"
  no_log: true

- name: Stop when any token is unusable (the message names the feed and the fix)
  ansible.builtin.assert:
    that: __problems | select | length == 0
    fail_msg: "{{ __problems | select | join(' ') }}"
  vars:
    __problems: "{{ query('pipfeed.feed.token', *pipfeed_feeds, check=true) }}"
"""

RETURN = r"""
_raw:
  description: The token of each feed, or with C(check=true) what is wrong with it ("" for none).
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils.feeds import TokenError, resolve_token


def _read_file(path: str) -> str:
    with open(os.path.expanduser(path), encoding="utf-8") as handle:
        return handle.read()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        check = self.get_option("check")
        skip = self.get_option("skip_unusable")
        for_hosts = self.get_option("for_hosts")
        variables = variables or {}
        found = []
        for feed in terms:
            if for_hosts and isinstance(feed, dict) and isinstance(feed.get("azure_identity"), dict):
                found.append("")
                continue
            try:
                token = resolve_token(feed, variables, self._as_text, os.environ, _read_file)
            except TokenError as err:
                if check:
                    found.append(str(err))
                elif skip:
                    found.append("")
                else:
                    raise AnsibleLookupError(str(err)) from None
                continue
            found.append("" if check else token)
        return found

    def _as_text(self, value):
        """A variable's value as text: templated (a variable may name another), and a Vault
        value decrypted."""
        value = self._templar.template(value)
        return None if value is None else str(value) if not isinstance(value, (dict, list)) \
            else value

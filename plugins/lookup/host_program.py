# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: host_program
author: pipfeed contributors (@pipfeed)
short_description: The text of a program that the collection installs on hosts
version_added: 1.0.0
description:
  - Returns a host-side program of the collection (standard-library Python, with its
    C(#!/usr/bin/python3) line), for C(ansible.builtin.copy) to install.
  - C(pipfeed-keyring) is the credential helper that pip and uv call as C(keyring).
options:
  _terms:
    description: Program names.
    required: true
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Install the credential helper
  ansible.builtin.copy:
    content: "{{ lookup('pipfeed.feed.host_program', 'pipfeed-keyring') }}"
    dest: /usr/local/lib/pipfeed/pipfeed-keyring
    mode: "0755"
"""

RETURN = r"""
_raw:
  description: The text of each program.
  type: list
  elements: str
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.pipfeed.feed.plugins.plugin_utils.host_programs import installable


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        try:
            return [installable(str(term)).decode("utf-8") for term in terms]
        except (KeyError, FileNotFoundError) as err:
            raise AnsibleLookupError(str(err)) from None

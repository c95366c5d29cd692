# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: uv_binary
short_description: uv's standalone binary for each host platform, from uv's wheel on the feed
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - For hosts with no pip (python3 alone, as some cloud images ship it), uv's wheel carries the
    whole program as one executable; this action gets it from the feed for each host platform,
    on the controller (C(plugins/plugin_utils/uv_binary.py)), for M(pipfeed.feed.host_apply) to
    install with O(pipfeed.feed.host_apply#module:items[].src).
  - It reads the feed's index page for uv, picks the wheel of O(version) whose platform tag fits
    best (the highest manylinux glibc at or below the host's, or musllinux on musl; ties by the
    smallest file name, so every controller picks the same), downloads it with the feed's token
    (a redirect to another host, such as the feed's blob storage, goes without it), checks its
    SHA-256 against the index's, and keeps the wheel's C(uv) and C(uvx) in the cache.
  - A platform already in the cache (its programs matching their recorded SHA-256) needs no
    network at all.
  - This is an action plugin; the module file only documents it.
options:
  version:
    description: The uv release, pinned.
    type: str
    required: true
  platforms:
    description: The host platforms, as C(pipfeed.feed.host_probe) reads them.
    type: list
    elements: dict
    required: true
    suboptions:
      libc:
        description: V(glibc) or V(musl).
        type: str
        default: glibc
      libc_version:
        description: The libc's version, such as V(2.36).
        type: str
        required: true
      machine:
        description: The architecture, such as V(x86_64) or V(aarch64).
        type: str
        required: true
  index_url:
    description: The feed's PEP 503 index URL as the controller reaches it.
    type: str
    required: true
  cert:
    description: A CA bundle for the controller's requests; empty for the system's.
    type: str
    default: ''
  username:
    description: The user name sent with the token.
    type: str
    default: pipfeed
  token:
    description:
      - The feed's token, from the lookup C(pipfeed.feed.token); empty for an index that needs
        none. The task must be C(no_log).
    type: str
    default: ''
  cache_dir:
    description: The controller's cache; the binaries go under C(uv/<version>/<platform>/).
    type: str
    required: true
extends_documentation_fragment:
  - pipfeed.feed.attributes.controller
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: partial
    details:
      - The action does not look at check mode; it only fills the controller's cache and never
        contacts a host. It reports C(changed) as V(false).
  diff_mode:
    support: none
  platform:
    details:
      - It runs on the controller; the binaries' target platforms are O(platforms).
seealso:
  - module: pipfeed.feed.host_apply
"""

EXAMPLES = r"""
- name: Get uv's binary for every platform of the play
  pipfeed.feed.uv_binary:
    version: 0.13.9
    platforms:
      - {libc: glibc, libc_version: "2.36", machine: x86_64}
    index_url: https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/simple/
    token: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}"
    cache_dir: ~/.cache/pipfeed
  register: uv
  run_once: true
  no_log: true
  failed_when: false

- name: Stop when uv cannot be had (the message holds no token)
  ansible.builtin.assert:
    that: uv.error is not defined
    fail_msg: "{{ uv.error | default('') }}"
  run_once: true
"""

RETURN = r"""
binaries:
  description: Per platform key (such as V(glibc2.36-x86_64)), the wheel and the programs.
  returned: success
  type: dict
  sample:
    glibc2.36-x86_64:
      wheel: uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
      sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      programs:
        uv: {path: /root/.cache/pipfeed/uv/0.13.9/glibc2.36-x86_64/uv, sha256: "..."}
        uvx: {path: /root/.cache/pipfeed/uv/0.13.9/glibc2.36-x86_64/uvx, sha256: "..."}
error:
  description: What went wrong (never the token), the same as the failure's message; under no_log a later task can show it.
  returned: failure
  type: str
"""

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_apply
short_description: Bring files, directories, links, a group and a dpkg diversion to a wanted state in one call
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - Brings the O(items) a role wants (files, directories, links, absent paths, a group and its
    members, a dpkg diversion) to their state on the host, in one call to the host, and only
    where they differ.
  - With O(current), a M(pipfeed.feed.host_probe) result, the decision is made on the
    controller, and a host where nothing differs is not contacted at all, so a run that changes
    nothing costs no round trip here. Without it, or when it lacks what an item needs, the
    action probes first, in one call.
  - What differs goes in one call. The items' new content follows the program
    (C(host_state.py), command C(apply)) on its standard input. Each file is written beside
    its place, checked (O(items[].validate) or O(items[].parse)) and renamed over the old one, so a run that dies
    leaves the old file or the new one, never a part. The items are applied in order, and the
    first that fails stops the call.
  - Check mode and C(--diff) are honest. In check mode no change is sent, and the result says
    what would change, with a diff per item (a secret file's diff says only that it changes).
  - This action never puts content in its result or its message. A task whose items hold a
    secret must still be C(no_log), as its arguments hold the secret.
  - This is an action plugin; the module file only documents it.
options:
  python:
    description:
      - The host's Python that runs the probe and the apply (Python 3.9 or later, standard
        library only).
    type: str
    default: /usr/bin/python3
  current:
    description:
      - The host's state as M(pipfeed.feed.host_probe) returned it (its RV(pipfeed.feed.host_probe#module:probe)),
        for the decision on the controller without a call to the host.
      - It must hold every item's path (a secret file with its HMAC, in C(--diff) a text file
        with its content), group and diversion; otherwise the action probes again, in one call.
    type: dict
  items:
    description:
      - What the host must have, in the order it is applied. An item's O(items[].kind) says
        which of its other keys count.
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description:
          - V(file) (O(items[].path), O(items[].content), O(items[].program) or O(items[].src), O(items[].owner),
            O(items[].group), O(items[].mode), O(items[].backup), O(items[].validate), O(items[].parse),
            O(items[].secret)).
          - V(directory) (O(items[].path), O(items[].owner), O(items[].group), O(items[].mode)),
            created with its parents where missing.
          - V(link) (O(items[].path), O(items[].src)), a symbolic link to O(items[].src) made
            beside the path and renamed over it.
          - V(absent) (O(items[].path)), a file or link removed; a directory there fails the item.
          - V(group) (O(items[].name), O(items[].members)), a system group created where missing.
          - V(divert) (O(items[].path), O(items[].to)), C(dpkg-divert --local --rename).
        type: str
        required: true
        choices: [file, directory, link, absent, group, divert]
      path:
        description:
          - The path on the host, for every kind but V(group).
          - A directory where a file, a link or a path's absence is wanted, or anything but a
            directory where a directory is wanted, fails the task before anything changes, with
            a message that says what to do.
        type: str
      content:
        description: A file's text, written as UTF-8.
        type: str
        default: ''
      program:
        description:
          - Instead of O(items[].content), one of the collection's host programs by name, with
            its C(#!/usr/bin/python3) line, such as the credential helper V(pipfeed-keyring).
        type: str
        choices: [pipfeed-keyring, wheelhouse_host.py, host_state.py]
      src:
        description:
          - For a V(link), its target on the host.
          - For a V(file), instead of O(items[].content), a file on the controller sent as it is
            (a binary, such as uv's standalone program from M(pipfeed.feed.uv_binary)); its diff
            shows its size and SHA-256.
        type: str
      owner:
        description:
          - The owner of a file or directory. It is compared only when given; the host uses
            V(root) when it is not.
        type: str
      group:
        description:
          - The group of a file or directory. It is compared only when given; the host uses
            V(root) when it is not.
        type: str
      mode:
        description:
          - The mode of a file or directory, as a quoted octal string (V("0644")). A file or
            directory item needs it; the host fails the item without it.
        type: str
      backup:
        description:
          - Keep the file that is replaced, as C(path.<pid>.<time>~) beside it (the name
            M(ansible.builtin.copy) gives its backups).
        type: bool
        default: false
      validate:
        description:
          - A command, run by the host's shell, that checks the new file before it replaces the
            old one; C(%s) stands for the new file's path. When it fails, the old file stays
            and the call fails.
        type: str
      parse:
        description:
          - Check the new file in the apply call's own process instead, by a parser of the
            Python's standard library, when O(items[].parse.executable) is the Python the call
            runs in (decided on the host; no second process is started). Otherwise
            O(items[].validate) checks it. When the parser refuses the file, the old file stays
            and the call fails.
        type: dict
        suboptions:
          parser:
            description:
              - V(ini) (C(configparser.RawConfigParser), as pip reads its configuration files)
                or V(toml) (C(tomllib), Python 3.11 and later).
            type: str
            choices: [ini, toml]
          executable:
            description:
              - The Python whose parser reads the file (its C(sys.executable)).
            type: str
      secret:
        description:
          - The file holds a secret. It is compared by HMAC under the probe's one-time salt,
            its diff and its change say only that it changes, and its content goes only to the
            host.
        type: bool
        default: false
      name:
        description: A group's name.
        type: str
      members:
        description: Accounts added to the group; members are never removed.
        type: list
        elements: str
        default: []
      to:
        description: Where C(dpkg-divert) moves the diverted path.
        type: str
  verify:
    description:
      - Commands (each a list of arguments) that run on the host after the changes, in the same
        call, and only when something changed; a failing one fails the task. The changes made
        before it stay, and RV(applied) lists them.
    type: list
    elements: list
    default: []
  problems:
    description:
      - What the controller found that must stop the change (for example, that an earlier step
        of the role failed), one message each; an empty list when nothing is wrong. When there
        are any, the task fails with them, joined (white space made single spaces), before
        anything is decided, read or changed.
    type: list
    elements: str
    default: []
  fail_msg:
    description:
      - What the failure message says first when the changes cannot be made; the host's reason
        follows it.
    type: str
    default: The change was not made; what was there stays
extends_documentation_fragment:
  - pipfeed.feed.attributes.host
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is sent to the host; the result's C(changed), RV(changes) and
        RV(diff) say what a normal run would do. Without a complete O(current) the action
        still reads the host (read-only) to decide.
  diff_mode:
    support: full
    details:
      - One diff per item that changes. A text file shows its old and new content (an old
        binary file as one line); a secret file, a directory, a link, an absent path, a group or
        a diversion shows one line of state before and after.
  platform:
    details: Group items need C(groupadd) and C(usermod), divert items C(dpkg-divert) (Debian and Ubuntu).
notes:
  - O(fail_msg) is used for a failure of the change only. When the action's own probe fails,
    the result has RV(msg) but no RV(error).
seealso:
  - module: pipfeed.feed.host_probe
  - module: ansible.builtin.copy
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Read what the role decides on (one call)
  pipfeed.feed.host_probe:
    spec:
      paths: [{path: /etc/uv}, {path: /etc/uv/uv.toml, content: true}]
  register: probe
  become: true

- name: Write /etc/uv/uv.toml where it differs (no call to the host where nothing does)
  pipfeed.feed.host_apply:
    python: /usr/bin/python3
    current: "{{ probe.probe }}"
    items:
      - {kind: directory, path: /etc/uv, owner: root, group: root, mode: "0755"}
      - kind: file
        path: /etc/uv/uv.toml
        content: "{{ lookup('ansible.builtin.template', 'uv.toml.j2') }}"
        owner: root
        group: root
        mode: "0644"
        backup: true
        validate: python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' %s
    fail_msg: The uv configuration was not changed
  register: applied
  become: true

- name: Install the credential helper, its links, its group and the token (no_log, it holds one)
  pipfeed.feed.host_apply:
    items:
      - {kind: group, name: pipfeed, members: [deploy]}
      - {kind: directory, path: /usr/local/lib/pipfeed, owner: root, group: root, mode: "0755"}
      - kind: file
        path: /usr/local/lib/pipfeed/pipfeed-keyring
        program: pipfeed-keyring
        owner: root
        group: root
        mode: "0755"
      - {kind: divert, path: /usr/bin/keyring, to: /usr/bin/keyring.distrib}
      - {kind: link, path: /usr/local/bin/keyring, src: /usr/local/lib/pipfeed/pipfeed-keyring}
      - kind: file
        path: /etc/pipfeed/tokens/python-feed.token
        content: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}\n"
        owner: root
        group: pipfeed
        mode: "0640"
        secret: true
      - {kind: absent, path: /etc/pipfeed/tokens/old-feed.token}
    verify: [[/usr/local/lib/pipfeed/pipfeed-keyring, --check]]
  register: written
  failed_when: false
  no_log: true
  become: true

- name: Stop when the files could not be written (the message holds no token)
  ansible.builtin.assert:
    that: written.error is not defined
    fail_msg: "{{ written.error | default('') }} (already written: {{ written.applied | default([]) | join(', ') }})"
"""

RETURN = r"""
changes:
  description: Each item that differs (and in a normal run was changed), in order. No content.
  returned: success, and when the change failed
  type: list
  elements: dict
  contains:
    kind:
      description: The item's O(items[].kind).
      type: str
      returned: always
    path:
      description: The item's O(items[].path), or a group's O(items[].name).
      type: str
      returned: always
    reason:
      description: Why it changes.
      type: str
      returned: always
      sample: mode 0600 -> 0640
  sample: [{kind: file, path: /etc/uv/uv.toml, reason: content changed}]
diff:
  description:
    - One diff per item in RV(changes), as C(--diff) shows them; C(before) and C(after) of a
      secret file say only that it changes.
  returned: in diff mode, when something differs
  type: list
  elements: dict
applied:
  description: The items (by path, or a group's name) that were changed before the change failed
    (empty when none was).
  returned: when the change failed
  type: list
  elements: str
error:
  description: Why the items could not be decided or changed (the same as RV(msg)), so that a
    C(no_log) task with C(failed_when=false) can hand it to a task that shows it.
  returned: when an item cannot be decided, and when the change failed
  type: str
  sample: >-
    The change was not made; what was there stays (exit code 1: host_state: /etc/uv/uv.toml:
    the new content failed its check ...)
msg:
  description: Why the task failed.
  returned: failure
  type: str
"""

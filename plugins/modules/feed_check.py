# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: feed_check
short_description: Ask each feed, from the host, whether it takes the token about to be installed there
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - Asks each feed, from the host (through its DNS, proxy settings and firewall), whether it
    takes the token that is about to be installed there, before the token file is written. The
    host program C(host_state.py) (command C(feeds)) sends a GET of the feed's index URL with
    the token, as pip sends it (HTTP Basic), and reports the HTTP status.
  - Only the feeds whose token differs from the host's token file are asked. The difference is
    found on the controller from O(current), by the HMAC of the host's file under the probe's
    one-time salt against the HMAC of the new token, so a run that installs nothing new asks
    nothing and costs no round trip.
  - A rotation asks about every token (O(every)); its point is to put the new tokens in use,
    and the feed is the judge of that.
  - The tokens go to the host on the program's standard input, never on a command line, and a
    redirect is followed only within the feed's scheme, host and port. The result never holds
    a token.
  - The action does not fail because a feed refused a token or could not be asked; it reports
    it, so that a task after the C(no_log) one can show what is wrong (see
    C(pipfeed.feed.feed_check_message)).
  - This is an action plugin; the module file only documents it.
options:
  python:
    description: The host's Python that asks the feeds (Python 3.9 or later, standard library only).
    type: str
    default: /usr/bin/python3
  feeds:
    description:
      - Items of C(pipfeed_feeds), each with its C(name) and its C(url) or C(azure) shorthand
        (C(pipfeed.feed.feed_url) gives the index URL asked).
    type: list
    elements: dict
    default: []
  tokens:
    description:
      - The new token of each feed, in the order of O(feeds) (one token per feed, else the task
        fails), as the C(pipfeed.feed.token) lookup returns them. The task must be C(no_log).
    type: list
    elements: str
    default: []
  username:
    description: The user name sent with each token (Azure Artifacts takes any).
    type: str
    default: pipfeed
  current:
    description:
      - The host's state from M(pipfeed.feed.host_probe) (its RV(pipfeed.feed.host_probe#module:probe)),
        with each feed's token file in O(pipfeed.feed.host_probe#module:spec.paths) read with
        C(secret=true).
      - A feed whose token file the probe did not read, or a probe without its salt, counts as
        changing, and is asked.
    type: dict
    default: {}
  token_dir:
    description:
      - The directory of the host's token files, C(<token_dir>/<feed name>.token), each holding
        the token and a line break.
    type: str
    default: /etc/pipfeed/tokens
  timeout:
    description: Seconds the host waits for each feed's answer.
    type: float
    default: 20
  check:
    description:
      - Ask the feeds at all. With V(false) nothing is asked, and RV(feeds) still says which
        tokens change (the credential helper role's C(pipfeed_credential_helper_check_token)).
    type: bool
    default: true
  every:
    description:
      - Ask about every feed's token, changed or not (a rotation, C(playbooks/rotate_token.yml)).
    type: bool
    default: false
  identities:
    description:
      - Ask about the feeds of the VM's managed identity (C(azure_identity)), which have no token
        on the controller (their O(tokens) entry is empty). The host asks its identity for a
        token with the credential helper's own program (C(pipfeed-keyring --ask-feeds)) and sends
        it to the feed. The role sets this when the helper's configuration changes on the host.
      - An answer with status V(-2) means the identity gave no token; its message says why
        (the IMDS cannot be reached, there is no such identity, or the IMDS kept failing).
    type: bool
    default: false
  plan:
    description:
      - The credential helper's decision for the host (C(pipfeed.feed.helper_plan)). Its
        C(config_changes) stands for O(identities) when that is not given, and the result hands
        the decision on as RV(plan), so that the role's tasks after this one read it from the
        registered result instead of computing it again, each for itself.
    type: dict
extends_documentation_fragment:
  - pipfeed.feed.attributes.host
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  become:
    details: The requests are made as the user the program runs as; they need no privilege.
  check_mode:
    support: full
    details:
      - It only reads, and the action asks the feeds in check mode as in a normal run, so that
        a check run finds a token the feed refuses. C(check_mode=false) on the task is not
        needed.
  diff_mode:
    support: none
notes:
  - The result always reports C(changed) as V(false).
seealso:
  - module: pipfeed.feed.host_probe
  - module: pipfeed.feed.host_apply
"""

EXAMPLES = r"""
- name: Read the token files on the host (HMAC only)
  pipfeed.feed.host_probe:
    spec:
      paths:
        - {path: /etc/pipfeed/tokens/python-feed.token, secret: true}
  register: probe
  become: true

- name: Ask each feed, from the host, whether it takes a token that is about to change
  pipfeed.feed.feed_check:
    python: /usr/bin/python3
    feeds: "{{ pipfeed_feeds }}"
    tokens: "{{ query('pipfeed.feed.token', *pipfeed_feeds) }}"
    username: pipfeed
    current: "{{ probe.probe }}"
    token_dir: /etc/pipfeed/tokens
    timeout: 20
  register: checked
  no_log: true

- name: Stop when a feed refused its new token (the message holds no token)
  ansible.builtin.assert:
    that: __refused | length == 0 and checked.error is not defined
    fail_msg: "{{ ([checked.error] if checked.error is defined else []) + __refused }}"
  vars:
    __refused: >-
      {{ checked.feeds | selectattr('status', 'defined') | rejectattr('status', 'equalto', 200)
         | map('pipfeed.feed.feed_check_message', inventory_hostname, pipfeed_feeds) | list }}
"""

RETURN = r"""
feeds:
  description: One verdict per feed of O(feeds), in order. No token.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The feed's name.
      returned: always
      type: str
    url:
      description: The feed's index URL.
      returned: always
      type: str
    changes:
      description: Whether the new token differs from the host's token file (or the file is
        missing, or was not probed).
      returned: always
      type: bool
    status:
      description: The HTTP status the feed answered (V(200) when it takes the token, V(401)
        or V(403) when not), or V(-1) when it could not be asked.
      returned: when the feed was asked and the host program answered
      type: int
    error:
      description: Why the feed could not be asked (DNS, connection, TLS), on one line.
      returned: when the feed could not be asked
      type: str
  sample: [{name: python-feed, url: "https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/simple/",
            changes: true, status: 200}]
plan:
  description: O(plan), as it was given.
  returned: when O(plan) was given
  type: dict
error:
  description: Why the host program could not ask the feeds (the action does not fail).
  returned: when the host program failed
  type: str
"""

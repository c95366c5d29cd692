# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: report
short_description: Fail with a check's problems, or show what it found, templating each once
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - A check made on the controller (a role's report of a host, with its problems and the lines
    to show) in one task. When O(problems) holds any, the task fails with them; otherwise it shows
    O(lines), as M(ansible.builtin.assert) shows its success message, or only C(ok) when there
    are none.
  - M(ansible.builtin.assert) renders its condition, its failure message and its success
    message each on its own, so a report that all of them read is computed three or four times
    per host. Here Ansible templates each argument once, before the action runs.
  - With O(options_of), it first checks the play's variables against the argument specs of
    the collection's roles, as M(ansible.builtin.validate_argument_spec) does (the same validator
    and message), so that a role's options and its other checks cost one task per host. Ansible's
    main process reads the specs once (the play keyword filter C(pipfeed.feed.serial) has it load
    the collection's per-host code); a worker that finds them unread reads them itself.
  - This is an action plugin; the module file only documents it.
options:
  options_of:
    description:
      - Entry points of the collection's roles (the role's name, as in C(roles/), and the entry
        point of its C(meta/argument_specs.yml)) whose options to check, together, before
        anything else. Each option that the play defines is templated and checked against its
        spec; a failure names every wrong option, as a role's own validation does, and the task
        stops there.
    type: list
    elements: dict
    default: []
    suboptions:
      role:
        description: The role, such as C(pipfeed_config).
        type: str
        required: true
      entry:
        description: The entry point, such as C(preflight).
        type: str
        required: true
  problems:
    description:
      - What the check found wrong, one message each (an empty list when nothing is). When
        there are any, the task fails with them, joined (white space made single spaces).
    type: list
    elements: str
    default: []
  lines:
    description:
      - What to show when nothing is wrong (one line is shown as it is, several as a list);
        none, and the task shows only C(ok).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - pipfeed.feed.attributes.controller
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: full
    details: It only reads its arguments; check mode changes nothing.
  diff_mode:
    support: none
notes:
  - It never reports C(changed).
seealso:
  - module: ansible.builtin.assert
  - module: ansible.builtin.validate_argument_spec
  - module: pipfeed.feed.host_probe
"""

EXAMPLES = r"""
- name: Check the shared settings and pipfeed_config's options before anything changes
  pipfeed.feed.report:
    options_of:
      - role: pipfeed_common
        entry: shared
      - role: pipfeed_config
        entry: preflight
    problems: "{{ shared_problems }}"

- name: Check the host before anything changes, and show its platform
  pipfeed.feed.report:
    problems: "{{ host_report.problems }}"
    lines: "{{ host_report.lines }}"
"""

RETURN = r"""
msg:
  description: The problems, joined, when the check failed; the line (or the lines) shown when
    it passed with any. When options were wrong, C(Validation of arguments failed:) and one line
    per wrong option.
  returned: when the check failed, and when it passed with O(lines)
  type: raw
  sample: "Debian 12 (bookworm), Python 3.11.2, pip 23.0.1"
argument_errors:
  description: Each wrong option's message, when O(options_of) found any.
  returned: when an option was wrong
  type: list
  elements: str
  sample: ["value of pipfeed_mode must be one of: extra, primary, offline, got: bogus"]
validate_args_context:
  description: The roles and entry points whose options were wrong, as
    M(ansible.builtin.validate_argument_spec) returns it.
  returned: when an option was wrong
  type: dict
  sample: {"type": "role", "name": "pipfeed_common, pipfeed_config", "argument_spec_name": "shared, preflight"}
"""

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
  - This is an action plugin; the module file only documents it.
options:
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
  - module: pipfeed.feed.host_probe
"""

EXAMPLES = r"""
- name: Check the host before anything changes, and show its platform
  pipfeed.feed.report:
    problems: "{{ host_report.problems }}"
    lines: "{{ host_report.lines }}"
"""

RETURN = r"""
msg:
  description: The problems, joined, when the check failed; the line (or the lines) shown when
    it passed with any.
  returned: when the check failed, and when it passed with O(lines)
  type: raw
  sample: "Debian 12 (bookworm), Python 3.11.2, pip 23.0.1"
"""

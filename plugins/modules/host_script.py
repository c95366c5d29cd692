# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_script
short_description: Run one of the collection's host programs with the host's Python, in one command
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - Runs one of the collection's host programs (standard-library Python files of
    C(plugins/module_utils)) on the host. The program goes to the host's Python on its standard
    input, in the one command the connection runs, so no module is sent and no second Python
    starts (M(ansible.builtin.command) with C(stdin) would start the module's Python, which
    then starts the program's). A probe that runs on every host in every run then costs one
    pipelined SSH round trip.
  - With O(send), controller files go to the program as one bundle (a line of JSON naming each
    file and its size, then the files' bytes), and the bundle's place is added as the program's
    last argument. It is V(-) when the bundle follows the program on standard input, so that
    the host writes and hashes the wheels as they arrive, with no archive on either end and no
    second command.
  - Where Ansible would not pipeline (pipelining off, or a connection or become method that
    cannot pass standard input), or the bundle is larger than O(stream_max_bytes), the program
    and the bundle go as files into the remote temporary directory first (the bundle written
    in the controller's temporary directory on the way), and both are removed after; the
    bundle's place is then that file's path.
  - The result has RV(rc), RV(stdout) and RV(stderr), as from M(ansible.builtin.command), and
    fails when RV(rc) is not 0 (C(failed_when) may say otherwise), with O(fail_msg) and the
    program's output as its message. One task where a command and an assert would be two.
  - This is an action plugin; the module file only documents it.
options:
  script:
    description:
      - The host program to run, by its name in the collection
        (C(plugins/plugin_utils/host_programs.py)).
      - V(wheelhouse_host.py) is the host side of the wheelhouse (commands C(probe), C(plan),
        C(apply), C(build), C(venv-plan), C(venv-install)); V(host_state.py) the probe and
        apply of M(pipfeed.feed.host_probe) and M(pipfeed.feed.host_apply); V(pipfeed-keyring)
        the credential helper; V(pip_config.py) asks pip which configuration files it reads
        and which settings it uses (pipfeed_config's verify step).
    type: str
    choices: [wheelhouse_host.py, host_state.py, pipfeed-keyring, pip_config.py]
    default: wheelhouse_host.py
  python:
    description:
      - The host's Python, which runs the program (for example C(/usr/bin/python3)).
      - The programs need Python 3.9 or later and its standard library only.
    type: str
    required: true
  args:
    description:
      - The program's arguments, the command first (for example C([probe, /var/lib/pipfeed/wheelhouse])).
      - Each is passed as a string; with O(send) the bundle's place is added after them.
    type: list
    elements: raw
    default: []
  fail_msg:
    description:
      - What the failure message says first when the program exits with a code other than 0;
        the program's output follows it.
      - Without it, the message starts with the program's name and its command.
    type: str
  send:
    description:
      - Files of the controller to hand the program as one bundle, each a pair
        C([name, controller path]); the program reads the bundle (C(wheelhouse_host.py)'s
        C(unpack)).
      - Each path must be a file on the controller.
    type: list
    elements: list
    default: []
  problems:
    description:
      - What the role's checks found on the controller, one message each (an empty list when
        nothing is wrong). When there are any, the task fails with them, joined (white space
        made single spaces), and nothing runs on the host and nothing is sent.
      - So that a check before a change and the change are one task.
    type: list
    elements: str
    default: []
  report:
    description:
      - The program checks something and says what it found. On success its last line of
        standard output is a JSON object whose C(msg) the task shows, as
        M(ansible.builtin.assert) shows its success message, and the result holds RV(msg) and
        RV(changed) V(false) instead of the program's output. On failure (an exit code other
        than 0) the task fails as without it. One task where a program and an assert would be
        two.
    type: bool
    default: false
  stream_max_bytes:
    description:
      - The largest bundle that goes on standard input. What goes there is held in the
        controller's memory while it is sent, once per host being sent to at the same time (up
        to C(forks) hosts); a larger bundle goes as a file into the remote temporary directory.
    type: int
    default: 134217728
extends_documentation_fragment:
  - pipfeed.feed.attributes.host
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: none
    details:
      - In check mode the action runs nothing and returns C(skipped), unless the task sets
        C(check_mode=false). Set that only for the programs' read-only commands (C(probe),
        C(plan), C(venv-plan)); the action cannot tell which commands change the host.
  diff_mode:
    support: none
notes:
  - The result reports C(changed) as V(true) whenever the program ran; a read-only command
    needs C(changed_when).
  - O(stream_max_bytes) limits the controller's memory per host, not what goes to the host;
    above it the bundle is written to disk on the controller and sent as a file.
seealso:
  - module: pipfeed.feed.host_probe
  - module: pipfeed.feed.host_apply
  - module: ansible.builtin.script
"""

EXAMPLES = r"""
- name: Read the host's platform, free space and current wheelhouse (one call)
  pipfeed.feed.host_script:
    script: wheelhouse_host.py
    python: /usr/bin/python3
    args: [probe, /var/lib/pipfeed/wheelhouse]
    fail_msg: /usr/bin/python3 could not read the wheelhouse; install python3 there
  register: probe
  changed_when: false
  check_mode: false

- name: Send the missing wheels and swap the wheelhouse (in check mode, only plan it)
  pipfeed.feed.host_script:
    script: wheelhouse_host.py
    python: /usr/bin/python3
    args: >-
      {{ ['plan', '/var/lib/pipfeed/wheelhouse'] if ansible_check_mode
         else ['apply', '/var/lib/pipfeed/wheelhouse', manifest_sha256, 'true'] }}
    # missing_wheels: [[file name, path in the controller's cache], ...]
    send: "{{ [] if ansible_check_mode else missing_wheels }}"
    stream_max_bytes: 134217728
  check_mode: false
  become: true
"""

RETURN = r"""
rc:
  description: The program's exit code.
  returned: when the program ran, but for a report that passed (O(report))
  type: int
  sample: 0
stdout:
  description: What the program printed on its standard output (the host programs print JSON).
  returned: when the program ran, but for a report that passed (O(report))
  type: str
stdout_lines:
  description: RV(stdout) split into lines.
  returned: when the program ran
  type: list
  elements: str
stderr:
  description:
    - What the program printed on its standard error.
    - With become over SSH and no pipelining the command runs on a terminal, which merges the
      program's standard error into RV(stdout).
  returned: when the program ran
  type: str
  sample: ''
stderr_lines:
  description: RV(stderr) split into lines.
  returned: when the program ran
  type: list
  elements: str
cmd:
  description: The command that ran on the host (the Python, its bootstrap and the arguments; no
    bundle content).
  returned: when the program ran
  type: str
sent_files:
  description: How many files went in the bundle.
  returned: when O(send) is not empty
  type: int
  sample: 3
sent_bytes:
  description: The files' size in bytes, without the bundle's first line.
  returned: when O(send) is not empty
  type: int
  sample: 51234567
sent_by:
  description: How the bundle went to the host, V(stdin) (after the program) or V(file) (into
    the remote temporary directory first).
  returned: when O(send) is not empty
  type: str
  sample: stdin
msg:
  description: In check mode, that nothing ran; on failure, O(fail_msg) (or the program's name
    and command), the exit code and what the program said; with O(report), what the program
    found.
  returned: in check mode, when RV(rc) is not 0, and for a report that passed
  type: str
  sample: "wheelhouse_host.py probe failed (exit code 1: wheelhouse probe failed: ...)"
"""

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_probe
short_description: Read everything a role decides on from the host in one call, changing nothing
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - Reads the host's state that a role decides on (files, links and directories, Pythons and
    their pip, groups, accounts, dpkg diversions, directory listings, the OS, whether a URL
    answers) in one call, with the collection's host program C(host_state.py) (command
    C(probe)), sent to the host's Python on its standard input, in one pipelined SSH round trip.
  - The result's RV(probe) is what M(pipfeed.feed.host_apply) takes as its O(pipfeed.feed.host_apply#module:current)
    and M(pipfeed.feed.feed_check) as its O(pipfeed.feed.feed_check#module:current). A role
    that registers one probe decides every change from it on the controller, and a host where
    nothing differs is not contacted again.
  - No secret is in the result. A file read with O(spec.paths[].secret) is reported by an
    HMAC-SHA256 under a random salt made for this probe (a hash of a short token could be
    guessed from the output; an HMAC under a one-time key cannot), and its content is never
    read out.
  - This is an action plugin; the module file only documents it.
options:
  python:
    description:
      - The host's Python that runs the probe (Python 3.9 or later, standard library only).
    type: str
    default: /usr/bin/python3
  spec:
    description:
      - What to read. Each key is optional; the host program ignores keys it does not know.
    type: dict
    default: {}
    suboptions:
      paths:
        description:
          - Files, links and directories. For each, the result gives its type (V(file),
            V(link), V(directory), V(other), V(missing) or V(unreadable)), mode, owner and
            group names, a link's target, and a file's size and SHA-256 (or HMAC).
        type: list
        elements: dict
        suboptions:
          path:
            description:
              - The path; with O(spec.paths[].user), a path relative to that account's home.
            type: str
            required: true
          content:
            description:
              - Also return the file's text when it is at most 256 KiB of UTF-8 (for C(--diff)
                and for merging a file the role does not own). Never for a secret file.
            type: bool
            default: false
          secret:
            description:
              - The file holds a secret (a token file, a netrc), so report an HMAC under the
                probe's salt instead of its SHA-256, and never its content.
            type: bool
            default: false
          redact:
            description:
              - With O(spec.paths[].content), replace any password in a URL (V(https://user:token@...))
                by V(***) on the host, so that a hand-written file's token never leaves it.
            type: bool
            default: false
          user:
            description:
              - An account whose home the path is relative to (such as V(.netrc) of V(deploy)),
                taken from the host's passwd.
            type: str
      pythons:
        description:
          - Commands or paths of Pythons; for each, its executable, version and the version of
            the pip it runs (read from pip's files, without importing pip).
        type: list
        elements: str
      groups:
        description: Group names; for each, whether it exists, its GID and its members.
        type: list
        elements: str
      users:
        description: Account names; for each, whether it exists, its home and its groups.
        type: list
        elements: str
      diversions:
        description: Paths; for each, where dpkg diverts it (from dpkg's own database), or null.
        type: list
        elements: str
      listdir:
        description: Directories; for each, the names in it (none when it does not exist).
        type: list
        elements: str
      writable:
        description: Paths; for each, whether it is a directory that the probe's user may write into.
        type: list
        elements: str
      os:
        description: Read C(/etc/os-release) (ID, VERSION_ID, ID_LIKE, PRETTY_NAME, VERSION_CODENAME)
          and the machine's architecture.
        type: bool
        default: false
      http:
        description:
          - URLs to ask with a HEAD request from the host (whether PyPI answers, for example);
            each answer says whether it came and how long it took.
        type: list
        elements: dict
        suboptions:
          url:
            description: The URL.
            type: str
            required: true
          timeout:
            description: Seconds to wait.
            type: float
            default: 5
          cafile:
            description: A CA bundle on the host; the system's when not given.
            type: str
          proxy:
            description: A proxy URL for http and https.
            type: str
      wheelhouse:
        description:
          - A wheelhouse's path; the result's C(wheelhouse) is what the wheelhouse's own probe
            reports (the platform of the probe's Python, the free space, the current
            wheelhouse's files and manifest; C(wheelhouse_host.py probe)). The action sends
            that program along with the probe, in the same call.
        type: str
  also:
    description:
      - Other specs to read in the same call, by name, each as O(spec) is; the answers are in
        RV(also), for later probes' O(read). A Python several specs ask about is run once.
      - For plays that run several roles' checks one after the other (C(playbooks/hosts.yml)
        reads each host once for pipfeed_config, the wheelhouse and the credential helper).
    type: dict
    default: {}
  read:
    description:
      - A read an earlier probe made with O(also) (one entry of its RV(also)). When it answers
        the same O(spec), it is the result and the host is not contacted; otherwise the host
        is read.
      - Nothing may change the host between the two tasks (the roles' checks only read).
    type: dict
  problems:
    description:
      - What the role's checks of its settings found on the controller, one message each
        (an empty list when nothing is wrong). When there are any, the task fails with them,
        joined (white space made single spaces), and the host is not read.
      - So that a role checks its settings and reads its host in one task.
    type: list
    elements: str
    default: []
  fail_msg:
    description:
      - What the failure message says first when the host's Python cannot run the probe; the
        program's output follows it.
      - Without it, the message says to install C(python3) or to point the role's python
        variable at it.
    type: str
extends_documentation_fragment:
  - pipfeed.feed.attributes.host
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  become:
    details: Reading root-only files (token files, C(/etc/pipfeed)) needs C(become).
  check_mode:
    support: full
    details:
      - The probe only reads, and the action runs it in check mode as in a normal run, so that
        a check run decides from the host's real state. C(check_mode=false) on the task is not
        needed.
  diff_mode:
    support: none
notes:
  - The result always reports C(changed) as V(false).
  - O(spec.http) makes requests from the host to the URLs given; nothing on the host changes.
seealso:
  - module: pipfeed.feed.host_apply
  - module: pipfeed.feed.feed_check
"""

EXAMPLES = r"""
- name: Read the host's pip configuration, Python and pip (one call)
  pipfeed.feed.host_probe:
    python: /usr/bin/python3
    spec:
      paths:
        - {path: /etc/pip.conf, content: true, redact: true}
        - {path: /etc/pipfeed/tokens/python-feed.token, secret: true}
        - {path: .netrc, user: deploy}
      pythons: [python3]
      groups: [pipfeed]
      users: [deploy]
      diversions: [/usr/bin/keyring]
      writable: [/etc]
      os: true
  register: probe
  become: true

- name: Show the host's OS and its pip
  ansible.builtin.debug:
    msg: "{{ probe.probe.os.pretty_name }}, pip {{ probe.probe.pythons.python3.pip }}"
"""

RETURN = r"""
also:
  description:
    - For each name of O(also), C(spec_id) (the identity of the spec it answers) and C(probe)
      (as RV(probe), for that spec). Give an entry to a later probe's O(read).
  returned: when O(also) is given
  type: dict
read_before:
  description: The result is O(read), and the host was not contacted.
  returned: when O(read) answered the spec
  type: bool
probe:
  description:
    - The host's state, for M(pipfeed.feed.host_apply) and M(pipfeed.feed.feed_check) (their
      O(pipfeed.feed.host_apply#module:current)). Only the keys that O(spec) asked for, and RV(probe.salt).
  returned: success
  type: dict
  contains:
    salt:
      description: The probe's one-time HMAC key, in hex; the controller compares a secret
        file's HMAC with the HMAC of the wanted content under it.
      returned: always
      type: str
    paths:
      description:
        - One entry per O(spec.paths) item, in order, with C(path), C(type) (V(file), V(link),
          V(directory), V(other), V(missing) or V(unreadable)), and where it exists C(mode)
          (such as V(0644)), C(owner) and C(group).
        - A link has C(src); a file C(size) and C(sha256), or C(hmac) when secret, and
          C(content) when asked for and readable as text (C(binary) when it is not). C(error)
          says why something could not be read; C(user) repeats O(spec.paths[].user).
      returned: always
      type: list
      elements: dict
      sample: [{path: /etc/pip.conf, type: file, mode: "0644", owner: root, group: root,
                size: 120, sha256: "9f86d0..."}]
    pythons:
      description: Per command of O(spec.pythons), its C(executable), C(version) and C(pip)
        version (V("") without pip), or C(error).
      returned: when O(spec.pythons) is not empty
      type: dict
      sample: {python3: {command: python3, executable: /usr/bin/python3, version: 3.11.2, pip: 23.0.1}}
    groups:
      description: Per group of O(spec.groups), C(exists), C(gid) and C(members).
      returned: when O(spec.groups) is not empty
      type: dict
    users:
      description: Per account of O(spec.users), C(exists), C(home) and C(groups).
      returned: when O(spec.users) is not empty
      type: dict
    diversions:
      description: Per path of O(spec.diversions), where dpkg diverts it, or null.
      returned: when O(spec.diversions) is not empty
      type: dict
      sample: {/usr/bin/keyring: /usr/bin/keyring.distrib}
    listdir:
      description: Per directory of O(spec.listdir), the sorted names in it.
      returned: when O(spec.listdir) is not empty
      type: dict
    writable:
      description: Per path of O(spec.writable), whether it is a directory the probe may write into.
      returned: when O(spec.writable) is not empty
      type: dict
    os:
      description: C(id), C(version_id), C(id_like), C(pretty_name), C(version_codename) (those
        that C(/etc/os-release) has) and C(machine).
      returned: when O(spec.os) is true
      type: dict
      sample: {id: debian, version_id: "12", pretty_name: Debian GNU/Linux 12 (bookworm), machine: x86_64}
    http:
      description: Per item of O(spec.http), C(url), C(answers) (true when any HTTP answer came),
        C(status) for an HTTP error, C(error) when none came, and C(seconds).
      returned: when O(spec.http) is not empty
      type: list
      elements: dict
msg:
  description: Why the probe failed (O(fail_msg), then what the host's Python said).
  returned: failure
  type: str
"""

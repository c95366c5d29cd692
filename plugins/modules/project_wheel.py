# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: project_wheel
short_description: Pack the collection into a wheel for a VM's first boot, and upload it to the feed
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - Packs the collection's host-side part (the playbooks C(site.yml) and C(verify.yml), the
    roles they run and the plugins) into a wheel, so that a VM at first boot installs it from
    the feed, the one index a locked-down VM reaches, with ansible-core as its dependency. The
    roles alone are larger than Azure's 64 KB custom-data limit once base64-encoded; a pinned
    wheel costs one line of user-data.
  - Built and uploaded in the controller's Ansible process
    (C(plugins/plugin_utils/project_wheel.py)). It never contacts the host.
  - V(build) is reproducible (sorted entries, fixed timestamps), and the wheel's version is
    derived from its content, since feeds refuse to replace a published version and a changed
    project must never reuse one. The wheel is written only when the same file is not there
    already.
  - V(upload) speaks the legacy upload API that twine uses (Azure Artifacts, pypiserver, devpi,
    Nexus), with the standard library only. HTTP 409 (the feed has this version, so this very
    file) is not a change.
  - This is an action plugin; the module file only documents it.
options:
  command:
    description: V(build) the wheel, or V(upload) a built one.
    type: str
    required: true
    choices: [build, upload]
  dest:
    description: For V(build), the directory on the controller the wheel is written to (created when missing).
    type: str
  requires:
    description:
      - For V(build), the wheel's dependencies (C(Requires-Dist)), such as V(ansible-core==2.19.14).
        They are part of the content that the version derives from.
    type: list
    elements: str
    default: []
  wheel:
    description: For V(upload), what V(build) returned (its RV(result)).
    type: dict
  url:
    description: For V(upload), the feed's upload URL (Azure Artifacts C(.../_packaging/<feed>/pypi/upload/)).
    type: str
  ca:
    description: For V(upload), a CA bundle on the controller; the system's when empty.
    type: str
    default: ''
  username:
    description: For V(upload), the user name sent with the token.
    type: str
    default: pipfeed
  token:
    description:
      - For V(upload), the feed's token (with the scope Packaging Read & write on Azure
        Artifacts), as the C(pipfeed.feed.token) lookup returns it. The task must be C(no_log).
    type: str
extends_documentation_fragment:
  - pipfeed.feed.attributes.controller
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: partial
    details:
      - In check mode V(upload) sends nothing and reports that it would upload (changed).
      - V(build) runs in check mode too, writing the wheel on the controller only (the user-data
        that check mode renders pins its hash). It never contacts a host.
  diff_mode:
    support: none
notes:
  - V(build) always reports C(changed) as V(false), also when it writes a new wheel.
    V(upload) reports V(true) when the feed took the file.
seealso:
  - module: pipfeed.feed.publish
"""

EXAMPLES = r"""
- name: Pack the collection's playbooks, roles and plugins into the project wheel
  pipfeed.feed.project_wheel:
    command: build
    dest: build/cloud-init
    requires: [ansible-core==2.19.14]
  register: built
  run_once: true

- name: Upload the project wheel to the feed
  pipfeed.feed.project_wheel:
    command: upload
    wheel: "{{ built.result }}"
    url: https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/upload/
    ca: ""
    username: pipfeed
    token: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}"
  register: uploaded
  failed_when: false
  run_once: true
  no_log: true

- name: Stop when the upload failed (the message holds no token)
  ansible.builtin.assert:
    that: uploaded.error is not defined
    fail_msg: "{{ uploaded.error | default('') }}"
  run_once: true
"""

RETURN = r"""
result:
  description: What V(build) made, or what the feed answered to V(upload).
  returned: success
  type: dict
  contains:
    path:
      description: The wheel's path on the controller.
      returned: for V(build)
      type: str
      sample: build/cloud-init/pipfeed_feed_collection-1.0.123456789012345-py3-none-any.whl
    filename:
      description: The wheel's file name.
      returned: for V(build)
      type: str
    name:
      description: The distribution's name.
      returned: for V(build)
      type: str
      sample: pipfeed-feed-collection
    version:
      description: Its version, V(1.0.<number>) derived from the content.
      returned: for V(build)
      type: str
      sample: 1.0.123456789012345
    sha256:
      description: The wheel's SHA-256, which the user-data pins.
      returned: for V(build)
      type: str
    files:
      description: How many of the collection's files are in it.
      returned: for V(build)
      type: int
    status:
      description: The HTTP status of the upload (V(409) when the feed had the file).
      returned: for V(upload)
      type: int
      sample: 200
    uploaded:
      description: Whether the feed took the file (false for 409).
      returned: for V(upload)
      type: bool
error:
  description: What went wrong (never the token), the same as RV(msg), so that a C(no_log) task
    with C(failed_when=false) can hand it to a task that shows it.
  returned: when the build or the upload failed
  type: str
  sample: >-
    the feed answered HTTP 403 to the upload of pipfeed_feed_collection-...whl to https://...:
    the token needs Packaging (Read & write)
msg:
  description: Why the task failed.
  returned: failure
  type: str
"""

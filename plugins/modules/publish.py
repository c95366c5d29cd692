# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: publish
short_description: Fill a feed with packages and their dependency closure for every target platform
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - The controller side of the publish playbook, run in the controller's Ansible process
    (C(plugins/plugin_utils/publish.py)). It never contacts the host.
  - V(check) normalises and checks the inputs (the requirement lines, the requirement file, the
    platforms), with no network.
  - V(run) resolves the packages and their whole dependency closure for every target platform,
    downloads the wheels from the upstream index, reads the feed's index, and uploads with
    twine what the feed lacks, dependencies first, so that a run that stops half-way leaves no
    package whose dependencies are missing. It returns a report per file.
  - The closure is resolved here, not by pip. pip evaluates the environment markers of
    dependencies for the Python that runs it, so a closure resolved on a 3.11 controller would
    miss what a 3.9 host needs. pip only downloads, one dependency level at a time with
    C(--no-deps), and the markers are evaluated for each target.
  - The token is an option of its own, never in O(spec). twine gets it through its environment
    (C(TWINE_PASSWORD)), never on a command line, and an error's message has the token scrubbed
    out, whatever tool printed it. pip and twine read no setting of the controller (no
    C(/etc/pip.conf), C(PIP_*), C(TWINE_*), C(NETRC) or CA overrides).
  - This is an action plugin; the module file only documents it.
options:
  command:
    description: V(check) the inputs, or V(run) the publication.
    type: str
    required: true
    choices: [check, run]
  spec:
    description:
      - What to publish, for which platforms, from where and to which feed. V(run) needs
        O(spec.upstream_url), O(spec.feed_url), O(spec.upload_url) and O(spec.cache_dir) besides
        what V(check) needs.
    type: dict
    required: true
    suboptions:
      packages:
        description:
          - Requirement strings (V(requests), V(pydantic>=2)); no pip options, no direct URLs.
            At least one, or O(spec.requirements).
        type: list
        elements: str
      requirements:
        description: A requirement file on the controller, with the same rules as O(spec.packages).
        type: str
      platforms_given:
        description:
          - The target platforms, by hand, each C({python, glibc, arch, abi}). C(python) and
            C(glibc) are quoted version strings (V('3.11'), V('2.36'); YAML reads 3.10 as 3.1),
            C(arch) defaults to V(x86_64) and C(abi) to the CPython ABI of C(python).
          - When given, O(spec.platforms_probed) is not used.
        type: list
        elements: dict
      platforms_probed:
        description:
          - The hosts' platforms as C(wheelhouse_host.py probe) reports them, when
            O(spec.platforms_given) is empty. Only CPython on glibc (manylinux) is published.
        type: list
        elements: dict
      upstream_url:
        description: The PEP 503 index to download from (V(https://pypi.org/simple/)), without credentials.
        type: str
      upstream_cert:
        description: A CA bundle for the upstream index (pip's C(--cert)).
        type: str
      feed_name:
        description: The feed's name, for the messages and the report.
        type: str
        default: ''
      feed_url:
        description: The feed's PEP 503 index URL, read with the token to find what it holds.
        type: str
      upload_url:
        description: The URL twine uploads to (C(--repository-url)).
        type: str
      cert:
        description: A CA bundle for the feed, for reading its index and for twine.
        type: str
      username:
        description: The user name sent with the token.
        type: str
        default: pipfeed
      token_source:
        description: How the messages name the token's source (such as
          V(the controller environment variable FEED_TOKEN (token_env))).
        type: str
      dry_run:
        description:
          - Resolve, download and read the feed, report what would be uploaded, and upload
            nothing. The action does not look at check mode; the publish role sets this in check
            mode.
        type: bool
        default: false
      report_file:
        description: A file on the controller where the report of V(run) is written as JSON.
        type: str
      cache_dir:
        description: The controller's download cache (C(~) is expanded).
        type: str
      timeout:
        description: Seconds each pip and twine call may take.
        type: int
        default: 1800
      http_timeout:
        description: Seconds each request to the feed's index may take.
        type: float
        default: 60
  token:
    description:
      - The feed's token, for V(run), as the C(pipfeed.feed.token) lookup returns it (with the
        scope Packaging Read & write on Azure Artifacts). The task must be C(no_log).
    type: str
    default: ''
extends_documentation_fragment:
  - pipfeed.feed.attributes.controller
  - action_common_attributes
  - action_common_attributes.conn
  - action_common_attributes.flow
attributes:
  check_mode:
    support: partial
    details:
      - The action does not look at check mode, and runs as in a normal run. It never contacts
        a host.
      - V(check) only reads. V(run) downloads into the controller's cache and uploads to the
        feed unless O(spec.dry_run) is true, in check mode too; the publish role sets
        O(spec.dry_run) in check mode.
  diff_mode:
    support: none
  platform:
    details:
      - It runs on the controller, whatever the target's platform. V(run) needs twine in the
        controller's Python to upload.
notes:
  - A file that cannot be uploaded does not fail the task; its entry in RV(result.files) says
    C(failed) with the reason, and a new run uploads only what is still missing.
  - C(changed) is V(true) when V(run) uploaded at least one file.
seealso:
  - module: pipfeed.feed.wheelhouse_build
"""

EXAMPLES = r"""
- name: Check the requirements and the platforms on the controller
  pipfeed.feed.publish:
    command: check
    spec:
      packages: [requests, pydantic>=2]
      platforms_given:
        - {python: "3.11", glibc: "2.36", arch: x86_64}
        - {python: "3.9", glibc: "2.31"}
  run_once: true

- name: Publish the closure to the feed
  pipfeed.feed.publish:
    command: run
    spec:
      packages: [requests, pydantic>=2]
      platforms_given: [{python: "3.11", glibc: "2.36"}]
      upstream_url: https://pypi.org/simple/
      feed_name: python-feed
      feed_url: https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/simple/
      upload_url: https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/upload/
      cache_dir: ~/.cache/pipfeed/publish
      dry_run: "{{ ansible_check_mode }}"
    token: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}"
  register: published
  failed_when: false
  run_once: true
  no_log: true

- name: Stop when the run could not resolve, download or read the feed (no token in the message)
  ansible.builtin.assert:
    that: published.error is not defined
    fail_msg: "{{ published.error | default('') }}"
  run_once: true

- name: Report the totals
  ansible.builtin.debug:
    msg: "{{ published.result.summary }}"
  run_once: true
"""

RETURN = r"""
result:
  description: For V(check), the platforms; for V(run), the report.
  returned: success
  type: dict
  contains:
    platforms:
      description:
        - For V(check), the target platforms, normalised and without duplicates (C(key),
          C(python), C(implementation), C(abi), C(arch), C(glibc)).
        - For V(run), their keys.
      returned: always
      type: list
      sample: [cp311-glibc2.36-x86_64]
    dry_run:
      description: Whether nothing was to be uploaded (O(spec.dry_run)).
      returned: for V(run)
      type: bool
    feed:
      description: O(spec.feed_name).
      returned: for V(run)
      type: str
    files:
      description:
        - One entry per file of the closure, dependencies first, with C(file), C(project),
          C(version), C(platforms) (the keys it serves), C(sha256), C(status) (V(uploaded),
          V(skipped), V(failed) or V(would upload)), C(reason) and C(line) (one line for the
          output).
      returned: for V(run)
      type: list
      elements: dict
      sample: [{file: idna-3.10-py3-none-any.whl, project: idna, version: "3.10",
                platforms: [cp311-glibc2.36-x86_64], sha256: "946d...", status: skipped,
                reason: already on the feed,
                line: "skipped: idna-3.10-py3-none-any.whl (already on the feed) [cp311-glibc2.36-x86_64]"}]
    counts:
      description: How many files have each status (C(uploaded), C(skipped), C(failed), C(would upload)).
      returned: for V(run)
      type: dict
      sample: {uploaded: 2, skipped: 10, failed: 0, would upload: 0}
    summary:
      description: One sentence for the end of the run.
      returned: for V(run)
      type: str
      sample: "2 uploaded, 10 skipped (already on the feed), 0 failed, of 12 files for feed python-feed."
error:
  description: What went wrong, with the token scrubbed out, the same as RV(msg), so that a C(no_log)
    task with C(failed_when=false) can hand it to a task that shows it.
  returned: failure
  type: str
  sample: "publish: feed python-feed answered 401 to https://.../idna/: it does not take the token from ..."
msg:
  description: The same as RV(error).
  returned: failure
  type: str
"""

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
---
module: wheelhouse_build
short_description: Check and build the wheelhouse's requirement set on the controller, one build per platform
version_added: 1.0.0
author: pipfeed contributors (@pipfeed)
description:
  - The controller side of the wheelhouse, run in the controller's Ansible process
    (C(plugins/plugin_utils/wheelhouse_build.py)). No host is contacted, and no command is
    started for V(check), so a run that changes nothing pays for one task, once.
  - The requirement set is resolved here for each target platform, not by pip. pip evaluates
    environment markers for the Python that runs it, not for C(--python-version), so every
    requirement must be pinned (with C(==) or by the constraints file), and the dependency
    closure is checked from each wheel's metadata, evaluated for the target. A dependency that
    the constraints pin is added; one that nothing pins fails the build with its name.
  - The file of each pin is chosen here, not by the controller's pip, so that every controller
    builds the same wheelhouse from the same lock. From the index's page of the project (PEP
    503) it takes the wheel of the pinned version whose best tag comes first in the target's
    tag priority (the order the target's pip accepts tags, computed by the collection for
    CPython, the ABI, abi3, manylinux and C(py3-none-any)); among equals the highest build tag,
    then the smallest file name. It downloads that file only, and checks it against the page's
    C(#sha256=) and the lock's C(--hash) where the lock lists any. A release with no such
    wheel comes as its sdist (built on a host, below).
  - V(check) checks the requirement set for every platform (pinned, parseable) and returns which
    platforms the cache already holds a complete, verified build of.
  - V(build) downloads what the cache lacks. A release with no wheel for a platform comes as its
    sdist, and the platform's result is then pending (one archive with the sdists and the
    wheels of their build dependencies, for a host of that platform to build with
    C(wheelhouse_host.py build)); the next V(build), told in O(spec.built) which host built
    them, takes the wheels back into the cache and finishes the set.
  - For V(build), the token goes as HTTP Basic authentication to the index's own origin (scheme,
    host and port of O(spec.index_url)) only, never with a redirect to another origin (Azure
    Artifacts answers a download with a 303 to a blob host). pip, which fetches only the build
    dependencies of sdist-only releases, reads it from a netrc file in a private temporary
    directory for the length of the call (through C(NETRC), for the index's host only), and the
    directory is removed whatever happens. pip reads no other setting of the controller
    (C(PIP_CONFIG_FILE=/dev/null), no C(PIP_*), no CA overrides).
  - The manifest and C(requirements.txt) hold nothing of the controller (sorted keys, no path,
    no time, no index URL), so every controller writes them byte for byte alike. The manifest
    carries the lock's identity (C(lock)), from which a host's wheelhouse that another
    controller built is recognised as an answer to the same lock (see
    P(pipfeed.feed.wheelhouse_delta#filter)).
  - This is an action plugin; the module file only documents it.
options:
  command:
    description: V(check) the requirement set and the cache, or V(build) what the cache lacks.
    type: str
    required: true
    choices: [check, build]
  spec:
    description: What to build, and where from.
    type: dict
    required: true
    suboptions:
      requirements:
        description:
          - The requirement file on the controller. Requirements only (no pip options, no direct
            URLs), each pinned with C(==) or by O(spec.constraints); C(--hash) options are
            checked against what the index serves.
        type: str
        required: true
      constraints:
        description: A constraints file on the controller, whose C(==) pins fill in the
          requirements' versions and pin their dependencies (a lock file).
        type: str
        default: ''
      cache_dir:
        description: The controller's cache, one directory per platform (C(~) is expanded).
        type: str
        required: true
      index_url:
        description: The PEP 503 index the controller downloads from, without credentials (the
          token goes as HTTP Basic authentication to this URL's origin only).
        type: str
        required: true
      cert:
        description: A CA bundle for the controller's downloads and for pip (C(PIP_CERT)), also
          for the pip that installs an sdist's build dependencies; the controller's system
          store (and pip's own bundle, for pip) when not given.
        type: str
      host_path:
        description: The wheelhouse's path on the hosts, named in the C(requirements.txt) the build
          writes (part of the lock's identity).
        type: str
        default: /var/lib/pipfeed/wheelhouse
      platforms:
        description:
          - The target platforms, each as C(wheelhouse_host.py probe) reports it (C(key),
            C(python), C(implementation), C(abi), C(arch), C(glibc)). Only CPython on glibc
            (manylinux) is built.
        type: list
        elements: dict
        required: true
      built:
        description:
          - For the V(build) that finishes a pending set, which host built each platform's
            sdists, a mapping of platform key to host name. The wheels it built were fetched
            back to the pending result's C(result) path.
        type: dict
      timeout:
        description: Seconds each pip call may take.
        type: int
        default: 1800
      http_timeout:
        description: Seconds each request to the index may wait for an answer; a busy index
          (429, 5xx) or a broken connection is tried three times.
        type: int
        default: 60
  token:
    description:
      - The index feed's token, for V(build), as the C(pipfeed.feed.token) lookup returns it;
        empty for an index that needs none. The task must be C(no_log).
      - It stays in the controller's memory (HTTP Basic authentication to the index's origin),
        and in a private netrc file for pip while the call lasts.
    type: str
    default: ''
  username:
    description: The user name that goes with the token.
    type: str
    default: pipfeed
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
      - V(check) only reads (it may refresh the cache's record of the files it verified).
        V(build) downloads into the controller's cache, in check mode too. Both report
        C(changed) as V(false).
  diff_mode:
    support: none
  platform:
    support: full
    platforms: all
    details:
      - It runs on the controller, whatever the target's platform, with the controller's Python
        (3.11 or later) and C(packaging), which ansible-core needs. The wheels' target platforms
        are O(spec.platforms).
notes:
  - A cached file that does not match its manifest stops the run (the cache was altered); delete
    it, or the platform's cache directory, to download it again.
seealso:
  - module: pipfeed.feed.host_script
"""

EXAMPLES = r"""
- name: Check the requirement set for every platform, and the controller's cache
  pipfeed.feed.wheelhouse_build:
    command: check
    spec:
      requirements: files/requirements.txt
      constraints: files/constraints.txt
      cache_dir: ~/.cache/pipfeed/wheelhouse
      index_url: https://pkgs.dev.azure.com/contoso/_packaging/python-feed/pypi/simple/
      platforms:
        - {key: cp311-glibc2.36-x86_64, python: "3.11", implementation: cpython, abi: cp311,
           arch: x86_64, glibc: "2.36"}
  register: checked
  run_once: true

- name: Download what the cache lacks (the token goes only into a private netrc file)
  pipfeed.feed.wheelhouse_build:
    command: build
    spec: "{{ wheelhouse_spec }}"
    token: "{{ lookup('pipfeed.feed.token', pipfeed_feeds[0]) }}"
    username: pipfeed
  register: built
  failed_when: false
  run_once: true
  no_log: true

- name: Stop when the download failed (the message holds no token)
  ansible.builtin.assert:
    that: built.error is not defined
    fail_msg: "{{ built.error | default('') }}"
  run_once: true
"""

RETURN = r"""
result:
  description:
    - For V(check), C(ok) (V(true)) and C(plan), a mapping of each platform key to its complete
      build in the cache, or null when the cache has none.
    - For V(build), a mapping of each platform key to its build. A complete build has C(key),
      C(dir) (the platform's cache), C(files) (per file name its C(sha256), C(size) and C(src),
      with C(built_from) and C(built_from_sha256) for a wheel built from an sdist;
      C(requirements.txt) and C(manifest.json) among them), C(manifest_sha256), C(downloaded)
      (what this call fetched), C(built), and C(answer) (C(format), C(lock), C(platform), and
      C(pins), per project its C(version) and the lock's C(hashes)), which
      P(pipfeed.feed.wheelhouse_delta#filter) judges a host's wheelhouse by.
    - A pending build has C(key), C(dir), C(pending) (the C(name) and C(version) of each
      sdist-only release), C(sources) (the archive for the host that builds them), C(result)
      (where their wheels must be fetched to) and C(downloaded).
  returned: success
  type: dict
  sample:
    cp311-glibc2.36-x86_64:
      key: cp311-glibc2.36-x86_64
      dir: /home/me/.cache/pipfeed/wheelhouse/cp311-glibc2.36-x86_64
      files: {}
      manifest_sha256: 5d41402a...
      downloaded: []
      built: []
error:
  description: What went wrong (pip's output names the index URL, never the token), the same as
    RV(msg), so that a C(no_log) task with C(failed_when=false) can hand it to a task that shows it.
  returned: failure
  type: str
  sample: "wheelhouse: pipfeed_wheelhouse_requirements line 3: 'requests' is not pinned. ..."
msg:
  description: The same as RV(error).
  returned: failure
  type: str
"""

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pack the collection's host-side part (the playbooks site.yml and verify.yml, the roles they
run and the plugins) into a wheel, so that a VM at first boot installs it from the feed (the
one index a locked-down VM reaches) with ansible-core as its dependency. The wheel puts the
collection at ansible_collections/pipfeed/feed in the venv's site-packages, where Ansible finds
collections by itself: the VM runs ansible-playbook pipfeed.feed.site, as a controller does.

Why a wheel and not the files inside the user-data: the roles alone are larger than Azure's
64 KB custom-data limit once base64-encoded; a pinned wheel costs one line of user-data.

The wheel is reproducible (sorted entries, fixed timestamps), and its version is derived from
its content: feeds refuse to replace a published version, and a changed project must never
reuse one. The user-data pins the wheel's SHA-256, so a VM refuses any other file.

The action pipfeed.feed.project_wheel calls build (-> {path, name, version, sha256}) and
upload (-> {status, uploaded}) in the controller's Ansible process.

The upload speaks the legacy upload API that twine uses (Azure Artifacts, pypiserver, devpi,
Nexus): one multipart/form-data POST with the wheel's raw bytes. 409 means the feed has that
version already, which for a content-derived version means the same file. Standard library
only; the token never reaches a command line or the output.
"""
from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

NAME = "pipfeed-feed-collection"
# Where the collection's files go inside the wheel (and so in site-packages).
PREFIX = "ansible_collections/pipfeed/feed"
# The collection this module is part of: plugins/plugin_utils/ is two levels below its root.
COLLECTION_ROOT = str(Path(__file__).resolve().parents[2])
# What pipfeed.feed.site and pipfeed.feed.verify need on the VM; the controller-only roles
# (publish, cloud_init), tests, molecule scenarios and docs stay behind.
INCLUDE = ("meta/runtime.yml", "playbooks/site.yml", "playbooks/hosts.yml",
           "playbooks/wheelhouse.yml", "playbooks/verify.yml", "plugins",
           "roles/pipfeed_common", "roles/pipfeed_config", "roles/pipfeed_credential_helper",
           "roles/pipfeed_wheelhouse", "roles/pipfeed_verify")
SKIP_DIRS = {"molecule", "__pycache__", "tests"}
SKIP_FILES = {"README.md"}
STAMP = (2020, 1, 1, 0, 0, 0)


def project_files(root: str) -> list[tuple[str, bytes, int]]:
    """(path inside the project, bytes, mode) for every file that goes in, sorted."""
    found = []
    for entry in INCLUDE:
        base = os.path.join(root, entry)
        if os.path.isfile(base):
            paths = [base]
        else:
            paths = []
            for folder, dirs, files in os.walk(base):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
                paths += [os.path.join(folder, f) for f in sorted(files)
                          if f not in SKIP_FILES and not f.endswith(".pyc")]
        for path in paths:
            with open(path, "rb") as handle:
                data = handle.read()
            mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
            found.append((os.path.relpath(path, root).replace(os.sep, "/"), data, mode))
    return sorted(found)


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


class ProjectWheelError(Exception):
    """The upload failed; the message says why, without the token."""


def build(dest: str, requires: list[str], root: str = COLLECTION_ROOT) -> dict:
    files = project_files(root)
    content = hashlib.sha256()
    for path, data, mode in files:
        content.update(path.encode() + b"\0" + oct(mode).encode() + b"\0" + data)
    content.update(json.dumps(requires).encode())
    # A release number of its own per content: 1.0.<first 12 hex digits as a decimal>.
    version = f"1.0.{int(content.hexdigest()[:12], 16)}"
    dist = f"{NAME.replace('-', '_')}-{version}.dist-info"
    entries = [(f"{PREFIX}/{path}", data, mode) for path, data, mode in files]
    metadata = ("Metadata-Version: 2.1\n"
                f"Name: {NAME}\nVersion: {version}\n"
                "Summary: the collection pipfeed.feed's playbooks, roles and plugins, for a VM's "
                "first boot\n"
                "Requires-Python: >=3.11\n"
                + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    wheel_info = (b"Wheel-Version: 1.0\nGenerator: pipfeed\nRoot-Is-Purelib: true\n"
                  b"Tag: py3-none-any\n")
    entries += [(f"{dist}/METADATA", metadata, 0o644), (f"{dist}/WHEEL", wheel_info, 0o644)]
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data, _ in entries)
    record += f"{dist}/RECORD,,\n"
    entries.append((f"{dist}/RECORD", record.encode(), 0o644))
    name = f"{NAME.replace('-', '_')}-{version}-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data, mode in entries:
            info = zipfile.ZipInfo(path, STAMP)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    blob = buffer.getvalue()
    os.makedirs(dest, exist_ok=True)
    target = os.path.join(dest, name)
    if not (os.path.exists(target) and open(target, "rb").read() == blob):
        with open(target + ".tmp", "wb") as handle:
            handle.write(blob)
        os.replace(target + ".tmp", target)
    return {"path": target, "filename": name, "name": NAME, "version": version,
            "sha256": hashlib.sha256(blob).hexdigest(), "files": len(files)}


def upload(url: str, wheel: dict, cafile: str, username: str, token: str) -> dict:
    with open(wheel["path"], "rb") as handle:
        blob = handle.read()
    fields = {":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
              "name": wheel["name"], "version": wheel["version"], "filetype": "bdist_wheel",
              "pyversion": "py3", "sha256_digest": hashlib.sha256(blob).hexdigest()}
    boundary = "pipfeed-" + hashlib.sha256(blob).hexdigest()[:32]
    body = io.BytesIO()
    for key, value in fields.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                   f"{value}\r\n".encode())
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
               f'filename="{wheel["filename"]}"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n".encode())
    body.write(blob + f"\r\n--{boundary}--\r\n".encode())
    pair = base64.b64encode(f"{username}:{token}".encode()).decode()
    request = urllib.request.Request(url, data=body.getvalue(), method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": f"Basic {pair}", "User-Agent": "pipfeed-project-upload"})
    context = ssl.create_default_context(cafile=cafile or None)
    try:
        with urllib.request.urlopen(request, timeout=120, context=context) as answer:
            return {"status": answer.status, "uploaded": True}
    except urllib.error.HTTPError as error:
        if error.code == 409:
            return {"status": 409, "uploaded": False}
        raise ProjectWheelError(f"the feed answered HTTP {error.code} to the upload of "
                                f"{wheel['filename']} to {url}"
                                + (": the token needs Packaging (Read & write)"
                                   if error.code in (401, 403) else ""))
    except (urllib.error.URLError, OSError) as error:
        raise ProjectWheelError(f"cannot upload {wheel['filename']} to {url}: "
                                f"{getattr(error, 'reason', error)}")

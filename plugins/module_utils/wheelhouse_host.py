# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host side of the wheelhouse, standard library only (a locked-down VM has nothing else).

Two commands, each one Ansible task, so that a host costs a constant number of round trips
whatever the number of wheels:

``probe``  reports the host's platform (Python, ABI, architecture, glibc), the free space where
           the wheelhouse lives, the SHA-256 of every file the current wheelhouse holds, and its
           manifest.json. The controller compares that list with the manifest it built and
           decides what to send (nothing, where the host's own manifest already answers the
           same lock: a wheelhouse another controller built).
``apply``  builds the next wheelhouse in a new directory next to the current one (unchanged
           wheels hard-linked from it, new ones written from one bundle: see unpack), checks
           every file against the manifest, and only then swaps the wheelhouse symlink with a
           rename. A run that dies before the rename leaves the previous wheelhouse whole;
           the next run removes what it left behind.
``build``  (on one host per platform, and only when a release has no wheel for it) builds
           the wheels of the sdists in one tar with ``pip wheel --no-index``: their build
           dependencies came in the same tar, so nothing is fetched. It runs as the login
           user in a directory that the role removes afterwards, and leaves one tar of wheels
           for the controller to fetch.
``plan``   what ``apply`` would do, changing nothing (check mode).
``venv-install`` installs the whole set into a venv: ``pip install --no-index --find-links
           <wheelhouse> --require-hashes -r <wheelhouse>/requirements.txt``.
``venv-plan`` whether venv-install would change the venv, changing nothing (check mode).

Layout: ``<path>`` is a symlink to ``.<name>.d/<version>`` in the same parent directory;
``.<name>.d/<version>.sums`` remembers each file's SHA-256 with its size, inode and times, so
that a re-run's probe hashes only files that changed since (a write to a file changes its
modification and change times; a re-run then hashes it and finds the damage).

The action pipfeed.feed.host_script sends this script to Python on its standard input, and
for ``apply`` the bundle of missing wheels right after it: one pipelined SSH round trip per
call, where a copied script and a copied archive cost several.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time

MANIFEST = "manifest.json"
CHUNK = 1 << 20
# A bundle's list of files: about 100 bytes a wheel.
HEADER_LIMIT = 16 << 20
# How long an apply waits for another one on the same wheelhouse to end.
LOCK_WAIT = 600
# The most bytes of the current manifest.json the probe returns (a few hundred per wheel).
MANIFEST_LIMIT = 4 << 20


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def store_dir(path: str) -> str:
    """Where the versions live: next to the wheelhouse, so hard links and rename work."""
    parent, name = os.path.split(path.rstrip("/"))
    return os.path.join(parent, "." + name + ".d")


def current_dir(path: str):
    """The directory the wheelhouse path resolves to, or None."""
    return os.path.realpath(path) if os.path.isdir(path) else None


def stamp(stat) -> list:
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]


def sums_path(directory: str) -> str:
    return directory.rstrip("/") + ".sums"


def read_sums(directory) -> dict:
    try:
        with open(sums_path(directory)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def list_files(directory) -> dict:
    """Every regular file in the directory, with its SHA-256 and size (no subdirs). A file whose
    size, inode and times match the sums file keeps its recorded hash; any other is hashed."""
    files = {}
    if not directory:
        return files
    known = read_sums(directory)
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            record = known.get(entry.name)
            if isinstance(record, list) and len(record) == 5 and record[:4] == stamp(stat):
                digest = record[4]
            else:
                digest = sha256_file(entry.path)
            files[entry.name] = {"sha256": digest, "size": stat.st_size}
    return files


def write_sums(directory: str, digests: dict) -> None:
    """Record the verified hashes of the current version, after the last change to its
    inodes (links, chmod, the removal of older versions all change the change time)."""
    sums = {}
    for name, digest in digests.items():
        sums[name] = stamp(os.stat(os.path.join(directory, name))) + [digest]
    temporary = sums_path(directory) + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(sums, handle, sort_keys=True)
    os.replace(temporary, sums_path(directory))


def free_bytes(path: str) -> int:
    """Free space for root on the file system that holds (or will hold) the wheelhouse."""
    probe = os.path.dirname(path.rstrip("/")) or "/"
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def glibc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").split()[1]  # "glibc 2.36"
    except (AttributeError, ValueError, IndexError, OSError):
        libc, version = platform.libc_ver()
        return version if libc == "glibc" else ""


def read_manifest(directory):
    """The current wheelhouse's manifest.json, parsed; None when it has none or it is not JSON."""
    if not directory:
        return None
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as handle:
            data = handle.read(MANIFEST_LIMIT + 1)
        manifest = json.loads(data.decode("utf-8")) if len(data) <= MANIFEST_LIMIT else None
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def probe(path: str) -> dict:
    info = sys.version_info
    implementation = sys.implementation.name
    abi = ("cp%d%d" % (info[0], info[1])) if implementation == "cpython" else implementation
    arch = platform.machine()
    glibc = glibc_version()
    current = current_dir(path)
    store = store_dir(path)
    stale = []
    if os.path.isdir(store):
        stale = sorted(e.name for e in os.scandir(store)
                       if not current or e.path not in (current, sums_path(current)))
    return {
        "platform": {
            "key": "%s-glibc%s-%s" % (abi, glibc or "none", arch),
            "python": "%d.%d" % (info[0], info[1]),
            "implementation": implementation,
            "abi": abi,
            "arch": arch,
            "glibc": glibc,
        },
        "path": path,
        "exists": current is not None,
        "is_link": os.path.islink(path),
        "stale": stale,
        "free_bytes": free_bytes(path),
        "files": list_files(current),
        "manifest": read_manifest(current),
    }


class ApplyError(Exception):
    pass


def unpack(source, target: str, durable: bool = False) -> dict:
    """Write the files of one bundle into target, refusing anything but plain file names; the
    SHA-256 of each file, computed as it is written (one pass over the data). durable: each
    file is flushed to disk before the call returns (the swap must not outrun its data).

    A bundle (what the role's action sends, on standard input or as a file) is one line of
    JSON, {"files": [[name, size], ...]}, then each file's bytes in that order, and nothing
    after them. Wheels are compressed already, so nothing is compressed again; and reading
    exact sizes costs the host less than a tar stream does (tarfile copies every block
    through its own buffer)."""
    header = source.readline(HEADER_LIMIT)
    try:
        entries = json.loads(header.decode("utf-8"))["files"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ApplyError("the bundle does not start with its list of files (%d bytes read)"
                         % len(header))
    digests = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and entry[1] >= 0):
            raise ApplyError("the bundle's list of files holds %r" % (entry,))
        name, size = entry
        if "/" in name or "\x00" in name or name.startswith(".") or not name or name in digests:
            raise ApplyError("the bundle holds %r, which is not a plain file name" % name)
        digest = hashlib.sha256()
        left = size
        with open(os.path.join(target, name), "xb") as out:
            while left:
                block = source.read(min(left, CHUNK))
                if not block:
                    raise ApplyError("the bundle ended %d bytes into %s, which has %d"
                                     % (size - left, name, size))
                left -= len(block)
                digest.update(block)
                out.write(block)
            if durable:
                out.flush()
                os.fdatasync(out.fileno())
        digests[name] = digest.hexdigest()
    if source.read(1):
        raise ApplyError("the bundle holds more bytes than its list of files says")
    return digests


def unpack_tar(archive_path: str, target: str) -> list:
    """The names of the plain files of a flat tar (the sdists' archive), written into target;
    anything else in it is refused."""
    names = []
    with tarfile.open(archive_path, "r:") as archive:
        for member in archive:
            name = member.name
            if (not member.isfile() or "/" in name or name in ("", ".", "..")
                    or name.startswith(".")):
                raise ApplyError("the archive holds %r, which is not a plain file name" % name)
            source = archive.extractfile(member)
            with open(os.path.join(target, name), "xb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            names.append(name)
    return names


def received_files(bundle, target: str) -> dict:
    """Unpack the bundle from standard input ("-") or from a file, which is removed after."""
    if bundle == "-":
        try:
            return unpack(sys.stdin.buffer, target, durable=True)
        except BaseException:
            # Read the rest, so that the sender finishes writing and the user reads this error:
            # Ansible reports a host whose stdin closed mid-write as unreachable, without it.
            try:
                while sys.stdin.buffer.read(CHUNK):
                    pass
            except OSError:
                pass
            raise
    try:
        with open(bundle, "rb") as source:
            return unpack(source, target, durable=True)
    finally:
        os.unlink(bundle)


def lock_store(store: str, wait: float = LOCK_WAIT) -> int:
    """Hold the store's lock (flock on its directory) until this process ends: one apply at a
    time per wheelhouse. A run killed while it streams wheels can leave its apply on the host
    reading what the SSH connection still delivers (a ControlPersist master outlives the
    killed run), and the next run must not swap or clean up under it."""
    handle = os.open(store, os.O_RDONLY)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(handle)
                raise ApplyError("another run has been changing %s for over %d s (its process "
                                 "holds the lock on %s); let it end, or stop it, and run again"
                                 % (os.path.dirname(store), wait, store))
            time.sleep(0.2)


def apply(path: str, bundle, manifest_sha: str, prune: bool) -> dict:
    store = store_dir(path)
    os.makedirs(store, mode=0o755, exist_ok=True)
    os.chmod(store, 0o755)
    handle = lock_store(store)
    try:
        return apply_locked(path, store, bundle, manifest_sha, prune)
    finally:
        os.close(handle)


def apply_locked(path: str, store: str, bundle, manifest_sha: str, prune: bool) -> dict:
    current = current_dir(path)
    version = time.strftime("%Y%m%dT%H%M%S") + "-" + os.urandom(3).hex()
    staging = os.path.join(store, version)
    os.mkdir(staging, 0o755)
    try:
        received = received_files(bundle, staging) if bundle else {}
        old = list_names(current)
        # The manifest, new or unchanged, names the files of the next wheelhouse.
        if MANIFEST not in received:
            link(current, staging, MANIFEST)
        manifest_path = os.path.join(staging, MANIFEST)
        if not os.path.exists(manifest_path):
            raise ApplyError("no %s arrived and the current wheelhouse has none" % MANIFEST)
        if sha256_file(manifest_path) != manifest_sha:
            raise ApplyError("%s does not match the controller's manifest (sha256 %s)"
                             % (MANIFEST, manifest_sha))
        with open(manifest_path) as handle:
            wanted = json.load(handle)["files"]
        for name in wanted:
            if name not in received:
                link(current, staging, name)
        kept = []
        if not prune:
            for name in old:
                if name not in wanted and name != MANIFEST and name not in received:
                    link(current, staging, name)
                    kept.append(name)
        bad, verified = [], {}
        for name, expected in sorted(wanted.items()):
            file_path = os.path.join(staging, name)
            if not os.path.exists(file_path):
                bad.append("%s (missing)" % name)
                continue
            actual = received.get(name) or sha256_file(file_path)
            if actual != expected["sha256"]:
                bad.append("%s (sha256 %s, manifest says %s)" % (name, actual, expected["sha256"]))
            verified[name] = actual
        if bad:
            raise ApplyError("these files do not match the manifest: " + "; ".join(bad))
        for name in os.listdir(staging):
            os.chmod(os.path.join(staging, name), 0o644)
        # The new files' data is on disk (fdatasync as they were written); now their names.
        # Only this directory is flushed, not the whole machine's dirty pages (os.sync).
        fsync_dir(staging)
        swap(path, staging, store)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    removed = sorted(set(old) - set(wanted) - set(kept) - {MANIFEST})
    cleanup(store, staging)
    verified[MANIFEST] = manifest_sha
    write_sums(staging, verified)
    return {"changed": True, "version": version, "received": sorted(received),
            "removed": removed}


def fsync_dir(directory: str) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def list_names(directory) -> list:
    if not directory:
        return []
    return sorted(e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False))


def link(source_dir, target_dir: str, name: str) -> None:
    """Hard-link an unchanged file from the current wheelhouse (no copy, no extra space)."""
    if not source_dir:
        return
    source = os.path.join(source_dir, name)
    if os.path.isfile(source) and not os.path.islink(source):
        os.link(source, os.path.join(target_dir, name))


def swap(path: str, staging: str, store: str) -> None:
    """Point the wheelhouse at the new version with one rename: readers see the old or the new
    directory, never a mix."""
    relative = os.path.relpath(staging, os.path.dirname(path.rstrip("/")))
    if os.path.isdir(path) and not os.path.islink(path):
        # A plain directory (made by hand or by an older layout) becomes a version of its own
        # first; a symlink cannot be renamed over a directory.
        os.rename(path, os.path.join(store, "previous-" + os.urandom(3).hex()))
    temporary = path.rstrip("/") + ".new-" + os.urandom(3).hex()
    os.symlink(relative, temporary)
    os.replace(temporary, path)
    fsync_dir(os.path.dirname(path.rstrip("/")) or "/")


def cleanup(store: str, keep: str) -> None:
    """Remove every other version, and what a run that died left behind."""
    for entry in os.scandir(store):
        if entry.path not in (keep, sums_path(keep)):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def plan(path: str) -> dict:
    """Check mode's stand-in for apply: it changes nothing and says which wheelhouse the real
    run would replace, so that check mode reports the same task as changed as the real run."""
    current = current_dir(path)
    return {"changed": True, "check_mode": True, "replaces": current,
            "files_now": len(list_names(current))}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def venv_plan(venv: str, pins: list) -> dict:
    """Check mode's stand-in for the venv install: the pins ('name==version') the venv lacks.
    pip install reports 'Successfully installed' exactly when there are some."""
    want = {}
    for pin in pins:
        name, _, version = pin.partition("==")
        want[canonical(name.split("[")[0])] = version
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        return {"changed": True, "check_mode": True, "missing": sorted(want)}
    listing = subprocess.run(
        [python, "-c", "import importlib.metadata as m, json; print(json.dumps("
         "[[d.metadata['Name'], d.version] for d in m.distributions()]))"],
        stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    have = {canonical(name): version for name, version in json.loads(listing) if name}
    missing = sorted(n for n, v in want.items() if have.get(n) != v)
    return {"changed": bool(missing), "check_mode": True, "missing": missing}


def venv_install(venv: str, wheelhouse: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--no-index",
         "--find-links", wheelhouse, "--require-hashes",
         "--requirement", os.path.join(wheelhouse, "requirements.txt")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
        check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0:
        raise ApplyError("pip install into %s failed:\n%s" % (venv, "\n".join(lines[-12:])))
    installed = [line for line in lines if line.startswith("Successfully installed")]
    return {"changed": bool(installed), "installed": installed}


def build(sources: str) -> dict:
    """Build a wheel of every sdist in the tar, offline; returns the tar of the wheels."""
    work = os.path.dirname(os.path.abspath(sources))
    source_dir, out_dir = os.path.join(work, "src"), os.path.join(work, "out")
    os.mkdir(source_dir, 0o700)
    os.mkdir(out_dir, 0o700)
    names = unpack_tar(sources, source_dir)
    os.unlink(sources)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    # pip's settings come from here only: no pip.conf (it points at the feed), no prompt.
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    for name in sorted(names):
        if name.endswith(".whl"):
            continue
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-cache-dir",
               "--find-links", source_dir, "--wheel-dir", out_dir,
               os.path.join(source_dir, name)]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, universal_newlines=True, timeout=3600, check=False)
        if result.returncode != 0:
            lines = result.stdout.strip().splitlines()
            if any("No module named pip" in line for line in lines):
                raise ApplyError("%s has no pip (%s -m pip): install python3-pip on this host "
                                 "so that it can build %s, or publish a wheel of it to the "
                                 "feed" % (sys.executable, sys.executable, name))
            raise ApplyError("pip wheel could not build %s (it may need a compiler or "
                             "headers on this host, or a build dependency the feed lacks):\n%s"
                             % (name, "\n".join(lines[-12:])))
    wheels = sorted(n for n in os.listdir(out_dir) if n.endswith(".whl"))
    archive = os.path.join(work, "built.tar")
    with tarfile.open(archive, "w:") as out:
        for name in wheels:
            out.add(os.path.join(out_dir, name), arcname=name)
    shutil.rmtree(source_dir, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"archive": archive, "wheels": wheels}


def main(argv: list) -> int:
    usage = ("usage: wheelhouse_host.py probe PATH | apply PATH MANIFEST_SHA PRUNE [BUNDLE] | "
             "plan PATH | build SOURCES_TAR | venv-install VENV WHEELHOUSE | "
             "venv-plan VENV PINS_JSON")
    if len(argv) < 2 or argv[0] not in ("probe", "apply", "plan", "build", "venv-install",
                                        "venv-plan"):
        print(usage, file=sys.stderr)
        return 2
    path = argv[1]
    if not os.path.isabs(path):
        print("the path must be absolute, not %r" % path, file=sys.stderr)
        return 2
    try:
        if argv[0] == "probe":
            result = probe(path)
        elif argv[0] == "build":
            result = build(path)
        elif argv[0] == "plan":
            result = plan(path)
        elif argv[0] == "venv-install":
            result = venv_install(path, argv[2])
        elif argv[0] == "venv-plan":
            result = venv_plan(path, json.loads(argv[2]))
        else:
            bundle = argv[4] if len(argv) > 4 and argv[4] else None
            result = apply(path, bundle, argv[2], argv[3] == "true")
    except (ApplyError, OSError, tarfile.TarError, ValueError, KeyError) as error:
        print("wheelhouse %s failed: %s" % (argv[0], error), file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

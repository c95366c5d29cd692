"""The pipfeed_wheelhouse role's Python: the controller's requirement handling and cache, the
host's probe and atomic swap, and the comparison filter. Everything runs in tmp_path."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.files import plugin, run_action
from tests.lab import packages

pytestmark = pytest.mark.unit
PY39 = {"key": "cp39-glibc2.31-x86_64", "python": "3.9", "abi": "cp39", "arch": "x86_64",
        "glibc": "2.31", "implementation": "cpython"}
PY313 = dict(PY39, key="cp313-glibc2.41-x86_64", python="3.13", abi="cp313", glibc="2.41")


build = plugin("plugin_utils.wheelhouse_build")
choice = plugin("plugin_utils.wheel_choice")
host = plugin("module_utils.wheelhouse_host")
filters = plugin("filter.wheelhouse")
action = plugin("action.host_script")


def test_markers_are_evaluated_for_the_target_python_not_the_controllers(tmp_path):
    reqs = tmp_path / "r.txt"
    reqs.write_text('numpy==2.0.2 ; python_version == "3.9"\n'
                    'numpy==2.5.5 ; python_version == "3.13"\nidna==3.20\n')
    assert build.resolve_set(str(reqs), "", PY39)["numpy"]["version"] == "2.0.2"
    assert build.resolve_set(str(reqs), "", PY313)["numpy"]["version"] == "2.5.5"


def test_unpinned_requirement_is_refused_naming_the_line_and_the_fix(tmp_path):
    reqs = tmp_path / "r.txt"
    reqs.write_text("idna==3.20\n# a comment\nrequests>=2\n")
    with pytest.raises(build.BuildError, match=r"line 3: 'requests>=2' is not pinned.*'=='"):
        build.resolve_set(str(reqs), "", PY39)


def test_constraints_pin_what_the_requirements_leave_open(tmp_path):
    reqs, cons = tmp_path / "r.txt", tmp_path / "c.txt"
    reqs.write_text("requests\n")
    cons.write_text("requests==2.32.5\nidna==3.20\n")
    assert build.resolve_set(str(reqs), str(cons), PY39)["requests"]["version"] == "2.32.5"


def test_pip_options_in_the_requirement_file_are_refused(tmp_path):
    reqs = tmp_path / "r.txt"
    reqs.write_text("--index-url https://pypi.org/simple/\nidna==3.20\n")
    with pytest.raises(build.BuildError, match="pip option"):
        build.resolve_set(str(reqs), "", PY39)


def test_manylinux_tags_follow_the_hosts_glibc():
    tags = build.manylinux_platforms("2.31", "x86_64")
    assert tags[0] == "manylinux_2_31_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_32_x86_64" not in tags


def test_the_lab_wheels_for_each_python_are_found_and_their_closure_checked():
    """Against the lab's real wheels: every pin of the lab set has a wheel for its Python, and
    the dependency closure, evaluated for that Python, is complete."""
    wheels = packages.cache_root() / f"wheels-{packages.set_key()}"
    if not wheels.is_dir():
        pytest.skip("the lab's package cache is not downloaded")
    listing = [choice.IndexFile(filename=p.name, url=p.as_uri(), sha256="", requires_python="",
                                yanked=False) for p in sorted(wheels.glob("*.whl"))]
    for platform in (PY39, PY313):
        pins = {}
        for line in packages.requirements_for(platform["python"]):
            name, version = line.split("==")
            pins[build.canonicalize_name(name)] = {"name": name, "version": version,
                                                   "extras": [], "hashes": []}
        chosen = {}
        for name, pin in pins.items():
            item = choice.choose_wheel(listing, name, pin["version"], platform)
            assert item is not None, (platform["key"], name)
            chosen[name] = wheels / item.filename
        assert build.missing_dependencies(chosen, pins, platform) == []
        del pins["idna"]
        missing = build.missing_dependencies({n: w for n, w in chosen.items() if n in pins},
                                             pins, platform)
        assert ("requests", ) == tuple({who for who, _ in missing})


def _manifest(files: dict[str, bytes]) -> tuple[bytes, str]:
    manifest = {"platform": PY39, "files": {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()}}
    text = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return text, hashlib.sha256(text).hexdigest()


def _tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return str(path)


def _bundle_bytes(tmp_path: Path, files: dict[str, bytes]) -> bytes:
    """A bundle as the role's action makes it, by the action's own function."""
    sources = tmp_path / "sources"
    sources.mkdir(exist_ok=True)
    send = []
    for name, data in files.items():
        source = sources / hashlib.sha256(name.encode()).hexdigest()
        source.write_bytes(data)
        send.append([name, str(source)])
    return b"".join(action.bundle(send))


def _bundle(path: Path, files: dict[str, bytes]) -> str:
    path.write_bytes(_bundle_bytes(path.parent, files))
    return str(path)


def _seed(tmp_path: Path, files: dict[str, bytes]) -> str:
    path = str(tmp_path / "pipfeed" / "wheelhouse")
    os.makedirs(os.path.dirname(path))
    manifest, digest = _manifest(files)
    host.apply(path, _bundle(tmp_path / "b.bundle", {**files, "manifest.json": manifest}), digest, True)
    return path


def test_apply_swaps_atomically_and_sends_only_what_is_new(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a", "requirements.txt": b"a==1\n"})
    first = os.path.realpath(path)
    files = {"a-1-py3-none-any.whl": b"a", "b-1-py3-none-any.whl": b"b",
             "requirements.txt": b"a==1\nb==1\n"}
    manifest, digest = _manifest(files)
    bundle = _bundle(tmp_path / "c.bundle", {"b-1-py3-none-any.whl": b"b",
                                       "requirements.txt": files["requirements.txt"],
                                       "manifest.json": manifest})
    result = host.apply(path, bundle, digest, True)
    assert result["received"] == ["b-1-py3-none-any.whl", "manifest.json", "requirements.txt"]
    assert os.path.islink(path) and os.path.realpath(path) != first
    assert not os.path.exists(first) and not os.path.exists(bundle)
    assert sorted(host.probe(path)["files"]) == sorted([*files, "manifest.json"])
    assert host.probe(path)["stale"] == []


def test_a_file_that_does_not_match_the_manifest_fails_naming_it_and_keeps_the_old(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    before = os.path.realpath(path)
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a", "b-1-py3-none-any.whl": b"b"})
    bundle = _bundle(tmp_path / "c.bundle", {"b-1-py3-none-any.whl": b"corrupt",
                                       "manifest.json": manifest})
    with pytest.raises(host.ApplyError, match=r"b-1-py3-none-any.whl \(sha256"):
        host.apply(path, bundle, digest, True)
    assert os.path.realpath(path) == before
    assert sorted(os.listdir(path)) == ["a-1-py3-none-any.whl", "manifest.json"]
    assert host.probe(path)["stale"] == []


def test_prune_off_keeps_wheels_no_longer_wanted(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a", "old-1-py3-none-any.whl": b"o"})
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a"})
    host.apply(path, _bundle(tmp_path / "c.bundle", {"manifest.json": manifest}), digest, False)
    assert "old-1-py3-none-any.whl" in os.listdir(path)
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a", "z-1-py3-none-any.whl": b"z"})
    host.apply(path, _bundle(tmp_path / "d.bundle", {"manifest.json": manifest,
                                               "z-1-py3-none-any.whl": b"z"}), digest, True)
    assert "old-1-py3-none-any.whl" not in os.listdir(path)


def test_bundle_with_a_path_in_a_name_is_refused(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a"})
    bundle = _bundle(tmp_path / "c.bundle", {"../escape.whl": b"x", "manifest.json": manifest})
    with pytest.raises(host.ApplyError, match="not a plain file name"):
        host.apply(path, bundle, digest, True)
    assert not (tmp_path / "pipfeed" / "escape.whl").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-3], "ended 2 bytes into b-1-py3-none-any.whl"),   # a cut stream
    (lambda data: data + b"x", "more bytes than its list of files says"),
    (lambda data: b"not json\n" + data, "does not start with its list of files"),
    (lambda data: data.replace(b'"b-1-py3-none-any.whl"', b'".hidden"', 1), "not a plain file"),
])
def test_a_damaged_bundle_fails_and_keeps_the_old_wheelhouse(tmp_path, damage, message):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    before = os.path.realpath(path)
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a", "b-1-py3-none-any.whl": b"bbbbb"})
    data = _bundle_bytes(tmp_path, {"manifest.json": manifest, "b-1-py3-none-any.whl": b"bbbbb"})
    bundle = tmp_path / "c.bundle"
    bundle.write_bytes(damage(data))
    with pytest.raises(host.ApplyError, match=message):
        host.apply(path, str(bundle), digest, True)
    assert os.path.realpath(path) == before and not bundle.exists()
    assert sorted(os.listdir(tmp_path / "pipfeed" / ".wheelhouse.d")) == \
        sorted([os.path.basename(before), os.path.basename(before) + ".sums"])


def test_the_script_and_its_bundle_go_on_one_stdin_as_the_action_sends_them(tmp_path):
    """The action's pipelined command, run here: the bootstrap reads exactly the script, which
    reads the bundle that follows it; the wheelhouse is written and swapped."""
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    files = {"a-1-py3-none-any.whl": b"a", "b-1-py3-none-any.whl": os.urandom(3 << 20)}
    manifest, digest = _manifest(files)
    script = plugin("plugin_utils.host_programs").source("wheelhouse_host.py")
    data = script + _bundle_bytes(tmp_path, {"manifest.json": manifest,
                                             "b-1-py3-none-any.whl": files["b-1-py3-none-any.whl"]})
    done = subprocess.run([sys.executable, "-c", action.BOOTSTRAP.format(name="wheelhouse_host.py"), str(len(script)),
                           "apply", path, digest, "true", "-"], input=data, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["received"] == ["b-1-py3-none-any.whl", "manifest.json"]
    assert (Path(path) / "b-1-py3-none-any.whl").read_bytes() == files["b-1-py3-none-any.whl"]
    # The script's own arguments check still sees its arguments, not the bootstrap's.
    done = subprocess.run([sys.executable, "-c", action.BOOTSTRAP.format(name="wheelhouse_host.py"), str(len(script)), "probe",
                           "relative"], input=script, capture_output=True, timeout=60)
    assert done.returncode == 2 and b"must be absolute" in done.stderr


def test_a_bundle_refused_on_stdin_is_still_read_to_its_end(tmp_path):
    """The sender writes the whole bundle and the script's error is what comes back (a sender
    whose pipe closes mid-write would report the host unreachable instead)."""
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    manifest, digest = _manifest({"a-1-py3-none-any.whl": b"a"})
    script = plugin("plugin_utils.host_programs").source("wheelhouse_host.py")
    data = script + _bundle_bytes(tmp_path, {"../escape.whl": os.urandom(8 << 20),
                                             "manifest.json": manifest})
    proc = subprocess.Popen([sys.executable, "-c", action.BOOTSTRAP.format(name="wheelhouse_host.py"), str(len(script)), "apply",
                             path, digest, "true", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(data)  # BrokenPipeError here if the script stopped reading
    proc.stdin.close()
    assert proc.wait(timeout=60) == 1
    assert b"not a plain file name" in proc.stderr.read()


def test_the_sdists_archive_is_unpacked_plain_files_only(tmp_path):
    (tmp_path / "out").mkdir()
    good = _tar(tmp_path / "good.tar", {"lab_x-1.0.tar.gz": b"sdist", "w-1-py3-none-any.whl": b"w"})
    assert sorted(host.unpack_tar(good, str(tmp_path / "out"))) == ["lab_x-1.0.tar.gz",
                                                                    "w-1-py3-none-any.whl"]
    bad = _tar(tmp_path / "bad.tar", {"../lab_y-1.0.tar.gz": b"sdist"})
    with pytest.raises(host.ApplyError, match="not a plain file name"):
        host.unpack_tar(bad, str(tmp_path / "out"))
    assert not (tmp_path / "lab_y-1.0.tar.gz").exists()


def test_an_apply_waits_for_one_still_running_on_the_same_wheelhouse(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    store = host.store_dir(path)
    held = host.lock_store(store)  # as an earlier run's apply, still reading its stream
    try:
        with pytest.raises(host.ApplyError, match="another run has been changing"):
            host.lock_store(store, wait=0.5)
    finally:
        os.close(held)
    os.close(host.lock_store(store, wait=0.5))


def test_delta_lists_missing_damaged_and_extra_files():
    build_result = {"key": "k", "dir": "/c/k", "files": {
        name: {"sha256": digest, "size": size, "src": f"/c/k/wheels/{name}"}
        for name, digest, size in (("a.whl", "1", 10), ("b.whl", "2", 20),
                                   ("manifest.json", "3", 1))}}
    complete = {"exists": True, "is_link": True, "stale": [], "files": {
        "a.whl": {"sha256": "1"}, "b.whl": {"sha256": "2"}, "manifest.json": {"sha256": "3"}}}
    assert filters.delta(complete, build_result)["needed"] is False
    damaged = dict(complete, files=dict(complete["files"], **{"b.whl": {"sha256": "x"},
                                                              "old.whl": {"sha256": "9"}}))
    result = filters.delta(damaged, build_result)
    assert result["missing"] == ["b.whl"] and result["extra"] == ["old.whl"]
    assert result["bytes"] == 20 and result["send"] == [["b.whl", "/c/k/wheels/b.whl"]]
    assert filters.delta(dict(complete, files={**complete["files"], "old.whl": {}}),
                         build_result, False)["needed"] is False


def _sdist(directory: Path, name: str, version: str, pyproject: str | None) -> Path:
    path = directory / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        members = {f"{name}-{version}/PKG-INFO": b"Metadata-Version: 2.1\n"}
        if pyproject is not None:
            members[f"{name}-{version}/pyproject.toml"] = pyproject.encode()
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_sdist_build_requirements_come_from_pyproject_or_pips_default(tmp_path):
    declared = _sdist(tmp_path, "lab_x", "1.0", '[build-system]\nrequires = ["flit_core>=3.4"]\n')
    bare = _sdist(tmp_path, "lab_y", "2.0", None)
    assert build.build_requires(declared) == ["flit_core>=3.4"]
    assert build.build_requires(bare) == ["setuptools>=40.8.0"]
    assert build.find_sdist(tmp_path, "lab-x", "1.0") == declared
    assert build.find_sdist(tmp_path, "lab-x", "1.1") is None
    assert build.sdist_release("lab_y-2.0.tar.gz") == ("lab-y", build.Version("2.0"))


def test_a_wheel_built_on_the_host_itself_fits_its_platform():
    ranks = choice.tag_ranks(PY39)
    assert "cp39-cp39-linux_x86_64" in ranks
    assert not any(tag.endswith("linux_aarch64") for tag in ranks)


def test_one_builder_per_platform_with_sdists_the_first_host_of_the_play():
    hosts = {"a1": "cp39-k", "b1": "cp311-k", "a2": "cp39-k", "c1": "cp313-k"}
    assert filters.builders(hosts, ["cp39-k", "cp313-k"]) == {"cp39-k": "a1", "cp313-k": "c1"}
    assert filters.builders(hosts, []) == {}


def _built_archive(root: Path, names: list[str]) -> None:
    (root / "build").mkdir(parents=True, exist_ok=True)
    _tar(root / "build" / "built.tar", {name: b"wheel" for name in names})


def test_built_wheels_are_taken_into_the_cache_with_their_sdist(tmp_path):
    root = tmp_path / PY39["key"]
    (root / "wheels").mkdir(parents=True)
    (root / "sdists").mkdir()
    sdist = _sdist(root / "sdists", "lab_x", "1.0", None)
    _built_archive(root, ["lab_x-1.0-py3-none-any.whl"])
    build.take_built(root, PY39, "deb11-1")
    assert (root / "wheels" / "lab_x-1.0-py3-none-any.whl").read_bytes() == b"wheel"
    built = json.loads((root / "built.json").read_text())
    assert built["lab_x-1.0-py3-none-any.whl"] == {
        "sdist": sdist.name, "sdist_sha256": build.sha256_file(sdist), "host": "deb11-1"}
    assert not (root / "build" / "built.tar").exists()


@pytest.mark.parametrize("name", ["lab_z-1.0-py3-none-any.whl",       # no such sdist was sent
                                  "lab_x-1.0-cp313-cp313-linux_x86_64.whl",  # another Python
                                  "../lab_x-1.0-py3-none-any.whl"])
def test_a_built_wheel_that_was_not_asked_for_is_refused(tmp_path, name):
    root = tmp_path / PY39["key"]
    (root / "wheels").mkdir(parents=True)
    (root / "sdists").mkdir()
    _sdist(root / "sdists", "lab_x", "1.0", None)
    _built_archive(root, [name])
    with pytest.raises(build.BuildError):
        build.take_built(root, PY39, "deb11-1")
    assert list((root / "wheels").iterdir()) == []


def test_check_mode_plans_change_nothing(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"a"})
    before = sorted(os.listdir(tmp_path / "pipfeed" / ".wheelhouse.d"))
    assert host.plan(path)["changed"] is True
    assert sorted(os.listdir(tmp_path / "pipfeed" / ".wheelhouse.d")) == before
    missing = host.venv_plan(str(tmp_path / "no-venv"), ["idna==3.20", "pydantic[email]==2.0"])
    assert missing == {"changed": True, "check_mode": True, "missing": ["idna", "pydantic"]}
    assert not (tmp_path / "no-venv").exists()


def test_probe_rehashes_only_files_changed_since_the_last_apply_and_sees_damage(tmp_path):
    path = _seed(tmp_path, {"a-1-py3-none-any.whl": b"aaaa", "b-1-py3-none-any.whl": b"bbbb"})
    clean = host.probe(path)["files"]
    assert clean["a-1-py3-none-any.whl"]["sha256"] == hashlib.sha256(b"aaaa").hexdigest()
    assert os.path.exists(os.path.realpath(path) + ".sums")
    with open(os.path.join(path, "a-1-py3-none-any.whl"), "r+b") as handle:
        handle.write(b"X")  # same size, new content
    damaged = host.probe(path)["files"]
    assert damaged["a-1-py3-none-any.whl"]["sha256"] == hashlib.sha256(b"Xaaa").hexdigest()
    assert damaged["b-1-py3-none-any.whl"] == clean["b-1-py3-none-any.whl"]


def test_the_build_action_checks_the_set_and_says_what_is_wrong(tmp_path):
    reqs = tmp_path / "r.txt"
    reqs.write_text("requests>=2\n")
    spec = {"requirements": str(reqs), "constraints": "", "cache_dir": str(tmp_path / "c"),
            "index_url": "https://feed.example/simple/", "platforms": [PY39]}
    answer = run_action("wheelhouse_build", {"command": "check", "spec": spec})
    assert answer["failed"] and "line 1: 'requests>=2' is not pinned" in answer["msg"]
    # A task with no_log registers it: what went wrong stays readable in "error".
    assert answer["error"] == answer["msg"]
    reqs.write_text("idna==3.20\n")
    answer = run_action("wheelhouse_build", {"command": "check", "spec": spec})
    assert not answer.get("failed") and answer["changed"] is False
    assert answer["result"] == {"ok": True, "plan": {PY39["key"]: None}}


def test_the_build_action_gives_pip_the_token_in_a_netrc_it_removes_afterwards(tmp_path,
                                                                               monkeypatch):
    seen = {}

    def fake_build(spec):
        path = spec["netrc"]
        seen["text"] = open(path).read()
        seen["mode"] = os.stat(path).st_mode & 0o777
        seen["path"] = path
        seen["credentials"] = spec["credentials"]
        return {}

    monkeypatch.setitem(build.COMMANDS, "build", fake_build)
    spec = {"index_url": "https://feed.example:8443/org/simple/", "platforms": []}
    answer = run_action("wheelhouse_build", {"command": "build", "spec": spec,
                                              "token": "s3cret-token", "username": "me"})
    assert answer["result"] == {}
    assert seen["text"] == "machine feed.example login me password s3cret-token\n"
    # The controller's own downloads take it from memory (HTTP Basic to the index's origin).
    assert seen["credentials"] == ["me", "s3cret-token"]
    assert seen["mode"] == 0o600
    assert not os.path.exists(seen["path"]) and not os.path.exists(os.path.dirname(seen["path"]))
    assert "s3cret-token" not in json.dumps(answer)


# ----- the choice, made from the index, the same from every controller -----------------------
class FakeIndex:
    """A PEP 503 index on loopback that wants HTTP Basic auth, and answers each download with a
    303 to a "blob" server on another port (another origin), as Azure Artifacts does. It lists
    its links in a new random order on every request (the order is no part of PEP 503), and
    records every request: (server, path, whether an Authorization header came)."""

    def __init__(self, files: dict[str, bytes], token: str, hashes: bool = True):
        import base64
        import http.server
        import random
        import threading

        # served: bytes the blob host sends instead of a file's own (a file damaged in transit).
        self.files, self.requests, self.served = files, [], {}
        expected = "Basic " + base64.b64encode(f"me:{token}".encode()).decode()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body=b"", headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Feed(Handler):
            def do_GET(self):
                index.requests.append(("feed", self.path, "Authorization" in self.headers))
                if self.headers.get("Authorization") != expected:
                    return self.answer(401, headers=[("WWW-Authenticate", 'Basic realm="x"')])
                if self.path.startswith("/simple/"):
                    project = self.path.split("/")[2]
                    names = [n for n in index.files
                             if choice.canonical_name(n.split("-")[0]) == project]
                    random.shuffle(names)
                    links = "".join(
                        f'<a href="/download/{n}'
                        + (f'#sha256={hashlib.sha256(index.files[n]).hexdigest()}' if hashes
                           else "") + f'">{n}</a>\n' for n in names)
                    return self.answer(200 if names else 404,
                                       f"<html><body>{links}</body></html>".encode(),
                                       [("Content-Type", "text/html; charset=utf-8")])
                name = self.path.rsplit("/", 1)[-1]
                location = f"http://127.0.0.1:{index.blob.server_port}/blobs/{name}?sig=1"
                return self.answer(303, headers=[("Location", location)])

        class Blob(Handler):
            def do_GET(self):
                index.requests.append(("blob", self.path, "Authorization" in self.headers))
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                self.answer(200, index.served.get(name, index.files[name]))

        self.feed = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
        self.blob = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blob)
        for server in (self.feed, self.blob):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.feed.server_port}/simple/"

    def close(self):
        for server in (self.feed, self.blob):
            server.shutdown()
            server.server_close()


def _variant(wheel: Path, name: str, note: bytes) -> bytes:
    """The wheel's bytes under another name, made distinct by a zip comment."""
    import zipfile
    copy = wheel.with_name(name)
    copy.write_bytes(wheel.read_bytes())
    with zipfile.ZipFile(copy, "a") as archive:
        archive.comment = note
    return copy.read_bytes()


MANYLINUX_2_28 = "lab_c-1.0-cp311-abi3-manylinux_2_28_x86_64.whl"
MANYLINUX_2014 = "lab_c-1.0-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
PY311 = dict(PY39, key="cp311-glibc2.36-x86_64", python="3.11", abi="cp311", glibc="2.36")


@pytest.fixture()
def index_files(tmp_path) -> dict[str, bytes]:
    """lab-c 1.0 (compiled, abi3) as two wheels whose best tags differ, as cryptography 50.0.2
    is on PyPI, and its dependency lab-d 2.0, pure Python."""
    made = tmp_path / "made"
    plain = packages.build_wheel(made, "lab_c", "1.0", ["lab-d>=2"])
    files = {MANYLINUX_2_28: _variant(plain, MANYLINUX_2_28, b"2_28"),
             MANYLINUX_2014: _variant(plain, MANYLINUX_2014, b"2014")}
    pure = packages.build_wheel(made, "lab_d", "2.0")
    files[pure.name] = pure.read_bytes()
    return files


def _spec(tmp_path, url: str, cache: str, requirements: str = "lab-c==1.0\nlab-d==2.0\n",
          platforms=(PY311, PY313)) -> dict:
    reqs = tmp_path / "requirements.lock"
    reqs.write_text(requirements)
    return {"requirements": str(reqs), "constraints": "", "cache_dir": str(tmp_path / cache),
            "index_url": url, "host_path": "/var/lib/pipfeed/wheelhouse",
            "platforms": list(platforms), "credentials": ["me", "s3cret"]}


def test_two_controllers_write_byte_identical_manifests_and_requirements(tmp_path, index_files):
    """Two controllers (their own caches, the index by another host name, the page's links in
    another order on every request) build one lock: the same files, the same manifest and
    requirements.txt, byte for byte, with nothing of the controller in them. The token went to
    the index's origin only, never to the blob host a download is redirected to."""
    index = FakeIndex(index_files, "s3cret")
    try:
        first = build.command_build(_spec(tmp_path, index.url(), "controller-a"))
        second = build.command_build(_spec(tmp_path, index.url("localhost"), "controller-b"))
        requests = list(index.requests)
        again = build.command_build(_spec(tmp_path, index.url(), "controller-a"))
    finally:
        index.close()
    for key in (PY311["key"], PY313["key"]):
        one, other = first[key], second[key]
        assert MANYLINUX_2_28 in one["files"] and MANYLINUX_2014 not in one["files"]
        for name in ("manifest.json", "requirements.txt"):
            data = Path(one["files"][name]["src"]).read_bytes()
            assert data == Path(other["files"][name]["src"]).read_bytes(), name
            for controller_specific in (b"controller-a", b"127.0.0.1", str(tmp_path).encode()):
                assert controller_specific not in data
        manifest = json.loads(Path(one["files"]["manifest.json"]["src"]).read_text())
        assert manifest["format"] == 2 and manifest["platform"] == (PY311 if "311" in key else PY313)
        assert sorted(manifest["files"]) == sorted([MANYLINUX_2_28, "lab_d-2.0-py3-none-any.whl",
                                                    "requirements.txt"])
        assert one["answer"]["lock"] == manifest["lock"] == other["answer"]["lock"]
    assert {(server, auth) for server, _, auth in requests} == {("feed", True), ("blob", False)}
    # One page per project and call, whatever the number of platforms; the chosen files only.
    pages = [path for server, path, _ in requests if path.startswith("/simple/")]
    assert sorted(pages) == ["/simple/lab-c/", "/simple/lab-c/", "/simple/lab-d/", "/simple/lab-d/"]
    assert not any(MANYLINUX_2014 in path for _, path, _ in requests)
    assert all(result["downloaded"] == [] for result in again.values())
    assert len(index.requests) == len(requests)  # the cached set asked nothing


def test_a_download_that_does_not_match_the_pages_sha256_is_not_kept(tmp_path, index_files):
    index = FakeIndex(index_files, "s3cret")
    index.served[MANYLINUX_2_28] = b"damaged on the way"
    page_hash = hashlib.sha256(index_files[MANYLINUX_2_28]).hexdigest()
    try:
        with pytest.raises(build.BuildError, match=f"the index's page says {page_hash}"):
            build.command_build(_spec(tmp_path, index.url(), "cache", platforms=(PY311,)))
    finally:
        index.close()
    assert not list((tmp_path / "cache").glob(f"*/wheels/{MANYLINUX_2_28}*"))


def test_the_locks_hashes_are_checked_and_an_index_without_hashes_needs_them(tmp_path,
                                                                            index_files):
    wrong = "0" * 64
    index = FakeIndex(index_files, "s3cret", hashes=False)
    try:
        spec = _spec(tmp_path, index.url(), "cache", platforms=(PY311,))
        with pytest.raises(build.BuildError, match="gives no sha256 for lab_c.*--hash"):
            build.command_build(spec)
        lock = (f"lab-c==1.0 --hash=sha256:{hashlib.sha256(index_files[MANYLINUX_2_28]).hexdigest()}"
                f"\nlab-d==2.0 --hash=sha256:{wrong}\n")
        with pytest.raises(build.BuildError, match=f"none of the hashes .* lab-d==2.0 .*{wrong}"):
            build.command_build(_spec(tmp_path, index.url(), "cache", lock, platforms=(PY311,)))
    finally:
        index.close()


def test_a_refused_token_names_the_fix_and_never_the_token(tmp_path, index_files):
    index = FakeIndex(index_files, "another-token")
    try:
        with pytest.raises(build.BuildError) as caught:
            build.command_build(_spec(tmp_path, index.url(), "cache", platforms=(PY311,)))
    finally:
        index.close()
    assert "answered HTTP 401" in str(caught.value) and "token" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_lock_identity_ignores_comments_order_and_the_index_but_not_the_pins(tmp_path):
    reqs = tmp_path / "r.txt"
    spec = {"requirements": str(reqs), "constraints": "", "host_path": "/var/lib/w"}
    reqs.write_text("idna==3.20\nrequests==2.32.5\n")
    first = build.lock_id(spec, PY311)
    reqs.write_text("# a comment\nrequests==2.32.5   # the HTTP library\nidna==3.20\n")
    assert build.lock_id(dict(spec, index_url="https://other/simple/"), PY311) == first
    reqs.write_text("idna==3.20\nrequests==2.32.4\n")
    assert build.lock_id(spec, PY311) != first
    reqs.write_text("idna==3.20\nrequests==2.32.5\n")
    assert build.lock_id(dict(spec, host_path="/srv/w"), PY311) != first
    assert build.lock_id(spec, PY313) != first


def _host_with(tmp_path: Path, result: dict) -> str:
    """A host's wheelhouse holding exactly a build's files, as the role's apply writes it."""
    path = str(tmp_path / "host" / "pipfeed" / "wheelhouse")
    os.makedirs(os.path.dirname(path))
    sources = {name: Path(entry["src"]).read_bytes() for name, entry in result["files"].items()}
    host.apply(path, _bundle(tmp_path / "h.bundle", sources), result["manifest_sha256"], True)
    return path


def test_a_wheelhouse_another_controller_built_with_the_other_file_is_kept(tmp_path,
                                                                         index_files):
    """Controller B's index listed only the manylinux2014 wheel of lab-c 1.0 (or B's older
    release let pip choose): B built the host's wheelhouse with it. Controller A, for the same
    lock, chooses manylinux_2_28, yet sends the host nothing: its wheelhouse answers the lock."""
    other_index = FakeIndex({n: d for n, d in index_files.items() if n != MANYLINUX_2_28},
                            "s3cret")
    index = FakeIndex(index_files, "s3cret")
    try:
        theirs = build.command_build(_spec(tmp_path, other_index.url(), "b",
                                           platforms=(PY311,)))[PY311["key"]]
        ours = build.command_build(_spec(tmp_path, index.url(), "a",
                                         platforms=(PY311,)))[PY311["key"]]
    finally:
        index.close()
        other_index.close()
    assert MANYLINUX_2014 in theirs["files"] and MANYLINUX_2_28 in ours["files"]
    path = _host_with(tmp_path, theirs)
    probe = host.probe(path)
    probe["platform"] = PY311  # the probe ran here, on this machine's Python
    assert probe["manifest"]["lock"] == ours["answer"]["lock"]
    kept = filters.delta(probe, ours)
    assert kept == {"missing": [], "extra": [], "bytes": 0, "send": [], "needed": False,
                    "kept": True}
    assert filters.host_answer_problem(probe, ours) == ""

    # Each of these makes the host's wheelhouse no answer to A's lock, and A sends what differs.
    def problem(change) -> str:
        broken = json.loads(json.dumps(probe))
        answer = json.loads(json.dumps(ours))
        change(broken, answer)
        outcome = filters.delta(broken, answer)
        assert outcome["needed"] and not outcome["kept"]
        return filters.host_answer_problem(broken, answer)

    def other_lock(h, a):
        a["answer"]["lock"] = "0" * 64

    def damaged(h, a):
        h["files"][MANYLINUX_2014]["sha256"] = "0" * 64

    def locked_hash(h, a):
        a["answer"]["pins"]["lab-c"]["hashes"] = [ours["files"][MANYLINUX_2_28]["sha256"]]

    def extra_file(h, a):
        h["files"]["stray-1.0-py3-none-any.whl"] = {"sha256": "1", "size": 1}

    def other_platform(h, a):
        a["answer"]["platform"] = dict(PY311, arch="aarch64", key="cp311-glibc2.36-aarch64")
        h["manifest"]["platform"] = a["answer"]["platform"]

    def no_manifest(h, a):
        h["manifest"] = None

    assert "another lock" in problem(other_lock)
    assert f"{MANYLINUX_2014} is missing on the host or differs" in problem(damaged)
    assert "none of the lock's hashes" in problem(locked_hash)
    assert "stray-1.0-py3-none-any.whl" in problem(extra_file)
    assert "does not fit cp311-glibc2.36-aarch64" in problem(other_platform)
    assert "no readable manifest" in problem(no_manifest)
    # With prune off, a file the manifest does not name does not matter.
    extra = json.loads(json.dumps(probe))
    extra["files"]["stray-1.0-py3-none-any.whl"] = {"sha256": "1", "size": 1}
    assert filters.delta(extra, ours, False)["needed"] is False


def test_a_wheelhouse_of_an_older_release_of_the_collection_gets_the_new_manifest_only(tmp_path,
                                                                                     index_files):
    """A manifest without format and lock (built before the rule) is no answer; when its wheels
    are the ones chosen now, only manifest.json goes to the host."""
    index = FakeIndex(index_files, "s3cret")
    try:
        ours = build.command_build(_spec(tmp_path, index.url(), "a",
                                         platforms=(PY311,)))[PY311["key"]]
    finally:
        index.close()
    path = _host_with(tmp_path, ours)
    probe = host.probe(path)
    old = {k: v for k, v in probe["manifest"].items() if k not in ("format", "lock")}
    probe["manifest"] = old
    probe["files"]["manifest.json"] = {"sha256": "old", "size": 1}
    outcome = filters.delta(probe, ours)
    assert outcome["needed"] and outcome["missing"] == ["manifest.json"]


SETTINGS = {"requirements": "files/requirements.txt", "path": "/var/lib/pipfeed/wheelhouse",
            "min_free_bytes": 0, "stream_max_bytes": "134217728", "venvs": [{"path": "/opt/app"}],
            "index_feed": "python-feed", "index_url": ""}
FEEDS = [{"name": "python-feed", "url": "https://feed.example.test/simple/", "token_var": "t"}]


@pytest.mark.parametrize("change, said", [
    ({}, None),
    ({"index_feed": "", "index_url": "https://mirror.example.test/simple/"}, None),
    ({"path": "var/lib/wheelhouse"}, "it is 'var/lib/wheelhouse'"),
    ({"path": "/wheelhouse"}, "pipfeed_wheelhouse_path must be an absolute path below a directory"),
    ({"requirements": ""}, "must name the requirement file on the controller (it is '')"),
    ({"min_free_bytes": -1}, "numbers of bytes (0 or more)"),
    ({"venvs": [{"name": "app"}]}, "a mapping with an absolute path"),
    ({"venvs": [{"path": "opt/app"}]}, "a mapping with an absolute path"),
    ({"index_feed": "other"}, "pipfeed_wheelhouse_index_feed is 'other', which no feed of "
                              "pipfeed_feeds (pipfeed_feeds) is named. Name one of ['python-feed']."),
    ({"index_feed": "", "index_url": "https://user:secret@mirror.example.test/simple/"},
     "no usable index URL ('https://***@mirror.example.test/simple/'): set"),
    ({"index_feed": "", "index_url": "ftp://mirror.example.test/"},
     "The controller has no usable index URL ('ftp://mirror.example.test/')"),
    ({"index_feed": ""}, "The controller has no usable index URL ('')"),
])
def test_the_settings_check_names_each_wrong_setting_and_the_fix(change, said):
    problems = filters.setting_problems(dict(SETTINGS, **change), FEEDS)
    if said is None:
        assert problems == []
    else:
        assert len(problems) == 1 and said in problems[0]


def test_a_url_in_the_settings_message_never_shows_its_credentials():
    problems = filters.setting_problems(
        dict(SETTINGS, index_feed="", index_url="https://user:secret@mirror.example.test/ x"), FEEDS)
    assert problems and "secret" not in problems[0] and "//***@" in problems[0]


def test_the_index_is_the_named_feeds_url_unless_a_url_is_set():
    assert filters.index(FEEDS, "python-feed") == {"feed": FEEDS[0],
                                                   "url": "https://feed.example.test/simple/"}
    assert filters.index(FEEDS, "python-feed", "https://mirror.example.test/simple/")["url"] == \
        "https://mirror.example.test/simple/"
    assert filters.index(FEEDS, "other") == {"feed": {}, "url": ""}
    assert filters.index(FEEDS, "") == {"feed": {}, "url": ""}

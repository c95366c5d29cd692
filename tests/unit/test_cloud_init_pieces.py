"""The controller-side pieces of the cloud-init entry point and the host-side verify check,
run here on their own: the project wheel is reproducible, complete and valid; its upload sends
the wheel's exact bytes with the token in the Authorization header only; the verify check
finds a damaged wheelhouse and reads a netrc as pip does."""
from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.util
import json
import threading
import zipfile
from pathlib import Path

import pytest

from tests.files import plugin, run_action

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


wheel_tool = plugin("plugin_utils.project_wheel")
verify = load("pipfeed_verify", ROOT / "roles/pipfeed_verify/files/pipfeed_verify.py")


def test_project_wheel_is_reproducible_and_carries_the_playbooks_not_the_tests(tmp_path):
    first = wheel_tool.build(str(tmp_path / "a"), ["ansible-core==2.19.14"])
    second = wheel_tool.build(str(tmp_path / "b"), ["ansible-core==2.19.14"])
    assert first["sha256"] == second["sha256"] and first["version"] == second["version"]
    other = wheel_tool.build(str(tmp_path / "c"), ["ansible-core==2.19.13"])
    assert other["version"] != first["version"]
    with zipfile.ZipFile(first["path"]) as archive:
        names = archive.namelist()
        dist = f"pipfeed_feed_collection-{first['version']}.dist-info"
        record = archive.read(f"{dist}/RECORD").decode()
        metadata = archive.read(f"{dist}/METADATA")
        for line in record.splitlines():
            path, digest, size = line.split(",")
            if digest:
                data = archive.read(path)
                assert digest == "sha256=" + base64.urlsafe_b64encode(
                    hashlib.sha256(data).digest()).rstrip(b"=").decode() and int(size) == len(data)
    # The collection, where Ansible looks for collections in the venv's site-packages.
    assert "ansible_collections/pipfeed/feed/playbooks/site.yml" in names
    assert "ansible_collections/pipfeed/feed/roles/pipfeed_config/tasks/main.yml" in names
    assert "ansible_collections/pipfeed/feed/plugins/lookup/token.py" in names
    assert not [n for n in names if "pipfeed_publish" in n or "pipfeed_cloud_init" in n]
    assert not [n for n in names if "/molecule/" in n or n.endswith("README.md")]
    assert b"Requires-Dist: ansible-core==2.19.14" in metadata


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []
    answer = 200

    def do_POST(self):  # noqa: N802 - the http.server interface
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.seen.append((dict(self.headers), body))
        self.send_response(Recorder.answer)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_upload_sends_the_wheels_exact_bytes_and_the_token_only_in_its_header(tmp_path):
    wheel = wheel_tool.build(str(tmp_path), [])
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/upload/"
    try:
        Recorder.seen, Recorder.answer = [], 200
        assert wheel_tool.upload(url, wheel, "", "pipfeed", "canary-token-1")["uploaded"]
        Recorder.answer = 409
        assert not wheel_tool.upload(url, wheel, "", "pipfeed", "canary-token-1")["uploaded"]
        Recorder.answer = 403
        with pytest.raises(wheel_tool.ProjectWheelError, match="Packaging"):
            wheel_tool.upload(url, wheel, "", "pipfeed", "canary-token-1")
        # The action that runs it says the same, and never the token.
        answer = run_action("project_wheel", {"command": "upload", "url": url, "wheel": wheel,
                                              "token": "canary-token-1"})
        assert answer["failed"] and "Packaging" in answer["msg"]
        assert "canary-token-1" not in json.dumps(answer)
    finally:
        server.shutdown()
    headers, body = Recorder.seen[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(
        b"pipfeed:canary-token-1").decode()
    assert b"canary-token-1" not in body
    assert Path(wheel["path"]).read_bytes() in body
    assert f'name="sha256_digest"\r\n\r\n{wheel["sha256"]}'.encode() in body


def test_verify_finds_a_missing_and_a_changed_wheel(tmp_path):
    for name, data in (("a-1-py3-none-any.whl", b"a"), ("b-1-py3-none-any.whl", b"b")):
        (tmp_path / name).write_bytes(data)
    files = {n: {"sha256": hashlib.sha256(d).hexdigest()} for n, d in
             (("a-1-py3-none-any.whl", b"a"), ("b-1-py3-none-any.whl", b"b"),
              ("c-1-py3-none-any.whl", b"c"))}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": files}))
    (tmp_path / "b-1-py3-none-any.whl").write_bytes(b"tampered")
    report = {"facts": {}, "problems": [], "warnings": []}
    assert verify.check_wheelhouse({"wheelhouse_path": str(tmp_path)}, report)
    assert report["facts"]["wheelhouse"]["bad"] == [
        "b-1-py3-none-any.whl (wrong sha256)", "c-1-py3-none-any.whl (missing)"]
    assert "pipfeed_wheelhouse" in report["problems"][0]


def test_verify_reads_the_netrc_entry_that_old_pips_use(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine feed.example login pipfeed password canary-2\n"
                     "machine pipfeed@feed.example login pipfeed password canary-2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    feed = {"url": "https://feed.example/org/_packaging/f/pypi/simple/", "username": "pipfeed"}
    assert verify.credential(feed, (20, 3, 4), uses_keyring=False) == (
        "pipfeed", "canary-2", "~/.netrc")
    other = {"url": "https://elsewhere.example/simple/", "username": "pipfeed"}
    assert verify.credential(other, (20, 3, 4), uses_keyring=False)[1] is None

"""The publish role's controller program: its inputs, the per-platform resolution (real pip
against an index on loopback serving wheels made here), the feed reader, and the report.
Nothing here talks to anything but loopback."""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.files import plugin, run_action
from tests.lab import feed as labfeed
from tests.lab.packages import build_wheel

pytestmark = pytest.mark.unit
ROLES = Path(__file__).resolve().parents[2] / "roles"


publish = plugin("plugin_utils.publish")
host_probe = plugin("module_utils.wheelhouse_host")
PY39 = {"python": "3.9", "glibc": "2.31"}
PY313 = {"python": "3.13", "glibc": "2.41"}


# ----- inputs --------------------------------------------------------------------------------
def test_a_given_platform_gets_the_same_key_as_the_wheelhouse_probe_reports():
    probed = host_probe.probe("/nonexistent/pipfeed-publish")["platform"]
    given = publish.normalize_platform(
        {"python": probed["python"], "glibc": probed["glibc"], "arch": probed["arch"]}, "x")
    assert given == probed


def test_a_python_version_yaml_read_as_a_number_is_refused_with_the_fix():
    with pytest.raises(publish.PublishError, match=r"platforms\[0\]\.python is the number 3.1; "
                                                   r"quote it"):
        publish.check_platforms({"platforms_given": [{"python": 3.1, "glibc": "2.31"}]})


def test_a_platform_without_glibc_is_refused_naming_the_field():
    with pytest.raises(publish.PublishError, match=r"platforms\[1\]\.glibc is ''"):
        publish.check_platforms({"platforms_given": [PY39, {"python": "3.11"}]})


def test_platforms_are_deduplicated_and_ordered_by_python_version():
    found = publish.check_platforms({"platforms_given": [PY313, PY39, dict(PY39)]})
    assert [p["key"] for p in found] == ["cp39-glibc2.31-x86_64", "cp313-glibc2.41-x86_64"]


def test_probed_hosts_that_are_not_cpython_on_glibc_are_refused():
    musl = {"key": "cp311-glibcnone-x86_64", "python": "3.11", "abi": "cp311",
            "arch": "x86_64", "glibc": "", "implementation": "cpython"}
    with pytest.raises(publish.PublishError, match="not CPython on glibc"):
        publish.check_platforms({"platforms_probed": [musl]})


@pytest.mark.parametrize("packages, message", [
    ([], "nothing to publish"),
    (["--index-url=https://pypi.org/simple/"], r"pipfeed_publish_packages\[0\].*pip option"),
    (["requests @ https://example.org/r.whl"], "direct URL"),
    (["requests >>> 2"], r"pipfeed_publish_packages\[0\] 'requests >>> 2' is not a requirement"),
])
def test_bad_requirement_strings_are_refused_naming_the_item(packages, message):
    with pytest.raises(publish.PublishError, match=message):
        publish.root_requirements({"packages": packages})


def test_a_requirement_file_line_is_named_by_its_number(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# what we need\nrequests\n--extra-index-url https://x/\n")
    with pytest.raises(publish.PublishError, match=r"pipfeed_publish_requirements line 3"):
        publish.root_requirements({"requirements": str(path)})


def test_the_controllers_pip_and_twine_settings_are_not_inherited(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://elsewhere/simple/")
    monkeypatch.setenv("TWINE_REPOSITORY", "pypi")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/other.pem")
    env = publish.clean_env()
    assert "PIP_INDEX_URL" not in env and "TWINE_REPOSITORY" not in env
    assert "REQUESTS_CA_BUNDLE" not in env and env["PIP_CONFIG_FILE"] == "/dev/null"


# ----- resolution against an index on loopback -----------------------------------------------
@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A PEP 503 index on loopback over wheels made here, with markers, extras and a version
    conflict that only shows one level down."""
    root = tmp_path_factory.mktemp("upstream")
    build_wheel(root, "pub-app", "1.0", ["pub-shared", "pub-tool",
                                         'pub-old; python_version < "3.10"',
                                         "pub-fast[speed]"])
    build_wheel(root, "pub-tool", "1.0", ["pub-shared<2"])
    build_wheel(root, "pub-shared", "1.0")
    build_wheel(root, "pub-shared", "2.0", ["pub-only-in-two"])
    build_wheel(root, "pub-only-in-two", "1.0")
    build_wheel(root, "pub-old", "1.0")
    build_wheel(root, "pub-fast", "1.0", ['pub-speedup; extra == "speed"'])
    build_wheel(root, "pub-speedup", "1.0")
    log = root.parent / "upstream.jsonl"
    server = labfeed.make_recorder_server(labfeed.RecorderConfig(
        root=root, public_base="http://127.0.0.1:0", log=log))
    server.app.config.public_base = server.url
    labfeed.serve_in_thread(server)
    yield {"url": f"{server.url}/simple/", "log": log}
    labfeed.stop_server(server)


def resolve(upstream, tmp_path, platform, packages):
    spec = {"packages": packages, "upstream_url": upstream["url"],
            "cache_dir": str(tmp_path / "cache")}
    [target] = publish.check_platforms({"platforms_given": [platform]})
    resolver = publish.Resolver(spec, target, publish.root_requirements(spec))
    return {name: item["version"] for name, item in resolver.resolve().items()}


def test_closure_follows_markers_and_extras_for_the_target_python(upstream, tmp_path):
    old = resolve(upstream, tmp_path, PY39, ["pub-app"])
    new = resolve(upstream, tmp_path, PY313, ["pub-app"])
    assert "pub-old" in old and "pub-old" not in new
    assert old["pub-speedup"] == new["pub-speedup"] == "1.0"


def test_a_constraint_found_one_level_down_replaces_the_version_chosen_first(upstream,
                                                                              tmp_path):
    closure = resolve(upstream, tmp_path, PY313, ["pub-app"])
    assert closure["pub-shared"] == "1.0"
    # The dependency of the version given up is gone with it.
    assert "pub-only-in-two" not in closure
    assert set(closure) == {"pub-app", "pub-tool", "pub-shared", "pub-fast", "pub-speedup"}


def test_a_project_the_upstream_lacks_fails_naming_it_and_who_wanted_it(upstream, tmp_path):
    with pytest.raises(publish.PublishError) as caught:
        resolve(upstream, tmp_path, PY39, ["pub-missing"])
    said = str(caught.value)
    assert "cp39-glibc2.31-x86_64" in said and "pub-missing wanted by" in said


def test_the_upstream_index_gets_no_credentials(upstream, tmp_path):
    resolve(upstream, tmp_path, PY39, ["pub-fast"])
    entries = [json.loads(line) for line in upstream["log"].read_text().splitlines()]
    assert entries and all(entry["authorization"] is None for entry in entries)


# ----- the feed ------------------------------------------------------------------------------
class Recording(BaseHTTPRequestHandler):
    """A feed double: pages by path; a path in `redirects` answers 302 to another origin."""

    pages: dict = {}
    redirects: dict = {}
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen.append((self.server.server_port, self.path,
                                self.headers.get("Authorization")))
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = self.pages.get(self.path, (404, b"not here"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    made = []

    def start():
        server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(server)
        return server

    Recording.pages, Recording.redirects, Recording.seen = {}, {}, []
    yield start
    for server in made:
        server.shutdown()
        server.server_close()


def feed_spec(server) -> dict:
    return {"feed_url": f"http://127.0.0.1:{server.server_port}/pypi/simple/",
            "feed_name": "python-feed", "token_source": "token_var pat"}


def test_the_feed_index_lists_file_names_and_a_missing_project_is_empty(servers):
    server = servers()
    Recording.pages["/pypi/simple/pub-app/"] = (200, (
        b'<a href="../../download/pub-app/1.0/pub_app-1.0-py3-none-any.whl#sha256=ab">x</a>'
        b"<a href='https://blob/pub_app-1.1-py3-none-any.whl?sig=1'>y</a>"))
    feed = publish.Feed(feed_spec(server), "s3cret")
    assert feed.files("Pub_App") == {"pub_app-1.0-py3-none-any.whl",
                                     "pub_app-1.1-py3-none-any.whl"}
    assert feed.files("pub-other") == set()
    assert all(auth and auth.startswith("Basic ") for _, _, auth in Recording.seen)


def test_a_refused_token_names_its_source_and_the_scope(servers):
    server = servers()
    Recording.pages["/pypi/simple/pub-app/"] = (401, b"no")
    with pytest.raises(publish.PublishError, match=r"401.*token_var pat.*Packaging"):
        publish.Feed(feed_spec(server), "s3cret").files("pub-app")


def test_a_redirect_to_another_origin_is_not_followed_with_the_token(servers):
    feed_server, other = servers(), servers()
    Recording.redirects["/pypi/simple/pub-app/"] = \
        f"http://127.0.0.1:{other.server_port}/simple/pub-app/"
    with pytest.raises(publish.PublishError, match="another origin"):
        publish.Feed(feed_spec(feed_server), "s3cret").files("pub-app")
    assert [port for port, _, _ in Recording.seen] == [feed_server.server_port]


# ----- report --------------------------------------------------------------------------------
def test_twine_errors_become_one_line_with_a_hint_for_a_refused_write():
    output = ("\x1b[33mWARNING \x1b[0m Error during upload. Retry with the --verbose option for"
              " more details.\n\x1b[31mERROR   \x1b[0m HTTPError: 403 Forbidden from\n"
              "         https://feed/pypi/upload/\n         Forbidden\n")
    reason = publish.upload_reason(output)
    assert reason.startswith("HTTPError: 403 Forbidden from https://feed/pypi/upload/")
    assert "Packaging (Read & write)" in reason and "\x1b" not in reason


def test_the_token_is_scrubbed_from_messages_plain_and_encoded():
    import base64
    encoded = base64.b64encode(b"s3cretpat").decode()
    basic = base64.b64encode(b"pipfeed:s3cretpat").decode()
    said = publish.scrub(f"failed with s3cretpat, {encoded} and Basic {basic}", "s3cretpat")
    assert "s3cretpat" not in said and encoded not in said and basic not in said


def test_a_run_with_nothing_to_do_says_so():
    counts = {"uploaded": 0, "skipped": 7, "failed": 0, "would upload": 0}
    assert publish.summary("python-feed", counts, 7, False) == \
        "Nothing to upload: feed python-feed already has all 7 files."
    counts = dict(counts, skipped=5, **{"would upload": 2})
    assert publish.summary("python-feed", counts, 7, True).startswith(
        "Dry run: 2 of 7 files would be uploaded to feed python-feed")


def test_the_run_action_never_says_the_token_even_in_an_error(tmp_path):
    """Errors come back scrubbed; here the feed URL is bad, so the run stops early."""
    spec = {"packages": ["x"], "platforms_given": [PY39], "feed_url": "http://127.0.0.1:9/s3cretpat/",
            "cache_dir": str(tmp_path), "upstream_url": "http://127.0.0.1:9/simple/"}
    answer = run_action("publish", {"command": "run", "spec": spec, "token": "s3cretpat"})
    assert answer["failed"] and "did not answer" in answer["msg"]
    assert "s3cretpat" not in json.dumps(answer)


# ----- the Azure DevOps publish stage -------------------------------------------------------
PIPELINE = ROLES.parent / "ci" / "azure-pipelines" / "publish.yml"
DOCS = ROLES.parent / "docs" / "pipelines.md"


def publish_steps() -> list[dict]:
    import yaml
    (stage,) = yaml.safe_load(PIPELINE.read_text())["stages"]
    (job,) = stage["jobs"]
    return job["strategy"]["runOnce"]["deploy"]["steps"]


# The schema check of ci/azure-pipelines/publish.yml is in test_pipeline_templates.py, with
# the other templates (offline, every conditionally inserted step in place).


def test_the_azure_publish_stage_takes_the_packages_and_calls_the_playbook():
    import yaml
    parameters = {p["name"]: p for p in yaml.safe_load(PIPELINE.read_text())["parameters"]}
    assert parameters["packages"]["type"] == "string" and "default" not in parameters["packages"]
    steps = publish_steps()
    scripts = [step.get("script", "") for step in steps]
    (publish,) = [s for s in steps if "pipfeed.feed.publish" in s.get("script", "")]
    assert '"$PIPFEED_VENV/bin/ansible-playbook"' in publish["script"]
    assert '-e @"$(Agent.TempDirectory)/publish-vars.json"' in publish["script"]
    writes = next(s for s in steps if "publish-vars.json" in s.get("script", "")
                  and "python -" in s["script"])
    assert steps.index(writes) < steps.index(publish)
    # Parameters and the token reach the steps as environment, never inside shell text.
    assert not any("parameters." in script or "AccessToken" in script for script in scripts)
    branches = [v for v in publish["env"].values() if isinstance(v, dict)]
    assert branches and all(set(b) == {"PIPFEED_PUBLISH_TOKEN"} for b in branches)


def test_the_documented_publish_pipeline_runs_by_hand_with_a_package_parameter():
    """The user's own pipeline (docs/pipelines.md) holds the runtime parameters and the
    triggers: none, so a publish runs only when someone asks for it."""
    import re
    import yaml
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    (pipeline,) = [yaml.safe_load(b) for b in blocks if "publish.yml@pipfeed" in b]
    assert pipeline["trigger"] == "none" and pipeline["pr"] == "none"
    parameters = {p["name"]: p for p in pipeline["parameters"]}
    assert parameters["packages"]["type"] == "string" and "default" not in parameters["packages"]
    (stage,) = pipeline["stages"]
    assert stage["template"] == "ci/azure-pipelines/publish.yml@pipfeed"
    assert stage["parameters"]["packages"] == "${{ parameters.packages }}"


def test_the_azure_pipelines_variable_step_turns_parameters_into_the_playbooks_variables(
        tmp_path):
    import os
    import subprocess
    step = next(s for s in publish_steps()
                if "publish-vars.json" in s.get("script", "") and "python -" in s["script"])
    script = step["script"].replace("$(Agent.TempDirectory)", str(tmp_path))
    marker = tmp_path / "ran"
    env = dict(os.environ, PUBLISH_PACKAGES=f"requests  pydantic>=2 $(touch {marker})",
               PUBLISH_PLATFORMS='[{"python": "3.11", "glibc": "2.36"}]', PUBLISH_DRY_RUN="True",
               PUBLISH_REPORT=str(tmp_path / "report.json"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    subprocess.run(["bash", "-ec", script], env=env, check=True, timeout=60)
    variables = json.loads((tmp_path / "publish-vars.json").read_text())
    assert variables["pipfeed_publish_packages"][:2] == ["requests", "pydantic>=2"]
    assert not marker.exists(), "a parameter was run as shell text"
    assert variables["pipfeed_publish_platforms"] == [{"python": "3.11", "glibc": "2.36"}]
    assert variables["pipfeed_publish_dry_run"] is True
    assert variables["pipfeed_publish_token_env"] == "PIPFEED_PUBLISH_TOKEN"

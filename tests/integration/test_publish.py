"""playbooks/publish.yml against the lab: the closure of two packages, resolved for the
platforms of the lab's Debian 11/12/13 hosts (Python 3.9, 3.11, 3.13), downloaded from an
upstream index on loopback (the lab's real wheels, served by the lab's recording index) and
uploaded to the lab feed, whose copies of those projects are removed first.

Each host then installs the packages from the feed with PyPI blocked; a second publish uploads
nothing and says so; a dry run uploads nothing; a file the feed refuses fails the run with the
file named while the others go in; the token never shows in the output at -vvv, nor reaches the
upstream index.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.support import recap, run_playbooks, sh

pytestmark = pytest.mark.integration
HOSTS = {"deb11-1": "3.9", "deb12-1": "3.11", "deb13-1": "3.13"}
PACKAGES = ["requests", "pyjwt"]
# Their closure for the lab Pythons; pyjwt needs typing-extensions on Python < 3.11 only.
CLOSURE = ("requests", "urllib3", "idna", "certifi", "charset_normalizer", "pyjwt",
           "typing_extensions")
REQUESTS_FOR = {"3.9": "2.32.5", "3.11": "2.34.2", "3.13": "2.34.2"}


def project_of(file_name: str) -> str:
    return file_name.split("-", 1)[0].lower()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("publish")


@pytest.fixture(scope="module")
def upstream(lab):
    """The upstream index: the lab's recording index on loopback over the lab's cached wheels
    (no PyPI at test time); its log shows every Authorization header it received."""
    url = lab.start_upstream()
    try:
        yield {"url": url, "log": lab.upstream_log}
    finally:
        lab.stop_upstream()


@pytest.fixture(scope="module")
def expected(lab) -> set[str]:
    """The closure's files: the upstream holds exactly the versions the lab Pythons resolve to."""
    return {p.name for p in Path(lab.state["wheels"]).glob("*.whl")
            if project_of(p.name) in CLOSURE}


@pytest.fixture(scope="module")
def feed(lab, expected):
    """The lab feed without the closure's files, and a canary token it accepts. Afterwards the
    feed holds them again whatever happened, for the tests that follow, and the control and
    token files are as they were."""
    feed_dir = lab.dir / "feed-packages"
    tokens = lab.tokens_file.read_text()
    control = lab.control_file.read_text() if lab.control_file.exists() else None
    canary = "canarypat" + base64.b32encode(time.time_ns().to_bytes(8, "big")).decode().lower()
    data = json.loads(tokens)
    data["tokens"].append({"token": canary, "scopes": ["read", "write"]})
    lab.tokens_file.write_text(json.dumps(data))
    for path in feed_dir.iterdir():
        if project_of(path.name) in CLOSURE:
            path.unlink()
    try:
        yield {"dir": feed_dir, "canary": canary}
    finally:
        for name in expected:
            if not (feed_dir / name).exists():
                shutil.copy2(Path(lab.state["wheels"]) / name, feed_dir / name)
        lab.tokens_file.write_text(tokens)
        if control is None:
            lab.control_file.unlink(missing_ok=True)
        else:
            lab.control_file.write_text(control)


def publish(lab, workdir, upstream, *args, **settings) -> subprocess.CompletedProcess:
    variables = {
        "pipfeed_publish_packages": PACKAGES,
        "pipfeed_publish_upstream_url": upstream["url"],
        # The controller reaches the feed by address, with the lab's CA.
        "pipfeed_publish_index_url": lab.controller_feed_url,
        "pipfeed_publish_cert": str(lab.ca_file),
        "pipfeed_publish_cache_dir": str(workdir / "cache"),
        **settings,
    }
    return run_playbooks(lab, workdir, ["playbooks/publish.yml"], variables, *args, timeout=600)


def lines(output: str, status: str) -> set[str]:
    """File names of the report lines with this status."""
    return set(re.findall(rf"{status}: (\S+\.whl)", output))


def posts(lab, mark: int) -> list[dict]:
    return [e for e in lab.read_log(lab.access_log, mark) if e["method"] == "POST"]


@pytest.fixture(scope="module")
def first(lab, workdir, upstream, feed, expected):
    """The first publish, at -vvv, with the canary as the feed's token."""
    mark = lab.log_mark(lab.access_log)
    result = publish(lab, workdir, upstream, "-vvv", lab_feed_token=feed["canary"])
    result.uploads = posts(lab, mark)
    return result


def test_first_publish_uploads_the_closure_for_every_platform(first, feed, expected):
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert lines(first.stdout, "uploaded") == expected
    assert {p.name for p in feed["dir"].iterdir() if project_of(p.name) in CLOSURE} == expected
    assert sorted(e["status"] for e in first.uploads) == [200] * len(expected)
    said = " ".join(first.stdout.split())
    assert f"{len(expected)} uploaded, 0 skipped (already on the feed), 0 failed" in said
    # Markers for each target: typing-extensions for Python 3.9 only; a wheel per Python where
    # the project is compiled.
    assert any(f"uploaded: {name} [cp39-glibc2.31-x86_64]" in said
               for name in expected if name.startswith("typing_extensions-"))
    assert {n.split("-")[2] for n in expected if n.startswith("charset_normalizer")} == \
        {"cp39", "cp311", "cp313"}


def test_token_is_not_in_the_output_at_vvv_nor_sent_upstream(first, feed, upstream):
    canary = feed["canary"]
    basic = base64.b64encode(f"pipfeed:{canary}".encode()).decode()
    for text in (first.stdout, first.stderr):
        assert canary not in text and basic not in text
    assert "<172." in first.stdout or "ESTABLISH" in first.stdout, "not a -vvv run"
    requests = [json.loads(line) for line in upstream["log"].read_text().splitlines()]
    assert requests and all(entry["authorization"] is None for entry in requests)


def test_each_lab_python_installs_the_packages_from_the_feed_with_pypi_blocked(lab, first):
    """The host's own pip (20.3, 23.0, 25.1) into a directory of its own (--target also
    installs what the system already has), all three hosts at once."""
    assert first.returncode == 0
    assert lab.state["pypi_block"] in ("drop", "refuse")
    index = lab.feed_url.replace("https://", "https://pipfeed:$T@")
    # The token on stdin into the environment: never on a command line of the host.
    command = ("read -r T && rm -rf /tmp/pub-target && "
               f"PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL=\"{index}\" python3 -m pip install "
               "--no-cache-dir --disable-pip-version-check --target /tmp/pub-target "
               f"{' '.join(PACKAGES)} && PYTHONPATH=/tmp/pub-target python3 -c "
               "'import requests, jwt, charset_normalizer; print(requests.__version__)'; "
               "status=$?; rm -rf /tmp/pub-target; exit $status")
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        results = dict(zip(HOSTS, pool.map(
            lambda host: sh(lab, host, command, stdin=(lab.token + "\n").encode(), timeout=600),
            HOSTS)))
    for host, (rc, out, err) in results.items():
        assert rc == 0, f"{host}: {out}\n{err}"
        assert out.strip().splitlines()[-1] == REQUESTS_FOR[HOSTS[host]], out


def test_second_publish_uploads_nothing_and_says_so(lab, workdir, upstream, first, expected):
    mark = lab.log_mark(lab.access_log)
    report = workdir / "report.json"
    result = publish(lab, workdir, upstream, pipfeed_publish_report_file=str(report))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    written = json.loads(report.read_text())
    assert written["counts"] == {"uploaded": 0, "skipped": len(expected), "failed": 0,
                                 "would upload": 0}
    assert {item["file"] for item in written["files"]} == expected
    assert f"Nothing to upload: feed python-feed already has all {len(expected)} files" in \
        " ".join(result.stdout.split())
    assert lines(result.stdout, "skipped") == expected
    assert lines(result.stdout, "uploaded") == set()
    assert posts(lab, mark) == []
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values())


def test_dry_run_from_a_requirement_file_for_a_given_platform_uploads_nothing(
        lab, workdir, upstream, first, feed, expected):
    idna = next(n for n in expected if n.startswith("idna-"))
    (feed["dir"] / idna).unlink()
    requirements = workdir / "publish-requirements.txt"
    requirements.write_text("# the same two packages, from a file\nrequests\n"
                            'pyjwt ; python_version >= "3.8"\n')
    mark = lab.log_mark(lab.access_log)
    result = publish(lab, workdir, upstream, pipfeed_publish_dry_run=True,
                     pipfeed_publish_packages=[],
                     pipfeed_publish_requirements=str(requirements),
                     pipfeed_publish_platforms=[{"python": "3.9", "glibc": "2.31"}])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert lines(result.stdout, "would upload") == {idna}
    py39 = {n for n in expected if "cp311" not in n and "cp313" not in n
            and n not in ("requests-2.34.2-py3-none-any.whl", "urllib3-2.8.0-py3-none-any.whl")}
    assert lines(result.stdout, "skipped") | {idna} == py39
    assert f"Dry run: 1 of {len(py39)} files would be uploaded" in " ".join(result.stdout.split())
    assert posts(lab, mark) == []
    assert not (feed["dir"] / idna).exists()


def test_a_file_the_feed_refuses_is_reported_and_the_run_fails(lab, workdir, upstream, first,
                                                               feed, expected):
    idna = next(n for n in expected if n.startswith("idna-"))
    certifi = next(n for n in expected if n.startswith("certifi-"))
    for name in (idna, certifi):
        (feed["dir"] / name).unlink(missing_ok=True)
    lab.control(refuse_uploads=[idna])
    try:
        result = publish(lab, workdir, upstream)
    finally:
        lab.control(refuse_uploads=[])
    said = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert lines(result.stdout, "failed") == {idna}, said[-3000:]
    assert "400" in said.split(f"failed: {idna}")[1][:300]
    assert lines(result.stdout, "uploaded") == {certifi}
    assert "1 file(s) could not be uploaded to feed python-feed" in said
    # The next run uploads only what is still missing.
    again = publish(lab, workdir, upstream)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr
    assert lines(again.stdout, "uploaded") == {idna}


@pytest.mark.parametrize("settings, message", [
    ({"pipfeed_publish_packages": []}, "Nothing to publish: list requirement strings in "
                                       "pipfeed_publish_packages"),
    ({"pipfeed_publish_platforms": [{"python": 3.1, "glibc": "2.31"}]},
     "pipfeed_publish_platforms[0].python is the number 3.1; quote it"),
    ({"pipfeed_publish_index_url": "https://pipfeed:secret@172.0.0.1/simple/"},
     "is not an http(s) URL without credentials"),
], ids=["nothing-to-publish", "unquoted-python", "credentials-in-url"])
def test_bad_input_fails_naming_the_variable_before_any_request_to_the_feed(
        lab, workdir, upstream, feed, settings, message):
    mark = lab.log_mark(lab.access_log)
    result = publish(lab, workdir, upstream, **settings)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert "secret" not in result.stdout
    assert lab.read_log(lab.access_log, mark) == []


def test_a_token_the_feed_refuses_stops_the_run_before_any_download(lab, workdir, upstream,
                                                                   feed):
    upstream_mark = upstream["log"].stat().st_size if upstream["log"].exists() else 0
    mark = lab.log_mark(lab.access_log)
    result = publish(lab, workdir, upstream, lab_feed_token="notavalidpat")
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert "answered 401" in said and "the variable lab_feed_token (token_var)" in said, \
        said[-3000:]
    assert "notavalidpat" not in result.stdout
    assert [e["status"] for e in lab.read_log(lab.access_log, mark)] == [401]
    assert (upstream["log"].stat().st_size if upstream["log"].exists() else 0) == upstream_mark

"""The probe-and-apply engine: the host program (plugins/module_utils/host_state.py) run on
files in tmp_path, and the controller's decision (plugins/plugin_utils/host_plan.py) from what
it reports. Nothing here touches this machine outside tmp_path."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import subprocess
import sys

import pytest

from tests.files import plugin, program

pytestmark = pytest.mark.unit
state = plugin("module_utils.host_state")
plan = plugin("plugin_utils.host_plan")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to root")


def bundle(*contents: bytes) -> bytes:
    return b"".join(plan.bundle(list(contents)))


def test_probe_reports_types_hashes_and_a_secret_only_by_hmac_under_its_own_salt(tmp_path):
    plain, secret, link = tmp_path / "plain", tmp_path / "secret", tmp_path / "link"
    plain.write_text("hello\n")
    secret.write_text("s3cret-token\n")
    link.symlink_to(plain)
    found = state.probe({"paths": [{"path": str(plain), "content": True},
                                   {"path": str(secret), "secret": True, "content": True},
                                   {"path": str(link)}, {"path": str(tmp_path / "none")},
                                   {"path": str(tmp_path)}]})
    by = {entry["path"]: entry for entry in found["paths"]}
    assert by[str(plain)]["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert by[str(plain)]["content"] == "hello\n"
    salt = bytes.fromhex(found["salt"])
    assert by[str(secret)]["hmac"] == hmac.new(salt, b"s3cret-token\n", hashlib.sha256).hexdigest()
    assert "content" not in by[str(secret)] and "sha256" not in by[str(secret)]
    assert "s3cret" not in json.dumps(found)
    assert by[str(link)] == dict(by[str(link)], type="link", src=str(plain))
    assert by[str(tmp_path / "none")]["type"] == "missing"
    assert by[str(tmp_path)]["type"] == "directory"
    # A salt of its own each time: the same file gives another HMAC in the next probe.
    again = state.probe({"paths": [{"path": str(secret), "secret": True}]})
    assert again["paths"][0]["hmac"] != by[str(secret)]["hmac"]


def test_probe_never_sends_back_a_password_written_into_a_url(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://me:hunter2@feed.example/simple/\n")
    found = state.probe({"paths": [{"path": str(conf), "content": True, "redact": True}]})
    assert found["paths"][0]["content"] == \
        "[global]\nindex-url = https://me:***@feed.example/simple/\n"


def test_probe_reads_the_pip_version_without_importing_pip():
    found = state.probe({"pythons": [sys.executable, "/nonexistent/python3"]})
    mine = found["pythons"][sys.executable]
    assert mine["version"] == ".".join(map(str, sys.version_info[:3]))
    import pip
    assert mine["pip"] == pip.__version__
    assert "error" in found["pythons"]["/nonexistent/python3"]


@needs_root
def test_apply_writes_beside_checks_and_renames_and_a_failed_check_keeps_the_old_file(tmp_path):
    target = tmp_path / "conf"
    target.write_text("old\n")
    items = [{"kind": "file", "path": str(target), "owner": "root", "group": "root",
              "mode": "0640", "content": 0, "backup": True,
              "validate": "grep -q good %s"}]
    with pytest.raises(state.ApplyError, match="failed its check"):
        state.apply({"items": items}, [b"bad\n"])
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]  # no temporary file left
    assert state.apply({"items": items}, [b"good\n"]) == [0]
    assert target.read_text() == "good\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("conf.") and p.name.endswith("~")]
    assert len(backups) == 1 and backups[0].read_text() == "old\n"


@needs_root
@pytest.mark.parametrize("parser, bad, good", [
    ("ini", "no section header\n", "[global]\nindex-url = https://feed.example/simple\n"),
    ("toml", "index-url = [\n", "index-url = \"https://feed.example/simple\"\n")])
def test_parse_checks_in_this_process_when_it_names_this_python(tmp_path, parser, bad, good):
    # validate would pass anything: only the parser in this process can refuse the bad file.
    target = tmp_path / "conf"
    target.write_text("old\n")
    items = [{"kind": "file", "path": str(target), "owner": "root", "group": "root",
              "mode": "0644", "content": 0, "validate": "true %s",
              "parse": {"parser": parser, "executable": sys.executable}}]
    with pytest.raises(state.ApplyError, match=f"failed its check \\({parser} parser of "):
        state.apply({"items": items}, [bad.encode()])
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["conf"]
    assert state.apply({"items": items}, [good.encode()]) == [0]
    assert target.read_text() == good


@needs_root
def test_parse_naming_another_python_leaves_the_check_to_the_validate_command(tmp_path):
    target = tmp_path / "conf"
    items = [{"kind": "file", "path": str(target), "owner": "root", "group": "root",
              "mode": "0644", "content": 0, "validate": "grep -q good %s",
              "parse": {"parser": "ini", "executable": "/nonexistent/python3"}}]
    # Not an ini file, but the other Python's check (the command) is the one that decides.
    assert state.apply({"items": items}, [b"good, not ini\n"]) == [0]
    with pytest.raises(state.ApplyError, match="failed its check \\(grep -q good"):
        state.apply({"items": items}, [b"[global]\n"])


@needs_root
def test_apply_stops_at_the_first_failure_and_says_what_it_did_before(tmp_path):
    items = [{"kind": "directory", "path": str(tmp_path / "d"), "owner": "root",
              "group": "root", "mode": "0750"},
             {"kind": "link", "path": str(tmp_path / "d" / "l"), "src": "/nowhere"},
             {"kind": "absent", "path": str(tmp_path)}]
    with pytest.raises(state.ApplyError) as failed:
        state.apply({"items": items}, [])
    assert failed.value.done == [0, 1]
    assert os.readlink(tmp_path / "d" / "l") == "/nowhere"


@needs_root
def test_the_program_reads_its_contents_from_stdin_or_from_the_file_it_is_given(tmp_path):
    script = program("host_state.py")
    spec = json.dumps({"items": [{"kind": "file", "path": str(tmp_path / "a"), "owner": "root",
                                  "group": "root", "mode": "0600", "content": 0}]})
    done = subprocess.run([str(script), "apply", spec, "-"], input=bundle(b"via stdin\n"),
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a").read_text() == "via stdin\n"
    data = tmp_path / "data"
    data.write_bytes(bundle(b"via file\n"))
    done = subprocess.run([str(script), "apply", spec, str(data)], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a").read_text() == "via file\n"
    # Cut short: nothing is written, and it says so.
    cut = bundle(b"x" * 100)[:-10]
    done = subprocess.run([str(script), "apply", spec, "-"], input=cut, capture_output=True,
                          timeout=60)
    assert done.returncode == 1 and b"cut short" in done.stderr
    assert (tmp_path / "a").read_text() == "via file\n"


def test_the_decision_needs_no_host_when_nothing_differs_and_names_each_change(tmp_path):
    conf = tmp_path / "conf"
    conf.write_text("same\n")
    items = [{"kind": "file", "path": str(conf), "content": "same\n"},
             {"kind": "file", "path": str(tmp_path / "token"), "content": "t0ken\n",
              "secret": True},
             {"kind": "link", "path": str(tmp_path / "l"), "src": "/x"}]
    current = state.probe(plan.probe_spec(items, diff=True))
    assert plan.known(items, current, diff=True)
    changes = plan.decide(items, current)
    assert [c["reason"] for c in changes] == ["created", "absent -> link to /x"]
    # A secret's diff says only that it changes.
    secret_diff = changes[0]["diff"]
    assert "t0ken" not in json.dumps(secret_diff) and "holds a secret" in secret_diff["after"]
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "l").symlink_to("/x")
    current = state.probe(plan.probe_spec(items, diff=False))
    assert plan.decide(items, current) == []
    spec, contents = plan.apply_spec(changes)
    assert "t0ken" not in json.dumps(spec) and contents[0] == b"t0ken\n"


def test_read_bundle_refuses_a_stream_without_its_header():
    with pytest.raises(state.ApplyError, match="no header line"):
        state.read_bundle(io.BytesIO(b""))


def test_one_probe_reads_other_specs_too_and_asks_each_python_once(tmp_path, monkeypatch):
    """playbooks/hosts.yml reads each host once for pipfeed_config and the credential helper:
    the other spec's answer comes under also, with its own salt, and a Python both specs ask
    about is started once."""
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "b").write_text("b\n")
    asked = []
    monkeypatch.setattr(state, "python_state", lambda command: asked.append(command)
                        or {"command": command, "version": "3.11.2"})
    found = state.probe({"paths": [{"path": str(tmp_path / "a")}], "pythons": ["python3"],
                         "also": {"helper": {"paths": [{"path": str(tmp_path / "b")}],
                                             "pythons": ["python3", "/opt/venv/bin/python"]}}})
    other = found["also"]["helper"]
    assert [p["sha256"] for p in found["paths"]] == [hashlib.sha256(b"a\n").hexdigest()]
    assert [p["sha256"] for p in other["paths"]] == [hashlib.sha256(b"b\n").hexdigest()]
    assert other["salt"] != found["salt"]
    assert sorted(other["pythons"]) == ["/opt/venv/bin/python", "python3"]
    assert asked == ["python3", "/opt/venv/bin/python"]


def test_a_read_answers_only_the_spec_it_was_made_for():
    """The action's spec identity: a later probe takes an earlier read only for the very same
    spec (key order aside); any other spec reads the host."""
    action = plugin("action.host_probe")
    spec = {"paths": [{"path": "/etc/pip.conf", "content": True}], "pythons": ["python3"]}
    same = {"pythons": ["python3"], "paths": [{"content": True, "path": "/etc/pip.conf"}]}
    assert action.spec_id(spec) == action.spec_id(same)
    other = dict(spec, pythons=["python3", "/opt/venv/bin/python"])
    assert action.spec_id(spec) != action.spec_id(other)


def test_a_probe_reads_the_wheelhouse_with_the_wheelhouse_program_sent_beside_it(tmp_path):
    """host_run's pipelined command for a program that imports another host program, run
    here: both sources on one stdin, the imported one first; host_state's answer under
    also.<name>.wheelhouse is what wheelhouse_host.py's own probe reports. Without the other
    program sent along, a wheelhouse spec fails the probe instead of answering."""
    run = plugin("plugin_utils.host_run")
    programs = plugin("plugin_utils.host_programs")
    wheelhouse_host = plugin("module_utils.wheelhouse_host")
    store = tmp_path / ".wheelhouse.d" / "v1"
    store.mkdir(parents=True)
    (store / "a-1-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "wheelhouse").symlink_to(store)
    path = str(tmp_path / "wheelhouse")
    main, imported = programs.source("host_state.py"), programs.source("wheelhouse_host.py")
    spec = json.dumps({"os": True, "also": {"pipfeed_wheelhouse": {"wheelhouse": path}}})
    done = subprocess.run([sys.executable, "-c", run.BOOTSTRAP_MODULES.format(name="host_state.py"),
                           f"wheelhouse_host:{len(imported)}", str(len(main)), "probe", spec],
                          input=imported + main, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["os"]["machine"]
    answer = found["also"]["pipfeed_wheelhouse"]["wheelhouse"]
    assert answer == json.loads(json.dumps(wheelhouse_host.probe(path)))
    assert answer["files"] == {"a-1-py3-none-any.whl": {
        "sha256": hashlib.sha256(b"wheel").hexdigest(), "size": 5}}
    done = subprocess.run([sys.executable, "-c", run.BOOTSTRAP.format(name="host_state.py"),
                           str(len(main)), "probe", spec], input=main, capture_output=True,
                          timeout=60)
    assert done.returncode != 0 and b"wheelhouse_host" in done.stderr


def test_a_probe_given_problems_fails_with_them_and_reads_nothing():
    """A role's settings check and its read are one task: with problems the action fails with
    them, each on one line, before it would contact the host (this one has no connection)."""
    from tests.files import run_action
    result = run_action("host_probe", {"problems": ["pipfeed_x is wrong:\n  set it\n  right.",
                                                    "pipfeed_y too."],
                                       "spec": {"paths": [{"path": "/etc/pip.conf"}]}})
    assert result["failed"] and "probe" not in result
    assert result["msg"] == "pipfeed_x is wrong: set it right. pipfeed_y too."
    with pytest.raises(Exception, match="problems must be a list"):
        run_action("host_probe", {"problems": "pipfeed_x is wrong"})


def test_a_host_script_given_problems_fails_with_them_and_runs_nothing():
    """The wheelhouse's free-space check and its transfer are one task: with problems the
    action fails before it would run the program or send anything (no connection here)."""
    from tests.files import run_action
    result = run_action("host_script", {"problems": ["deb13-1 has 64 KiB free\n  where ..."],
                                        "python": "/usr/bin/python3", "args": ["apply"],
                                        "send": [["a.whl", "/nonexistent/a.whl"]]})
    assert result["failed"] and "rc" not in result
    assert result["msg"] == "deb13-1 has 64 KiB free where ..."


@pytest.mark.parametrize("args, shown", [
    ({"problems": [], "lines": []}, {"changed": False}),
    ({"lines": ["Debian 12, Python 3.11.2"]},
     {"changed": False, "msg": "Debian 12, Python 3.11.2", "_ansible_verbose_always": True}),
    ({"problems": [], "lines": ["a", "WARNING: b"]},
     {"changed": False, "msg": ["a", "WARNING: b"], "_ansible_verbose_always": True}),
    ({"problems": ["h1: no\n python3.", "h1: feed x said 401."], "lines": ["a"]},
     {"changed": False, "failed": True, "msg": "h1: no python3. h1: feed x said 401."}),
])
def test_a_report_fails_with_its_problems_or_shows_its_lines(args, shown):
    from tests.files import run_action
    assert run_action("report", args) == shown
    with pytest.raises(Exception, match="lines must be a list"):
        run_action("report", {"lines": "one line"})


def test_a_host_apply_given_problems_fails_with_them_and_changes_nothing():
    """The helper's configuration step fails with why its token step could not write (that
    step's task is no_log) before it decides or changes anything (no connection here)."""
    from tests.files import run_action
    result = run_action("host_apply", {
        "problems": ["The token files were not written (exit code 1: ...)\n (already written: a)"],
        "items": [{"kind": "absent", "path": "/etc/pipfeed/x"}]})
    assert result["failed"] and "changes" not in result
    assert result["msg"] == "The token files were not written (exit code 1: ...) (already written: a)"

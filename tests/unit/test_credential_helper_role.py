"""The pipfeed_credential_helper role's pieces that need no host: its filters, the token lookup from
each of the three sources, the netrc it writes, and pipfeed_config's files once the shared switch
pipfeed_credential_helper is on, read back by pip's configuration reader, by uv 0.13.9, and by
the helper program itself (which must answer each feed's URL with that feed's own token).

Ansible renders on localhost into tmp_path only; nothing here touches this machine's pip or
keyring configuration."""
from __future__ import annotations

import os
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.files import COLLECTIONS, plugin
from tests.unit.test_credential_helper import load_helper
from tests.unit.test_pipfeed_config_render import _controller_env, pip_reads, uv, uv_settings  # noqa: F401

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "pipfeed_credential_helper"
PIP_CONFIG = ROOT / "roles" / "pipfeed_config"
BIN = Path(sys.executable).parent

FEED = "https://feed.example.test/contoso/_packaging/python-feed/pypi/simple/"
TEAM = "https://pkgs.dev.azure.com/contoso/platform/_packaging/team-feed/pypi/simple/"
ORG = "https://pkgs.dev.azure.com/contoso/_packaging/org-feed/pypi/simple/"
TOKENS = {"python-feed": "pat-python-" + "a" * 30, "team-feed": "pat-team-" + "b" * 30,
          "org-feed": "pat-org-" + "c" * 30}


feeds_model = plugin("plugin_utils.feeds")
COMMON = ROOT / "roles" / "pipfeed_common"


def three_feeds(token_file: Path) -> list[dict]:
    """One feed per token source; two of them share pkgs.dev.azure.com."""
    return [
        {"name": "python-feed", "url": FEED, "token_var": "python_feed_token"},
        {"name": "team-feed", "token_env": "PIPFEED_UNIT_TEAM_TOKEN",
         "azure": {"organization": "contoso", "project": "platform", "feed": "team-feed"}},
        {"name": "org-feed", "token_file": str(token_file),
         "azure": {"organization": "contoso", "feed": "org-feed"}},
    ]


# ----- filters ------------------------------------------------------------------------------

def test_token_sources_must_be_exactly_one():
    assert feeds_model.token_sources({"token_var": "x"}) == ["token_var"]
    assert feeds_model.token_sources({"token_var": "x", "token_env": "Y"}) == ["token_var", "token_env"]
    assert feeds_model.token_sources({"token_file": ""}) == []
    assert feeds_model.token_source({"token_env": "PAT"}) == \
        "the controller environment variable PAT (token_env)"


@pytest.mark.parametrize("token, problem", [
    ("abc123", ""), ("", "is empty"), ("abc\ndef", "holds a line break (more than one line)"),
    ("abc def", "holds whitespace"), (" abc", "holds whitespace"),
    ("abc\x07", "holds control characters"), ("abc\x7f", "holds control characters"),
    (None, "is not a string"),
])
def test_token_problem_names_what_is_wrong_never_the_value(token, problem):
    assert feeds_model.token_problem(token) == problem
    if token:
        assert token.strip() not in problem


def test_helper_config_gives_each_feed_its_own_token_file(tmp_path):
    feeds = three_feeds(tmp_path / "t")
    config = feeds_model.helper_config(feeds, "pipfeed", "/etc/pipfeed/tokens")
    assert config == {"username": "pipfeed", "feeds": [
        {"name": "python-feed", "url": FEED, "token_file": "/etc/pipfeed/tokens/python-feed.token"},
        {"name": "team-feed", "url": TEAM, "token_file": "/etc/pipfeed/tokens/team-feed.token"},
        {"name": "org-feed", "url": ORG, "token_file": "/etc/pipfeed/tokens/org-feed.token"}]}
    assert "pat-" not in json.dumps(config)


def test_netrc_has_one_entry_per_host_and_names_the_feeds_it_cannot_tell_apart(tmp_path):
    feeds = three_feeds(tmp_path / "t")
    assert feeds_model.netrc_hosts(feeds) == [
        ["feed.example.test", 0, []], ["pkgs.dev.azure.com", 1, ["org-feed"]]]


def test_url_space_tells_feeds_apart_as_the_helper_does():
    assert feeds_model.url_space(TEAM) == \
        "https://pkgs.dev.azure.com:443/contoso/platform/_packaging/team-feed/pypi/"
    assert feeds_model.url_space("https://Feed.Example.test:443/x/simple") == \
        feeds_model.url_space("https://feed.example.test/x/")


def test_the_real_helper_answers_each_feed_url_with_its_own_token(tmp_path, monkeypatch,
                                                                 capsysbinary):
    """The role's configuration, three token files, and the helper program: each URL (and each
    download URL below it) gets its own feed's token; a neighbour's URL gets nothing."""
    helper = load_helper()
    monkeypatch.setattr(helper, "TRUSTED_UID", os.getuid())
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(mode=0o750)
    for name, token in TOKENS.items():
        path = token_dir / f"{name}.token"
        path.write_text(token + "\n")
        path.chmod(0o640)
    config = tmp_path / "credential-helper.json"
    feeds = three_feeds(tmp_path / "t")
    config.write_text(json.dumps(feeds_model.helper_config(feeds, "pipfeed", str(token_dir))))
    config.chmod(0o644)
    monkeypatch.setenv(helper.CONFIG_ENV, str(config))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    asked = {"python-feed": FEED, "team-feed": TEAM + "team-pkg/",
             "org-feed": ORG.replace("/simple/", "/download/org-pkg/1.0/org_pkg-1.0.whl")}
    for name, url in asked.items():
        assert helper.main(["--mode=creds", "--output=json", "get", url, "pipfeed"]) == 0
        assert json.loads(capsysbinary.readouterr().out) == {"username": "pipfeed",
                                                             "password": TOKENS[name]}
    neighbour = "https://pkgs.dev.azure.com/contoso/_packaging/org-feed-2/pypi/simple/"
    with pytest.raises(SystemExit) as refused:
        helper.main(["get", neighbour, "pipfeed"])
    assert refused.value.code == helper.EXIT_NOT_OURS
    assert capsysbinary.readouterr().out == b""


# ----- rendered by Ansible ------------------------------------------------------------------

def fake_probe(wheelhouse: bool = False) -> dict:
    """What pipfeed_config's probe reports of a fresh host (paths in the order of its spec)."""
    return {"probe": {"paths": [{"type": "missing"}, {"type": "missing"}, {"type": "missing"},
                                {"type": "directory" if wheelhouse else "missing"},
                                {"type": "missing"}]}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """One localhost run: the tokens from all three sources, the netrc, and pipfeed_config's
    pip.conf and uv.toml with the shared switch on."""
    out = tmp_path_factory.mktemp("credential_helper_role")
    token_file = out / "org-feed.pat"
    token_file.write_text(TOKENS["org-feed"] + "\n")
    feeds = three_feeds(token_file)
    common_defaults = yaml.safe_load((COMMON / "defaults" / "main.yml").read_text())
    helper_defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    config_defaults = yaml.safe_load((PIP_CONFIG / "defaults" / "main.yml").read_text())
    play_vars = {**common_defaults, **helper_defaults, **config_defaults}
    play_vars.update(pipfeed_feeds=feeds, pipfeed_credential_helper=True, pipfeed_mode="primary",
                     python_feed_token=TOKENS["python-feed"], __out=str(out),
                     __pipfeed_config_probe=fake_probe(),
                     # The decision helper_plan makes where netrc is on, with a group.
                     __plan={"netrc": True, "token_owner": {"group": "pipfeed", "file": "0640"}})
    play = [{
        "name": "render", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "vars" / "main.yml"), str(PIP_CONFIG / "vars" / "main.yml")],
        "vars": play_vars,
        "tasks": [
            {"name": "tokens", "ansible.builtin.copy": {
                "content": "{{ __pipfeed_credential_helper_tokens | to_json }}",
                "dest": "{{ __out }}/tokens.json", "mode": "0600"}},
            {"name": "problems", "ansible.builtin.copy": {
                "content": "{{ query('pipfeed.feed.token', *pipfeed_feeds, check=true) | to_json }}",
                "dest": "{{ __out }}/problems.json", "mode": "0600"}},
            # The same filter as tasks/tokens.yml, with the tokens from their three sources.
            {"name": "netrc", "ansible.builtin.copy": {
                "content": "{{ (pipfeed_feeds | pipfeed.feed.helper_token_items("
                           "__pipfeed_credential_helper_tokens, __plan, pipfeed_username)"
                           " | selectattr('path', 'equalto', '/etc/pipfeed/netrc') | first).content }}",
                "dest": "{{ __out }}/netrc", "mode": "0600"}},
            # pipfeed_config's files, as its configure step hands them to host_apply.
            *({"name": name, "ansible.builtin.copy": {
                "content": "{{ (__pipfeed_config_items | selectattr('path', 'equalto', '%s')"
                           " | first).content }}" % path,
                "dest": "{{ __out }}/" + name, "mode": "0644"}}
              for name, path in (("pip.conf", "/etc/pip.conf"), ("uv.toml", "/etc/uv/uv.toml"))),
        ]}]
    playbook = out / "render.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    (out / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    env = _controller_env(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_CONFIG=str(out / "ansible.cfg"), ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false", NO_COLOR="1",
        PIPFEED_UNIT_TEAM_TOKEN=TOKENS["team-feed"])
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                            env=env, capture_output=True, text=True, timeout=300, cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_tokens_come_from_a_variable_an_environment_variable_and_a_file(rendered):
    assert json.loads((rendered / "tokens.json").read_text()) == [
        TOKENS["python-feed"], TOKENS["team-feed"], TOKENS["org-feed"]]
    assert json.loads((rendered / "problems.json").read_text()) == ["", "", ""]


def test_netrc_holds_one_token_per_host_for_both_url_forms(rendered):
    lines = [line.split() for line in (rendered / "netrc").read_text().splitlines() if line.strip()]
    assert lines == [
        ["machine", "feed.example.test", "login", "pipfeed", "password", TOKENS["python-feed"]],
        ["machine", "pipfeed@feed.example.test", "login", "pipfeed", "password",
         TOKENS["python-feed"]],
        ["machine", "pkgs.dev.azure.com", "login", "pipfeed", "password", TOKENS["team-feed"]],
        ["machine", "pipfeed@pkgs.dev.azure.com", "login", "pipfeed", "password",
         TOKENS["team-feed"]]]
    # Python's own netrc reader (what pip's requests uses) finds both forms.
    import netrc
    parsed = netrc.netrc(str(rendered / "netrc"))
    assert parsed.authenticators("pipfeed@feed.example.test")[2] == TOKENS["python-feed"]
    assert parsed.authenticators("pkgs.dev.azure.com")[2] == TOKENS["team-feed"]


def test_pip_conf_carries_the_user_name_and_the_subprocess_provider_but_no_token(rendered):
    text = (rendered / "pip.conf").read_text()
    assert not any(token in text for token in TOKENS.values())
    settings = pip_reads(rendered / "pip.conf")
    assert settings["global.index-url"] == FEED.replace("https://", "https://pipfeed@")
    assert settings["global.extra-index-url"].split("\n") == [
        TEAM.replace("https://", "https://pipfeed@"), ORG.replace("https://", "https://pipfeed@")]
    assert settings["global.keyring-provider"] == "subprocess"
    assert settings["global.no-input"] == "true"


def test_uv_toml_carries_the_user_name_and_the_subprocess_provider(rendered, uv):  # noqa: F811
    text = (rendered / "uv.toml").read_text()
    assert not any(token in text for token in TOKENS.values())
    data = tomllib.loads(text)
    assert data["keyring-provider"] == "subprocess"
    assert [i["url"] for i in data["index"]] == [
        u.replace("https://", "https://pipfeed@") for u in (FEED, TEAM, ORG)]
    assert "keyring_provider: Subprocess" in uv_settings(uv, rendered / "uv.toml")


def test_the_feed_check_hands_the_helper_decision_on_and_reads_identities_from_it():
    """preflight's feed check takes the helper's decision once and returns it (the role's
    later tasks read it from there); its config_changes decides whether a managed identity's
    feed is asked. With check off, nothing is asked and no host is contacted."""
    from tests.files import run_action
    feeds = [{"name": "mi-feed", "url": "https://pkgs.dev.azure.com/o/_packaging/mi/pypi/simple/",
              "azure_identity": {"client_id": "x"}}]
    for changes in (True, False):
        plan = {"config_changes": changes, "install": [], "warnings": []}
        result = run_action("feed_check", {"feeds": feeds, "tokens": [""], "current": {},
                                           "check": False, "plan": plan})
        assert result["plan"] == plan
        assert result["feeds"][0]["changes"] is changes and result["feeds"][0]["identity"]
    result = run_action("feed_check", {"feeds": feeds, "tokens": [""], "check": False,
                                       "identities": True, "plan": {"config_changes": False}})
    assert result["feeds"][0]["changes"] is True


def test_the_self_test_as_root_is_not_repeated_where_the_configuration_check_made_it():
    """After a change the helper tests itself as root and as each member of the group; where
    the call writes the configuration, its check (the helper run as root on the new file) is
    already the test as root."""
    plan = plugin("plugin_utils.helper_plan")
    feeds = [{"name": "python-feed", "url": FEED, "token_var": "feed_token"}]
    settings = {"username": "pipfeed", "group": "pipfeed", "users": ["deploy"], "netrc": "never"}
    probe = {"users": {"deploy": {"exists": True}}}
    first = plan.plan(probe, feeds, settings)
    config = next(item for item in first["configure"] if item["path"] == plan.CONFIG)
    as_deploy = ["runuser", "-u", "deploy", "--", plan.PROGRAM, "--check"]
    assert first["config_changes"] and "--check" in config["validate"]
    assert first["verify"] == [as_deploy]
    written = dict(probe, paths=[{"path": plan.CONFIG, "type": "file",
                                  "content": config["content"]}])
    again = plan.plan(written, feeds, settings)
    assert not again["config_changes"]
    assert again["verify"] == [[plan.PROGRAM, "--check"], as_deploy]


@pytest.mark.parametrize("feeds, group, users, said", [
    ([{"name": "f"}], "pipfeed", ["deploy"], None),
    ([{"name": "f"}], "", [], None),
    ([], "pipfeed", [], "pipfeed_feeds is empty"),
    ([{"name": "f"}], "Bad Group", [], "must be a group name"),
    ([{"name": "f"}], "", ["deploy"], "which needs a group"),
    ([{"name": "f"}], "pipfeed", ["deploy", 5], "a list of account names"),
    ([{"name": "f"}], "pipfeed", "deploy", "a list of account names"),
])
def test_the_settings_check_says_what_does_not_fit_together(feeds, group, users, said):
    problems = plugin("plugin_utils.helper_plan").setting_problems(feeds, group, users)
    if said is None:
        assert problems == []
    else:
        assert len(problems) == 1 and said in problems[0]

"""The pipfeed_config role's files (the content its configure step hands to host_apply),
rendered by Ansible itself across the modes and settings, then read back by pip's own configuration reader and by uv (0.13.9, from the lab's package
cache). Nothing here touches this machine's pip configuration: every file goes to tmp_path,
and pip runs with PIP_CONFIG_FILE pointing at the rendered file."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.files import COLLECTIONS, plugin
from tests.lab import packages

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "pipfeed_config"
COMMON = ROOT / "roles" / "pipfeed_common"
BIN = Path(sys.executable).parent
FEED = "https://feed.example.test/contoso/_packaging/python-feed/pypi/simple/"
AZURE_PROJECT = "https://pkgs.dev.azure.com/contoso/platform/_packaging/team-feed/pypi/simple/"
AZURE_ORG = "https://pkgs.dev.azure.com/contoso/_packaging/org-feed/pypi/simple/"
WHEELHOUSE = "/var/lib/pipfeed/wheelhouse"

ONE_FEED = [{"name": "python-feed", "url": FEED, "token_var": "feed_token"}]
AZURE_FEEDS = [
    {"name": "team-feed", "token_var": "t1",
     "azure": {"organization": "contoso", "project": "platform", "feed": "team-feed"}},
    {"name": "org-feed", "token_var": "t2",
     "azure": {"organization": "contoso", "feed": "org-feed"}},
]

# name: (variables, existing /etc/pip.conf, wheelhouse directory exists on the host)
CASES: dict[str, tuple[dict, str, bool]] = {
    "extra": ({"pipfeed_feeds": ONE_FEED}, "", False),
    "extra_wheelhouse_exists": ({"pipfeed_feeds": ONE_FEED}, "", True),
    "primary_azure": ({"pipfeed_feeds": AZURE_FEEDS, "pipfeed_mode": "primary"}, "", False),
    "offline": ({"pipfeed_feeds": ONE_FEED, "pipfeed_mode": "offline"}, "", False),
    "all_settings": ({
        "pipfeed_feeds": ONE_FEED, "pipfeed_mode": "primary",
        "pipfeed_wheelhouse": True, "pipfeed_wheelhouse_path": "/srv/wheels",
        "pipfeed_config_cert": "/etc/ssl/certs/ca-certificates.crt",
        "pipfeed_config_proxy": "http://proxy.example.test:3128", "pipfeed_config_timeout": 7.5,
        "pipfeed_config_retries": 2, "pipfeed_config_no_input": False,
        "pipfeed_credential_helper": True,
        "pipfeed_config_extra_settings": {"global": {"disable-pip-version-check": True},
                                      "install": {"progress-bar": "off",
                                                  "constraint": ["/etc/a.txt", "/etc/b.txt"]}},
        "pipfeed_config_uv_extra_settings": {"index-strategy": "unsafe-best-match",
                                         "concurrent-downloads": 4}}, "", False),
    "insecure_http": ({"pipfeed_feeds": ONE_FEED + [
        {"name": "devpi", "url": "http://devpi.example.test:3141/root/pypi/+simple/",
         "insecure_http": True, "token_var": "devpi_token"}]}, "", False),
    "merge_existing": ({"pipfeed_feeds": ONE_FEED, "pipfeed_mode": "primary",
                        "pipfeed_config_extra_settings": {"install": {"user": False}}}, """\
# written by hand, long ago
[global]
index-url = https://old-mirror.example.test/simple/
extra_index_url = https://pypi.example.test/simple/
timeout = 60
break-system-packages = true

[install]
--extra-index-url = https://sneaky.example.test/simple/
user = true
trusted-host =
    old-mirror.example.test
    pypi.example.test

[freeze]
all = true
""", False),
    "replace_existing": ({"pipfeed_feeds": ONE_FEED, "pipfeed_config_keep_existing": False},
                         "[global]\ntimeout = 60\n[install]\nuser = true\n", False),
    "credential_helper_off_no_input_default": ({"pipfeed_feeds": ONE_FEED}, "", False),
}


def _controller_env(**extra: str) -> dict[str, str]:
    """This machine exports PIP_* settings of its own; the rendered file must stand alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Render every case through the role's own variables (localhost, into tmp only), in one
    run."""
    base = tmp_path_factory.mktemp("pipfeed_config")
    defaults = {**yaml.safe_load((COMMON / "defaults" / "main.yml").read_text()),
                **yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())}
    plays = []
    for name, (variables, existing, wheelhouse) in CASES.items():
        out = base / name
        out.mkdir()
        play_vars = dict(defaults, **variables)
        play_vars.update({
            "__case_out": str(out),
            # What the role's probe reports of the host (paths in the order of its spec).
            "__pipfeed_config_probe": {"probe": {"paths": [
                {"type": "file", "content": existing} if existing else {"type": "missing"},
                {"type": "missing"}, {"type": "missing"},
                {"type": "directory" if wheelhouse else "missing"}, {"type": "missing"}]}},
        })
        plays.append({
            "name": name, "hosts": "localhost", "gather_facts": False,
            "vars_files": [str(ROLE / "vars" / "main.yml")], "vars": play_vars,
            # The content tasks/configure.yml hands to host_apply.
            "tasks": [{"name": name, "ansible.builtin.copy": {
                "content": "{{ (__pipfeed_config_items | selectattr('path', 'equalto', '%s')"
                           " | first).content }}" % path,
                "dest": "{{ __case_out }}/" + name, "mode": "0644"}}
                for name, path in (("pip.conf", "/etc/pip.conf"), ("uv.toml", "/etc/uv/uv.toml"))]})
    playbook = base / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    (base / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    env = _controller_env(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                          ANSIBLE_CONFIG=str(base / "ansible.cfg"),
                          ANSIBLE_LOCALHOST_WARNING="false",
                          ANSIBLE_INVENTORY_UNPARSED_WARNING="false", NO_COLOR="1")
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", f"ansible_python_interpreter={sys.executable}",
                             str(playbook)], env=env, capture_output=True, text=True, timeout=300,
                            cwd=base)
    assert result.returncode == 0, result.stdout + result.stderr
    return {name: base / name for name in CASES}


def pip_reads(conf: Path) -> dict[str, str]:
    """The settings pip's own reader finds in the file (only that file: the env variant)."""
    code = ("import json\n"
            "from pip._internal import configuration as conf\n"
            "env = conf.Kind.ENV if hasattr(conf, 'Kind') else conf.kinds.ENV  # pip 26 renamed it\n"
            "reader = conf.Configuration(isolated=False)\n"
            "reader.load()\n"
            "print(json.dumps(reader.get_values_in_config(env)))")  # {file: {key: value}}
    env = _controller_env(PIP_CONFIG_FILE=str(conf))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    # The command-line reader must accept the file too (it exits 1 on a parse error).
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug",
                            "--disable-pip-version-check"], env=env, capture_output=True,
                           text=True)
    assert debug.returncode == 0, debug.stderr
    assert f"{conf}, exists: True" in debug.stdout
    return json.loads(result.stdout)[str(conf)]


@pytest.fixture(scope="module")
def uv(tmp_path_factory) -> Path:
    wheels = glob.glob(str(packages.cache_root() / "wheels-*" / "uv-0.13.9-*manylinux*x86_64*.whl"))
    if not wheels:
        pytest.skip("uv 0.13.9 is not in the lab's package cache (bring a lab up once)")
    target = tmp_path_factory.mktemp("uv") / "uv"
    with zipfile.ZipFile(wheels[0]) as archive:
        target.write_bytes(archive.read("uv-0.13.9.data/scripts/uv"))
    target.chmod(0o755)
    return target


def uv_settings(uv: Path, toml: Path) -> str:
    """uv's own parse of the file (it refuses unknown keys), as its resolved settings."""
    result = subprocess.run([str(uv), "--no-cache", "--config-file", str(toml), "pip", "compile",
                             "--show-settings", "-"], input="", capture_output=True, text=True,
                            env=_controller_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    return result.stdout


def toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


# ----- pip.conf -------------------------------------------------------------------------------

def test_every_rendered_pip_conf_starts_managed_and_has_no_credentials(rendered):
    for name, out in rendered.items():
        text = (out / "pip.conf").read_text()
        assert text.startswith("#\n# Ansible managed"), name
        # A user name (never a password) is in the URLs only where the helper is on.
        text = text.replace("https://pipfeed@", "https://")
        assert "@" not in text and "token" not in text.lower().replace("token is", ""), name


def test_extra_mode_adds_the_feed_as_extra_index_and_never_prompts(rendered):
    settings = pip_reads(rendered["extra"] / "pip.conf")
    assert settings == {"global.extra-index-url": FEED, "global.no-input": "true"}


def test_find_links_only_when_the_wheelhouse_exists_or_is_enabled(rendered):
    assert pip_reads(rendered["extra_wheelhouse_exists"] / "pip.conf")["global.find-links"] \
        == WHEELHOUSE
    assert "global.find-links" not in pip_reads(rendered["extra"] / "pip.conf")
    assert "find-links" not in toml(rendered["extra"] / "uv.toml")


def test_primary_mode_makes_the_first_feed_the_only_index_from_azure_shorthand(rendered):
    settings = pip_reads(rendered["primary_azure"] / "pip.conf")
    assert settings["global.index-url"] == AZURE_PROJECT
    assert settings["global.extra-index-url"] == AZURE_ORG


def test_offline_mode_disables_every_index_and_uses_the_wheelhouse(rendered):
    settings = pip_reads(rendered["offline"] / "pip.conf")
    assert settings == {"global.no-index": "true", "global.find-links": WHEELHOUSE,
                        "global.no-input": "true"}


def test_all_settings_render_for_pip(rendered):
    settings = pip_reads(rendered["all_settings"] / "pip.conf")
    assert settings == {
        # The credential helper is on: pip 23.1+ asks it only for a URL with a user name.
        "global.index-url": FEED.replace("https://", "https://pipfeed@"),
        "global.find-links": "/srv/wheels",
        "global.cert": "/etc/ssl/certs/ca-certificates.crt",
        "global.proxy": "http://proxy.example.test:3128",
        "global.timeout": "7.5",
        "global.retries": "2",
        "global.no-input": "false",
        "global.keyring-provider": "subprocess",
        "global.disable-pip-version-check": "true",
        "install.progress-bar": "off",
        "install.constraint": "/etc/a.txt\n/etc/b.txt",
    }


def test_keyring_provider_only_with_the_credential_helper(rendered):
    settings = pip_reads(rendered["credential_helper_off_no_input_default"] / "pip.conf")
    assert "global.keyring-provider" not in settings
    assert "keyring-provider" not in toml(rendered["extra"] / "uv.toml")


def test_insecure_http_feed_is_a_trusted_host_and_nothing_else_is(rendered):
    settings = pip_reads(rendered["insecure_http"] / "pip.conf")
    assert settings["global.trusted-host"] == "devpi.example.test:3141"
    assert settings["global.extra-index-url"].split("\n") == [
        FEED, "http://devpi.example.test:3141/root/pypi/+simple/"]
    assert "global.trusted-host" not in pip_reads(rendered["extra"] / "pip.conf")


def test_existing_pip_conf_keeps_what_the_role_does_not_own(rendered):
    settings = pip_reads(rendered["merge_existing"] / "pip.conf")
    assert settings == {
        # The role's index settings replace the old ones, in every section.
        "global.index-url": FEED,
        "global.no-input": "true",
        # Everything else stays, except what pipfeed_config_extra_settings sets.
        "global.timeout": "60",
        "global.break-system-packages": "true",
        "install.user": "false",
        "freeze.all": "true",
    }


def test_keep_existing_false_replaces_the_file(rendered):
    assert pip_reads(rendered["replace_existing"] / "pip.conf") == {
        "global.extra-index-url": FEED, "global.no-input": "true"}


def test_merging_the_role_output_again_changes_nothing():
    """A second run reads the file the first wrote: the merge must give the same settings."""
    module = plugin("filter.config")
    existing = CASES["merge_existing"][1]
    owned = ["index-url", "extra-index-url", "no-index", "find-links", "trusted-host", "no-input"]
    extra = {"install": {"user": False}}
    first = module.kept_settings(existing, owned, extra)
    text = "".join(f"[{section}]\n" + "".join(module.ini_lines(k, v) + "\n" for k, v in items)
                   for section, items in first)
    assert module.kept_settings(text, owned, extra) == first
    with pytest.raises(Exception, match="cannot be parsed"):
        module.kept_settings("[global]\nno section header\n[global]\n", owned)


def test_pip_installs_from_the_wheelhouse_only_with_the_offline_config(rendered, tmp_path):
    """Real resolution, no network: the offline file alone makes pip find the wheel."""
    wheelhouse = tmp_path / "wheelhouse"
    packages.build_wheel(wheelhouse, "lab-feedonly", "1.0.0")
    conf = tmp_path / "pip.conf"
    conf.write_text((rendered["offline"] / "pip.conf").read_text().replace(
        WHEELHOUSE, str(wheelhouse)))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "dl"),
         "lab-feedonly"], env=_controller_env(PIP_CONFIG_FILE=str(conf)),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "dl" / "lab_feedonly-1.0.0-py3-none-any.whl").exists()


# ----- uv.toml --------------------------------------------------------------------------------

def test_every_rendered_uv_toml_is_accepted_by_uv(rendered, uv):
    for name, out in rendered.items():
        text = (out / "uv.toml").read_text().replace("https://pipfeed@", "https://")
        assert "@" not in text, name
        uv_settings(uv, out / "uv.toml")


def test_uv_extra_mode_adds_the_feed_before_pypi(rendered, uv):
    data = toml(rendered["extra"] / "uv.toml")
    assert data == {"system-certs": True,
                    "index": [{"name": "python-feed", "url": FEED}]}
    settings = uv_settings(uv, rendered["extra"] / "uv.toml")
    assert "system_certs: true" in settings


def test_uv_primary_mode_makes_the_first_feed_the_default_index(rendered):
    data = toml(rendered["primary_azure"] / "uv.toml")
    assert data["index"] == [
        {"name": "team-feed", "url": AZURE_PROJECT, "default": True},
        {"name": "org-feed", "url": AZURE_ORG}]


def test_uv_offline_mode(rendered, uv):
    data = toml(rendered["offline"] / "uv.toml")
    assert data == {"offline": True, "no-index": True, "find-links": [WHEELHOUSE],
                    "system-certs": True}
    settings = uv_settings(uv, rendered["offline"] / "uv.toml")
    assert "no_index: true" in settings and "offline: Enabled" in settings


def test_uv_all_settings(rendered, uv):
    data = toml(rendered["all_settings"] / "uv.toml")
    assert data["keyring-provider"] == "subprocess"
    assert data["find-links"] == ["/srv/wheels"]
    assert data["index-strategy"] == "unsafe-best-match"
    assert data["concurrent-downloads"] == 4
    assert "keyring_provider: Subprocess" in uv_settings(uv, rendered["all_settings"] / "uv.toml")


def test_uv_insecure_http_feed_is_allowed_by_host(rendered):
    data = toml(rendered["insecure_http"] / "uv.toml")
    assert data["allow-insecure-host"] == ["devpi.example.test:3141"]


@pytest.mark.parametrize("existing, keep, expected", [
    ("", True, ""),
    ("[global]\nindex-url = https://pipfeed@feed.example/simple/\ntimeout = 30\n", True, ""),
    ("[global]\nextra-index-url = https://me:s3cret@feed.example/simple/\n", True,
     "carries a password or token in a URL ([global] extra-index-url)"),
    ("[install]\nproxy = http://user:pw@proxy.example:3128\n", False, "([install] proxy)"),
    ("index-url = https://me:s3cret@feed.example/simple/\n", False, "(a line of it)"),
    ("index-url = https://feed.example/simple/\n", True, "cannot be parsed"),
    ("index-url = https://feed.example/simple/\n", False, ""),
])
def test_a_hand_written_pip_conf_that_the_role_must_not_take_over(existing, keep, expected):
    """Preflight's verdict on an existing pip.conf: never a quote of the file's values."""
    module = plugin("filter.config")
    problem = module.existing_problem(existing, keep)
    assert (expected in problem) if expected else problem == ""
    assert "s3cret" not in problem and "pw@" not in problem

"""The AWX / Automation Platform pieces: the execution environment definition gives ansible-builder
a build context that installs this collection from its release tarball with no Galaxy server, the
collection tells ansible-builder its controller-side Python packages, and the custom credential
type is one AWX accepts and injects the token where the sample inventory's feed reads it.

No image is built. The build context is generated (`ansible-builder create`), and its two stages
that concern this collection are replayed on this machine as the image build would run them: the
galaxy stage's `ansible-galaxy collection install` from the context's _build/ (the image's /build),
and the builder stage's introspection of the installed collection. They run in a network
namespace of their own (`unshare --net`) where the system allows it, so a hidden download fails."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.sandbox
import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFINITION = ROOT / "execution-environment.yml"
CREDENTIAL_TYPE = ROOT / "awx" / "credential_types" / "pipfeed_feed_token.yml"
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL = f"pipfeed-feed-{GALAXY['version']}.tar.gz"


def requirement_lines(path: Path) -> list[str]:
    """A pip requirement file's requirements, without comments."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def pin(lines: list[str], name: str, python: str | None = None) -> str:
    """The requirement line of a project; with `python`, the one whose environment marker
    applies to that Python (controller.txt pins ansible-core per controller Python), without
    its marker."""
    from packaging.requirements import Requirement

    for line in lines:
        if line.startswith("-"):
            continue  # a pip option (-r other.txt)
        requirement = Requirement(line)
        if requirement.name != name:
            continue
        if python is None:
            return line
        if requirement.marker is None or requirement.marker.evaluate(
                {"python_version": python, "python_full_version": python + ".0"}):
            return f"{requirement.name}{requirement.specifier}"
    raise AssertionError(f"no requirement of {name}")


# The image's Python (execution-environment.yml: python_interpreter), which picks its ansible-core.
EE_PYTHON = "3.11"


@functools.cache
def netns_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, timeout=30).returncode == 0


def offline(*cmd: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run a command with no network: its own network namespace (only a down loopback in it),
    or, where that is not allowed, a dead proxy for every scheme."""
    dead = "http://127.0.0.1:9"
    environment = dict(os.environ, HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead,
                       http_proxy=dead, NO_PROXY="", no_proxy="", NO_COLOR="1", **env)
    prefix = ["unshare", "--net"] if netns_works() else []
    return subprocess.run([*prefix, *cmd], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def context(release_tarball, tmp_path_factory) -> Path:
    """`ansible-builder create` on a copy of the definition whose tarball is the one built here."""
    work = tmp_path_factory.mktemp("ee")
    definition = yaml.safe_load(DEFINITION.read_text())
    (entry,) = definition["additional_build_files"]
    assert entry["src"] == f"dist/{TARBALL}"
    assert release_tarball.name == TARBALL
    entry["src"] = str(release_tarball)
    (work / "execution-environment.yml").write_text(yaml.safe_dump(definition, sort_keys=False))
    result = offline(str(BIN / "ansible-builder"), "create", "--file", "execution-environment.yml",
                     "--context", "context", "--output-filename", "Containerfile", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "context"


# ----- the execution environment ------------------------------------------------------------
def test_the_tests_run_the_pinned_ansible_builder():
    wanted = pin(requirement_lines(ROOT / "requirements" / "test.txt"), "ansible-builder")
    result = subprocess.run([str(BIN / "ansible-builder"), "--version"], capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == wanted.split("==")[1], (wanted, result.stdout)


def test_the_definition_pins_the_controllers_ansible_core_and_the_release():
    definition = yaml.safe_load(DEFINITION.read_text())
    assert definition["version"] == 3
    controller = requirement_lines(ROOT / "requirements" / "controller.txt")
    dependencies = definition["dependencies"]
    assert dependencies["ansible_core"]["package_pip"] == pin(controller, "ansible-core", EE_PYTHON)
    assert re.fullmatch(r"ansible-runner==[\d.]+", dependencies["ansible_runner"]["package_pip"])
    # ansible-core 2.19 needs Python 3.11 or later on the controller, here the image.
    python = re.fullmatch(r"/usr/bin/python3\.(\d+)", dependencies["python_interpreter"]["python_path"])
    assert python and int(python.group(1)) >= 11 and f"3.{python.group(1)}" == EE_PYTHON
    assert dependencies["galaxy"] == {"collections": [{"name": f"collections/{TARBALL}",
                                                       "type": "file"}]}
    # Its Python packages come from the collection's metadata, not from a list of its own.
    assert "python" not in dependencies
    assert definition["images"]["base_image"]["name"]
    assert "docker.io" not in definition["images"]["base_image"]["name"]


def test_builder_create_makes_a_context_that_installs_the_release_tarball(context, release_tarball):
    containerfile = (context / "Containerfile").read_text()
    controller = requirement_lines(ROOT / "requirements" / "controller.txt")
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"$', containerfile, re.M).group(1).split()
    assert pin(controller, "ansible-core", EE_PYTHON) in refs and any(r.startswith("ansible-runner==")
                                                           for r in refs)
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in containerfile
    assert re.search(r"^FROM base AS galaxy$(?s:.*)^COPY _build /build$\s+^WORKDIR /build$"
                     r"(?s:.*)^RUN .*ansible-galaxy collection install "
                     r"\$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements\.yml", containerfile,
                     re.M), containerfile
    build = context / "_build"
    assert yaml.safe_load((build / "requirements.yml").read_text()) == {
        "collections": [{"name": f"collections/{TARBALL}", "type": "file"}]}
    assert (build / "collections" / TARBALL).read_bytes() == release_tarball.read_bytes()
    # The definition adds no Python requirement file of its own.
    assert not (build / "requirements.txt").exists()


def test_the_context_installs_the_collection_and_its_python_needs_with_no_network(context,
                                                                                 tmp_path):
    """The galaxy stage, replayed in the context's _build/ (the image's /build), then the
    builder stage's introspection of what it installed: the collection's controller-side
    packages, less the ansible-core the image brings itself."""
    installed = tmp_path / "usr-share-ansible-collections"
    result = offline(str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-r",
                     "requirements.yml", "--collections-path", str(installed),
                     cwd=context / "_build", ANSIBLE_COLLECTIONS_PATH=str(installed))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = installed / "ansible_collections" / "pipfeed" / "feed" / "MANIFEST.json"
    assert f'"version": "{GALAXY["version"]}"' in manifest.read_text()

    result = offline(str(BIN / "ansible-builder"), "introspect", "--sanitize", str(installed),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = yaml.safe_load(result.stdout)
    wanted = [f"{line}  # from collection pipfeed.feed"
              for line in requirement_lines(ROOT / "requirements" / "controller.txt")
              if not line.startswith("ansible-core")]
    assert sorted(found["python"]) == sorted(wanted)
    assert found["system"] == []


def test_the_collection_metadata_names_a_file_inside_the_collection():
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    path = meta["dependencies"]["python"]
    assert not Path(path).is_absolute() and (ROOT / path).is_file()
    ignored = GALAXY.get("build_ignore", [])
    assert path not in ignored and "requirements" not in ignored, \
        "the metadata's requirement file must ship in the tarball"


# ----- the credential type ------------------------------------------------------------------
# The checks AWX makes when a credential type is created: the JSON schemas of
# awx/main/fields.py (CredentialTypeInputField, CredentialTypeInjectorField), the reserved names,
# and a render of every injector template in a sandbox where only the input fields are defined.
AWX_INPUTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "required": {"type": "array", "items": {"type": "string"}},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["string", "boolean"]},
                    "format": {"enum": ["ssh_private_key", "url"]},
                    "choices": {"type": "array", "minItems": 1, "items": {"type": "string"},
                                "uniqueItems": True},
                    "id": {"type": "string", "pattern": "^[a-zA-Z_]+[a-zA-Z0-9_]*$"},
                    "label": {"type": "string"},
                    "help_text": {"type": "string"},
                    "multiline": {"type": "boolean"},
                    "secret": {"type": "boolean"},
                    "ask_at_runtime": {"type": "boolean"},
                    "default": {},
                },
                "additionalProperties": False,
                "required": ["id", "label"],
            },
        },
    },
}
AWX_INJECTORS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "file": {"type": "object", "additionalProperties": False,
                 "patternProperties": {r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$":
                                       {"type": "string"}}},
        "env": {"type": "object", "additionalProperties": False,
                "patternProperties": {"^[a-zA-Z_]+[a-zA-Z0-9_]*$":
                                      {"type": "string", "pattern": "^[\x00-\x7f]*$"}}},
        "extra_vars": {"type": "object", "additionalProperties": False,
                       "patternProperties": {"^[a-zA-Z_]+[a-zA-Z0-9_]*$": {"type": "string"}}},
    },
}


def credential_type() -> dict:
    return yaml.safe_load(CREDENTIAL_TYPE.read_text())


def render(template: str, **values: str) -> str:
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return environment.from_string(template).render(**values)


def test_the_credential_type_is_one_awx_accepts():
    kind = credential_type()
    assert set(kind) == {"name", "description", "kind", "inputs", "injectors"}
    assert kind["kind"] in ("cloud", "net"), "custom credential types are cloud or net"
    jsonschema.validate(kind["inputs"], AWX_INPUTS_SCHEMA)
    jsonschema.validate(kind["injectors"], AWX_INJECTORS_SCHEMA)
    ids = [field["id"] for field in kind["inputs"]["fields"]]
    assert len(ids) == len(set(ids)) and "tower" not in ids
    assert set(kind["inputs"]["required"]) <= set(ids)
    for name in kind["injectors"].get("env", {}):
        assert not name.startswith("ANSIBLE_"), f"AWX refuses the environment variable {name}"
    # Every template renders with the input fields alone, as AWX checks on create.
    for injector in kind["injectors"].values():
        for template in injector.values():
            render(template, **{field: "EXAMPLE" for field in ids})


def test_the_token_is_a_required_secret_and_reaches_the_job_only_through_the_environment():
    kind = credential_type()
    (field,) = kind["inputs"]["fields"]
    assert field["type"] == "string" and field["secret"] is True
    assert kind["inputs"]["required"] == [field["id"]]
    assert set(kind["injectors"]) == {"env"}, "no extra_vars (shown in the job) and no file"
    (template,) = kind["injectors"]["env"].values()
    assert render(template, **{field["id"]: "s3cret-pat"}) == "s3cret-pat"


def test_the_injected_variable_is_the_one_the_sample_inventorys_feed_reads():
    sample = yaml.safe_load((ROOT / "inventory/sample/group_vars/all/main.yml").read_text())
    token_envs = {feed["token_env"] for feed in sample["pipfeed_feeds"] if "token_env" in feed}
    assert token_envs == set(credential_type()["injectors"]["env"]) == {"PIPFEED_FEED_TOKEN"}

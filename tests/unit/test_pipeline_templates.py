"""The pipeline entry points: the Azure DevOps stage templates (deploy, deploy-rolling, publish, and
the steps they share) and the GitHub reusable workflow pass the real schema validators
(check-jsonschema's vendored Azure Pipelines and GitHub workflow schemas, used offline), consume a
release (the collection at a pinned version from its tarball, playbooks by their full names; the
user's repository holds only the inventory), keep the feed's token in step environments only,
reach the VMs through ANSIBLE_SSH_COMMON_ARGS (never ANSIBLE_SSH_ARGS), run one at a time with a
timeout, and cache the controller's wheelhouse keyed on the lock file.

The shared install steps are also run here, as the pipelines run them: against a tarball built
from this repository, with no network."""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AZURE = {"deploy": ROOT / "ci/azure-pipelines/deploy.yml",
         "rolling": ROOT / "ci/azure-pipelines/deploy-rolling.yml",
         "publish": ROOT / "ci/azure-pipelines/publish.yml"}
STEPS = ROOT / "ci/azure-pipelines/steps/install-pipfeed.yml"
ENTRA = ROOT / "ci/azure-pipelines/steps/entra-token.yml"
GITHUB = ROOT / ".github/workflows/pipfeed-deploy.yml"
DOCS = ROOT / "docs/pipelines.md"
# The environment variables a token may be mapped to: the inventory's token_env, and the publish
# playbook's pipfeed_publish_token_env.
TOKEN_ENVS = ("PIPFEED_FEED_TOKEN", "PIPFEED_PUBLISH_TOKEN")
VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
PLAYBOOKS = {"deploy": ["pipfeed.feed.site", "pipfeed.feed.verify"],
             "rolling": ["pipfeed.feed.site", "pipfeed.feed.verify"],
             "publish": ["pipfeed.feed.publish"],
             "github": ["pipfeed.feed.site", "pipfeed.feed.verify"]}
TEMPLATES = {**AZURE, "github": GITHUB}


def validate(schema: str, path: Path, *options: str) -> subprocess.CompletedProcess:
    """check-jsonschema with a vendored schema; any network use would hit a dead proxy."""
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead,
               http_proxy=dead, NO_PROXY="", no_proxy="")
    return subprocess.run([str(BIN / "check-jsonschema"), "--no-cache", *options,
                           "--builtin-schema", schema, str(path)], capture_output=True,
                          text=True, env=env, timeout=120)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def jobs_of(document: dict) -> list[dict]:
    """Every job of an Azure stage template or a GitHub workflow."""
    jobs = [job for stage in document.get("stages", []) for job in stage["jobs"]]
    return jobs + list(document.get("jobs", {}).values())


def steps_of(document: dict, where: Path = STEPS.parent.parent) -> list[dict]:
    """Every step of every job, with the steps of a step template in place of its reference."""
    found = []
    for job in jobs_of(document):
        steps = job.get("steps", [])
        for strategy in job.get("strategy", {}).values():
            steps = steps + strategy["deploy"]["steps"]
        for step in with_insertions_expanded(steps):
            if "template" in step:
                found += load(where / step["template"])["steps"]
            else:
                found.append(step)
    return found


def script(step: dict) -> str:
    return step.get("script") or step.get("run") or ""


def by_name(steps: list[dict], prefix: str) -> dict:
    (step,) = [s for s in steps if (s.get("displayName") or s.get("name") or "").startswith(prefix)]
    return step


def env_values(step: dict) -> list[str]:
    """The values of a step's env, through Azure's ${{ if }} / ${{ else }} branches."""
    values = []
    for key, value in (step.get("env") or {}).items():
        values += list(value.values()) if isinstance(value, dict) else [value]
    return values


def env_keys(step: dict) -> set[str]:
    keys = set()
    for key, value in (step.get("env") or {}).items():
        keys |= set(value) if isinstance(value, dict) else {key}
    return keys


def all_strings(node) -> list[str]:
    """Every key and value of a YAML document, as text."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in [str(key), *all_strings(value)]]
    if isinstance(node, list):
        return [text for item in node for text in all_strings(item)]
    return [str(node)]


# ----- schemas ------------------------------------------------------------------------------
def with_insertions_expanded(node):
    """The document with each conditionally inserted list of steps (a list item that is only
    `${{ if ... }}: [steps]`) put in place, every branch: the schema cannot read template
    expressions there, but it can check every step that a branch inserts."""
    if isinstance(node, dict):
        return {key: with_insertions_expanded(value) for key, value in node.items()}
    if isinstance(node, list):
        found = []
        for item in node:
            if isinstance(item, dict) and len(item) == 1 \
                    and str(next(iter(item))).startswith("${{ if ") \
                    and isinstance(next(iter(item.values())), list):
                found += with_insertions_expanded(next(iter(item.values())))
            else:
                found.append(with_insertions_expanded(item))
        return found
    return node


@pytest.mark.parametrize("path", [*AZURE.values(), STEPS, ENTRA], ids=lambda p: p.name)
def test_azure_template_passes_the_azure_pipelines_schema(path, tmp_path):
    expanded = tmp_path / path.name
    expanded.write_text(yaml.safe_dump(with_insertions_expanded(load(path)), sort_keys=False))
    result = validate("vendor.azure-pipelines", expanded)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("schema", ["vendor.github-workflows",
                                    "custom.github-workflows-require-timeout"])
def test_github_workflow_passes_the_github_workflow_schemas(schema):
    result = validate(schema, GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validators_reject_a_broken_template(tmp_path):
    """The same validators fail a template with an unknown deployment strategy, one with an
    unknown lock behaviour, and a workflow whose job has no runner or no timeout: the checks
    above can fail."""
    azure = load(AZURE["rolling"])
    job = azure["stages"][0]["jobs"][0]
    job["strategy"] = {"blueGreen": job["strategy"]["rolling"]}
    broken = tmp_path / "azure.yml"
    broken.write_text(yaml.safe_dump(azure))
    assert validate("vendor.azure-pipelines", broken).returncode != 0
    azure = load(AZURE["deploy"])
    azure["stages"][0]["lockBehavior"] = "exclusive"
    broken.write_text(yaml.safe_dump(azure))
    assert validate("vendor.azure-pipelines", broken).returncode != 0
    workflow = load(GITHUB)
    del workflow["jobs"]["deploy"]["runs-on"]
    broken = tmp_path / "workflow.yml"
    broken.write_text(yaml.safe_dump(workflow))
    assert validate("vendor.github-workflows", broken).returncode != 0
    workflow = load(GITHUB)
    del workflow["jobs"]["deploy"]["timeout-minutes"]
    broken.write_text(yaml.safe_dump(workflow))
    assert validate("custom.github-workflows-require-timeout", broken).returncode != 0


def yaml_blocks(markdown: Path) -> list[tuple[str, str]]:
    """The ```yaml blocks of a page whose first line names the file they are, by its path."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", markdown.read_text(), re.S | re.M)
    return [(block.splitlines()[0], block) for block in blocks if block.startswith("# ")]


def test_the_documented_pipelines_pass_the_schemas(tmp_path):
    """docs/pipelines.md shows a user's own pipeline files; each one is valid as it stands."""
    blocks = yaml_blocks(DOCS)
    assert {"azure" in name for name, _ in blocks} == {True, False}, "an example of each kind"
    for index, (name, block) in enumerate(blocks):
        schema = "vendor.azure-pipelines" if "azure" in name else "vendor.github-workflows"
        path = tmp_path / f"example-{index}.yml"
        path.write_text(block)
        # Python's regular expressions: check-jsonschema's default engine cannot compile the
        # Azure schema's pattern for a pipeline's `trigger` (RegressError, a crash, not a verdict).
        result = validate(schema, path, "--regex-variant", "python")
        assert result.returncode == 0, f"{name}\n{result.stdout}{result.stderr}"


# ----- a release, not a copy of this repository ---------------------------------------------
def azure_parameters(path: Path) -> dict[str, dict]:
    return {p["name"]: p for p in load(path)["parameters"]}


@pytest.mark.parametrize("name", sorted(AZURE))
def test_azure_templates_install_a_pinned_release_of_the_collection(name):
    parameters = azure_parameters(AZURE[name])
    assert parameters["collectionVersion"]["default"] == VERSION
    assert "default" not in parameters["collectionTarball"], "the tarball is the user's to give"
    document = load(AZURE[name])
    (job,) = jobs_of(document)
    (deploy,) = job["strategy"].values()
    references = [s for s in deploy["deploy"]["steps"] if "template" in s]
    assert [r["template"] for r in references] == ["steps/install-pipfeed.yml"]
    passed = references[0]["parameters"]
    for key in ("collectionVersion", "collectionTarball", "collectionSha256", "collectionArtifact",
                "collectionArtifactPipeline"):
        assert passed[key] == "${{ parameters.%s }}" % key
    checkouts = [s["checkout"] for s in deploy["deploy"]["steps"] if "checkout" in s]
    assert checkouts == ["self"], "the user's repository, for the inventory"


def test_github_workflow_installs_a_pinned_release_of_the_collection():
    inputs = load(GITHUB)[True]["workflow_call"]["inputs"]
    assert inputs["collection-version"]["default"] == VERSION
    assert inputs["collection-tarball"]["required"] is True
    steps = steps_of(load(GITHUB))
    check = by_name(steps, "Fetch and check the release tarball")
    assert check["env"]["PIPFEED_COLLECTION_VERSION"] == "${{ inputs.collection-version }}"
    assert check["env"]["PIPFEED_COLLECTION_TARBALL"] == "${{ inputs.collection-tarball }}"
    checkouts = [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert len(checkouts) == 1 and "with" not in checkouts[0], "the caller's repository"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_playbooks_run_by_their_full_names_from_the_installed_collection(name):
    steps = steps_of(load(TEMPLATES[name]))
    scripts = "\n".join(script(s) for s in steps)
    for playbook in PLAYBOOKS[name]:
        assert re.search(rf'"\$PIPFEED_VENV/bin/ansible-playbook" .*{re.escape(playbook)}\b',
                         scripts, re.S), playbook
    # Nothing is read from a checkout of this repository.
    for pattern in (r"site\.yml", r"playbooks/", r"-r\s+\"?requirements/", r"ansible\.cfg"):
        assert not re.search(pattern, scripts), pattern
    galaxy = [s for s in steps if "ansible-galaxy\" collection install" in script(s)]
    assert len(galaxy) == 1 and "--offline" in script(galaxy[0])


def test_the_install_steps_are_one_program_on_both_platforms():
    azure, github = steps_of(load(AZURE["deploy"])), steps_of(load(GITHUB))
    for prefix in ("Fetch and check the release tarball", "Install Ansible",
                   "Install pipfeed.feed"):
        assert script(by_name(azure, prefix)) == script(by_name(github, prefix)), prefix


# ----- the install steps, run ---------------------------------------------------------------
@functools.cache
def netns_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, timeout=30).returncode == 0


def run_step(step: dict, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A step's script under bash, as the agent runs it, in a network namespace of its own
    where the system allows it (else every proxy points at a dead port)."""
    dead = "http://127.0.0.1:9"
    environment = dict(os.environ, HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead,
                       http_proxy=dead, NO_PROXY="", no_proxy="", **env)
    environment["PATH"] = f"{BIN}:{environment['PATH']}"
    prefix = ["unshare", "--net"] if netns_works() else []
    return subprocess.run([*prefix, "bash", "-e", "-c", script(step)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture()
def install_steps() -> dict[str, dict]:
    steps = steps_of(load(GITHUB))
    return {"check": by_name(steps, "Fetch and check the release tarball"),
            "galaxy": by_name(steps, "Install pipfeed.feed")}


def test_the_install_steps_put_the_pinned_release_in_the_jobs_collections_path(
        release_tarball, install_steps, tmp_path):
    work, collections = tmp_path / "release", tmp_path / "collections"
    sha256 = hashlib.sha256(release_tarball.read_bytes()).hexdigest()
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(release_tarball, checkout / release_tarball.name)
    result = run_step(install_steps["check"], checkout, PIPFEED_WORK=str(work),
                      PIPFEED_COLLECTION_VERSION=VERSION, PIPFEED_COLLECTION_TARBALL=release_tarball.name,
                      PIPFEED_COLLECTION_SHA256=sha256.upper())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pipfeed.feed {VERSION}" in result.stdout and sha256 in result.stdout
    assert (work / "controller.txt").read_bytes() == (ROOT / "requirements/controller.txt").read_bytes()

    result = run_step(install_steps["galaxy"], checkout, PIPFEED_WORK=str(work),
                      PIPFEED_VENV=str(BIN.parent), PIPFEED_COLLECTIONS=str(collections),
                      PIPFEED_COLLECTION_VERSION=VERSION)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = collections / "ansible_collections/pipfeed/feed/MANIFEST.json"
    assert f'"version": "{VERSION}"' in manifest.read_text()
    assert re.search(rf"^pipfeed\.feed\s+{re.escape(VERSION)}\s*$", result.stdout, re.M), \
        result.stdout


@pytest.mark.parametrize("case, message", [
    ("empty", "(collectionTarball / collection-tarball) is empty"),
    ("missing", "no such file (collectionTarball / collection-tarball"),
    ("http", "the release tarball is a path or an https:// URL"),
    ("url-without-sha256", "give its SHA-256 (collectionSha256 / collection-sha256)"),
    ("other-sha256", "(collectionSha256 / collection-sha256): a different file"),
    ("other-version", "not pipfeed.feed 9.9.9 (collectionVersion / collection-version)"),
    ("not-a-tarball", "is not a release tarball of pipfeed.feed"),
])
def test_the_release_check_refuses_what_is_not_the_pinned_release_naming_the_input(
        case, message, release_tarball, install_steps, tmp_path):
    tarball, version, sha256 = str(release_tarball), VERSION, ""
    if case == "empty":
        tarball = ""
    elif case == "missing":
        tarball = str(tmp_path / "pipfeed-feed-1.0.0.tar.gz")
    elif case == "http":
        tarball = f"http://releases.example.internal/pipfeed-feed-{VERSION}.tar.gz"
    elif case == "url-without-sha256":
        tarball = f"https://releases.example.internal/pipfeed-feed-{VERSION}.tar.gz"
    elif case == "other-sha256":
        sha256 = "0" * 64
    elif case == "other-version":
        version = "9.9.9"
    elif case == "not-a-tarball":
        tarball = str(tmp_path / "notes.txt")
        Path(tarball).write_text("not a tarball\n")
    result = run_step(install_steps["check"], tmp_path, PIPFEED_WORK=str(tmp_path / "release"),
                      PIPFEED_COLLECTION_VERSION=version, PIPFEED_COLLECTION_TARBALL=tarball,
                      PIPFEED_COLLECTION_SHA256=sha256)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "release" / "controller.txt").exists()


# ----- secrets, SSH, one run at a time ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_token_reaches_step_environments_only_and_is_never_printed(name):
    secret_refs = re.compile(r"System\.AccessToken|parameters\.tokenVariable|secrets\.feed-token"
                             r"|PIPFEED_ENTRA_TOKEN")
    holders = []
    for step in steps_of(load(TEMPLATES[name])):
        text = script(step)
        assert not secret_refs.search(text), f"a secret is expanded into a script: {text}"
        assert "set -x" not in text
        # A token variable may be read by a script only as printf's argument into a 0600 file.
        reads = re.compile(r"\$\{?(%s)\b|environ(\.get\(|\[)\s*[\"'](%s)" % (
            "|".join(TOKEN_ENVS), "|".join(TOKEN_ENVS)))
        for line in text.splitlines():
            if reads.search(line):
                assert line.lstrip().startswith("printf ") and "> \"$netrc\"" in line, line
                assert "umask 077" in text
        if any(secret_refs.search(str(v)) for v in env_values(step)):
            holders.append(step.get("displayName") or step.get("name"))
            assert env_keys(step) & set(TOKEN_ENVS), step
    assert holders, "no step maps the token into its environment"
    assert all("ansible" in h.lower() for h in holders), holders


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_ssh_settings_add_to_ssh_args_and_never_replace_them(name):
    """ANSIBLE_SSH_ARGS would replace ssh_args and drop ControlMaster/ControlPersist: one SSH
    handshake per task instead of one per host. The host keys go in ANSIBLE_SSH_COMMON_ARGS."""
    document = load(TEMPLATES[name])
    texts = all_strings(document) + [s for step in steps_of(document) for s in all_strings(step)]
    assert not [t for t in texts if "ANSIBLE_SSH_ARGS" in t or "ssh_args=" in t or
                "--ssh-extra-args" in t]
    over_ssh = [s for s in steps_of(document) if "ANSIBLE_PRIVATE_KEY_FILE" in env_keys(s)]
    if name not in ("deploy", "github"):
        # The rolling variant runs on the VM itself; publish reads the hosts' platforms with the
        # inventory's own SSH settings, or is given them and contacts no host.
        assert not over_ssh
        return
    assert len(over_ssh) == 2, "site and verify"
    for step in over_ssh:
        common = step["env"]["ANSIBLE_SSH_COMMON_ARGS"]
        assert "-o UserKnownHostsFile=" in common and "-o StrictHostKeyChecking=yes" in common


@pytest.mark.parametrize("name", sorted(AZURE))
def test_azure_stages_have_a_timeout_and_wait_for_the_environments_lock(name):
    parameters = azure_parameters(AZURE[name])
    (stage,) = load(AZURE[name])["stages"]
    assert stage["lockBehavior"] == "sequential"
    (job,) = stage["jobs"]
    assert "deployment" in job and job["environment"], "an environment carries the lock check"
    assert job["timeoutInMinutes"] == "${{ parameters.timeoutInMinutes }}"
    assert 0 < int(parameters["timeoutInMinutes"]["default"]) <= 360


def test_github_job_has_a_timeout_and_one_run_per_environment_at_a_time():
    workflow = load(GITHUB)
    inputs = workflow[True]["workflow_call"]["inputs"]
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] == "${{ inputs.timeout-minutes }}"
    assert inputs["timeout-minutes"]["type"] == "number"
    assert 0 < inputs["timeout-minutes"]["default"] <= 360
    assert "${{ inputs.environment }}" in job["concurrency"]["group"]
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["concurrency"]["cancel-in-progress"] is False, "a running rollout is not cut off"


# ----- what they did before, still --------------------------------------------------------
def test_azure_stage_caches_the_wheelhouse_on_the_lock_file_hash():
    document = load(AZURE["deploy"])
    (job,) = jobs_of(document)
    steps = steps_of(document)
    cache = [s for s in steps if s.get("task") == "Cache@2"]
    assert len(cache) == 1
    assert "${{ parameters.lockFile }}" in cache[0]["inputs"]["key"].split(" | ")
    assert cache[0]["inputs"]["path"] == "$(PIPFEED_CACHE)" and job["variables"]["PIPFEED_CACHE"]
    site = by_name(steps, "ansible-playbook pipfeed.feed.site")
    assert 'pipfeed_wheelhouse_cache_dir=$PIPFEED_CACHE' in site["script"]
    # The cache step comes before the run that fills it (Cache@2 saves in a post-job step).
    assert steps.index(cache[0]) < steps.index(site)


def test_azure_rolling_variant_targets_environment_vms_in_batches():
    document = load(AZURE["rolling"])
    job = document["stages"][0]["jobs"][0]
    assert job["environment"]["resourceType"] == "VirtualMachine"
    assert set(job["strategy"]) == {"rolling"}
    assert job["strategy"]["rolling"]["maxParallel"]
    scripts = "\n".join(script(s) for s in steps_of(document))
    assert "--connection local pipfeed.feed.site" in scripts
    assert "--connection local pipfeed.feed.verify" in scripts
    # Ansible comes from the feed: the VM needs no PyPI.
    (reference,) = [s for s in job["strategy"]["rolling"]["deploy"]["steps"] if "template" in s]
    assert reference["parameters"]["indexUrl"] == "${{ parameters.feedIndexUrl }}"


def test_github_workflow_caches_the_wheelhouse_on_the_lock_file_hash():
    document = load(GITHUB)
    steps = steps_of(document)
    cache = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache@")]
    assert len(cache) == 1 and "hashFiles(inputs.lock-file)" in cache[0]["with"]["key"]
    site = by_name(steps, "ansible-playbook pipfeed.feed.site")
    assert "pipfeed_wheelhouse_cache_dir=$PIPFEED_CACHE" in site["run"]
    assert cache[0]["with"]["path"] == "${{ env.PIPFEED_CACHE }}"
    # on: is YAML 1.1's True key; it must be a reusable workflow.
    trigger = document.get("on", document.get(True))
    assert "workflow_call" in trigger


@pytest.mark.parametrize("name", sorted(AZURE))
def test_azure_templates_take_an_entra_token_from_a_service_connection(name):
    """tokenSource entraServiceConnection: an AzureCLI@2 step asks Azure for a token for Azure
    DevOps and keeps it as a secret variable, which only the steps that need it get."""
    document = load(AZURE[name])
    (source,) = [p for p in document["parameters"] if p["name"] == "tokenSource"]
    assert "entraServiceConnection" in source["values"]
    steps = steps_of(document)
    (entra,) = [s for s in steps if s.get("task") == "AzureCLI@2"]
    assert entra["inputs"]["azureSubscription"] == "${{ parameters.azureServiceConnection }}"
    inline = entra["inputs"]["inlineScript"]
    assert "az account get-access-token --resource 499b84ac-1321-427f-aa17-267ca6975798" in inline
    assert "task.setvariable variable=PIPFEED_ENTRA_TOKEN;issecret=true" in inline
    assert "set -x" not in inline and inline.count("$token") == 1
    # It comes before anything that uses the token, and the steps that do map it by name.
    assert steps.index(entra) < min(steps.index(s) for s in steps
                                    if "PIPFEED_ENTRA_TOKEN" in " ".join(env_values(s)))
    users = [s for s in steps if "$(PIPFEED_ENTRA_TOKEN)" in env_values(s)]
    assert users and all(env_keys(s) & set(TOKEN_ENVS) for s in users)

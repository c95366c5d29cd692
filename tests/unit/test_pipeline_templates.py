"""The pipeline entry points: the Azure DevOps stage templates and the GitHub reusable workflow
pass the real schema validators (check-jsonschema's vendored Azure Pipelines and GitHub
workflow schemas, used offline), keep the feed's token in step environments only, and cache the
controller's wheelhouse keyed on the lock file."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AZURE = {"deploy": ROOT / "ci/azure-pipelines/deploy.yml",
         "rolling": ROOT / "ci/azure-pipelines/deploy-rolling.yml"}
GITHUB = ROOT / ".github/workflows/pipfeed-deploy.yml"
TOKEN_ENV = "PIPFEED_FEED_TOKEN"


def validate(schema: str, path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with a vendored schema; any network use would hit a dead proxy."""
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead,
               http_proxy=dead, NO_PROXY="", no_proxy="")
    return subprocess.run([str(BIN / "check-jsonschema"), "--no-cache", "--builtin-schema",
                           schema, str(path)], capture_output=True, text=True, env=env,
                          timeout=120)


def steps_of(document: dict) -> list[dict]:
    """Every step of every job in an Azure stage template or a GitHub workflow."""
    found = []
    for stage in document.get("stages", []):
        for job in stage["jobs"]:
            for strategy in job.get("strategy", {}).values():
                found += strategy["deploy"]["steps"]
    for job in document.get("jobs", {}).values():
        found += job.get("steps", [])
    return found


def env_values(step: dict) -> list[str]:
    """The values of a step's env, through Azure's ${{ if }} / ${{ else }} branches."""
    values = []
    for key, value in (step.get("env") or {}).items():
        values += list(value.values()) if isinstance(value, dict) else [value]
    return values


@pytest.mark.parametrize("name", sorted(AZURE))
def test_azure_template_passes_the_azure_pipelines_schema(name):
    result = validate("vendor.azure-pipelines", AZURE[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_workflow_passes_the_github_workflow_schema():
    result = validate("vendor.github-workflows", GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validators_reject_a_broken_template(tmp_path):
    """The same validators fail a template with an unknown deployment strategy and a workflow
    whose job has no runner: the checks above can fail."""
    azure = yaml.safe_load(AZURE["rolling"].read_text())
    job = azure["stages"][0]["jobs"][0]
    job["strategy"] = {"blueGreen": job["strategy"]["rolling"]}
    broken = tmp_path / "azure.yml"
    broken.write_text(yaml.safe_dump(azure))
    assert validate("vendor.azure-pipelines", broken).returncode != 0
    workflow = yaml.safe_load(GITHUB.read_text())
    del workflow["jobs"]["deploy"]["runs-on"]
    broken = tmp_path / "workflow.yml"
    broken.write_text(yaml.safe_dump(workflow))
    assert validate("vendor.github-workflows", broken).returncode != 0


@pytest.mark.parametrize("path", [*AZURE.values(), GITHUB], ids=lambda p: p.name)
def test_token_reaches_step_environments_only_and_is_never_printed(path):
    document = yaml.safe_load(path.read_text())
    secret_refs = re.compile(r"System\.AccessToken|parameters\.tokenVariable|secrets\.feed-token")
    holders = []
    for step in steps_of(document):
        script = step.get("script") or step.get("run") or ""
        assert not secret_refs.search(script), f"a secret is expanded into a script: {script}"
        assert "set -x" not in script and not re.search(r"echo .*\$\{?" + TOKEN_ENV, script)
        # The token variable may be read by a script only as printf's argument into a 0600 file.
        for line in script.splitlines():
            if TOKEN_ENV in line:
                assert line.lstrip().startswith("printf ") and "> \"$netrc\"" in line, line
                assert "umask 077" in script
        if any(secret_refs.search(str(v)) for v in env_values(step)):
            holders.append(step.get("displayName") or step.get("name"))
            assert TOKEN_ENV in step["env"] or any(
                isinstance(v, dict) and TOKEN_ENV in v for v in step["env"].values())
    assert holders, "no step maps the token into its environment"
    assert all("ansible" in h.lower() for h in holders), holders


def test_azure_stage_caches_the_wheelhouse_on_the_lock_file_hash():
    document = yaml.safe_load(AZURE["deploy"].read_text())
    steps = steps_of(document)
    cache = [s for s in steps if s.get("task") == "Cache@2"]
    assert len(cache) == 1
    assert "${{ parameters.lockFile }}" in cache[0]["inputs"]["key"].split(" | ")
    path = cache[0]["inputs"]["path"]
    site = [s for s in steps if "site.yml" in (s.get("script") or "")]
    assert f"pipfeed_wheelhouse_cache_dir={path}" in site[0]["script"]
    # The cache step comes before the run that fills it (Cache@2 saves in a post-job step).
    assert steps.index(cache[0]) < steps.index(site[0])


def test_azure_rolling_variant_targets_environment_vms_in_batches():
    document = yaml.safe_load(AZURE["rolling"].read_text())
    job = document["stages"][0]["jobs"][0]
    assert job["environment"]["resourceType"] == "VirtualMachine"
    assert set(job["strategy"]) == {"rolling"}
    assert job["strategy"]["rolling"]["maxParallel"]
    scripts = "\n".join(s.get("script", "") for s in steps_of(document))
    assert "--connection local site.yml" in scripts and "playbooks/verify.yml" in scripts


def test_github_workflow_caches_the_wheelhouse_on_the_lock_file_hash():
    document = yaml.safe_load(GITHUB.read_text())
    steps = steps_of(document)
    cache = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache@")]
    assert len(cache) == 1 and "hashFiles(inputs.lock-file)" in cache[0]["with"]["key"]
    site = [s for s in steps if "site.yml" in (s.get("run") or "")]
    assert "pipfeed_wheelhouse_cache_dir=$PIPFEED_CACHE" in site[0]["run"]
    assert cache[0]["with"]["path"] == "${{ env.PIPFEED_CACHE }}"
    # on: is YAML 1.1's True key; it must be a reusable workflow.
    trigger = document.get("on", document.get(True))
    assert "workflow_call" in trigger

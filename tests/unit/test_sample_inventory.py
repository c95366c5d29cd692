"""The sample inventory is a complete, working example: Ansible parses it, every group gets the
feed, and every variable of every role (all entry points of meta/argument_specs.yml) and every
shared switch the playbooks read is documented in it.

An inventory directory holds inventory only: given a directory (`-i inventory/prod`, as the
publish pipeline passes it), Ansible reads every file in it as an inventory source, and a
requirement file there became hosts named `certifi==2024.8.30`. So the directory and its
hosts.yml must give the same hosts and groups, and nothing else may live under inventory/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2
import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ROOT / "inventory"
SAMPLE = INVENTORIES / "sample"
ANSIBLE_INVENTORY = str(Path(sys.executable).with_name("ansible-inventory"))
HOSTS = {"app-01.example.internal", "app-02.example.internal", "agent-01.example.internal"}
GROUPS = {"all", "ungrouped", "app_servers", "build_agents"}
# Read by the playbooks rather than by one role.
SHARED = ("pipfeed_feeds", "pipfeed_credential_helper", "pipfeed_username",
          "pipfeed_wheelhouse", "pipfeed_wheelhouse_path", "pipfeed_serial",
          "pipfeed_max_fail_percentage", "pipfeed_rotate_serial",
          "pipfeed_rotate_max_fail_percentage")


def documented() -> str:
    return "\n".join(p.read_text() for p in sorted(SAMPLE.rglob("*.yml")))


def role_variables() -> list[str]:
    names = []
    for spec in sorted((ROOT / "roles").glob("*/meta/argument_specs.yml")):
        for entry in yaml.safe_load(spec.read_text())["argument_specs"].values():
            names += list(entry.get("options") or {})
    return names


def _inventory(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run([ANSIBLE_INVENTORY, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def readings() -> dict[str, subprocess.CompletedProcess]:
    """The sample read three ways, side by side: the directory as a graph and as a list, and
    its hosts.yml as a list."""
    calls = {"graph": ("-i", "inventory/sample", "--graph"),
             "list": ("-i", "inventory/sample", "--list"),
             "file": ("-i", "inventory/sample/hosts.yml", "--list")}
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(_inventory, *args) for name, args in calls.items()}
    results = {name: future.result() for name, future in futures.items()}
    for name, result in results.items():
        assert result.returncode == 0, f"ansible-inventory {' '.join(calls[name])}: {result.stderr}"
        assert "WARNING" not in result.stderr, \
            f"ansible-inventory {' '.join(calls[name])} warned: {result.stderr}"
    return results


@pytest.mark.parametrize("name", sorted(set(role_variables()) | set(SHARED)))
def test_every_variable_is_documented_in_the_sample_inventory(name):
    assert re.search(rf"\b{re.escape(name)}\b", documented()), \
        f"{name} is not documented in inventory/sample/"


def test_inventory_directories_hold_only_hosts_yml_and_group_and_host_vars():
    strays = []
    for path in sorted(INVENTORIES.rglob("*")):
        relative = path.relative_to(INVENTORIES)
        parts = relative.parts
        if path.is_dir():
            ok = len(parts) == 1 or (len(parts) >= 2 and parts[1] in ("group_vars", "host_vars"))
        elif len(parts) == 2:
            ok = parts[1] == "hosts.yml"
        else:
            ok = len(parts) >= 3 and parts[1] in ("group_vars", "host_vars") and path.suffix in (".yml", ".yaml")
        if not ok:
            strays.append(str(relative))
    assert strays == [], (f"not inventory, under inventory/: {strays}; Ansible reads every file of an "
                          "inventory directory as an inventory source. Move it next to inventory/ "
                          "(files/, as files/requirements.lock)")


def test_the_sample_directory_graph_is_exactly_its_hosts_and_groups(readings):
    lines = [line.strip(" |-") for line in readings["graph"].stdout.splitlines() if line.strip()]
    groups = {line[1:].rstrip(":") for line in lines if line.startswith("@")}
    hosts = {line for line in lines if not line.startswith("@")}
    assert hosts == HOSTS
    assert groups == GROUPS


def test_the_sample_directory_lists_what_its_hosts_yml_lists(readings):
    directory = json.loads(readings["list"].stdout)
    hosts_yml = json.loads(readings["file"].stdout)
    assert set(directory["_meta"]["hostvars"]) == HOSTS
    # --list leaves out an empty ungrouped.
    assert set(directory) - {"_meta", "ungrouped"} == GROUPS - {"ungrouped"}
    assert directory.get("ungrouped", {}).get("hosts", []) == []
    assert directory == hosts_yml


def test_ansible_reads_the_sample_inventory_and_every_host_has_the_feed(readings):
    hosts = json.loads(readings["list"].stdout)["_meta"]["hostvars"]
    for variables in hosts.values():
        assert variables["pipfeed_feeds"][0]["token_env"] == "PIPFEED_FEED_TOKEN"
    assert hosts["agent-01.example.internal"]["pipfeed_mode"] == "primary"
    assert "pipfeed_mode" not in hosts["app-01.example.internal"]


def test_the_requirement_set_the_sample_names_exists_outside_the_inventory(readings):
    variables = json.loads(readings["list"].stdout)["_meta"]["hostvars"]["agent-01.example.internal"]
    # inventory_dir is the directory of the file that lists the host, for -i DIR and -i FILE.
    template = jinja2.Environment()
    template.filters["dirname"] = os.path.dirname
    path = Path(template.from_string(variables["pipfeed_wheelhouse_requirements"])
                .render(inventory_dir=str(SAMPLE)))
    assert path.resolve() == (ROOT / "files" / "requirements.lock").resolve()
    pins = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", pin) for pin in pins), pins

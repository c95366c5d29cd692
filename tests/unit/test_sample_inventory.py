"""The sample inventory is a complete, working example: Ansible parses it, every group gets the
feed, and every variable of every role (all entry points of meta/argument_specs.yml) and every
shared switch the playbooks read is documented in it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventory" / "sample"
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


@pytest.mark.parametrize("name", sorted(set(role_variables()) | set(SHARED)))
def test_every_variable_is_documented_in_the_sample_inventory(name):
    assert re.search(rf"\b{re.escape(name)}\b", documented()), \
        f"{name} is not documented in inventory/sample/"


def test_ansible_reads_the_sample_inventory_and_every_host_has_the_feed():
    listing = subprocess.run([str(Path(sys.executable).with_name("ansible-inventory")), "-i",
                              str(SAMPLE / "hosts.yml"), "--list"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    hosts = data["_meta"]["hostvars"]
    assert set(hosts) == {"app-01.example.internal", "app-02.example.internal",
                          "agent-01.example.internal"}
    for variables in hosts.values():
        assert variables["pipfeed_feeds"][0]["token_env"] == "PIPFEED_FEED_TOKEN"
    assert hosts["agent-01.example.internal"]["pipfeed_mode"] == "primary"
    assert "pipfeed_mode" not in hosts["app-01.example.internal"]

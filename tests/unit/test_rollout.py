"""The playbooks' serial keyword: pipfeed_serial checked with a message that names it, and the
collection's per-host controller code loaded into the process that evaluates it (Ansible's
main process), under the names Ansible's workers look it up by."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from tests.files import COLLECTIONS, ROOT, plugin

pytestmark = pytest.mark.unit
rollout = plugin("filter.rollout")
preload = plugin("plugin_utils.preload")


@pytest.fixture
def no_preload(monkeypatch):
    monkeypatch.setattr(preload, "load", lambda: [])


@pytest.mark.parametrize("value", [5, 0, "5", "25%", "100%", [1, "10%", "100%"], []])
def test_what_ansible_can_batch_by_is_returned_unchanged(no_preload, value):
    assert rollout.serial(value) == value


@pytest.mark.parametrize("value, wrong", [("ten", "'ten'"), ("12.5%", "'12.5%'"), (-1, "-1"),
                                          (True, "True"), ([5, "half"], "'half'"),
                                          ({"size": 5}, "{'size': 5}")])
def test_anything_else_is_refused_naming_the_variable_and_the_forms(no_preload, value, wrong):
    with pytest.raises(AnsibleFilterError) as raised:
        rollout.serial(value, "pipfeed_rotate_serial")
    said = str(raised.value)
    assert said.startswith(f"pipfeed_rotate_serial is {value!r}")
    assert f"{wrong} is neither" in said
    assert "('25%')" in said and "Leave it unset" in said


def test_preload_imports_the_per_host_code_where_ansible_workers_find_it():
    """In a process set up as ansible-playbook sets itself up (the collection loader on the
    project's collections path), load() leaves in sys.modules every module it names, and each
    action and lookup under the name Ansible's plugin loaders then return."""
    program = f"""
import json, sys
from ansible.plugins.loader import action_loader, init_plugin_loader, lookup_loader
init_plugin_loader([{str(COLLECTIONS)!r}])
from ansible_collections.pipfeed.feed.plugins.plugin_utils import preload
before = set(sys.modules)
names = preload.load()
again = preload.load()
found = [action_loader.get("pipfeed.feed." + n, class_only=True).__module__
         for n in preload.ACTIONS]
found += [lookup_loader.get("pipfeed.feed." + n, class_only=True).__module__
          for n in preload.LOOKUPS]
print(json.dumps({{"names": names, "again": again, "found": found,
                  "new": sorted(set(sys.modules) - before),
                  "missing": [n for n in names if n not in sys.modules]}}))
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    package = "ansible_collections.pipfeed.feed.plugins."
    assert answer["missing"] == []
    assert answer["again"] == answer["names"]
    for name in preload.MODULES:
        assert package + name in answer["names"]
    assert set(answer["found"]) <= set(answer["names"])
    assert len(answer["found"]) == len(preload.ACTIONS) + len(preload.LOOKUPS)
    assert package + "module_utils.pipfeed_keyring" in answer["new"]
    # what runs once per play stays out of the main process that every fork copies
    assert package + "plugin_utils.wheelhouse_build" not in answer["new"]

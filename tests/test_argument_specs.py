"""Every role documents each of its variables: the options of meta/argument_specs.yml (all
entry points) and the keys of defaults/main.yml must be the same set, with the same defaults.
A role's variables start with its name; pipfeed_common's are the shared settings, which start
with pipfeed_ and are defined nowhere else."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lint
ROLES = Path(__file__).resolve().parents[1] / "roles"


def _roles() -> list[Path]:
    return sorted(p for p in ROLES.iterdir() if (p / "tasks").is_dir()) if ROLES.is_dir() else []


def _load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


@pytest.mark.parametrize("role", _roles(), ids=lambda p: p.name)
def test_argument_specs_and_defaults_name_the_same_variables(role: Path):
    specs = _load(role / "meta" / "argument_specs.yml").get("argument_specs")
    assert specs, f"{role.name}: meta/argument_specs.yml has no argument_specs"
    defaults = _load(role / "defaults" / "main.yml")
    options: dict = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    assert sorted(set(defaults) - set(options)) == [], \
        f"{role.name}: in defaults/main.yml but not in meta/argument_specs.yml"
    documented_defaults = {k for k, v in options.items() if "default" in v}
    assert sorted(documented_defaults - set(defaults)) == [], \
        f"{role.name}: a default in meta/argument_specs.yml that defaults/main.yml does not set"
    shared = set(_load(ROLES / "pipfeed_common" / "defaults" / "main.yml"))
    for name in defaults:
        if role.name == "pipfeed_common":
            assert name.startswith("pipfeed_"), f"{name} lacks the project's prefix"
        else:
            assert name.startswith(role.name + "_"), f"{role.name}: {name} lacks the role's prefix"
            assert name not in shared, f"{role.name}: {name} is a shared setting of pipfeed_common"
        assert options[name].get("description"), f"{role.name}: {name} has no description"
        assert "default" in options[name], f"{role.name}: {name} has no default in the spec"
        assert options[name]["default"] == defaults[name], \
            f"{role.name}: {name} defaults differ between the spec and defaults/main.yml"


def test_there_is_a_role_to_check():
    assert _roles(), "no role under roles/"

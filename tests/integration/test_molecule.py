"""Every role's molecule scenarios, full sequence (check, converge, idempotence, verify),
each against a lab of its own that the scenario brings up and removes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(ROOT.glob("roles/*/molecule/*/molecule.yml"))


@pytest.mark.parametrize("scenario", SCENARIOS,
                         ids=[f"{p.parents[2].name}/{p.parent.name}" for p in SCENARIOS])
def test_molecule_scenario_passes(scenario: Path):
    role_dir = scenario.parents[2]
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", PY_COLORS="0")
    result = subprocess.run([str(Path(bin_dir) / "molecule"), "test", "-s",
                             scenario.parent.name], cwd=role_dir, env=env, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]

"""A role's documentation has one source, its meta/argument_specs.yml: ansible-doc prints it
for every role of the collection (required options marked as such), and the variables tables
of the READMEs are generated from it by scripts/docs.py, which fails here when one is out of
date or missing."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _spec(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A directory outside the project, with an empty ansible.cfg: ansible-doc then finds the
    collection as a user of it does, through the collections path alone."""
    directory = tmp_path_factory.mktemp("elsewhere")
    (directory / "ansible.cfg").write_text("[defaults]\n")
    return directory


def _ansible_doc(elsewhere: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_CONFIG=str(elsewhere / "ansible.cfg"))
    return subprocess.run([str(BIN / "ansible-doc"), *args], capture_output=True, text=True, timeout=120,
                          cwd=elsewhere, env=env)


@pytest.fixture(scope="module")
def role_docs(elsewhere) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {role: pool.submit(_ansible_doc, elsewhere, "-t", "role", f"pipfeed.feed.{role}")
                   for role in ROLES}
    return {role: future.result() for role, future in futures.items()}


def _options(options: dict, depth: int = 0):
    """(name, required, depth) for every option, suboptions after their parent."""
    for name, option in (options or {}).items():
        yield name, bool((option or {}).get("required")), depth
        yield from _options((option or {}).get("options") or {}, depth + 1)


def test_every_role_is_checked():
    assert {"pipfeed_common", "pipfeed_config", "pipfeed_credential_helper", "pipfeed_wheelhouse",
            "pipfeed_publish", "pipfeed_verify", "pipfeed_cloud_init"} <= set(ROLES)


def test_the_readme_variables_tables_are_generated_from_the_argument_specs():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_has_a_readme_with_its_variables_table():
    missing = [role for role in ROLES
               if f"<!-- BEGIN {role} variables -->" not in
               ((ROOT / "roles" / role / "README.md").read_text()
                if (ROOT / "roles" / role / "README.md").exists() else "")]
    assert missing == []


def test_ansible_doc_lists_every_role_of_the_collection(elsewhere):
    result = _ansible_doc(elsewhere, "-t", "role", "-l", "pipfeed.feed")
    assert result.returncode == 0, result.stderr
    assert {f"pipfeed.feed.{role}" for role in ROLES} <= set(re.findall(r"^(pipfeed\.feed\.\w+):", result.stdout,
                                                                         re.M))


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_documents_every_option_and_marks_the_required_ones(role, role_docs):
    result = role_docs[role]
    assert result.returncode == 0, result.stderr
    # Without colour, ansible-doc writes what it would print bold between asterisks.
    text = result.stdout.replace("*", "")
    assert f"ROLE: pipfeed.feed.{role}" in text
    # One section per entry point, in the order of the spec.
    sections = re.split(r"^ENTRY POINT: ", text, flags=re.M)[1:]
    by_entry = {section.split(" ", 1)[0].strip(): section for section in sections}
    spec = _spec(role)
    assert set(by_entry) == set(spec), f"entry points {sorted(by_entry)}, spec {sorted(spec)}"
    for entry, entry_spec in spec.items():
        section = by_entry[entry]
        if entry_spec.get("short_description"):
            short = entry_spec["short_description"].replace("*", "")
            assert " ".join(short.split()) in " ".join(section.split())
        for name, required, _ in _options(entry_spec.get("options") or {}):
            # ansible-doc without colour marks a required option '= name', any other '- name'.
            marks = set(re.findall(rf"^\s*([=-]) {re.escape(name)}\b", section, re.M))
            assert marks, f"{role} {entry}: option {name} is missing from ansible-doc"
            assert marks == {"=" if required else "-"}, \
                f"{role} {entry}: option {name} is {'not ' if required else ''}marked required ({marks})"

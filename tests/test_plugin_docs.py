"""Every plugin of the collection is documented where ansible-doc finds it, as a user of the
installed collection looks it up: an action by a docs-only module of the same name in
plugins/modules/ (as ansible-core documents ansible.builtin.debug), a lookup by its
DOCUMENTATION string, a filter by its sidecar plugins/filter/<name>.yml. The documentation
follows the code: an action's options are exactly its _VALID_ARGS, a filter's options exactly
its function's arguments, so an option added to the code and not to the docs fails here."""
from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.files import plugin

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLUGINS = ROOT / "plugins"
ACTIONS = sorted(p.stem for p in (PLUGINS / "action").glob("*.py") if p.stem != "__init__")
LOOKUPS = sorted(p.stem for p in (PLUGINS / "lookup").glob("*.py") if p.stem != "__init__")
FILTER_FILES = sorted(p.stem for p in (PLUGINS / "filter").glob("*.py") if p.stem != "__init__")
MODULES = sorted(p.stem for p in (PLUGINS / "modules").glob("*.py") if p.stem != "__init__")
DOCS_ONLY = {"DOCUMENTATION", "EXAMPLES", "RETURN"}


def _filters() -> dict:
    """{filter name: function} over every filter plugin file."""
    found: dict = {}
    for stem in FILTER_FILES:
        for name, function in plugin(f"filter.{stem}").FilterModule().filters().items():
            assert name not in found, f"filter {name} is defined twice (plugins/filter/{stem}.py)"
            found[name] = function
    return found


FILTERS = _filters()


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A directory outside the project, with an empty ansible.cfg: ansible-doc then finds the
    collection through the collections path alone, as a user of the installed collection does."""
    directory = tmp_path_factory.mktemp("elsewhere")
    (directory / "ansible.cfg").write_text("[defaults]\n")
    return directory


def _ansible_doc(elsewhere: Path, kind: str, names: list) -> dict:
    """{name: ansible-doc's JSON for it ("doc", "examples", "return"; empty when it found no
    documentation), with ansible-doc's "stderr"}."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_CONFIG=str(elsewhere / "ansible.cfg"))
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, "--json",
                             *(f"pipfeed.feed.{name}" for name in names)],
                            capture_output=True, text=True, timeout=300, cwd=elsewhere, env=env)
    found = json.loads(result.stdout) if result.returncode == 0 else {}
    return {name: dict(found.get(f"pipfeed.feed.{name}") or {}, stderr=result.stderr.strip())
            for name in names}


def _all_docs(elsewhere: Path, kind: str, names: list) -> dict:
    """One ansible-doc for all; when it fails (one plugin without documentation makes it fail
    for every plugin asked with it), one per plugin, side by side, so that each test names its
    own plugin's problem."""
    docs = _ansible_doc(elsewhere, kind, names)
    if all(entry.get("doc") for entry in docs.values()):
        return docs
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pair for answer in pool.map(lambda name: _ansible_doc(elsewhere, kind, [name]), names)
                    for pair in answer.items())


@pytest.fixture(scope="module")
def module_docs(elsewhere) -> dict:
    return _all_docs(elsewhere, "module", ACTIONS)


@pytest.fixture(scope="module")
def lookup_docs(elsewhere) -> dict:
    return _all_docs(elsewhere, "lookup", LOOKUPS)


@pytest.fixture(scope="module")
def filter_docs(elsewhere) -> dict:
    return _all_docs(elsewhere, "filter", sorted(FILTERS))


def _found(docs: dict, kind: str, name: str, where: str) -> dict:
    entry = docs[name]
    assert entry.get("doc"), (f"ansible-doc -t {kind} pipfeed.feed.{name} finds no documentation; "
                              f"write it in {where}. ansible-doc said: {entry['stderr']}")
    return entry


@pytest.mark.parametrize("name", ACTIONS)
def test_action_options_are_exactly_those_its_module_documents(name, module_docs):
    entry = _found(module_docs, "module", name, f"plugins/modules/{name}.py")
    valid = set(plugin(f"action.{name}").ActionModule._VALID_ARGS)
    documented = set(entry["doc"].get("options") or {})
    assert not valid - documented, f"{name}: options the action takes but its module does not " \
                                   f"document: {sorted(valid - documented)}"
    assert not documented - valid, f"{name}: options documented that the action refuses: " \
                                   f"{sorted(documented - valid)}"
    for option, spec in entry["doc"]["options"].items():
        assert spec.get("type") and spec.get("description"), f"{name}: {option} needs a type and a description"


@pytest.mark.parametrize("name", ACTIONS)
def test_action_module_says_what_it_returns_and_how_it_treats_check_and_diff_mode(name, module_docs):
    entry = _found(module_docs, "module", name, f"plugins/modules/{name}.py")
    attributes = entry["doc"].get("attributes") or {}
    for attribute in ("check_mode", "diff_mode", "become", "connection", "delegation"):
        assert attributes.get(attribute, {}).get("support") in ("full", "partial", "none", "N/A"), \
            f"{name}: attribute {attribute} has no support level"
    assert entry["return"], f"{name}: RETURN is empty"
    assert entry["examples"] and f"pipfeed.feed.{name}:" in entry["examples"], \
        f"{name}: EXAMPLES has no task that uses pipfeed.feed.{name}"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_file_documents_an_action_and_holds_no_code(name):
    assert name in ACTIONS, f"plugins/modules/{name}.py documents no action (plugins/action/{name}.py)"
    tree = ast.parse((PLUGINS / "modules" / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 \
            and getattr(node.targets[0], "id", None) in DOCS_ONLY, \
            f"plugins/modules/{name}.py line {node.lineno}: a docs-only module holds only " \
            "DOCUMENTATION, EXAMPLES and RETURN (the action does the work)"


@pytest.mark.parametrize("name", LOOKUPS)
def test_every_lookup_is_documented(name, lookup_docs):
    entry = _found(lookup_docs, "lookup", name, f"plugins/lookup/{name}.py (DOCUMENTATION)")
    assert entry["doc"].get("short_description") and entry["return"], name


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_documents_exactly_its_arguments(name, filter_docs):
    entry = _found(filter_docs, "filter", name, f"plugins/filter/{name}.yml")
    options = entry["doc"].get("options") or {}
    parameters = list(inspect.signature(FILTERS[name]).parameters.values())
    wanted = ["_input"] + [p.name for p in parameters[1:]]
    assert sorted(options) == sorted(wanted), \
        f"{name}: documented {sorted(options)}, the function takes {wanted}"
    assert [p.strip() for p in str(entry["doc"].get("positional", "")).split(",")] == wanted, \
        f"{name}: positional must list {wanted} in the function's order"
    assert options["_input"].get("required") is True, f"{name}: _input is required"
    for parameter in parameters[1:]:
        spec = options[parameter.name]
        required = parameter.default is inspect.Parameter.empty
        assert bool(spec.get("required")) == required, \
            f"{name}: {parameter.name} is {'required' if required else 'optional'} in the code"
        if "default" in spec:
            assert spec["default"] == parameter.default, \
                f"{name}: {parameter.name} defaults to {parameter.default!r} in the code"
    assert entry["return"].get("_value"), f"{name}: RETURN documents no _value"


def test_no_filter_documentation_without_its_filter():
    stale = sorted(p.stem for p in (PLUGINS / "filter").glob("*.yml") if p.stem not in FILTERS)
    assert not stale, f"plugins/filter/ documents filters that no FilterModule defines: {stale}"

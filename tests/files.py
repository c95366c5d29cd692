"""The collection's Python, for the tests and the benchmarks: the repository is the collection
pipfeed.feed, and collections/ansible_collections/pipfeed/feed links to it, so its plugins
import as Ansible imports them (ansible_collections.pipfeed.feed.plugins...). The programs the
roles install on hosts are written out here as the roles install them."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
PACKAGE = "ansible_collections.pipfeed.feed.plugins"
PROGRAMS = ROOT / ".cache" / "programs"


def plugin(path: str) -> ModuleType:
    """A module of the collection by its place under plugins/, such as
    "module_utils.pipfeed_keyring" or "filter.config"."""
    return importlib.import_module(f"{PACKAGE}.{path}")


def program(name: str) -> Path:
    """A host program of the collection (pipfeed-keyring, wheelhouse_host.py) as the roles
    install it (with its #! line, mode 0755), written under .cache/programs/; its path."""
    host_programs = plugin("plugin_utils.host_programs")
    data = host_programs.installable(name)
    PROGRAMS.mkdir(parents=True, exist_ok=True)
    path = PROGRAMS / name
    if not path.exists() or path.read_bytes() != data:
        temporary = path.with_name(f".{name}.{os.getpid()}")
        temporary.write_bytes(data)
        temporary.chmod(0o755)
        os.replace(temporary, path)
    return path


def load_file(name: str, path: Path) -> ModuleType:
    """A Python file that is no module of a package (a role's script), under `name`
    (registered in sys.modules, where dataclasses look their module up)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_action(name: str, args: dict, check_mode: bool = False) -> dict:
    """One of the collection's controller-side actions (those that never touch a host: the
    wheelhouse build, publish, the project wheel), run as a task would run it; its result."""
    from types import SimpleNamespace
    module = plugin(f"action.{name}")
    task = SimpleNamespace(args=dict(args), async_val=0, check_mode=check_mode, diff=False,
                           action=f"pipfeed.feed.{name}")
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="/nonexistent"))
    action = module.ActionModule(task, connection, None, None, None)
    return action.run(task_vars={})

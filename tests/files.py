"""The project's plugin and script files, loaded as Python modules from their paths: filter and
action plugins and the roles' scripts live in no package, so the tests and the benchmarks load
them this way."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(name: str, path: Path) -> ModuleType:
    """The module in `path`, under `name` (registered in sys.modules, where dataclasses look
    their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

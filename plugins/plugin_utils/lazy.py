# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters whose implementation is imported when one of them first runs.

To find one filter of a collection, Ansible loads every filter file of that collection, in
every worker process (one per task and host), and the collection loader compiles each module
from its source each time. A filter file that imported its implementation at the top would
have every task that uses any pipfeed.feed filter compile all of them (the feed model, the
credential helper's keyring program, the wheel rules): each filter file names its functions
here instead, and only the modules of the filters a task runs are compiled.
"""
from __future__ import annotations

import importlib
import inspect

PACKAGE = "ansible_collections.pipfeed.feed.plugins.plugin_utils"


class lazy:  # noqa: N801 (used like a function)
    """The function ``name`` of plugin_utils/<module>.py, imported at its first call; its
    signature is the function's (for documentation checks)."""

    def __init__(self, module: str, name: str):
        self._module, self.__name__, self.__qualname__ = module, name, name
        self.__doc__ = f"{name} of plugin_utils/{module}.py"

    def _function(self):
        return getattr(importlib.import_module(f"{PACKAGE}.{self._module}"), self.__name__)

    @property
    def __signature__(self):
        return inspect.signature(self._function())

    def __call__(self, *args, **kwargs):
        return self._function()(*args, **kwargs)


def filters(module: str, *names: str) -> dict:
    """{name: lazy(module, name)} for each name."""
    return {name: lazy(module, name) for name in names}

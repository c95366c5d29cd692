# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's per-host controller code, imported once in Ansible's main process.

Ansible forks one worker process per task and host from its main process, and each worker
imports the plugins its task runs. The collection loader keeps no bytecode: it compiles a
collection module from its source in every process that imports it, so a converged site.yml at
24 hosts compiled the credential helper's module (which also holds the URL-scope rule) some 170
times and the feed model as often. What the main process has imported before it forks, every
worker has already: load() imports the modules and the action and lookup plugins that tasks run
on every host, through the loaders the workers use (so that a worker finds each under the name
it looks for), and reads the roles' argument specs once (role_specs.py: the shared check
validates the play's roles' options against them on every host). Plugins that run once per
play (the wheelhouse build, publish) are left to the worker that runs them, so that the main
process, which every fork copies, stays small.

A playbook calls it through a play keyword, which Ansible evaluates in its main process before
the play's tasks: playbooks/hosts.yml's serial (pipfeed.feed.serial). bench/README.md has the
measurement.
"""
from __future__ import annotations

import importlib

PACKAGE = "ansible_collections.pipfeed.feed.plugins"
MODULES = (
    "module_utils.pipfeed_keyring",
    "plugin_utils.lazy",
    "plugin_utils.platforms",
    "plugin_utils.feeds",
    "plugin_utils.helper_plan",
    "plugin_utils.config_plan",
    "plugin_utils.host_programs",
    "plugin_utils.host_run",
    "plugin_utils.renamed",
    "plugin_utils.role_specs",
    "plugin_utils.wheel_choice",
)
ACTIONS = ("host_probe", "host_script", "host_apply", "feed_check", "report")
LOOKUPS = ("token",)
_loaded: list = []


def load() -> list:
    """Import MODULES, ACTIONS and LOOKUPS (once per process); the names imported."""
    if not _loaded:
        from ansible.plugins.loader import action_loader, lookup_loader
        names = [importlib.import_module(f"{PACKAGE}.{name}").__name__ for name in MODULES]
        for loader, plugins in ((action_loader, ACTIONS), (lookup_loader, LOOKUPS)):
            for name in plugins:
                found = loader.get(f"pipfeed.feed.{name}", class_only=True)
                if found is None:
                    raise ImportError(f"pipfeed.feed.{name} is missing from the collection")
                names.append(found.__module__)
        # The roles' argument specs, which pipfeed.feed.report checks options against.
        importlib.import_module(f"{PACKAGE}.plugin_utils.role_specs").load_all()
        _loaded.extend(names)
    return list(_loaded)

# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The attributes the collection's actions share, by where they run. A module's own
attributes (check_mode, diff_mode, and any detail below) extend or override these."""
from __future__ import annotations


class ModuleDocFragment:
    """pipfeed.feed.attributes.host and pipfeed.feed.attributes.controller."""

    # An action that runs a program of the collection on the host, over the task's connection.
    HOST = r"""
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: full
  bypass_host_loop:
    support: none
  connection:
    support: full
  delegation:
    support: full
  platform:
    support: full
    platforms: posix
"""

    # An action that works in the controller's Ansible process and never contacts the host.
    CONTROLLER = r"""
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: none
    details: It runs in the controller's Ansible process, as the user running Ansible.
  bypass_host_loop:
    support: none
    details: It runs once per host like any task; the role sets C(run_once).
  connection:
    support: none
    details: It never contacts the host; no connection is made for it.
  delegation:
    support: none
    details: It always runs on the controller; C(delegate_to) changes nothing but the variables.
  platform:
    support: full
    platforms: all
    details: It runs on the controller, whatever the target's platform.
"""

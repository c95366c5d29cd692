# Copyright: pipfeed contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a host is, from its probe (plugins/module_utils/host_state.py): whether its OS family
is one the roles support, and which pips will run there. Hosts come as clouds ship them:
Debian's and Ubuntu's cloud images have python3 without python3-pip, and some without
python3-venv; the roles configure them all the same, and learn the pips from what is there.
"""
from __future__ import annotations

# The families the roles support: what they rely on is Debian's (dpkg-divert for
# python3-keyring's /usr/bin/keyring, python3-venv's ensurepip with the pip wheel of
# /usr/share/python-wheels, /etc/pip.conf read by the distro's pip). Ubuntu is Debian's.
SUPPORTED = ("debian", "ubuntu")
SUPPORTED_TEXT = ("the Debian family (Debian 11, 12 and 13, tested) and Ubuntu (22.04 and 24.04, "
                  "the same packages and paths, not tested in the lab)")


def os_problem(os_state: dict, hostname: str = "this host") -> str:
    """'' for a supported OS, else a sentence naming the OS and what is supported."""
    os_state = os_state or {}
    family = {os_state.get("id", "")} | set(os_state.get("id_like", "").split())
    if family & set(SUPPORTED):
        return ""
    name = os_state.get("pretty_name") or os_state.get("id") or "an OS without /etc/os-release"
    return (f"{hostname} runs {name} (ID={os_state.get('id') or '?'}"
            f"{', ID_LIKE=' + os_state['id_like'] if os_state.get('id_like') else ''}), which "
            f"these roles do not support: they support {SUPPORTED_TEXT}. They rely on dpkg "
            "(dpkg-divert) and Debian's layout of Python. Leave this host out of the inventory "
            "group (or --limit), before anything on it changes.")


def version_tuple(text: str) -> tuple:
    """A version's first three numbers, for comparing ("23.0.1" -> (23, 0, 1))."""
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def pips(python_state: dict) -> list:
    """[(version, where)] of every pip that will run for this Python on the host: its own, the
    one a new venv gets (ensurepip), and the pip wheels the distro keeps for venvs."""
    state = python_state or {}
    found = []
    if state.get("pip"):
        found.append((state["pip"], "system"))
    if state.get("ensurepip"):
        found.append((state["ensurepip"], "venv"))
    for wheel in state.get("wheels", []):
        found.append((wheel, "wheel"))
    return found


def oldest_pip(states: list) -> str:
    """The oldest pip version among these Pythons' pips; '' when there is none at all."""
    versions = [v for state in states for v, _ in pips(state)]
    return min(versions, key=version_tuple) if versions else ""


def pip_summary(python_state: dict, command: str) -> str:
    """One phrase for the report: which pip runs, and which pip venvs get."""
    state = python_state or {}
    if state.get("error"):
        return f"{command} does not run ({state['error']})"
    own = f"pip {state['pip']}" if state.get("pip") else f"no pip for {command}"
    if state.get("venv"):
        venvs = f"venvs get pip {state['ensurepip']}" if state.get("ensurepip") else \
            "venvs get no pip"
    else:
        venvs = "no venv module (python3-venv)"
    return f"{own}, {venvs}"


def uv_platform(probe: dict, python: str) -> dict:
    """The platform uv's wheel must fit on a host ({libc, libc_version, machine}), from a
    probe that read ``python``: its libc, and the machine."""
    state = (probe or {}).get("pythons", {}).get(python) or {}
    libc = state.get("libc") or ["", ""]
    return {"libc": libc[0] or "glibc", "libc_version": libc[1] or "",
            "machine": (probe or {}).get("os", {}).get("machine") or state.get("machine", "")}


def no_pip_can_use(python_state: dict, uv: bool) -> bool:
    """True when no pip (and no uv) on the host can use the configuration yet."""
    state = python_state or {}
    return not uv and not state.get("pip") and not state.get("venv")

"""Helpers shared by the integration tests: commands on lab hosts, playbook runs against the lab,
and reading the default callback's output.

Secrets never go into an argv here: data for a host goes in on stdin, variables for a playbook
go in a 0600 JSON file passed with -e @file and removed after the run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def sh(lab, host: str, command: str, stdin: bytes = b"", timeout: float = 300) -> tuple:
    """A command as labadmin over the lab's SSH connection: (exit status, stdout, stderr)."""
    client = lab.testinfra(host).backend.client
    channel_in, out, err = client.exec_command(command, timeout=timeout)
    if stdin:
        channel_in.write(stdin)
    channel_in.channel.shutdown_write()
    stdout, stderr = out.read().decode(), err.read().decode()
    return out.channel.recv_exit_status(), stdout, stderr


def must(lab, host: str, command: str, stdin: bytes = b"", timeout: float = 300) -> str:
    """sh(), failing the test when the command fails; its stdout."""
    rc, stdout, stderr = sh(lab, host, command, stdin, timeout)
    assert rc == 0, f"{host}: {command}\n{stdout}\n{stderr}"
    return stdout


def sudo(command: str) -> str:
    """The command run as root through sudo, for sh() and must()."""
    return f"sudo sh -c {shlex.quote(command)}"


def ansible_env(**overrides) -> dict:
    """The environment for a playbook run: the project's ansible.cfg, no colour."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_playbooks(lab, workdir: Path, playbooks: list[str], variables: dict, *args: str,
                  env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """ansible-playbook with the project's playbooks (paths relative to the checkout) against
    the lab's inventory; the variables go in a 0600 file. The result carries .elapsed."""
    extra = workdir / f"vars-{os.urandom(4).hex()}.json"
    extra.write_text(json.dumps(variables))
    extra.chmod(0o600)
    started = time.monotonic()
    try:
        result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(lab.inventory),
                                 *(str(ROOT / p) for p in playbooks), "-e", f"@{extra}", *args],
                                cwd=ROOT, env=env or ansible_env(), capture_output=True,
                                text=True, timeout=timeout)
    finally:
        extra.unlink()
    result.elapsed = time.monotonic() - started
    return result


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP, per host: {'ok': n, 'changed': n, ...}."""
    stats = {}
    for host, fields in re.findall(r"^(\S+)\s+: (ok=.*)$", output, re.M):
        stats[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return stats


def task_results(output: str) -> list[tuple[str, str, str]]:
    """(task name, status, host) for each per-host result line of the default callback."""
    found, task = [], None
    for line in output.splitlines():
        header = re.match(r"^TASK \[(.*)\] \**$", line)
        if header:
            task = header.group(1)
        hit = re.match(r"^(ok|changed|failed|fatal|skipping): \[([^\]]+)\]", line)
        if hit and task is not None:
            found.append((task, hit.group(1), hit.group(2)))
    return found


def changed_tasks(output: str) -> dict[str, list[str]]:
    """Per host, the tasks that reported changed."""
    found: dict[str, list[str]] = {}
    for task, status, host in task_results(output):
        if status == "changed":
            found.setdefault(host, []).append(task)
    return found


def task_hosts(output: str, task: str, status: str) -> set[str]:
    """Hosts that reported this status for a task whose name contains `task`."""
    return {host for name, state, host in task_results(output)
            if state == status and task in name}


# What site.yml puts on a host, so that a test can start from a host as the lab made it.
PRODUCT_STATE = ("/etc/pip.conf", "/etc/uv", "/etc/pipfeed", "/var/lib/pipfeed",
                 "/usr/local/lib/pipfeed")


def unprovision(lab, host: str) -> None:
    """Remove what site.yml installs (files, the helper's keyring links and ~/.netrc links);
    the pipfeed group and its members stay, as the roles never remove them either."""
    must(lab, host, sudo(
        "rm -rf /etc/pip.conf.*~ " + " ".join(PRODUCT_STATE) + "; "
        "for link in /usr/local/bin/keyring /usr/bin/keyring /root/.netrc "
        "/home/*/.netrc; do [ -L \"$link\" ] && rm -f \"$link\"; done; true"))

"""Helpers of the reliability and security suite (test_bad_input, test_faults, test_leaks,
test_load): what a host holds of the project, taking a host back to how the lab made it,
inventories of host aliases, the failure message of each host, and a playbook run that the
test kills at a chosen task.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.integration.support import BIN, ROOT, ansible_env, must, sh, sudo

# Everything the roles manage on a host: the files the suite compares before and after a run.
MANAGED = ["/etc/pip.conf", "/etc/uv", "/etc/pipfeed", "/var/lib/pipfeed",
           "/usr/local/lib/pipfeed", "/usr/local/bin/keyring", "/usr/bin/keyring",
           "/usr/bin/keyring.distrib", "/root/.netrc", "/home/labadmin/.netrc"]

# Run as root on the host (script on stdin): one line per managed path, with the SHA-256 of
# each file, the target of each link, and the mode of each directory; plus the pipfeed group
# and pip.conf backups.
SNAPSHOT = r"""
import glob, hashlib, json, os, grp, sys
paths = json.loads(sys.argv[1])
seen = {}
def note(path):
    if os.path.islink(path):
        seen[path] = "link " + os.readlink(path)
    elif os.path.isdir(path):
        st = os.stat(path)
        seen[path] = "dir %o %d:%d" % (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        for name in sorted(os.listdir(path)):
            note(os.path.join(path, name))
    elif os.path.exists(path):
        st = os.stat(path)
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        seen[path] = "file %o %s" % (st.st_mode & 0o7777, digest)
for path in paths + sorted(glob.glob("/etc/pip.conf.*~")):
    note(path)
try:
    seen["group pipfeed"] = ",".join(grp.getgrnam("pipfeed").gr_mem) or "(no members)"
except KeyError:
    pass
print(json.dumps(seen, sort_keys=True))
"""

# Back to the host as the lab made it: no helper, no configuration, no wheelhouse.
# Also Ansible's remote temporary directories: a run killed with its SSH connections (the fault
# tests' dying controller) leaves the one of the module it was running.
CLEAN = ("rm -rf /usr/local/bin/keyring /usr/local/lib/pipfeed /etc/pipfeed /root/.netrc "
         "/home/labadmin/.netrc /etc/pip.conf /etc/pip.conf.*~ /etc/uv /var/lib/pipfeed "
         "/home/labadmin/.ansible/tmp/ansible-tmp-* /root/.ansible/tmp/ansible-tmp-*; "
         "if [ -L /usr/bin/keyring ]; then rm -f /usr/bin/keyring; fi; "
         "if dpkg-divert --list /usr/bin/keyring | grep -q .; then "
         "dpkg-divert --local --rename --remove /usr/bin/keyring; rm -f /usr/bin/keyring; fi; "
         "if getent group pipfeed >/dev/null; then gpasswd -d labadmin pipfeed >/dev/null 2>&1; "
         "groupdel pipfeed; fi")


def snapshot(lab, host: str) -> dict:
    """What the host holds of the project (see SNAPSHOT)."""
    out = must(lab, host, sudo(f"python3 - {json.dumps(json.dumps(MANAGED))}"),
               SNAPSHOT.encode())
    return json.loads(out)


def clean(lab, host: str) -> None:
    must(lab, host, sudo(CLEAN))


def lab_vars(lab) -> dict:
    """The group vars of the lab's own inventory (the product's settings for the lab)."""
    return json.loads(lab.inventory.read_text())["all"]["vars"]


def alias_inventory(lab, path: Path, aliases: dict[str, tuple[str, dict]]) -> Path:
    """An inventory whose hosts are aliases of lab hosts: {alias: (lab host, host vars)}. Each
    alias is a host of its own for Ansible (its own variables, its own result), on the lab
    host's SSH server."""
    hosts = {alias: {"ansible_host": lab.host(real).ip, **variables}
             for alias, (real, variables) in aliases.items()}
    path.write_text(json.dumps({"all": {"hosts": hosts, "vars": lab_vars(lab)}}, indent=1))
    path.chmod(0o600)
    return path


def failure_messages(output: str) -> dict[str, str]:
    """Per host, the text of its failed results ("fatal: [host]: FAILED! => ..." and what is
    indented under it), whitespace collapsed; several failures of a host are joined."""
    found: dict[str, list[str]] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        hit = re.match(r"^(?:fatal|failed): \[([^\]]+)\].*?=>(.*)$", line)
        if not hit:
            continue
        block = [hit.group(2)]
        for follow in lines[index + 1:]:
            if follow and not follow[0].isspace():
                break
            block.append(follow)
        host = hit.group(1).split(" -> ")[0]  # "host -> localhost" for delegated tasks
        # The YAML callback doubles a quote inside a quoted string.
        found.setdefault(host, []).append(" ".join(" ".join(block).split()).replace("''", "'"))
    return {host: " | ".join(texts) for host, texts in found.items()}


def playbook_cmd(inventory: Path, playbooks: list[str], extra: Path | None, *args: str) -> list:
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), *(str(ROOT / p) for p in playbooks)]
    if extra is not None:
        cmd += ["-e", f"@{extra}"]
    return cmd + list(args)


def vars_file(workdir: Path, variables: dict) -> Path:
    path = workdir / f"vars-{os.urandom(4).hex()}.json"
    path.write_text(json.dumps(variables))
    path.chmod(0o600)
    return path


class KilledRun:
    """The output of a run that was killed, and where."""

    def __init__(self, output: str, killed_at: str | None, returncode: int, elapsed: float):
        self.stdout, self.killed_at, self.returncode, self.elapsed = (output, killed_at,
                                                                      returncode, elapsed)


def run_and_kill(inventory: Path, playbooks: list[str], variables: dict, workdir: Path,
                 task: str, delay: float = 0.0, timeout: float = 600, env: dict | None = None,
                 on_task=None, kill: bool = True, args: tuple = (), wait=None,
                 masters: bool = False) -> KilledRun:
    """ansible-playbook in a session of its own; when its output shows the header of the first
    task whose name contains `task`, wait `delay` seconds (or, with `wait`, until that callable
    returns) and kill the session (the ansible-playbook process and its forks, by the process
    group of its pid), as a cancelled job would. With masters=True the run's SSH
    ControlPersist masters (which leave the session, and would go on delivering what they
    hold) end with it, by their control sockets, as when the controller itself dies.
    `on_task` runs (in a thread) when the task starts; with kill=False the run goes on to its
    end (a fault injected by on_task instead)."""
    extra = vars_file(workdir, variables)
    started = time.monotonic()
    # The run's own directory of control sockets, in the test's work directory (where a socket
    # of a master that came up as the run was killed is cleaned up with the rest); a socket
    # path has a length limit (108 bytes), and Ansible's socket names have 10 characters.
    sockets = tempfile.mkdtemp(prefix="cp-", dir=workdir)
    assert len(sockets) < 90, f"{sockets} is too long a directory for SSH control sockets"
    env = dict(env or ansible_env(), PYTHONUNBUFFERED="1", ANSIBLE_SSH_CONTROL_PATH_DIR=sockets)
    # Ansible writes its output without flushing: unbuffered, a task's header arrives when the
    # task starts, not kilobytes later.
    proc = subprocess.Popen(playbook_cmd(inventory, playbooks, extra, *args), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    killed_at = None
    timer = threading.Timer(timeout, lambda: _kill(proc))
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if killed_at is None and line.startswith("TASK [") and task in line:
                killed_at = line.strip().strip("*").strip()
                if on_task is not None:
                    threading.Thread(target=on_task, daemon=True).start()
                if kill:
                    if wait is not None:
                        wait()
                    else:
                        time.sleep(delay)
                    _kill(proc)
                    if masters:
                        end_masters(sockets)
        proc.wait()
    finally:
        timer.cancel()
        extra.unlink(missing_ok=True)
        end_masters(sockets)
        shutil.rmtree(sockets, ignore_errors=True)
    return KilledRun("".join(lines), killed_at, proc.returncode, time.monotonic() - started)


def end_masters(sockets: str) -> None:
    """Ask each SSH master with a control socket in this directory to exit (ssh -O exit), which
    ends it and the sessions it carries."""
    for name in os.listdir(sockets):
        subprocess.run(["ssh", "-o", f"ControlPath={os.path.join(sockets, name)}", "-O", "exit",
                        "pipfeed-lab-master"], capture_output=True, timeout=30)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def host_sh(lab, host: str, command: str, timeout: float = 300) -> tuple:
    return sh(lab, host, command, timeout=timeout)


def container_pid(lab, host: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", lab.host(host).container],
                          check=True, capture_output=True, text=True).stdout.strip()


def in_host(lab, host: str, script: str, pid: str | None = None) -> str:
    """A shell script as root of this machine inside the host container's mount and process
    namespaces (nsenter by the container's pid): for mounts that the container's own root may
    not make (the lab's containers are unprivileged, and `docker exec --privileged` needs
    capabilities this machine may not grant)."""
    pid = pid or container_pid(lab, host)
    result = subprocess.run(["nsenter", "-t", pid, "-m", "-p", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{host}: {script}: {result.stderr}"
    return result.stdout


@contextlib.contextmanager
def slow_link(lab, hosts: list[str], rate: str = "40mbit"):
    """What this machine sends to each host limited to `rate` (a token bucket on the machine's
    end of the host's veth pair, whose egress is the host's ingress), so that a transfer of
    tens of MB lasts seconds and a kill lands in the middle of it. Removed on exit; the
    interface goes with its container anyway."""
    links = []
    try:
        for host in hosts:
            index = in_host(lab, host, "cat /sys/class/net/eth0/iflink").strip()
            found = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True,
                                   text=True).stdout
            names = [line.split(":")[1].strip().split("@")[0] for line in found.splitlines()
                     if line.split(":")[0] == index]
            assert len(names) == 1, f"{host}: no interface {index} on this machine"
            subprocess.run(["tc", "qdisc", "add", "dev", names[0], "root", "tbf", "rate", rate,
                            "burst", "64kb", "latency", "500ms"], check=True, capture_output=True)
            links.append(names[0])
        yield
    finally:
        for name in links:
            subprocess.run(["tc", "qdisc", "del", "dev", name, "root"], capture_output=True)

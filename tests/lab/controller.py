"""A second controller in a lab: a Debian 13 container on the lab's network, as a pipeline agent
or a colleague's machine would be, with its own Python (3.13), its own pip (25.1.1, what
Debian 13's venv brings), the newest ansible-core (2.21) and its own wheelhouse cache.

It is built the way a locked-down controller is: ansible-core and its dependencies installed
offline, with hashes, from wheels the lab caches (packages.CONTROLLER_PINS, downloaded once);
the collection installed offline from the release tarball built from this checkout
(``ansible-galaxy collection install --offline``); the lab's SSH key, known hosts, CA and
token copied in; and the lab's inventory adapted to reach the hosts from inside the network
(the feed by its name, feed.lab.test, as the hosts reach it, where the machine's controller
uses the gateway's address). Nothing of the first controller is shared: not its venv, not
its checkout, not its wheelhouse cache.

The container carries the lab's labels, so ``Lab.down()`` removes it with the rest; its files
live in the lab's state directory (``controller/``, mounted read-only at /ctl).
"""
from __future__ import annotations

import configparser
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import images, packages
from .lab import BLOB_HOST, FEED_HOST, OTHER_HOST, PYPI_HOSTS, REPO_ROOT, Lab, LabError, run

MOUNT = "/ctl"
VENV = "/opt/ansible"
COLLECTIONS = "/opt/collections"
# What the container needs of the lab's state directory, at the same relative paths.
COPIED = ("id_ed25519", "known_hosts", "secrets/token", "pki/ca.crt",
          "wheelhouse-requirements.txt")
# Python 3.13's UTF-8 locale, which ansible-core asks for.
ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/root", "NO_COLOR": "1",
       "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CONFIG": f"{MOUNT}/ansible.cfg",
       "PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class Controller:
    """The lab's second controller; `Controller.start(lab)` makes it, `stop()` removes it."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.container = f"{lab.prefix}-controller"
        self.dir = lab.dir / "controller"

    # ----- bring up -----------------------------------------------------------------------
    @classmethod
    def start(cls, lab: Lab, log=sys.stderr) -> "Controller":
        controller = cls(lab)
        started = time.monotonic()
        wheels = packages.ensure_controller_wheels(log=log)
        tag = images.ensure(["deb13"], log)["deb13"]
        run(["docker", "rm", "-f", controller.container], check=False)
        shutil.rmtree(controller.dir, ignore_errors=True)
        controller.dir.mkdir(mode=0o700, parents=True)
        controller._build_tarball()
        (controller.dir / "requirements.txt").write_text(
            "\n".join(packages.CONTROLLER_PINS) + "\n")
        controller.refresh()
        add_hosts = [f"{name}:{lab.gateway}" for name in (FEED_HOST, BLOB_HOST, OTHER_HOST)]
        add_hosts += [f"{name}:{lab.state['firewall']['ip']}" for name in PYPI_HOSTS]
        cmd = ["docker", "run", "-d", "--init", "--name", controller.container,
               "--hostname", "controller", *lab._labels(), "--network", lab.prefix,
               "--volume", f"{lab.dir / 'hostfiles' / 'resolv.conf'}:/etc/resolv.conf:ro",
               "--volume", f"{controller.dir}:{MOUNT}:ro",
               "--volume", f"{wheels}:/wheels:ro", "--entrypoint", "/bin/sleep"]
        for entry in add_hosts:
            cmd += ["--add-host", entry]
        run(cmd + [tag, "infinity"])
        try:
            # ansible-core and its dependencies with no index at all, every file hashed.
            controller.exec(["python3", "-m", "venv", VENV])
            controller.exec([f"{VENV}/bin/pip", "install", "--quiet", "--no-index",
                             "--find-links", "/wheels", "--require-hashes",
                             "--requirement", f"{MOUNT}/requirements.txt"], timeout=600)
            # The collection from its release tarball, with no Galaxy server.
            controller.exec([f"{VENV}/bin/ansible-galaxy", "collection", "install", "--offline",
                             "--collections-path", COLLECTIONS,
                             f"{MOUNT}/{controller.tarball.name}"], timeout=300)
        except BaseException:
            controller.stop()
            raise
        print(f"lab: second controller {controller.container} is up "
              f"(ansible-core {controller.ansible_version()}) in "
              f"{time.monotonic() - started:.0f}s", file=log)
        return controller

    @property
    def tarball(self) -> Path:
        return next(self.dir.glob("pipfeed-feed-*.tar.gz"))

    def _build_tarball(self) -> None:
        """The collection's release tarball from this checkout, as `make dist` builds it."""
        galaxy = Path(sys.executable).with_name("ansible-galaxy")
        done = subprocess.run([str(galaxy), "collection", "build", "--output-path",
                               str(self.dir), str(REPO_ROOT)], cwd=self.dir,
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg")))
        if done.returncode != 0:
            raise LabError(f"ansible-galaxy collection build failed: {done.stdout}{done.stderr}")

    def refresh(self) -> None:
        """Copy in what the lab has now (hosts added or removed since, a rotated token) and
        write the inventory and ansible.cfg the container's Ansible reads."""
        for relative in COPIED:
            source, target = self.lab.dir / relative, self.dir / relative
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy2(source, target)
        # From inside the network the feed answers by its name, as on the hosts.
        text = self.lab.inventory.read_text().replace(self.lab.controller_feed_url,
                                                      self.lab.feed_url)
        text = text.replace(str(self.lab.dir), MOUNT)
        inventory = json.loads(text)
        leftover = [v for v in _strings(inventory) if str(REPO_ROOT) in v]
        if leftover:
            raise LabError(f"the lab's inventory names paths of this machine: {leftover}")
        _write(self.dir / "inventory.json", json.dumps(inventory, indent=2) + "\n")
        # The project's ansible.cfg (pipelining, SSH options, forks), with the installed
        # collection and this inventory.
        config = configparser.ConfigParser(interpolation=None)
        config.read(REPO_ROOT / "ansible.cfg")
        config["defaults"]["collections_path"] = COLLECTIONS
        config["defaults"]["inventory"] = f"{MOUNT}/inventory.json"
        out = io.StringIO()
        config.write(out)
        _write(self.dir / "ansible.cfg", out.getvalue())

    # ----- use ----------------------------------------------------------------------------
    def exec(self, cmd: list[str], check: bool = True, timeout: float = 120,
             env: dict | None = None) -> subprocess.CompletedProcess:
        """A command in the container, as root, in /ctl."""
        options = []
        for key, value in {**ENV, **(env or {})}.items():
            options += ["--env", f"{key}={value}"]
        done = subprocess.run(["docker", "exec", "--workdir", MOUNT, *options, self.container,
                               *cmd], capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(cmd)} in {self.container} exited {done.returncode}: "
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def read(self, path: str) -> bytes:
        """A file of the container (its wheelhouse cache, for one)."""
        done = subprocess.run(["docker", "exec", self.container, "cat", path],
                              capture_output=True, timeout=60)
        if done.returncode != 0:
            raise LabError(f"{path} in {self.container}: {done.stderr.decode().strip()}")
        return done.stdout

    def ansible_version(self) -> str:
        return self.exec([f"{VENV}/bin/python", "-c",
                          "import ansible.release; print(ansible.release.__version__)"]
                         ).stdout.strip()

    def playbook(self, playbooks: list[str], variables: dict, *args: str,
                 timeout: float = 900) -> subprocess.CompletedProcess:
        """ansible-playbook in the container (playbooks by their collection names, such as
        pipfeed.feed.site) against the lab's hosts; the variables go in a 0600 file that the
        container reads through its mount, removed after the run. The result has .elapsed."""
        self.refresh()
        name = f"vars-{os.urandom(4).hex()}.json"
        _write(self.dir / name, json.dumps(variables))
        started = time.monotonic()
        try:
            result = self.exec([f"{VENV}/bin/ansible-playbook", *playbooks,
                                "-e", f"@{MOUNT}/{name}", *args], check=False, timeout=timeout)
        finally:
            (self.dir / name).unlink(missing_ok=True)
        result.elapsed = time.monotonic() - started
        return result

    def stop(self) -> None:
        run(["docker", "rm", "-f", self.container], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _write(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)

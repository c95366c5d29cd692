"""Lab host images: Debian root file systems built with mmdebstrap and imported into Docker.

Images are tagged with a hash of their recipe, so they are built once, reused by every lab on
the machine, and rebuilt only when the recipe (suite, packages, hooks, entry script) changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRY_SCRIPT = HERE / "host-entry.sh"
REPOSITORY = "pipfeed-lab"
RECIPE_VERSION = 1

# What a small locked-down VM of the fleet carries: Python with venv and the distro's pip, sshd,
# sudo for Ansible's become, and iptables so a host can play the firewall.
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "openssh-server",
    "ca-certificates",
    "sudo",
    "iptables",
    "procps",
)


BASE_HOOKS = (
    'rm -f "$1"/etc/ssh/ssh_host_*',
    'chroot "$1" useradd --create-home --shell /bin/bash labadmin',
    'chroot "$1" usermod --password "*" labadmin',
    'echo "labadmin ALL=(ALL) NOPASSWD: ALL" > "$1"/etc/sudoers.d/labadmin',
    'chmod 0440 "$1"/etc/sudoers.d/labadmin',
    'printf "PasswordAuthentication no\\nPermitRootLogin no\\n" > "$1"/etc/ssh/sshd_config.d/lab.conf',
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
)

# A fresh cloud VM for the first-boot tests: Debian 12 with Debian's cloud-init, reading its
# user-data from a NoCloud seed (/var/lib/cloud/seed/nocloud/). A container has no systemd, so
# a test runs cloud-init's stages by hand. Docker owns the network and the lab owns the SSH host
# keys, so cloud-init leaves both alone; C.UTF-8 needs no locale to be generated.
CLOUD_INIT_CFG = (
    "datasource_list: [NoCloud, None]\\n"
    "network: {config: disabled}\\n"
    "preserve_hostname: true\\n"
    "ssh_deletekeys: false\\n"
    "ssh_genkeytypes: []\\n"
    "locale: C.UTF-8\\n"
)
CLOUD_INIT_HOOKS = BASE_HOOKS[:-1] + (
    f'printf "{CLOUD_INIT_CFG}" > "$1"/etc/cloud/cloud.cfg.d/90-pipfeed-lab.cfg',
    BASE_HOOKS[-1],
)


@dataclass(frozen=True)
class Recipe:
    distro: str
    suite: str
    python: str
    packages: tuple[str, ...] = BASE_PACKAGES
    hooks: tuple[str, ...] = field(default=BASE_HOOKS)

    def digest(self) -> str:
        material = json.dumps({"v": RECIPE_VERSION, "recipe": asdict(self),
                               "entry": ENTRY_SCRIPT.read_text()}, sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}/{self.distro}:{self.digest()}"


RECIPES: dict[str, Recipe] = {
    "deb11": Recipe("deb11", "bullseye", "3.9"),
    "deb12": Recipe("deb12", "bookworm", "3.11"),
    "deb13": Recipe("deb13", "trixie", "3.13"),
    # Hosts as clouds ship them (Debian's and Ubuntu's cloud images): python3 and python3-venv
    # without python3-pip (venvs get pip from python3-pip-whl), and python3 alone.
    "deb12nopip": Recipe("deb12nopip", "bookworm", "3.11",
                         packages=tuple(p for p in BASE_PACKAGES if p != "python3-pip")),
    "deb13bare": Recipe("deb13bare", "trixie", "3.13",
                        packages=tuple(p for p in BASE_PACKAGES
                                       if p not in ("python3-pip", "python3-venv"))),
    # Not a distro of its own: Debian 12 as a cloud image, for cloud-init's first boot.
    "deb12ci": Recipe("deb12ci", "bookworm", "3.11", packages=BASE_PACKAGES + ("cloud-init",),
                      hooks=CLOUD_INIT_HOOKS),
}


def mirror() -> str:
    return os.environ.get("PIPFEED_LAB_MIRROR", "http://deb.debian.org/debian")


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def build(recipe: Recipe, log=sys.stderr) -> str:
    """Build the image unless an image of the same recipe exists; return its tag."""
    tag = recipe.tag
    if image_exists(tag):
        return tag
    print(f"lab: building image {tag} from Debian {recipe.suite} with mmdebstrap", file=log)
    cmd = ["mmdebstrap", "--variant=minbase", "--quiet",
           "--include=" + ",".join(recipe.packages),
           f"--customize-hook=upload {ENTRY_SCRIPT} /usr/local/sbin/lab-host-entry",
           '--customize-hook=chmod 0755 "$1"/usr/local/sbin/lab-host-entry']
    cmd += [f"--customize-hook={hook}" for hook in recipe.hooks]
    cmd += ["--format=tar", recipe.suite, "-", mirror()]
    importer = ["docker", "import",
                "--change", 'ENTRYPOINT ["/usr/local/sbin/lab-host-entry"]',
                "--change", f"LABEL pipfeed-lab.recipe={recipe.digest()}",
                "-", tag]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as strap:
        imported = subprocess.run(importer, stdin=strap.stdout, stdout=subprocess.DEVNULL)
        strap.stdout.close()
        strap.wait()
    if strap.returncode != 0 or imported.returncode != 0:
        subprocess.run(["docker", "image", "rm", "-f", tag], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        raise RuntimeError(f"building {tag} failed: {shlex.join(cmd)} exited {strap.returncode},"
                           f" docker import exited {imported.returncode}")
    _remove_stale(recipe)
    return tag


def _remove_stale(recipe: Recipe) -> None:
    """Drop images of older recipes for the same distro, unless a container still uses them."""
    listing = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}",
                              f"{REPOSITORY}/{recipe.distro}"], capture_output=True, text=True)
    for tag in listing.stdout.split():
        if tag != recipe.tag:
            subprocess.run(["docker", "image", "rm", tag], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def ensure(distros, log=sys.stderr) -> dict[str, str]:
    return {d: build(RECIPES[d], log) for d in distros}

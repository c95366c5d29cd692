"""A locked-down lab on one machine: Debian hosts running sshd on an internal Docker network,
an Azure-like feed and a recording second index served over TLS from the network's gateway,
and PyPI's host names pointed at a firewall that drops (or refuses) every connection.

A lab owns everything it makes (containers, network, firewall chain, processes, state dir);
all of it carries the lab's name, so two labs run side by side and `down` removes exactly
what `up` made.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import images, packages, pki

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_ROOT = Path(os.environ.get("PIPFEED_LAB_STATE", REPO_ROOT / ".lab"))
LABEL = "pipfeed-lab"
# Which checkout made a lab: `down --all` removes only the labs of its own checkout.
ROOT_LABEL = "pipfeed-lab.root"

FEED_HOST = "feed.lab.test"
BLOB_HOST = "blob.lab.test"
OTHER_HOST = "other.lab.test"
PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")
FEED_PORT = 443
OTHER_PORT = 8443
# The IMDS stand-in on the gateway; hosts reach it as 169.254.169.254:80 (start_imds).
IMDS_PORT = 8169
ORG = "contoso"
FEED = "python-feed"
ADMIN_USER = "labadmin"
HOST_CA_PATH = "/usr/local/share/ca-certificates/pipfeed-lab-ca.crt"
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class LabError(RuntimeError):
    pass


def run(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    result = subprocess.run(cmd, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def ensure_docker(log=sys.stderr, timeout: float = 60) -> None:
    """Start dockerd when no daemon answers; it keeps running for later labs."""
    if run(["docker", "info"], check=False).returncode == 0:
        return
    if not shutil.which("dockerd"):
        raise LabError("no Docker daemon answers and dockerd is not installed: "
                       "apt-get install docker.io (scripts/setup.sh does it)")
    log_path = packages.cache_root() / "dockerd.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"lab: starting dockerd (log: {log_path})", file=log)
    with open(log_path, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(["docker", "info"], check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise LabError(f"dockerd did not answer within {timeout:.0f}s; see {log_path}")


def wait_tcp(address: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LabError(f"nothing answers on {address}:{port} after {timeout:.0f}s")
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Host:
    name: str
    distro: str
    python: str
    container: str
    ip: str


class Lab:
    """One lab, described by its state dir; `Lab.up(...)` makes one, `Lab.load(name)` finds it."""

    def __init__(self, name: str, state: dict | None = None):
        if not NAME_RE.match(name):
            raise LabError(f"lab name {name!r}: use 1-10 lowercase letters and digits, "
                           "starting with a letter")
        self.name = name
        self.dir = STATE_ROOT / name
        self.state: dict = state or {}

    # ----- naming -----------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"pfl-{self.name}"

    @property
    def bridge(self) -> str:
        return f"pfl-{self.name}"[:15]

    @property
    def chain(self) -> str:
        return f"PFL-{self.name}".upper()

    # ----- public view ------------------------------------------------------------------
    @property
    def hosts(self) -> list[Host]:
        return [Host(**h) for h in self.state.get("hosts", [])]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def gateway(self) -> str:
        return self.state["gateway"]

    @property
    def token(self) -> str:
        return (self.dir / "secrets" / "token").read_text().strip()

    @property
    def feed_path(self) -> str:
        return f"/{ORG}/_packaging/{FEED}/pypi"

    @property
    def feed_url(self) -> str:
        return f"https://{FEED_HOST}{self.feed_path}/simple/"

    @property
    def controller_feed_url(self) -> str:
        """The feed as the controller reaches it: by the gateway address, which the
        certificate names, since the machine's resolver knows nothing of the lab's names."""
        return f"https://{self.gateway}{self.feed_path}/simple/"

    @property
    def upload_url(self) -> str:
        return f"https://{FEED_HOST}{self.feed_path}/upload/"

    @property
    def other_url(self) -> str:
        return f"https://{OTHER_HOST}:{OTHER_PORT}/simple/"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory" / "hosts.yml"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def access_log(self) -> Path:
        return self.dir / "logs" / "feed-access.jsonl"

    @property
    def recorder_log(self) -> Path:
        return self.dir / "logs" / "other-index.jsonl"

    @property
    def control_file(self) -> Path:
        return self.dir / "feed-control.json"

    @property
    def tokens_file(self) -> Path:
        return self.dir / "secrets" / "tokens.json"

    def resolve_map(self) -> dict[str, str]:
        """Host names the controller must map to lab addresses to talk to the lab's servers."""
        return {FEED_HOST: self.gateway, BLOB_HOST: self.gateway, OTHER_HOST: self.gateway}

    # ----- persistence ------------------------------------------------------------------
    @classmethod
    def load(cls, name: str) -> "Lab":
        lab = cls(name)
        path = lab.dir / "state.json"
        if not path.exists():
            raise LabError(f"no lab named {name!r} (looked for {path})")
        lab.state = json.loads(path.read_text())
        return lab

    @classmethod
    def names(cls) -> list[str]:
        """Labs of this checkout: those with a state dir, and remains that carry its label."""
        found = set()
        if STATE_ROOT.exists():
            found |= {p.name for p in STATE_ROOT.iterdir() if (p / "state.json").exists()}
        mine = f"label={ROOT_LABEL}={STATE_ROOT}"
        fmt = f'{{{{.Label "{LABEL}"}}}}'
        found |= set(run(["docker", "ps", "-a", "--filter", mine, "--format", fmt],
                         check=False).stdout.split())
        found |= set(run(["docker", "network", "ls", "--filter", mine, "--format", fmt],
                         check=False).stdout.split())
        return sorted(n for n in found if NAME_RE.match(n))

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.rename(self.dir / "state.json")

    # ----- bring up ---------------------------------------------------------------------
    @classmethod
    def up(cls, name: str, distros=("deb11", "deb12", "deb13"), count: int = 1,
           pypi_block: str = "drop", log=sys.stderr) -> "Lab":
        lab = cls(name)
        if (lab.dir / "state.json").exists():
            raise LabError(f"lab {name!r} already exists; `down --name {name}` first")
        for distro in distros:
            if distro not in images.RECIPES:
                raise LabError(f"unknown distro {distro!r}; known: {', '.join(images.RECIPES)}")
        if pypi_block not in ("drop", "refuse"):
            raise LabError(f"pypi_block must be drop or refuse, not {pypi_block!r}")
        started = time.monotonic()
        ensure_docker(log)
        # Docker's names are the machine's: a lab of this name made from another checkout
        # (another .lab directory) would collide, and tearing down a failed start would take
        # it down too. Refuse before making anything.
        owners = run(["docker", "network", "ls", "--filter", f"label={LABEL}={name}",
                      "--format", '{{.Label "' + ROOT_LABEL + '"}}'], check=False).stdout.split()
        if owners:
            raise LabError(f"a lab named {name!r} is already up from "
                           f"{', '.join(sorted(set(owners)))}; take it down there (python -m tests.lab down --name {name}) or "
                           "choose another name")
        tags = images.ensure(sorted(set(distros) | {"deb12"}), log)
        wheels = packages.ensure_wheels(log=log)
        packages.ensure_bootstrap_wheels(log=log)
        lab.dir.mkdir(parents=True)
        lab.state = {"name": name, "created": time.time(), "pids": {}, "hosts": [],
                     "pypi_block": pypi_block, "wheels": str(wheels)}
        lab.save()
        try:
            lab._make_network()
            lab._lock_network()
            lab._make_secrets()
            lab._start_firewall(tags["deb12"], pypi_block)
            lab._start_services(log)
            lab._start_hosts(tags, distros, count)
            lab._collect_host_keys()
            lab._write_inventory()
        except BaseException:
            print(f"lab: bringing {name!r} up failed; tearing down what was made", file=log)
            lab.down(log=log)
            raise
        print(f"lab: {name!r} is up with {len(lab.hosts)} hosts in "
              f"{time.monotonic() - started:.0f}s", file=log)
        return lab

    def _make_network(self) -> None:
        run(["docker", "network", "create", "--internal", *self._labels(),
             "--opt", f"com.docker.network.bridge.name={self.bridge}", self.prefix])
        info = json.loads(run(["docker", "network", "inspect", self.prefix]).stdout)[0]
        config = info["IPAM"]["Config"][0]
        self.state.update(network=self.prefix, subnet=config["Subnet"],
                          gateway=config["Gateway"], bridge=self.bridge)
        self.save()

    def _labels(self) -> list[str]:
        return ["--label", f"{LABEL}={self.name}", "--label", f"{ROOT_LABEL}={STATE_ROOT}"]

    def _iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["iptables", "-w", *args], check=check)

    def _lock_network(self) -> None:
        """Docker's internal networks stop forwarding, but a container can still reach every
        address of the machine itself. Allow only the lab's own services on the gateway."""
        chain, bridge, gateway = self.chain, self.bridge, self.gateway
        self._iptables("-N", chain)
        self.state["chain"] = chain
        self.save()
        self._iptables("-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                       "-j", "ACCEPT")
        self._iptables("-A", chain, "-d", gateway, "-p", "tcp", "-m", "multiport", "--dports",
                       f"{FEED_PORT},{OTHER_PORT}", "-j", "ACCEPT")
        self._iptables("-A", chain, "-j", "DROP")
        self._iptables("-I", "INPUT", "-i", bridge, "-j", chain)

    def _make_secrets(self) -> None:
        secret_dir = self.dir / "secrets"
        secret_dir.mkdir(mode=0o700)
        token = "labpat" + secrets.token_hex(20)
        (secret_dir / "token").write_text(token + "\n")
        (secret_dir / "token").chmod(0o600)
        self.tokens_file.write_text(json.dumps(
            {"tokens": [{"token": token, "scopes": ["read", "write"]}]}, indent=2))
        self.tokens_file.chmod(0o600)
        (secret_dir / "blob-key").write_bytes(secrets.token_bytes(32))
        paths = pki.make(self.dir / "pki", [FEED_HOST, BLOB_HOST, OTHER_HOST], [self.gateway])
        hostfiles = self.dir / "hostfiles"
        hostfiles.mkdir()
        shutil.copy(paths["ca"], hostfiles / "ca.crt")
        # No DNS server: names resolve through /etc/hosts only, and a lookup of anything else
        # fails at once instead of waiting on Docker's embedded resolver.
        (hostfiles / "resolv.conf").write_text("# pipfeed lab: no DNS server\n"
                                               "options timeout:1 attempts:1\n")
        key = self.dir / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pipfeed-lab-{self.name}",
             "-f", str(key)])
        shutil.copy(key.with_suffix(".pub"), hostfiles / "authorized_keys")

    def _start_firewall(self, tag: str, mode: str) -> None:
        """A host of its own plays the corporate firewall that PyPI's names resolve to."""
        container = f"{self.prefix}-firewall"
        run(["docker", "run", "-d", "--name", container, "--hostname", "firewall",
             *self._labels(), "--network", self.prefix,
             "--volume", f"{self.dir / 'hostfiles' / 'resolv.conf'}:/etc/resolv.conf:ro",
             "--cap-add", "NET_ADMIN", "--entrypoint", "/bin/sleep", tag, "infinity"])
        ip = self._container_ip(container)
        self.state["firewall"] = {"container": container, "ip": ip}
        self.save()
        self.set_pypi_block(mode)

    def set_pypi_block(self, mode: str) -> None:
        """drop: connections to PyPI hang until the client gives up; refuse: they fail at once."""
        if mode not in ("drop", "refuse"):
            raise LabError(f"mode must be drop or refuse, not {mode!r}")
        container = self.state["firewall"]["container"]
        run(["docker", "exec", container, "iptables", "-F", "INPUT"])
        action = ["-j", "DROP"] if mode == "drop" else ["-p", "tcp", "-j", "REJECT",
                                                          "--reject-with", "tcp-reset"]
        run(["docker", "exec", container, "iptables", "-A", "INPUT", *action])
        self.state["pypi_block"] = mode
        self.save()

    def _container_ip(self, container: str) -> str:
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.prefix}").IPAddress}}}}'
        return run(["docker", "inspect", "-f", fmt, container]).stdout.strip()

    # ----- feed, blob and second index --------------------------------------------------
    def _spawn(self, key: str, cmd: list[str]) -> None:
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{key}.out", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=REPO_ROOT)
        self.state["pids"][key] = proc.pid
        self.save()

    def _start_services(self, log) -> None:
        feed_dir, other_dir = self.dir / "feed-packages", self.dir / "other-packages"
        packages.populate(feed_dir, other_dir, log=log)
        port = free_port()
        self.state["pypiserver_port"] = port
        self._spawn("pypiserver", [str(Path(sys.executable).with_name("pypi-server")), "run",
                                   "--host", "127.0.0.1", "--port", str(port),
                                   "--authenticate", ".", "--passwords", ".",
                                   "--disable-fallback", "--server", "auto", str(feed_dir)])
        wait_tcp("127.0.0.1", port, 30)
        self.start_feed()
        pki_dir = self.dir / "pki"
        self._spawn("recorder", [sys.executable, "-m", "tests.lab.feed", "recorder",
                                 "--listen", f"{self.gateway}:{OTHER_PORT}",
                                 "--cert", str(pki_dir / "server.crt"),
                                 "--key", str(pki_dir / "server.key"),
                                 "--root", str(other_dir),
                                 "--public-base", f"https://{OTHER_HOST}:{OTHER_PORT}",
                                 "--log", str(self.recorder_log)])
        wait_tcp(self.gateway, OTHER_PORT, 30)

    def start_feed(self) -> None:
        """Start the Azure-like front (feed and blob host); tests stop it to play an outage."""
        if self._alive(self.state["pids"].get("feed")):
            return
        pki_dir = self.dir / "pki"
        self._spawn("feed", [sys.executable, "-m", "tests.lab.feed", "feed",
                             "--listen", f"{self.gateway}:{FEED_PORT}",
                             "--cert", str(pki_dir / "server.crt"),
                             "--key", str(pki_dir / "server.key"),
                             "--upstream", f"http://127.0.0.1:{self.state['pypiserver_port']}",
                             "--org", ORG, "--feed", FEED,
                             "--public-base", f"https://{FEED_HOST}",
                             "--blob-base", f"https://{BLOB_HOST}",
                             "--tokens-file", str(self.tokens_file),
                             "--secret-file", str(self.dir / "secrets" / "blob-key"),
                             "--control-file", str(self.control_file),
                             "--access-log", str(self.access_log)])
        wait_tcp(self.gateway, FEED_PORT, 30)

    def stop_feed(self) -> None:
        self._stop_pid("feed")

    # ----- an upstream index, as PyPI is to the feed --------------------------------------
    @property
    def upstream_log(self) -> Path:
        return self.dir / "logs" / "upstream.jsonl"

    @property
    def upstream_url(self) -> str | None:
        port = self.state.get("upstream_port")
        return f"http://127.0.0.1:{port}/simple/" if port else None

    def start_upstream(self) -> str:
        """A plain index on loopback over the lab's cached wheels, for the controller to
        publish from instead of PyPI (no PyPI at test time). It is the recording index, so
        its log shows whether a client sent it credentials. `down` stops it with the rest."""
        if self._alive(self.state["pids"].get("upstream")):
            return self.upstream_url
        port = free_port()
        self.state["upstream_port"] = port
        self._spawn("upstream", [sys.executable, "-m", "tests.lab.feed", "recorder",
                                 "--listen", f"127.0.0.1:{port}", "--root", self.state["wheels"],
                                 "--public-base", f"http://127.0.0.1:{port}",
                                 "--log", str(self.upstream_log)])
        wait_tcp("127.0.0.1", port, 30)
        return self.upstream_url

    def stop_upstream(self) -> None:
        self._stop_pid("upstream")

    @staticmethod
    def _alive(pid: int | None) -> bool:
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _stop_pid(self, key: str, timeout: float = 10) -> None:
        pid = self.state.get("pids", {}).pop(key, None)
        self.save()
        if not self._alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def add_feed_packages(self, files) -> list[str]:
        """Copy more files into the feed's package directory (a benchmark's own package set);
        the feed serves them from its next request on. A file already there is kept as it is.
        Returns the names of the files added."""
        feed_dir = self.dir / "feed-packages"
        if not feed_dir.is_dir():
            raise LabError(f"lab {self.name!r} has no feed package directory ({feed_dir})")
        added = []
        for source in map(Path, files):
            target = feed_dir / source.name
            if target.exists():
                continue
            # Copy under a hidden name, then rename: the feed never lists a half-written file.
            partial = feed_dir / f".{source.name}.partial"
            shutil.copy2(source, partial)
            partial.rename(target)
            added.append(source.name)
        return added

    def control(self, **settings) -> None:
        """Change the feed's latency, bandwidth, blob URL lifetime or injected errors."""
        from .feed import write_control
        current = json.loads(self.control_file.read_text()) if self.control_file.exists() else {}
        current.update(settings)
        write_control(self.control_file, **current)

    # ----- an Azure IMDS stand-in (tests/lab/imds.py) -------------------------------------
    @property
    def imds_log(self) -> Path:
        return self.dir / "logs" / "imds.jsonl"

    @property
    def imds_control_file(self) -> Path:
        return self.dir / "imds-control.json"

    def start_imds(self, **settings) -> None:
        """Make the hosts Azure VMs with a managed identity: the IMDS stand-in on the gateway
        (IMDS_PORT), which every host, and every host added while it is on, reaches as
        http://169.254.169.254:80. Its control file starts afresh: defaults and `settings`
        (as for imds_control). Tokens it mints go into the feed's tokens file."""
        from . import imds
        imds.write_control(self.imds_control_file, **settings)
        if not self._alive(self.state["pids"].get("imds")):
            self._spawn("imds", [sys.executable, "-m", "tests.lab.imds",
                                 "--listen", f"{self.gateway}:{IMDS_PORT}",
                                 "--control", str(self.imds_control_file),
                                 "--tokens", str(self.tokens_file),
                                 "--log", str(self.imds_log)])
            if imds.read_control(self.imds_control_file)["down"] not in (True, "refuse"):
                wait_tcp(self.gateway, IMDS_PORT, 30)
        self.state["imds"] = {"port": IMDS_PORT}
        self.save()
        self._imds_allow(True)
        for host in self.hosts:
            self._imds_redirect(host.container, True)

    def stop_imds(self) -> None:
        """The hosts are no Azure VMs again: 169.254.169.254 leads nowhere (connections time
        out), and the service stops. Tokens it minted stay in the tokens file until they
        expire."""
        for host in self.hosts:
            self._imds_redirect(host.container, False)
        self._imds_allow(False)
        self._stop_pid("imds")
        self.state.pop("imds", None)
        self.save()

    def imds_control(self, **settings) -> None:
        """Change the IMDS stand-in's token lifetime (ttl), identities, queued failures (fail,
        retry_after), reachability (down) or delay (delay_ms); see tests/lab/imds.py."""
        from . import imds
        imds.update_control(self.imds_control_file, **settings)

    def _imds_allow(self, on: bool) -> None:
        """The lab's firewall chain lets the hosts reach IMDS_PORT on the gateway (or not)."""
        rule = [self.chain, "-d", self.gateway, "-p", "tcp", "--dport", str(IMDS_PORT),
                "-j", "ACCEPT"]
        if on:
            if self._iptables("-C", *rule, check=False).returncode != 0:
                self._iptables("-I", rule[0], "1", *rule[1:])
        else:
            while self._iptables("-D", *rule, check=False).returncode == 0:
                pass

    def _imds_redirect(self, container: str, on: bool) -> None:
        """In the host's own network namespace (entered from this machine: the containers are
        unprivileged), 169.254.169.254:80 is DNATed to the stand-in on the gateway."""
        pid = run(["docker", "inspect", "-f", "{{.State.Pid}}", container],
                  check=False).stdout.strip()
        if not pid.isdigit() or pid == "0":
            if on:
                raise LabError(f"{container} is not running; cannot point it at IMDS")
            return
        from .imds import IMDS_ADDRESS
        rule = ["OUTPUT", "-d", f"{IMDS_ADDRESS}/32", "-p", "tcp", "--dport", "80",
                "-j", "DNAT", "--to-destination", f"{self.gateway}:{IMDS_PORT}"]
        nat = ["nsenter", "-t", pid, "-n", "iptables", "-w", "-t", "nat"]
        if on:
            if run([*nat, "-C", *rule], check=False).returncode != 0:
                run([*nat, "-A", *rule])
        else:
            while run([*nat, "-D", *rule], check=False).returncode == 0:
                pass

    # ----- hosts ------------------------------------------------------------------------
    def _start_hosts(self, tags: dict[str, str], distros, count: int, first: int = 1) -> None:
        firewall_ip = self.state["firewall"]["ip"]
        add_hosts = [f"{n}:{self.gateway}" for n in (FEED_HOST, BLOB_HOST, OTHER_HOST)]
        add_hosts += [f"{n}:{firewall_ip}" for n in PYPI_HOSTS]
        for distro in distros:
            for index in range(first, first + count):
                name = f"{distro}-{index}"
                container = f"{self.prefix}-{name}"
                cmd = ["docker", "run", "-d", "--init", "--name", container, "--hostname", name,
                       *self._labels(), "--network", self.prefix,
                       "--volume", f"{self.dir / 'hostfiles'}:/run/lab:ro",
                       "--volume", f"{self.dir / 'hostfiles' / 'resolv.conf'}:/etc/resolv.conf:ro"]
                for entry in add_hosts:
                    cmd += ["--add-host", entry]
                run(cmd + [tags[distro]])
                if "imds" in self.state:
                    self._imds_redirect(container, True)
                self.state["hosts"].append({"name": name, "distro": distro,
                                            "python": images.RECIPES[distro].python,
                                            "container": container,
                                            "ip": self._container_ip(container)})
                self.save()

    def add_host(self, distro: str, log=sys.stderr) -> Host:
        """One more host in a running lab (a fresh machine for a test), in the inventory."""
        return self.add_hosts([distro], 1, log=log)[0]

    def add_hosts(self, distros, count: int = 1, log=sys.stderr) -> list[Host]:
        """`count` more hosts of each distro in a running lab (a fleet that grows, for the
        fleet benchmark), each under the lowest free name of its distro, in the inventory. The
        host keys are collected and the inventory written once, after all of them started."""
        for distro in distros:
            if distro not in images.RECIPES:
                raise LabError(f"unknown distro {distro!r}; known: {', '.join(images.RECIPES)}")
        if count < 1:
            raise LabError(f"count must be 1 or more, not {count}")
        tags = images.ensure(sorted(set(distros)), log)
        added = []
        for distro in distros:
            for _ in range(count):
                taken = {h.name for h in self.hosts}
                index = next(i for i in range(1, 1000) if f"{distro}-{i}" not in taken)
                self._start_hosts(tags, [distro], 1, first=index)
                added.append(f"{distro}-{index}")
        self._collect_host_keys()
        self._write_inventory()
        return [self.host(name) for name in added]

    def remove_host(self, name: str) -> None:
        """Remove a host that add_host() made, and drop it from the inventory."""
        host = self.host(name)
        run(["docker", "rm", "-f", host.container], check=False)
        self.__dict__.get("_testinfra", {}).pop(name, None)
        self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != name]
        self.save()
        self._collect_host_keys()
        self._write_inventory()

    def _collect_host_keys(self, timeout: float = 60) -> None:
        """Trust each host's own fresh key, so SSH keeps strict host key checking on."""
        lines = []
        for host in self.hosts:
            wait_tcp(host.ip, 22, timeout)
            deadline = time.monotonic() + timeout
            while True:
                scan = run(["ssh-keyscan", "-T", "5", "-t", "ed25519", host.ip], check=False)
                keys = [line for line in scan.stdout.splitlines() if line and line[0] != "#"]
                if keys:
                    lines += keys
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"no SSH host key from {host.name} ({host.ip})")
                time.sleep(0.5)
        (self.dir / "known_hosts").write_text("\n".join(lines) + "\n")

    def _write_inventory(self) -> None:
        requirements = self.dir / "wheelhouse-requirements.txt"
        requirements.write_text(
            "# The lab's wheelhouse (tests/lab/packages.py): markers are evaluated per host.\n"
            + "\n".join(packages.wheelhouse_set()) + "\n")
        known, key = self.dir / "known_hosts", self.dir / "id_ed25519"
        ssh_args = (f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes -o ControlMaster=auto -o ControlPersist=60s")
        groups: dict[str, dict] = {}
        for host in self.hosts:
            group = "debian" + host.distro[3:]
            groups.setdefault(group, {"hosts": {}})["hosts"][host.name] = {
                "ansible_host": host.ip}
        inventory = {"all": {
            "children": {"lab": {"children": groups}},
            "vars": {
                "ansible_user": ADMIN_USER,
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                "lab_name": self.name,
                "lab_feed_index_url": self.feed_url,
                "lab_feed_upload_url": self.upload_url,
                "lab_feed_controller_index_url": self.controller_feed_url,
                "lab_ca_file_controller": str(self.ca_file),
                "lab_feed_token_file": str(self.dir / "secrets" / "token"),
                "lab_ca_file": HOST_CA_PATH,
                "lab_other_index_url": self.other_url,
                # The project's own settings, as a user's group_vars would set them: the lab
                # feed, and mode primary because PyPI is blocked. The token is read from its
                # file when needed, so it is never written into the inventory.
                "pipfeed_feeds": [{"name": FEED, "url": self.feed_url,
                                   "token_var": "lab_feed_token"}],
                "lab_feed_token": "{{ lookup('ansible.builtin.file', lab_feed_token_file) }}",
                "pipfeed_mode": "primary",
                # The credential helper, for root and the lab's admin account.
                "pipfeed_credential_helper": True,
                "pipfeed_credential_helper_users": [ADMIN_USER],
                # A wheelhouse of a pinned closure, built from the feed as the controller
                # reaches it (by address: the name feed.lab.test resolves on the hosts only).
                "pipfeed_wheelhouse": True,
                "pipfeed_wheelhouse_requirements": str(requirements),
                "pipfeed_wheelhouse_index_url": self.controller_feed_url,
                "pipfeed_wheelhouse_controller_cert": str(self.ca_file),
                # Where the controller gets uv's binary when a test turns
                # pipfeed_config_uv_install on (hosts without pip).
                "pipfeed_config_uv_index_url": self.controller_feed_url,
                "pipfeed_config_uv_controller_cert": str(self.ca_file),
            }}}
        self.inventory.parent.mkdir(exist_ok=True)
        # JSON is YAML; it keeps this writer free of a YAML dependency.
        self.inventory.write_text(json.dumps(inventory, indent=2) + "\n")
        config = []
        for host in self.hosts:
            config += [f"Host {host.name} {host.ip}", f"  HostName {host.ip}",
                       f"  User {ADMIN_USER}", f"  IdentityFile {key}", "  IdentitiesOnly yes",
                       f"  UserKnownHostsFile {known}", "  StrictHostKeyChecking yes", ""]
        self.ssh_config.write_text("\n".join(config))

    # ----- use --------------------------------------------------------------------------
    def ssh(self, host: str, command: str, timeout: float = 120,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run a shell command on a host over SSH, as the admin user (sudo for root)."""
        return run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", host, command],
                   check=check, timeout=timeout, stdin=subprocess.DEVNULL)

    def testinfra(self, host: str):
        """A testinfra host over paramiko, checking the host's key strictly (testinfra's own
        paramiko backend only warns about unknown keys). Connections are kept per lab."""
        cache = self.__dict__.setdefault("_testinfra", {})
        if host not in cache:
            import paramiko
            import testinfra
            address = self.host(host).ip
            client = paramiko.SSHClient()
            client.load_host_keys(str(self.dir / "known_hosts"))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(address, username=ADMIN_USER, timeout=30, allow_agent=False,
                           look_for_keys=False, key_filename=str(self.dir / "id_ed25519"))
            infra = testinfra.get_host(f"paramiko://{ADMIN_USER}@{address}")
            infra.backend.client = client
            cache[host] = infra
        return cache[host]

    def read_log(self, path: Path, since: int = 0) -> list[dict]:
        if not path.exists():
            return []
        with open(path, "rb") as handle:
            handle.seek(since)
            return [json.loads(line) for line in handle if line.strip()]

    def log_mark(self, path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def status(self) -> dict:
        containers = {}
        if self.state.get("network"):
            listing = run(["docker", "ps", "-a", "--filter", f"label={LABEL}={self.name}",
                           "--format", "{{.Names}}\t{{.Status}}"], check=False).stdout
            containers = dict(line.split("\t", 1) for line in listing.splitlines() if line)
        return {
            "name": self.name,
            "state_dir": str(self.dir),
            "inventory": str(self.inventory),
            "feed": self.feed_url if "gateway" in self.state else None,
            "gateway": self.state.get("gateway"),
            "pypi_block": self.state.get("pypi_block"),
            "processes": {k: {"pid": v, "alive": self._alive(v)}
                          for k, v in self.state.get("pids", {}).items()},
            "hosts": [{"name": h.name, "ip": h.ip, "python": h.python,
                       "container": containers.get(h.container, "missing")}
                      for h in self.hosts],
        }

    # ----- tear down --------------------------------------------------------------------
    def down(self, log=sys.stderr) -> None:
        """Remove everything this lab made; safe to call on a half-made or half-removed lab."""
        for key in list(self.state.get("pids", {})):
            self._stop_pid(key)
        listing = run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={self.name}"],
                      check=False).stdout.split()
        if listing:
            run(["docker", "rm", "-f", *listing], check=False)
        nets = run(["docker", "network", "ls", "-q", "--filter", f"label={LABEL}={self.name}"],
                   check=False).stdout.split()
        for net in nets:
            run(["docker", "network", "rm", net], check=False)
        while self._iptables("-D", "INPUT", "-i", self.bridge, "-j", self.chain,
                             check=False).returncode == 0:
            pass
        self._iptables("-F", self.chain, check=False)
        self._iptables("-X", self.chain, check=False)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        print(f"lab: {self.name!r} is down", file=log)


@contextlib.contextmanager
def reused_or_running(env_var: str, **kwargs) -> Iterator[Lab]:
    """The lab that the environment variable names (already up, and left up), or a fresh one
    for the length of the with-block (kwargs as for Lab.up)."""
    name = os.environ.get(env_var)
    if name:
        yield Lab.load(name)
        return
    with running(**kwargs) as lab:
        yield lab


@contextlib.contextmanager
def running(name: str | None = None, **kwargs) -> Iterator[Lab]:
    """A lab for the length of a with-block (a fresh name unless one is given)."""
    lab = Lab.up(name or "t" + secrets.token_hex(4), **kwargs)
    try:
        yield lab
    finally:
        lab.down()

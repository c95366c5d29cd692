"""Command line of the lab: `python -m tests.lab up|down|status|inventory|demo|upstream|imds`."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

from .lab import REPO_ROOT, Lab, LabError


def _print_status(lab: Lab) -> None:
    status = lab.status()
    print(f"lab {status['name']}: feed {status['feed']} (on {status['gateway']}), "
          f"PyPI blocked by {status['pypi_block']}")
    for key, proc in status["processes"].items():
        print(f"  {key:<11} pid {proc['pid']:<8} {'running' if proc['alive'] else 'DEAD'}")
    for host in status["hosts"]:
        print(f"  {host['name']:<11} {host['ip']:<15} python {host['python']:<5} "
              f"{host['container']}")
    print(f"  inventory   {status['inventory']}")


# What a user of a configured host types, as the lab's admin account (no sudo, no token, no
# prompt): a package that exists only on the feed, then the wheelhouse's set with no index.
DEMO_INSTALLS = (
    ("pip install lab-feedonly",
     "rm -rf /tmp/demo-venv && python3 -m venv /tmp/demo-venv && "
     "/tmp/demo-venv/bin/pip install -q --disable-pip-version-check lab-feedonly"),
    ("pip install --no-index -r /var/lib/pipfeed/wheelhouse/requirements.txt",
     "/tmp/demo-venv/bin/pip install -q --disable-pip-version-check --no-index "
     "-r /var/lib/pipfeed/wheelhouse/requirements.txt && "
     "/tmp/demo-venv/bin/python -c 'import cryptography, numpy, pydantic, requests'"),
)


def _demo_installs(lab: Lab) -> bool:
    """Each host installs from the feed and from its wheelhouse, in a fresh venv."""
    failed = False
    print("\nOn each host, as an ordinary user in a fresh venv:", flush=True)
    for label, command in DEMO_INSTALLS:
        for host in lab.hosts:
            started = time.monotonic()
            done = lab.ssh(host.name, f"timeout 300 sh -c {shlex.quote(command)}", timeout=320)
            took = time.monotonic() - started
            outcome = "ok" if done.returncode == 0 else "FAILED: " + (
                (done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
            print(f"  {host.name:<8} $ {label}  ->  {outcome} ({took:.1f}s)", flush=True)
            failed = failed or done.returncode != 0
    return not failed


def _demo_verify(lab: Lab, env: dict) -> bool:
    """playbooks/verify.yml after site.yml: its one line per host, and whether all passed."""
    command = [str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(lab.inventory),
               str(REPO_ROOT / "playbooks" / "verify.yml")]
    print(f"\n$ ansible-playbook -i {lab.inventory} playbooks/verify.yml", flush=True)
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    lines = [line.strip() for line in done.stdout.splitlines()
             if re.match(r"^\s+\S+  (UN)?HEALTHY", line)]
    for line in lines or done.stdout.strip().splitlines()[-20:]:
        print(f"  {line}", flush=True)
    print(f"  verify.yml exited {done.returncode}", flush=True)
    return done.returncode == 0


def _demo(args) -> int:
    """Bring the demo lab up (or reuse it), run site.yml against it, and say what to try."""
    try:
        lab = Lab.load(args.name)
        print(f"lab: reusing the running lab {args.name!r}", file=sys.stderr)
    except LabError:
        lab = Lab.up(args.name, distros=args.distros.split(","), count=args.count)
    _print_status(lab)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"))
    playbook = [str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(lab.inventory),
                str(REPO_ROOT / "site.yml")]
    print("\n$ ansible-playbook -i", lab.inventory, "site.yml", flush=True)
    result = subprocess.run(playbook, env=env, cwd=REPO_ROOT)
    healthy = result.returncode == 0 and _demo_verify(lab, env)
    installed = result.returncode == 0 and _demo_installs(lab)
    print(f"\nThe lab stays up for you to explore:\n"
          f"  ssh -F {lab.ssh_config} {lab.hosts[0].name}\n"
          f"  .venv/bin/python -m tests.lab status --name {lab.name}\n"
          f"  make lab-down    # removes every container, network, process and file it made")
    return result.returncode or (0 if installed and healthy else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("up", "demo"):
        p = sub.add_parser(command)
        p.add_argument("--name", default="demo")
        p.add_argument("--distros", default="deb11,deb12,deb13",
                       help="comma-separated: deb11, deb12, deb13")
        p.add_argument("--count", type=int, default=1, help="hosts per distro")
        p.add_argument("--pypi", choices=("drop", "refuse"), default="drop",
                       help="how the firewall treats PyPI (default: drop, like most firewalls)")
    p = sub.add_parser("down")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--name", default="demo")
    group.add_argument("--all", action="store_true", help="every lab made from this checkout")
    for command in ("status", "inventory", "upstream"):
        sub.add_parser(command).add_argument("--name", default="demo")
    p = sub.add_parser("imds", help="turn the IMDS stand-in (169.254.169.254) on or off")
    p.add_argument("--name", default="demo")
    p.add_argument("state", choices=("on", "off"))
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            lab = Lab.up(args.name, distros=args.distros.split(","), count=args.count,
                         pypi_block=args.pypi)
            _print_status(lab)
        elif args.command == "demo":
            return _demo(args)
        elif args.command == "down":
            names = Lab.names() if args.all else [args.name]
            for name in names:
                try:
                    lab = Lab.load(name)
                except LabError:
                    lab = Lab(name)  # remains without a state dir: remove by label
                lab.down()
        elif args.command == "status":
            lab = Lab.load(args.name)
            _print_status(lab)
            return 0 if all(p["alive"] for p in lab.status()["processes"].values()) else 1
        elif args.command == "inventory":
            print(Lab.load(args.name).inventory.read_text(), end="")
        elif args.command == "upstream":
            print(Lab.load(args.name).start_upstream())
        elif args.command == "imds":
            lab = Lab.load(args.name)
            if args.state == "on":
                lab.start_imds()
                print(f"IMDS is on: every host of {lab.name!r} reaches it as "
                      "http://169.254.169.254/metadata/identity/oauth2/token "
                      f"(log: {lab.imds_log})")
            else:
                lab.stop_imds()
                print(f"IMDS is off: the hosts of {lab.name!r} are no Azure VMs")
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

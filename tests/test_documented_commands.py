"""Every command the documentation prints works as printed.

The commands are read from the fenced code blocks of README.md and every role's README, and
from the comments of site.yml, playbooks/*.yml and the sample inventory. Each ansible-playbook,
ansible-inventory, ansible-doc and ansible-galaxy command runs, exactly as written, in a fresh
copy of the project where `cp -r inventory/sample inventory/prod` (what the README tells users to
do first) has been run, so `-i inventory/prod` and `-i inventory/prod/hosts.yml` read the sample.
ansible-playbook gets `--list-hosts --list-tags` added: the playbook, its roles and the inventory
are loaded, `--limit` and `--tags` must name hosts and tags that exist, and no host is
contacted. Every other command (make demo, the lab, the benchmarks, pip on a host) needs a lab,
a cloud or the network: each is listed in EXCEPTIONS with the reason, and a command that is in
neither list fails the test, as does an exception that no longer matches any documented
command.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ANSIBLE = ("ansible-playbook", "ansible-inventory", "ansible-doc", "ansible-galaxy")
SHELL_BLOCKS = {"sh", "bash", "shell", "console"}
# What the copy of the project leaves out: the developer's own state and tools.
NOT_COPIED = {".git", ".venv", ".lab", ".cache", ".ansible", ".pytest_cache", "reports", "build", "dist"}

# Documented commands that this test does not run, each with the reason (a regular expression
# matched against the start of the command as written, continuation lines joined).
EXCEPTIONS = {
    r"make (demo|test|lab-up|lab-status|lab-down|bench)\b":
        "brings up a lab (Docker, the machine's firewall) and runs the whole suite or the demo on it; "
        "`make test` is what runs this test",
    r"(PIPFEED_LAB=\S+ )?\.venv/bin/python -m pytest\b":
        "the test suite itself; -m integration needs a lab",
    r"(\.venv/bin/python )?bench/": "a benchmark: it brings up a lab of its own and runs for minutes",
    r"read -rs PIPFEED_FEED_TOKEN": "reads the user's token from the terminal",
    r"(uv )?pip install\b": "runs on a configured host of the fleet, not on the controller",
    r"az vm create\b": "creates a VM in the user's Azure subscription",
    r"ansible-playbook -i \.lab/demo/": "a transcript of `make demo`: the lab's inventory exists only while "
                                        "a lab is up (tests/integration/test_site.py runs these playbooks "
                                        "on the lab)",
}
# Documented commands that this test runs itself, before the others, as part of the set-up.
SETUP = ("cp -r inventory/sample inventory/prod",)


@dataclass(frozen=True)
class Command:
    text: str
    where: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with their backslash continuations joined, each with the number of its first line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((number, line))
    if pending is not None:
        out.append(pending)
    return out


def _is_ansible(text: str) -> bool:
    return text.split(" ", 1)[0] in ANSIBLE


def markdown_commands(path: Path) -> list[Command]:
    """The commands of a Markdown file's fenced blocks: every line of a shell block, and in any
    other block a line that starts with `$ ` (a transcript) or with an ansible command."""
    commands, block, language = [], None, ""
    relative = path.relative_to(ROOT)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"\s*```(\S*)", line)
        if fence:
            if block is None:
                block, language = [], fence.group(1).lower()
            else:
                for first, text in _joined(block):
                    stripped = text.strip()
                    prompt = stripped.startswith("$ ")
                    stripped = stripped[2:].strip() if prompt else stripped
                    if not stripped or stripped.startswith("#"):
                        continue
                    if language in SHELL_BLOCKS or prompt or _is_ansible(stripped):
                        commands.append(Command(stripped, f"{relative}:{first}"))
                block = None
            continue
        if block is not None:
            block.append((number, line))
    return commands


def yaml_comment_commands(path: Path) -> list[Command]:
    """The ansible commands in a YAML file's comments (`#   ansible-playbook ...`)."""
    comments = [(n, m.group(1)) for n, line in enumerate(path.read_text().splitlines(), 1)
                if (m := re.match(r"\s*#\s?(.*)$", line))]
    relative = path.relative_to(ROOT)
    return [Command(text.strip(), f"{relative}:{n}") for n, text in _joined(comments)
            if _is_ansible(text.strip())]


def documented_commands() -> list[Command]:
    commands = []
    for path in [ROOT / "README.md", *sorted(ROOT.glob("roles/*/README.md"))]:
        commands += markdown_commands(path)
    for path in [ROOT / "site.yml", *sorted(ROOT.glob("playbooks/*.yml")),
                 *sorted((ROOT / "inventory" / "sample").rglob("*.yml"))]:
        commands += yaml_comment_commands(path)
    return commands


def exception_for(command: Command) -> str | None:
    for pattern in EXCEPTIONS:
        if re.match(pattern, command.text):
            return pattern
    return None


def runnable() -> list[Command]:
    """The ansible commands to run, each once (the first place that prints it names it)."""
    unique: dict[str, Command] = {}
    for command in documented_commands():
        if _is_ansible(command.text) and exception_for(command) is None:
            unique.setdefault(" ".join(command.argv), command)
    return list(unique.values())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh copy of the project (its collections/ link then points at the copy), after the
    README's first step."""
    copy = tmp_path_factory.mktemp("project") / "pipfeed"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in NOT_COPIED or entry.name.endswith(".tar.gz"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, copy / entry.name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(entry, copy / entry.name, follow_symlinks=False)
    for text in SETUP:
        subprocess.run(shlex.split(text), cwd=copy, check=True, timeout=60)
    return copy


def _environment(project: Path) -> dict[str, str]:
    scratch = project.parent
    return dict(os.environ,
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                ANSIBLE_CONFIG=str(project / "ansible.cfg"),
                ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCAL_TEMP=str(scratch / "ansible-tmp"),
                # ansible-galaxy installs into the scratch directory, never into ~/.ansible, and
                # cannot reach a Galaxy server: the collection installs offline, as documented.
                ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/",
                PIPFEED_FEED_TOKEN="documented-commands-test")


def _run(command: Command, project: Path) -> tuple[Command, list[str], subprocess.CompletedProcess]:
    argv = command.argv
    env = _environment(project)
    if argv[0] == "ansible-playbook":
        argv = [*argv, "--list-hosts", "--list-tags"]
    elif argv[0] == "ansible-galaxy":
        env["ANSIBLE_COLLECTIONS_PATH"] = str(project.parent / "installed-collections")
        env["ANSIBLE_ROLES_PATH"] = str(project.parent / "installed-roles")
    argv = [str(BIN / argv[0]), *argv[1:]]
    return command, argv, subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True,
                                         timeout=300)


def _option_values(argv: list[str], name: str) -> list[str]:
    values = []
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            values.append(argv[index + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return [v for value in values for v in value.split(",") if v]


def _problems(command: Command, argv: list[str], result: subprocess.CompletedProcess) -> list[str]:
    shown = f"{command.where}: {command.text}"
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return [f"{shown}\n  exited {result.returncode}:\n{output.strip()}"]
    problems = []
    if "Could not match supplied host pattern" in output or "provided hosts list is empty" in output:
        problems.append(f"{shown}\n  matches no host of the sample inventory:\n{output.strip()}")
    if argv[0].endswith("ansible-playbook"):
        if re.search(r"hosts \(0\)", result.stdout):
            problems.append(f"{shown}\n  a play has no host:\n{result.stdout.strip()}")
        listed = set()
        for tags in re.findall(r"TAGS: \[([^\]]*)\]", result.stdout):
            listed |= {t.strip() for t in tags.split(",") if t.strip()}
        for option in ("--tags", "-t", "--skip-tags"):
            for tag in _option_values(command.argv, option):
                if tag not in listed and tag not in ("all", "tagged", "untagged"):
                    problems.append(f"{shown}\n  {option} {tag}: no such tag (tags: {sorted(listed)})")
    elif not result.stdout.strip():
        problems.append(f"{shown}\n  printed nothing")
    return problems


def test_the_documentation_prints_commands_to_check():
    commands = documented_commands()
    assert len([c for c in commands if c.text.startswith("ansible-playbook")]) >= 10, \
        "the command extraction found almost no ansible-playbook command: is it broken?"


def test_every_other_documented_command_is_a_listed_exception():
    unlisted = [f"{c.where}: {c.text}" for c in documented_commands()
                if not _is_ansible(c.text) and " ".join(c.argv) not in SETUP and exception_for(c) is None]
    assert unlisted == [], ("documented commands this test neither runs nor lists in EXCEPTIONS "
                            "(with the reason it cannot run them):\n" + "\n".join(unlisted))


def test_the_set_up_this_test_does_is_what_the_readme_prints():
    printed = {" ".join(c.argv) for c in documented_commands()}
    assert [text for text in SETUP if text not in printed] == []


def test_every_exception_still_matches_a_documented_command():
    commands = documented_commands()
    stale = [pattern for pattern in EXCEPTIONS
             if not any(re.match(pattern, c.text) for c in commands)]
    assert stale == [], f"EXCEPTIONS that match no documented command any more: {stale}"


def test_every_documented_ansible_command_works_as_printed(project):
    commands = runnable()
    # ansible-galaxy commands may depend on each other (build, then install): in order, alone.
    galaxy = [c for c in commands if c.argv[0] == "ansible-galaxy"]
    others = [c for c in commands if c.argv[0] != "ansible-galaxy"]
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda c: _run(c, project), others))
    results += [_run(c, project) for c in galaxy]
    problems = [p for command, argv, result in results for p in _problems(command, argv, result)]
    assert problems == [], "\n\n".join(problems)

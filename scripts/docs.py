#!/usr/bin/env python3
"""Render each role's variables table from its meta/argument_specs.yml into the READMEs.

The argument specs are the one source of a role's variables: Ansible validates a role's input
against them and ansible-doc prints them (ansible-doc -t role pipfeed.feed.<role>). A table
written by hand beside them drifts; this script writes it instead, between two marker comments
that any README may hold, once per role it documents:

    <!-- BEGIN pipfeed_config variables -->
    (generated: do not edit; edit roles/pipfeed_config/meta/argument_specs.yml, then run this)
    <!-- END pipfeed_config variables -->

Every role's own README must hold its block; README.md holds pipfeed_common's (the shared
settings). `scripts/docs.py` rewrites the blocks that are out of date; `scripts/docs.py --check`
changes nothing and exits 1 naming them (tests/test_docs.py runs it). Standard library and
PyYAML only, so it runs with the project's virtualenv and nothing else.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "roles"
BLOCK = re.compile(r"(<!-- BEGIN (?P<role>[\w.]+) variables -->\n)(?P<body>.*?)(<!-- END (?P=role) variables -->)",
                   re.S)
MARKER = re.compile(r"<!-- (BEGIN|END) ([\w.]+) variables -->")
# Ansible's documentation markup: C(code), I(italic), B(bold), U(url), L(text,url), M(module),
# O(option), V(value), E(environment variable), P(plugin).
MARKUP = re.compile(r"\b([CIBUMOVEPL])\(([^()]*)\)")


class DocsError(Exception):
    """A README or a spec the script cannot render: the message names the file and the fix."""


def roles() -> list[str]:
    """Every role with an argument spec, in name order."""
    return sorted(p.parent.parent.name for p in ROLES.glob("*/meta/argument_specs.yml"))


def load_spec(role: str) -> dict:
    path = ROLES / role / "meta" / "argument_specs.yml"
    specs = (yaml.safe_load(path.read_text()) or {}).get("argument_specs") or {}
    if not specs:
        raise DocsError(f"{path.relative_to(ROOT)} has no argument_specs")
    return specs


def _markup(text: str) -> str:
    """Ansible markup as Markdown; plain text keeps '<' and '>' from turning into HTML."""
    out, last = [], 0
    for match in MARKUP.finditer(text):
        out.append(_plain(text[last:match.start()]))
        kind, value = match.groups()
        if kind == "I":
            out.append(f"*{_plain(value)}*")
        elif kind == "B":
            out.append(f"**{_plain(value)}**")
        elif kind == "U":
            out.append(f"<{value}>")
        elif kind == "L":
            label, _, url = value.partition(",")
            out.append(f"[{_plain(label.strip())}]({url.strip()})")
        else:
            out.append(_code(value))
        last = match.end()
    out.append(_plain(text[last:]))
    return "".join(out)


def _plain(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _code(value: str) -> str:
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _cell(text: str) -> str:
    """A table cell: one line, and '|' escaped (GitHub's tables split on it, code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _description(option: dict) -> str:
    description = option.get("description") or []
    if isinstance(description, str):
        description = [description]
    parts = [_markup(" ".join(str(p).split())) for p in description]
    for key, words in (("mutually_exclusive", "At most one of"), ("required_one_of", "At least one of"),
                       ("required_together", "All or none of")):
        for group in option.get(key) or []:
            parts.append(f"{words} " + ", ".join(_code(name) for name in group) + ".")
    return "<br>".join(parts)


def _type(option: dict) -> str:
    kind = option.get("type", "str")
    if option.get("elements"):
        kind = f"{kind} of {option['elements']}"
    choices = option.get("choices")
    if choices:
        kind += ": " + ", ".join(_code(_scalar(c)) for c in choices)
    return kind


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    if value == "":
        return '""'
    return str(value)


def _default(option: dict) -> str:
    return _code(_scalar(option["default"])) if "default" in option else ""


def _rows(options: dict, prefix: str = "") -> list[list[str]]:
    rows = []
    for name, option in options.items():
        option = option or {}
        path = f"{prefix}{name}"
        rows.append([_code(path), _type(option), _default(option), "yes" if option.get("required") else "",
                     _description(option)])
        if option.get("options"):
            inner = f"{path}[]." if option.get("type") == "list" else f"{path}."
            rows += _rows(option["options"], inner)
    return rows


def render(role: str) -> str:
    """The body of a role's block: a note on entry points, then one row per option (nested
    options as feed[].name), in the spec's order."""
    specs = load_spec(role)
    merged: dict = {}
    where: dict[str, list[str]] = {}
    for entry, spec in specs.items():
        for name, option in (spec.get("options") or {}).items():
            merged.setdefault(name, option)
            where.setdefault(name, []).append(entry)
    entries = list(specs)
    lines = [f"<!-- Generated by scripts/docs.py from roles/{role}/meta/argument_specs.yml: edit the spec,"
             " then run scripts/docs.py. -->"]
    if len(entries) > 1:
        names = ", ".join(f"`{e}`" for e in entries)
        lines.append("")
        lines.append(f"Entry points {names}; each takes every option below unless its description says"
                     " otherwise.")
    lines += ["", "| variable | type | default | required | description |", "| --- | --- | --- | --- | --- |"]
    if not merged:
        lines.append("| (none) | | | | |")
    for name, option in merged.items():
        if len(entries) > 1 and len(where[name]) < len(entries):
            option = dict(option)
            only = ", ".join(f"C({e})" for e in where[name])
            description = option.get("description") or []
            description = [description] if isinstance(description, str) else list(description)
            option["description"] = description + [f"Entry points: {only} only."]
        for row in _rows({name: option}):
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    lines.append("")
    return "\n".join(lines) + "\n"


def targets() -> list[Path]:
    """The files that may hold blocks: the top README and every role's README."""
    return [ROOT / "README.md"] + sorted(ROLES.glob("*/README.md"))


def update(path: Path, known: list[str], rendered: dict[str, str]) -> tuple[str, str, list[str]]:
    """(old text, new text, roles whose blocks it holds)."""
    text = path.read_text()
    name = path.relative_to(ROOT)
    begins = [m.group(2) for m in MARKER.finditer(text) if m.group(1) == "BEGIN"]
    ends = [m.group(2) for m in MARKER.finditer(text) if m.group(1) == "END"]
    found = [m.group("role") for m in BLOCK.finditer(text)]
    if sorted(begins) != sorted(found) or sorted(ends) != sorted(found):
        raise DocsError(f"{name}: a BEGIN marker without its END (or the other way round); each block is "
                        "'<!-- BEGIN <role> variables -->' ... '<!-- END <role> variables -->'")
    for role in found:
        if role not in known:
            raise DocsError(f"{name}: a variables block for '{role}', which is no role with "
                            f"meta/argument_specs.yml (roles: {', '.join(known)})")
    if len(set(found)) != len(found):
        raise DocsError(f"{name}: a role's variables block appears twice")
    new = BLOCK.sub(lambda m: m.group(1) + rendered[m.group("role")] + m.group(4), text)
    return text, new, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming every block that is out of date")
    args = parser.parse_args(argv)
    try:
        known = roles()
        rendered = {role: render(role) for role in known}
        stale, holders = [], {}
        for path in targets():
            old, new, found = update(path, known, rendered)
            for role in found:
                holders.setdefault(role, []).append(path)
            if old != new:
                stale.append(path)
                if not args.check:
                    path.write_text(new)
        missing = [role for role in known if (ROLES / role / "README.md") not in holders.get(role, [])]
    except DocsError as error:
        print(f"docs: {error}", file=sys.stderr)
        return 2
    for role in missing:
        print(f"docs: roles/{role}/README.md lacks its variables table: add a line "
              f"'<!-- BEGIN {role} variables -->' and a line '<!-- END {role} variables -->', "
              "then run scripts/docs.py", file=sys.stderr)
    for path in stale:
        verb = "is out of date" if args.check else "rewritten"
        print(f"docs: {path.relative_to(ROOT)} {verb}" + (": run scripts/docs.py" if args.check else ""),
              file=sys.stderr if args.check else sys.stdout)
    if missing or (args.check and stale):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

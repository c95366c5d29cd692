"""The reliability and security summary: every case that test_bad_input, test_faults,
test_leaks and test_load tried, with its outcome, printed at the end of the run and written to
reports/reliability.md (or the file PIPFEED_RELIABILITY_REPORT names), which the README points to.

A module takes part by setting ``RELIABILITY = "<section>"``. A test names its case with
``record_property("case", "...")`` (else its docstring's first line, or its id) and may add what
it measured with ``record_property("detail", "...")``. The outcome is pytest's own: a case that
failed or errored shows as such, with the first line of its error.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("Bad input", "Faults", "Leaks", "Load")
_records: list[dict] = []


def _report_path() -> Path:
    return Path(os.environ.get("PIPFEED_RELIABILITY_REPORT", ROOT / "reports" / "reliability.md"))


def _case_name(item) -> str:
    props = dict(item.user_properties)
    if props.get("case"):
        return str(props["case"])
    doc = (getattr(item, "function", None).__doc__ or "").strip() if hasattr(item, "function") else ""
    first = doc.splitlines()[0].rstrip(".") if doc else item.name
    callspec = getattr(item, "callspec", None)
    return f"{first} [{callspec.id}]" if callspec else first


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    section = getattr(item.module, "RELIABILITY", None)
    if section is None:
        return
    failed_setup = report.when == "setup" and not report.passed
    if report.when != "call" and not failed_setup:
        return
    if report.passed:
        result = "ok"
    elif report.skipped:
        result = "SKIPPED"
    else:
        result = "FAILED" if report.when == "call" else "ERROR"
    detail = str(dict(item.user_properties).get("detail", ""))
    if not report.passed and call.excinfo is not None:
        detail = (call.excinfo.exconly().splitlines() or [""])[0][:200]
    _records.append({"section": section, "case": _case_name(item), "result": result,
                     "seconds": report.duration, "detail": detail})


def _lines() -> list[str]:
    lines = [f"# Reliability and security summary ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", ""]
    order = {name: index for index, name in enumerate(SECTIONS)}
    for section in sorted({r["section"] for r in _records}, key=lambda s: order.get(s, 99)):
        rows = [r for r in _records if r["section"] == section]
        passed = sum(r["result"] == "ok" for r in rows)
        lines += [f"## {section}: {passed} of {len(rows)} cases ok", "",
                  "| case | outcome | time | detail |", "| --- | --- | --- | --- |"]
        for row in rows:
            detail = row["detail"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {row['case']} | {row['result']} | {row['seconds']:.1f}s | {detail} |")
        lines.append("")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not _records:
        return
    lines = _lines()
    path = _report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    terminalreporter.section("reliability and security summary")
    for line in lines[2:]:
        if line.startswith("|") and not line.startswith("| ---") and not line.startswith("| case"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            terminalreporter.write_line(f"  {cells[1]:<7} {cells[2]:>7}  {cells[0]}"
                                        + (f"  ({cells[3]})" if len(cells) > 3 and cells[3] else ""))
        elif line.startswith("## "):
            terminalreporter.write_line(line[3:])
    terminalreporter.write_line(f"written to {path}")

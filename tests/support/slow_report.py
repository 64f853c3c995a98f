"""Keeps the suite's cost visible: at the end of a run, list every test whose call took over a
minute without a reason written beside it (a comment starting "Over a minute" just above the
test, or above its decorators). A report, never a failure: how long a test takes depends on how
loaded the machine is, and tests never assert on time."""

from __future__ import annotations

from pathlib import Path

import pytest

LIMIT = 60.0
REASON = "# Over a minute"

_slow: list[tuple[str, float, bool]] = []


def justified(path: Path, def_line: int) -> bool:
    """Whether the comment block above the test's ``def`` (0-based line) gives a reason."""
    lines = path.read_text().splitlines()
    i = def_line - 1
    while i >= 0 and lines[i].lstrip().startswith("@"):
        i -= 1
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith(REASON):
            return True
        i -= 1
    return False


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or report.duration <= LIMIT:
        return
    line = report.location[1]
    try:
        ok = line is not None and justified(Path(str(report.fspath)), line)
    except OSError:
        ok = False
    _slow.append((report.nodeid, report.duration, ok))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missing = [(node, took) for node, took, ok in _slow if not ok]
    if not missing:
        return
    terminalreporter.section("tests over a minute without a written reason")
    for node, took in missing:
        terminalreporter.write_line(f"{took:.0f}s {node}: add '{REASON}: why' above it")

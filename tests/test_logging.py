"""Structured logging: JSON lines off a terminal, context ids, journald, redaction, and a real
``syncd run`` whose log carries no client name and no password."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.logs import log_context, new_pass_id, redact, setup_logging
from syncd.project import uid_for
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.proc import jsonl, run_syncd, start_syncd, wait_for
from tests.test_daemon import prepared


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(stream: io.StringIO, *, json_lines: bool | None = None) -> list[str]:
    setup_logging("INFO", stream=stream, json_lines=json_lines)
    log = logging.getLogger("syncd.test")
    with log_context(therapist="t-1", pass_id="p1"):
        with log_context(connection=7):
            log.info("applied %d actions", 3)
        log.warning("after the connection")
    log.info("no context")
    return stream.getvalue().splitlines()


def test_json_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    first, second, third = (json.loads(line) for line in emit(io.StringIO()))
    assert first["message"] == "applied 3 actions"
    assert (first["level"], first["logger"]) == ("INFO", "syncd.test")
    assert first["time"].endswith("Z")
    assert (first["therapist"], first["connection"], first["pass_id"]) == ("t-1", "7", "p1")
    assert "connection" not in second and second["therapist"] == "t-1"
    assert {"therapist", "pass_id", "connection"}.isdisjoint(third)


def test_human_readable_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    first, *_ = emit(Terminal())
    assert not first.startswith("{")
    assert first[:4].isdigit()  # a timestamp first
    assert "INFO syncd.test: applied 3 actions [therapist=t-1 pass_id=p1 connection=7]" in first


def test_no_timestamps_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    event = json.loads(emit(io.StringIO())[0])
    assert "time" not in event
    line = emit(Terminal())[0]
    assert line.startswith("INFO syncd.test: applied 3 actions")


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    log = logging.getLogger("syncd.test")
    token = "syncd_" + "A1b2C3d4" * 5
    log.info("header Authorization: Bearer ya29.a0AfH6SMBx-secret")
    log.info("token %s used", token)
    log.info("GET %s failed", "https://therapist:hunter2@cal.example/dav/")
    log.info("config password=hunter2 and client_secret: shh-42")
    try:
        raise RuntimeError(f"bad token {token}")
    except RuntimeError:
        log.exception("crashed")
    out = stream.getvalue()
    for secret in ("ya29.a0AfH6SMBx-secret", token, "hunter2", "shh-42", "A1b2C3d4"):
        assert secret not in out
    assert "https://therapist:[redacted]@cal.example/dav/" in out
    assert "Bearer [redacted]" in out
    assert len(out.splitlines()) == 5  # one event per line, tracebacks included
    assert redact("nothing secret here") == "nothing secret here"


def test_pass_ids_are_short_and_distinct() -> None:
    ids = {new_pass_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 for i in ids)


def test_syncd_run_logs_json_with_ids_and_no_client_name_or_password(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    _cfg, path, cal = prepared(tmp_path, radicale_server)
    log_path = tmp_path / "run.log"
    proc = start_syncd(path, "run", log=log_path)
    try:
        event = f.session("s-1", f.future(days=5))
        assert event["data"]["client"]["name"] == "Jane Doe"
        out = run_syncd(path, "ingest", "-", stdin=jsonl([event]))
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: uid_for("session", "s-1") in read_calendar(radicale_server, cal),
            120,
            "the session to reach the calendar",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    text = log_path.read_text()
    assert code == 0, text
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert events, "no log at all"
    applied = [e for e in events if "actions applied" in e["message"]]
    assert applied, text
    assert all(e["therapist"] == "t-1" and e["pass_id"] and e["connection"] for e in applied)
    for forbidden in ("Jane", "Doe", radicale_server.password, "s3cret"):
        assert forbidden not in text

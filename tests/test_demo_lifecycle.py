"""``syncd demo`` over its lifetime: the sample data respects the therapist's working hours,
a killed demo leaves no server running and no folder for long, and ``--state-dir`` re-runs
come back to the same calendar, connection and (live) URL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from queue import Empty
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from syncd.app import App
from syncd.config import load
from syncd.demo_story import (
    DAY_END,
    DAY_START,
    THERAPIST,
    WORKDAYS,
    ZONE,
    Story,
    sample_events,
    story_steps,
)
from syncd.replica import process_gone
from syncd.store.tables import ConnectionRow, MirrorRow
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.proc import line_queue, wait_for

LONDON = ZoneInfo(ZONE)


def _inside_hours(start: datetime, end: datetime, what: str) -> None:
    a, b = start.astimezone(LONDON), end.astimezone(LONDON)
    assert a.date() == b.date() and a.weekday() in WORKDAYS, (what, a)
    assert time(DAY_START) <= a.time() and b.time() <= time(DAY_END), (what, a, b)


@pytest.mark.parametrize(
    "today",
    # Every day of a week (weekends included), and the weeks of both clock changes.
    [date(2026, 11, 16) + timedelta(days=n) for n in range(7)]
    + [date(2027, 3, 26), date(2027, 10, 29)],
)
def test_sample_data_is_inside_the_therapists_working_hours(today: date) -> None:
    story = Story(today)
    now = datetime.combine(today, time(12), LONDON)
    events = sample_events(story, now - timedelta(hours=23)) + [
        e for _, e in story_steps(story, now)
    ]
    checked = 0
    for event in events:
        data = event["data"]
        if event["type"] == "session.upserted":
            start, end = datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"])
            _inside_hours(start, end, data["id"])
            checked += 1
        elif event["type"] == "offer.upserted":
            for alt in data["alternatives"]:
                start = datetime.fromisoformat(alt["start"])
                _inside_hours(start, datetime.fromisoformat(alt["end"]), data["id"])
                checked += 1
        elif event["type"] == "reserved_slot.upserted":
            first = datetime.fromisoformat(data["first_start_local"]).replace(tzinfo=LONDON)
            _inside_hours(first, first + timedelta(minutes=data["duration_minutes"]), data["id"])
            checked += 1
    assert checked >= 20


def test_every_sample_event_is_accepted(sqlite_app: App) -> None:
    story = Story(datetime.now(LONDON).date())
    now = datetime.now(LONDON)
    ingest = sqlite_app.ingestor()
    for event in sample_events(story, now - timedelta(hours=23)):
        outcome = ingest.ingest(event)
        assert outcome.ok, outcome.error
    for message, event in story_steps(story, now):
        outcome = ingest.ingest(event)
        assert outcome.ok, (message, outcome.error)


class Demo:
    """A ``syncd demo`` process and the lines it printed."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "demo", "--step-delay", "0.2", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **env},
        )
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        self.lines = line_queue(self.proc.stdout)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        while not any(text in ln for ln in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=timeout))
            except Empty:
                raise AssertionError(f"no {text!r} for {timeout}s:\n{''.join(self.seen)}") from None
        return "".join(self.seen)

    def field(self, name: str) -> str:
        found = re.findall(rf"{name}: (\S+)", "".join(self.seen))
        assert found, f"{name} not printed:\n{''.join(self.seen)}"
        return str(found[-1])

    def server(self) -> CalDAVServer:
        return CalDAVServer(
            "radicale", self.field("CalDAV URL"), self.field("Username"), self.field("Password")
        )

    def radicale_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        [pid] = [int(p) for p in children.split()]
        return pid

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self.wait_for("demo stopped", timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_killed_demo_takes_its_server_along_and_its_folder_goes_at_the_next_start(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "HOME": str(tmp_path)}
    first = Demo(env=env)
    try:
        first.wait_for("Password: ")
        radicale = first.radicale_pid()
        [folder] = list(tmp.glob("syncd-demo-*"))
        assert (folder / "secret.key").exists()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    finally:
        first.kill()
    wait_for(lambda: process_gone(socket.gethostname(), radicale), 30, "Radicale to exit")
    assert folder.exists()  # nobody could clean up after a SIGKILL...
    second = Demo(env=env)
    try:
        second.wait_for("Password: ")
        assert not folder.exists()  # ...so the next demo did
        [own] = list(tmp.glob("syncd-demo-*"))
        assert second.stop() == 0
    finally:
        second.kill()
    assert not own.exists()
    assert "Traceback" not in "".join(first.seen + second.seen)


def test_state_dir_reruns_keep_the_connection_and_print_the_live_url(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    env = {"HOME": str(tmp_path)}

    def run() -> tuple[str, CalDAVServer, set[str]]:
        # The sample offer's holds outlive the test: nothing changes by itself between runs.
        demo = Demo("--state-dir", str(state), "--hold-minutes", "60", env=env)
        try:
            demo.wait_for("Password: ")
            server, calendar = demo.server(), demo.field("Calendar URL")
            entries = set(read_calendar(server, calendar))  # the printed URL is live
            assert demo.stop() == 0
        finally:
            demo.kill()
        assert "Traceback" not in "".join(demo.seen)
        return calendar, server, entries

    def stored() -> tuple[ConnectionRow, set[str]]:
        app = App.open(load(state / "syncd.toml"), migrate=False)
        try:
            with app.sessions() as s:
                [conn] = s.scalars(
                    select(ConnectionRow).where(ConnectionRow.therapist_id == THERAPIST)
                )
                uids = set(
                    s.scalars(select(MirrorRow.uid).where(MirrorRow.connection_id == conn.id))
                )
            return conn, uids
        finally:
            app.close()

    calendar, server, first = run()
    assert len(first) >= 8
    _conn, mirrored = stored()
    again_calendar, again, entries = run()
    assert (again.url, again.password, again_calendar) == (server.url, server.password, calendar)
    assert entries == mirrored  # the calendar as the first run left it, nothing duplicated
    # The old port taken by someone else: a new one, and the same connection moved to it.
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        moved_calendar, moved, moved_entries = run()
    assert moved.url != server.url and moved_calendar.startswith(moved.url)
    assert moved_entries == mirrored
    conn, _ = stored()
    assert (conn.id, conn.url, conn.calendar_url) == (1, moved.url, moved_calendar)

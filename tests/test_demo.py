"""``syncd demo`` as a person runs it: a subprocess, its printed credentials, a real CalDAV read."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from queue import Empty

from syncd.project import uid_for
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import Seen, read_calendar
from tests.support.proc import line_queue, wait_for


def test_demo_mirrors_its_sample_data_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("SYNCD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "demo", "--step-delay", "0.5", "--hold-minutes", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = line_queue(proc.stdout)
    seen: list[str] = []
    try:
        while not any("Story done" in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=180))
            except Empty:
                raise AssertionError("demo printed nothing for 180 s:\n" + "".join(seen)) from None
        text = "".join(seen)

        def field(name: str) -> str:
            m = re.search(rf"{name}: (\S+)", text)
            assert m, f"{name} not printed:\n{text}"
            return m.group(1)

        server = CalDAVServer("radicale", field("CalDAV URL"), field("Username"), field("Password"))
        calendar = field("Calendar URL")
        final = {uid_for("session", s) for s in ("s-1", "s-2", "s-4", "s-5", "s-6", "s-7", "s-9")}
        final.add(uid_for("reserved", "r-1"))

        # The pending offer's holds (18 s in this run) go by themselves; nothing else is left,
        # and the session they were offered for is a plain session again. (One pass does both;
        # a read in the middle of it may see one without the other, so wait for both.)
        def released() -> dict[str, Seen] | None:
            got = read_calendar(server, calendar)
            offered = got.get(uid_for("session", "s-6"))
            plain = offered is not None and str(offered.event["SUMMARY"]) == "Therapy session"
            return got if set(got) == final and plain else None

        events = wait_for(released, 180, "the sample offer's holds to be released")
        assert str(events[uid_for("session", "s-4")].event["STATUS"]) == "CONFIRMED"
        assert events[uid_for("session", "s-2")].start.hour == 15
        assert events[uid_for("session", "s-7")].start.hour == 11  # accepted alternative 2
        reserved = events[uid_for("reserved", "r-1")].event
        assert "RRULE" in reserved and "EXDATE" in reserved
        assert "Traceback" not in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            # Ctrl-C first: killed outright, the demo would leave its Radicale running.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

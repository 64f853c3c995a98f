"""``syncd demo`` as a person runs it: a subprocess, its printed credentials, a real CalDAV read."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty, Queue

from syncd.project import uid_for
from tests.caldav_servers import CalDAVServer
from tests.calendar_view import read_calendar


def test_demo_mirrors_its_sample_data_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("SYNCD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "demo", "--step-delay", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: Queue[str] = Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []
    try:
        while not any("Story done" in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=60))
            except Empty:
                raise AssertionError("demo printed nothing for 60 s:\n" + "".join(seen)) from None
        text = "".join(seen)

        def field(name: str) -> str:
            m = re.search(rf"{name}: (\S+)", text)
            assert m, f"{name} not printed:\n{text}"
            return m.group(1)

        server = CalDAVServer("radicale", field("CalDAV URL"), field("Username"), field("Password"))
        events = read_calendar(server, field("Calendar URL"))
        assert set(events) == {uid_for("session", s) for s in ("s-1", "s-2", "s-4", "s-5")}
        assert str(events[uid_for("session", "s-4")].event["STATUS"]) == "CONFIRMED"
        assert events[uid_for("session", "s-2")].start.hour == 15
        assert "Traceback" not in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""System tests: the real ``syncd run`` process against a real Radicale."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syncd import operations
from syncd.app import App
from syncd.config import Config
from syncd.daemon import Daemon
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow, SessionRow, TherapistRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import Seen, read_calendar
from tests.support.inprocess import run_daemon_until
from tests.support.proc import jsonl, run_syncd, start_syncd, wait_for


def prepared(
    tmp_path: Path, server: CalDAVServer, **sections: dict[str, object]
) -> tuple[Config, Path, str]:
    cfg = make_config(tmp_path / "state", **sections)
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    try:
        app.ingestor().ingest(f.therapist())
        operations.connect_caldav(
            app, "t-1", url=server.url, username=server.username, password=server.password
        )
        with app.sessions() as s:
            cal = s.scalars(select(ConnectionRow.calendar_url)).one()
    finally:
        app.close()
    assert cal
    return cfg, path, cal


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 120) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def test_run_mirrors_ingested_changes_promptly_and_stops_cleanly(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    _cfg, path, cal = prepared(tmp_path, radicale_server)
    proc = start_syncd(path, "run", log=tmp_path / "run.log")
    try:
        start = f.future(days=5)
        out = run_syncd(path, "ingest", "-", stdin=jsonl([f.session("s-1", start)]))
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: uid_for("session", "s-1") in read_calendar(radicale_server, cal),
            120,
            "the session to reach the calendar",
        )
        assert proc.poll() is None
    finally:
        code = stop(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log and "Jane" not in log


def test_bad_input_is_refused_and_the_daemon_keeps_running(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    cfg, path, cal = prepared(tmp_path, radicale_server)
    proc = start_syncd(path, "run", log=tmp_path / "run.log")
    good = f.session("s-ok", f.future(days=4))
    naive = f.session("s-naive", f.future(days=4))
    naive["data"]["start"] = naive["data"]["start"].replace("+00:00", "")
    bad_lines = [
        "{this is not json",
        json.dumps({**f.session("s-x", f.future()), "type": "session.exploded"}),
        json.dumps(f.session("s-y", f.future(), therapist_id="t-ghost")),
        json.dumps(naive),
        json.dumps(f.session("s-z", f.future(), minutes=-10)),
        json.dumps(f.therapist("t-9", zone="Mars/Olympus_Mons")),
        json.dumps({k: v for k, v in f.session("s-w", f.future()).items() if k != "data"}),
        json.dumps(
            {
                **f.therapist("t-8"),
                "data": {
                    **f.therapist("t-8")["data"],
                    "version": "seven",
                },
            }
        ),
    ]
    try:
        out = run_syncd(path, "ingest", "-", stdin="\n".join(bad_lines) + "\n")
        assert out.returncode == 1
        errors = [ln for ln in out.stderr.splitlines() if "refused" in ln]
        assert len(errors) == len(bad_lines), out.stderr
        assert "Traceback" not in out.stderr
        for needle in [
            "malformed JSON",
            "type:",
            "data.therapist_id",
            "data.start",
            "data.end",
            "data.timezone",
            "data:",
            "data.version",
        ]:
            assert any(needle in e for e in errors), (needle, errors)
        app = App.open(cfg)
        with app.sessions() as s:
            assert s.scalar(select(func.count()).select_from(SessionRow)) == 0
            assert s.scalar(select(func.count()).select_from(TherapistRow)) == 1
        app.close()
        assert proc.poll() is None
        out = run_syncd(path, "ingest", "-", stdin=jsonl([good]))
        assert out.returncode == 0
        wait_for(
            lambda: uid_for("session", "s-ok") in read_calendar(radicale_server, cal),
            120,
            "a good event after the bad ones",
        )
    finally:
        assert stop(proc) == 0


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_pass_loses_and_duplicates_nothing(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    cfg, path, cal = prepared(tmp_path, radicale_server, sync={"interval": 2})
    n = 200
    events = [f.session(f"s-{i:03d}", f.future(days=1 + i // 8, hour=8 + i % 8)) for i in range(n)]
    out = run_syncd(path, "ingest", "-", stdin=jsonl(events))
    assert out.returncode == 0, out.stderr
    proc = start_syncd(path, "run", log=tmp_path / "run.log")
    try:
        seen = wait_for(
            lambda: (c := len(read_calendar(radicale_server, cal))) >= 20 and c,
            180,
            "the pass to be under way",
            interval=0.02,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen < n, "the pass finished before the kill; the test proves nothing"
    # Also cancel some and move some while it is down, so the restart has mixed work.
    changes = [
        f.session(
            f"s-{i:03d}",
            f.future(days=30),
            version=2,
            change={"reason": "correcting_error", "by": "therapist"},
        )
        for i in range(0, 10)
    ]
    changes += [
        f.session(
            f"s-{i:03d}",
            f.future(days=1 + i // 8, hour=8 + i % 8),
            version=2,
            status="cancelled",
            cancellation={"reason": "client_cancelled", "by": "client"},
        )
        for i in range(190, 200)
    ]
    assert run_syncd(path, "ingest", "-", stdin=jsonl(changes)).returncode == 0
    proc = start_syncd(path, "run", log=tmp_path / "run2.log")
    try:

        def converged() -> dict[str, Seen] | None:
            got = read_calendar(radicale_server, cal)
            return got if len(got) == n - 10 else None

        final = wait_for(converged, 300, "the calendar to converge after the restart")
    finally:
        assert stop(proc) == 0
    expected = {uid_for("session", f"s-{i:03d}") for i in range(190)}
    assert set(final) == expected
    for i in range(10):
        assert final[uid_for("session", f"s-{i:03d}")].start == f.future(days=30)
    hrefs = [e.href for e in final.values()]
    assert len(set(hrefs)) == len(hrefs)
    app = App.open(cfg)
    try:
        assert operations.status(app)[0].entries == n - 10
    finally:
        app.close()


def test_the_periodic_look_for_work_runs_on_the_event_loop(
    sqlite_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wake`` sets an ``asyncio.Event``, which is not thread-safe: the scheduler's periodic
    job must call it on the loop, not on a worker thread (where a stop under load also caught
    it in flight and APScheduler logged the cancellation as an error with a traceback)."""
    threads: list[threading.Thread] = []
    real = Daemon.wake

    def wake(self: Daemon) -> None:
        threads.append(threading.current_thread())
        real(self)

    monkeypatch.setattr(Daemon, "wake", wake)
    loop_thread: list[threading.Thread] = []

    def done(_daemon: Daemon) -> bool:
        loop_thread[:] = [threading.current_thread()]  # the check runs on the loop
        return len(threads) >= 3

    run_daemon_until(sqlite_app, done)
    assert set(threads) == set(loop_thread)

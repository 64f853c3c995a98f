"""A manual resync never silently does nothing, and a clean stop is clean: against real
``syncd run`` processes and a real Radicale."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from syncd import operations
from syncd.app import App
from syncd.daemon import Daemon
from syncd.replica import replica_id
from syncd.store import queue, replicas
from syncd.store.tables import ReplicaRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.proc import jsonl, run_syncd, start_syncd, syncd_cmd, wait_for
from tests.test_daemon import prepared

EX_TEMPFAIL = 75


def test_resync_right_after_a_sigkilled_daemon_takes_over_and_syncs(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    _cfg, path, cal = prepared(tmp_path, radicale_server)
    n = 120
    events = [f.session(f"s-{i:03d}", f.future(days=1 + i // 8, hour=8 + i % 8)) for i in range(n)]
    assert run_syncd(path, "ingest", "-", stdin=jsonl(events)).returncode == 0
    proc = start_syncd(path, "run", log=tmp_path / "run.log")
    try:
        seen = wait_for(
            lambda: (c := len(read_calendar(radicale_server, cal))) >= 5 and c,
            60,
            "the daemon's pass to be under way",
            interval=0.02,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # At once: the killed daemon's lease is still unexpired (lease_seconds = 60).
    out = run_syncd(path, "resync", "--all", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "t-1: took over from " in out.stdout and "(it had stopped)" in out.stdout
    assert "t-1 / connection 1: applied" in out.stdout
    final = read_calendar(radicale_server, cal)
    assert seen < n and len(final) == n
    # The killed daemon is listed, but not as alive.
    status = run_syncd(path, "status", "--json")
    [replica] = json.loads(status.stdout)["replicas"]
    assert replica["state"] == "gone" and replica["alive"] is False
    assert "process gone" in run_syncd(path, "status").stdout


def test_a_live_pass_is_waited_for_and_no_wait_exits_75(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state", daemon={"lease_seconds": 600})
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    live = f"resync:{replica_id()}"  # this test process: alive, on this host
    try:
        assert app.ingestor().ingest(f.therapist()).ok
        with app.sessions() as s:
            assert queue.acquire(s, "t-1", live, app.clock(), timedelta(seconds=600))
        out = run_syncd(path, "resync", "t-1", "--no-wait")
        assert out.returncode == EX_TEMPFAIL, out.stdout + out.stderr
        assert f"t-1: not synced: a pass is running ({live})" in out.stdout
        assert out.stderr.strip().splitlines() == [
            "error: 1 therapist(s) not synced: a pass was running; try again, or leave out "
            "--no-wait"
        ]
        out = run_syncd(path, "resync", "t-1", "--wait", "1")
        assert out.returncode == EX_TEMPFAIL
        assert f"t-1: a pass is running ({live}); waiting up to 1s" in out.stderr
        # Waiting, then the pass ends: the resync runs and succeeds.
        waiting = subprocess.Popen(
            syncd_cmd(path, "resync", "t-1", "--wait", "300"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiting.stderr is not None
        first = waiting.stderr.readline()
        assert "waiting up to" in first, first
        with app.sessions() as s:
            queue.release(s, "t-1", live, started=app.clock(), next_at=None, failed=False)
        stdout, stderr = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, stdout + stderr
        assert "t-1: no calendar connected" in stdout
    finally:
        app.close()


def test_a_replica_with_a_stale_heartbeat_loses_its_lease_to_a_resync(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state", daemon={"lease_seconds": 30})
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    other = "other-host:4242:abcdef"  # another machine: its pid cannot be checked from here
    try:
        assert app.ingestor().ingest(f.therapist()).ok
        now = app.clock()
        with app.sessions() as s:
            s.add(
                ReplicaRow(
                    id=other,
                    host="other-host",
                    pid=4242,
                    version="0.1.0",
                    started_at=now - timedelta(hours=1),
                    seen_at=now,
                )
            )
            s.commit()
            assert queue.acquire(s, "t-1", other, now, timedelta(seconds=30))
        # A heartbeat seconds old: alive, so its lease is respected.
        out = run_syncd(path, "resync", "t-1", "--no-wait")
        assert out.returncode == EX_TEMPFAIL, out.stdout + out.stderr
        with app.sessions() as s:
            row = s.get(ReplicaRow, other)
            assert row is not None
            row.seen_at = now - timedelta(seconds=31)  # none for a whole lease (30 s)
            s.commit()
            assert replicas.holder_dead(s, other, app.clock(), 30)
        out = run_syncd(path, "resync", "t-1", "--no-wait")
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"t-1: took over from {other} (it had stopped)" in out.stdout
    finally:
        app.close()


def test_resync_of_an_unknown_therapist_does_nothing_and_says_so(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state")
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    try:
        assert app.ingestor().ingest(f.therapist()).ok
    finally:
        app.close()
    out = run_syncd(path, "resync", "t-1", "t-ghost")
    assert out.returncode == 1 and out.stderr.strip() == "error: unknown therapist 't-ghost'"
    assert "t-1" not in out.stdout  # refused before any pass ran


def _logged(log: Path, text: str) -> Callable[[], bool]:
    """A check for wait_for: ``text`` is in ``log``."""
    return lambda: text in log.read_text()


def _shown(server: CalDAVServer, cal: str, text: str) -> Callable[[], bool]:
    """A check for wait_for: ``text`` is in a UID the calendar holds."""
    return lambda: text in str(list(read_calendar(server, cal)))


def test_repeated_sigterm_stops_are_clean(tmp_path: Path, radicale_server: CalDAVServer) -> None:
    """Every clean stop, whatever the daemon was doing: exit 0, no ERROR line, no traceback,
    no CancelledError (the sweep, heartbeat, delivery and HTTP tasks are all cancelled)."""
    _cfg, path, cal = prepared(
        tmp_path,
        radicale_server,
        offers={"sweep_interval": 0.05},
        platform={"poll_interval": 0.05},
        sync={"interval": 1},
    )
    day = 0
    for attempt in range(6):
        log = tmp_path / f"run-{attempt}.log"
        proc = start_syncd(path, "run", log=log)
        try:
            day += 1
            event = f.session(f"s-{attempt}", f.future(days=day))
            assert run_syncd(path, "ingest", "-", stdin=jsonl([event])).returncode == 0
            # Stop at a different moment each time: as soon as it runs (its signal handlers are
            # set: before that SIGTERM's default action applies), when idle, during a pass.
            wait_for(_logged(log, "syncd running as"), 60, "start")
            if attempt % 3:
                wait_for(_logged(log, "HTTP service listening"), 60, "web")
            if attempt % 3 == 2:
                wait_for(_shown(radicale_server, cal, f"s-{attempt}"), 60, "the pass")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text()
        assert code == 0, text
        for bad in ('"level": "ERROR"', "Traceback", "CancelledError", "ERROR "):
            assert bad not in text, (attempt, text)


def test_run_and_wait_threads_do_not_leak(tmp_path: Path) -> None:
    """The resync lease keeper is joined: nothing is left running in the caller."""
    cfg = make_config(tmp_path / "state")
    app = App.open(cfg)
    try:
        assert app.ingestor().ingest(f.therapist()).ok
        before = threading.active_count()
        [result] = operations.resync(app, ["t-1"])
        assert result.synced and threading.active_count() == before
    finally:
        app.close()


def test_stop_lets_a_scheduler_job_in_flight_end_instead_of_cancelling_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler cancels the jobs in flight when it shuts down, and logs each one as an
    error with a CancelledError traceback: a clean stop lets them end first."""
    app = App.open(make_config(tmp_path / "state", http={"enabled": False}))
    started, finished = threading.Event(), threading.Event()

    def slow_job() -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    async def serve_and_stop() -> None:
        daemon = Daemon(app)
        serving = asyncio.create_task(daemon.serve())
        loop = asyncio.get_running_loop()
        while not daemon.scheduler_running:
            await asyncio.sleep(0.01)
        assert daemon._scheduler is not None
        daemon._scheduler.add_job(slow_job, id="slow")  # due at once
        assert await loop.run_in_executor(None, started.wait, 60)
        daemon.stop()  # while the job runs
        await serving

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(serve_and_stop())
    finally:
        app.close()
    assert finished.is_set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [(r.getMessage(), r.exc_info) for r in errors]

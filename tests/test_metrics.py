"""``/metrics`` (Prometheus text format, a registry per daemon) and the readiness conditions of
``/readyz``: database, schema, scheduler, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text
from starlette.applications import Starlette

from syncd import operations, outbox
from syncd.app import App
from syncd.daemon import Daemon
from syncd.store.tables import ConflictRow, ConnectionRow, MirrorRow, OutboxRow, SyncQueueRow
from syncd.web import app as web_app
from syncd.web import metrics_api
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def serving(app: App, timeout: float = 120) -> AsyncIterator[Daemon]:
    daemon = Daemon(app)
    task = asyncio.create_task(daemon.serve())
    deadline = asyncio.get_running_loop().time() + timeout
    while daemon.web is None or not daemon.web.running:
        if task.done():
            await task
            raise AssertionError("the daemon stopped before its HTTP service started")
        assert asyncio.get_running_loop().time() < deadline, "HTTP service did not start"
        await asyncio.sleep(0.01)
    try:
        yield daemon
    finally:
        daemon.stop()
        await task


def scrape_in_thread(url: str) -> Samples:
    """HTTP from a worker thread, so the daemon's loop keeps serving."""
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def test_pass_histogram_and_actions_move_when_a_pass_runs(
    sqlite_app: App, radicale_server: CalDAVServer
) -> None:
    app = sqlite_app
    app.ingestor().ingest(f.therapist())
    operations.connect_caldav(
        app,
        "t-1",
        url=radicale_server.url,
        username=radicale_server.username,
        password=radicale_server.password,
    )

    def mirrored() -> bool:
        with app.sessions() as s:
            return s.scalar(select(MirrorRow.uid)) is not None

    async def main() -> tuple[Samples, Samples]:
        async with serving(app) as daemon:
            assert daemon.web is not None
            url = daemon.web.listen_url
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while daemon.passes < 1:  # the first pass (nothing to write yet)
                assert loop.time() < deadline, "no pass ran"
                await asyncio.sleep(0.02)
            before = await asyncio.to_thread(scrape_in_thread, url)
            app.ingestor().ingest(f.session("s-1", f.future(days=5)))
            daemon.wake()
            while not mirrored():
                assert loop.time() < deadline, "the session was not written"
                await asyncio.sleep(0.02)
            after = await asyncio.to_thread(scrape_in_thread, url)
            return before, after

    before, after = asyncio.run(main())
    count = "syncd_pass_duration_seconds_count"
    assert value(before, count, outcome="ok") >= 1
    assert value(after, count, outcome="ok") > value(before, count, outcome="ok")
    created = ("syncd_actions_total", {"kind": "create", "result": "ok"})
    assert value(before, created[0], **created[1]) == 0
    assert value(after, created[0], **created[1]) >= 1
    assert value(after, "syncd_metrics_database_up") == 1
    assert value(after, "syncd_connections", state="ok") == 1


def test_gauges_reflect_the_database(sqlite_app: App) -> None:
    app = sqlite_app
    now = app.clock()
    app.ingestor().ingest(f.therapist())
    with app.sessions.begin() as s:
        for i, state in enumerate(["ok", "error", "error", "needs_reauth"]):
            s.add(
                ConnectionRow(
                    therapist_id="t-1",
                    provider="caldav",
                    url=f"https://cal.example/{i}/",
                    username="u",
                    secret=b"x",
                    state=state,
                    failures=0,
                    created_at=now,
                )
            )
        for resolved in (None, None, now):
            s.add(
                ConflictRow(
                    therapist_id="t-1",
                    connection_id=1,
                    entity_kind="session",
                    entity_id="s-1",
                    start_at=now,
                    end_at=now + timedelta(hours=1),
                    busy_start_at=now,
                    busy_end_at=now + timedelta(hours=1),
                    calendar_ref="primary",
                    detected_at=now,
                    resolved_at=resolved,
                )
            )
        for n in range(3):
            outbox.enqueue(s, "calendar.disconnected", {"n": n}, now)
        row = s.get(SyncQueueRow, "t-1")
        if row is None:
            s.add(SyncQueueRow(therapist_id="t-1", due_at=now - timedelta(seconds=90)))
        else:
            row.due_at, row.lease_owner = now - timedelta(seconds=90), None

    with app.sessions() as s:
        pending = s.scalar(select(func.count()).where(OutboxRow.delivered_at.is_(None)))
    assert pending is not None and pending >= 3
    daemon = Daemon(app)  # not started: nothing changes the rows under the test
    web = web_app.build_app(app, daemon, metrics_api.routes(app, daemon))

    async def main() -> str:
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as client:
            r = await client.get("/metrics")
            assert r.status_code == 200
            return r.text

    samples = parse(asyncio.run(main()))
    assert value(samples, "syncd_open_conflicts") == 2
    assert value(samples, "syncd_outbox_pending") == pending
    assert value(samples, "syncd_connections", state="error") == 2
    assert value(samples, "syncd_connections", state="ok") == 1
    assert value(samples, "syncd_connections", state="needs_reauth") == 1
    assert value(samples, "syncd_connections", state="auth_failed") == 0
    assert value(samples, "syncd_due_backlog") == 1
    assert value(samples, "syncd_due_oldest_age_seconds") >= 90
    assert value(samples, "syncd_pending_holds") == 0


def test_each_daemon_has_its_own_registry(sqlite_app: App) -> None:
    first, second = Daemon(sqlite_app), Daemon(sqlite_app)
    first.metrics.observe_pass(None, 0.1, RuntimeError("boom"))
    assert "RuntimeError" in first.metrics.render().decode()
    assert "RuntimeError" not in second.metrics.render().decode()


def test_metrics_without_the_database_still_answer(sqlite_app: App, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    broken = create_engine(f"sqlite:///{tmp_path / 'file' / 'x.db'}")
    app = replace(sqlite_app, db=broken, sessions=sqlite_app.sessions.__class__(broken))
    daemon = Daemon(app)
    daemon.metrics.observe_pass(None, 0.1, RuntimeError("boom"))

    try:
        body = asyncio.run(daemon.metrics.scrape()).decode()
    finally:
        broken.dispose()
    samples = parse(body)
    assert value(samples, "syncd_metrics_database_up") == 0
    assert value(samples, "syncd_errors_total", error_class="RuntimeError") == 1
    assert ("syncd_open_conflicts", ()) not in samples


def readyz(web: Starlette) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as client:
            return await client.get("/readyz")

    return asyncio.run(main())


def test_readyz_names_every_failing_reason(sqlite_app: App, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    broken = create_engine(f"sqlite:///{tmp_path / 'file' / 'x.db'}")

    async def main() -> list[httpx.Response]:
        out = []
        async with serving(sqlite_app) as daemon:
            ok = web_app.build_app(sqlite_app, daemon, [])
            bad = web_app.build_app(replace(sqlite_app, db=broken), daemon, [])
            for web in (ok, bad):
                transport = httpx.ASGITransport(app=web)
                async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                    out.append(await client.get("/readyz"))
            with sqlite_app.db.begin() as conn:  # a schema one migration behind
                conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
            transport = httpx.ASGITransport(app=ok)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                out.append(await client.get("/readyz"))
                daemon.stop()
                out.append(await client.get("/readyz"))
        return out

    try:
        ready, db_down, old_schema, stopping = asyncio.run(main())
    finally:
        broken.dispose()
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert db_down.status_code == 503
    assert db_down.json()["reasons"] == ["the database failed the check (OperationalError)"]
    assert old_schema.status_code == 503
    [reason] = old_schema.json()["reasons"]
    assert reason.startswith("the database schema is at 0001, not ")
    assert stopping.status_code == 503
    assert "the daemon is shutting down" in stopping.json()["reasons"]


def test_readyz_is_503_for_a_daemon_whose_scheduler_is_not_running(sqlite_app: App) -> None:
    r = readyz(web_app.build_app(sqlite_app, Daemon(sqlite_app), []))
    assert r.status_code == 503
    assert r.json()["reasons"] == ["the scheduler is not running"]

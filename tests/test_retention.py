"""Retention: history past ``[retention] days`` (cancelled and completed sessions, expired
offers, ended reservations, inbound event bodies, delivered notifications…) is purged by the
daemon's sweep, on SQLite and PostgreSQL, safely from several replicas at once, and the purged
entries leave the calendars on a real CalDAV server (Radicale)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from syncd import connect_links, retention
from syncd.app import App
from syncd.config import Config
from syncd.daemon import Daemon
from syncd.ingest import Ingestor
from syncd.project import uid_for
from syncd.store.tables import (
    ConflictRow,
    ConnectLinkRow,
    EntityHistoryRow,
    InboundEventRow,
    OfferRow,
    OutboxRow,
    ReservedSlotRow,
    SessionRow,
    SyncQueueRow,
)
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.proc import wait_for
from tests.test_erasure import connect, reserved, sync

DAY = timedelta(days=1)
CANCEL = {"reason": "client_cancelled", "by": "client"}


def at(app: App, when: datetime) -> Ingestor:
    """An ingestor whose clock says ``when`` (what it stores is stamped then)."""
    return Ingestor(app.sessions, clock=lambda: when)


def history(app: App, now: datetime) -> None:
    """t-1 with sessions ending 100 and 10 days before ``now`` in each state, offers expired
    100 and 10 days ago, an ended and an active reservation."""
    old, recent = now - 100 * DAY, now - 10 * DAY
    then = at(app, old - 5 * DAY)
    for event in (
        f.therapist("t-1"),
        f.session("s-old-cancelled", old),
        f.session("s-old-cancelled", old, version=2, status="cancelled", cancellation=CANCEL),
        f.session("s-old-completed", old, status="completed"),
        f.session("s-old-confirmed", old),  # never closed by the platform: kept
        f.offer(
            "o-old",
            "s-old-confirmed",
            [old + DAY],
            sent_at=old - 3 * DAY,
            expires_at=old - 2 * DAY,
            state="expired",
        ),
        f.offer(
            "o-old-of-purged",
            "s-old-completed",
            [old + DAY],
            sent_at=old - 3 * DAY,
            expires_at=old - 2 * DAY,
            state="expired",
        ),
        {
            **reserved("r-ended", {"id": "c-r", "name": "Rae"}),
            "data": {
                **reserved("r-ended", {"id": "c-r"})["data"],
                "state": "ended",
                "until": old.isoformat(),
                "first_start_local": "2020-01-07T09:00:00",
            },
        },
    ):
        assert then.ingest(event).ok, event
    soon = at(app, recent - 5 * DAY)
    for event in (
        f.session("s-recent-completed", recent, status="completed"),
        f.session("s-future", now + 5 * DAY),
        f.offer(
            "o-recent",
            "s-future",
            [now + 6 * DAY],
            sent_at=recent - 3 * DAY,
            expires_at=recent,
            state="expired",
        ),
        reserved("r-active", {"id": "c-a"}),
    ):
        assert soon.ingest(event).ok, event
    with app.sessions.begin() as s:
        for delivered in (old, recent):
            s.add(
                OutboxRow(
                    topic="availability.changed",
                    payload={"therapist_id": "t-1"},
                    created_at=delivered,
                    delivered_at=delivered,
                    attempts=1,
                )
            )
        s.add(
            OutboxRow(
                topic="availability.changed",
                payload={"therapist_id": "t-1"},
                created_at=old,
                attempts=3,
            )
        )  # never delivered: kept
        for resolved in (old, None):
            s.add(
                ConflictRow(
                    therapist_id="t-1",
                    connection_id=1,
                    entity_kind="session",
                    entity_id="s-future",
                    start_at=now,
                    end_at=now,
                    busy_start_at=now,
                    busy_end_at=now,
                    calendar_ref="c",
                    detected_at=old,
                    resolved_at=resolved,
                )
            )


def ids(app: App, table: Any) -> set[str]:
    with app.sessions() as s:
        return set(s.scalars(select(table.id)))


def count(app: App, table: Any, *where: Any) -> int:
    with app.sessions() as s:
        return s.scalar(select(func.count()).select_from(table).where(*where)) or 0


def test_sweep_purges_what_is_past_retention(app: App) -> None:
    now = datetime.now(UTC)
    history(app, now)
    with app.sessions.begin() as s:
        s.execute(update(SyncQueueRow).values(due_at=None))
    old_bodies = count(app, EntityHistoryRow, EntityHistoryRow.recorded_at < now - 90 * DAY)
    assert old_bodies >= 8

    signer = connect_links.app_signer(app)
    with app.sessions.begin() as s:
        stale = connect_links.issue(s, app.config, signer, "t-1", now - 100 * DAY).id
        fresh = connect_links.issue(s, app.config, signer, "t-1", now).id

    purged = retention.sweep(app.sessions, app.config, now)

    assert ids(app, SessionRow) == {"s-old-confirmed", "s-recent-completed", "s-future"}
    assert ids(app, ConnectLinkRow) == {fresh}, stale
    assert ids(app, OfferRow) == {"o-recent"}
    assert ids(app, ReservedSlotRow) == {"r-active"}
    assert (purged.sessions, purged.offers, purged.reserved_slots) == (2, 2, 1)
    # Stored event bodies and event ids older than the period went, whatever their entity.
    assert count(app, EntityHistoryRow, EntityHistoryRow.recorded_at < now - 90 * DAY) == 0
    assert count(app, InboundEventRow, InboundEventRow.received_at < now - 90 * DAY) == 0
    assert count(app, EntityHistoryRow) > 0
    assert count(app, OutboxRow) == 2  # the recent delivered one and the undelivered one
    assert count(app, ConflictRow) == 1  # the open one
    # t-1's calendars change (entries of purged sessions go): its pass is queued.
    with app.sessions() as s:
        row = s.get(SyncQueueRow, "t-1")
        assert row is not None and row.due_at is not None
    assert retention.sweep(app.sessions, app.config, now).total == 0


def test_retention_is_configurable(tmp_path: Path) -> None:
    app = App.open(make_config(tmp_path / "state", retention={"days": 5}))
    try:
        now = datetime.now(UTC)
        history(app, now)
        retention.sweep(app.sessions, app.config, now)
        assert ids(app, SessionRow) == {"s-old-confirmed", "s-future"}
        assert ids(app, OfferRow) == set()
    finally:
        app.close()


@pytest.mark.postgres
def test_sweeps_on_several_replicas_at_once(tmp_path: Path, pg_url: str) -> None:
    """Two replicas sweeping the same database at the same moment: every row purged exactly
    once between them, no error, no deadlock (each batch skips rows the other holds)."""
    cfg = make_config(tmp_path / "state", pg_url)
    apps = [App.open(cfg), App.open(cfg)]
    try:
        now = datetime.now(UTC)
        then = at(apps[0], now - 200 * DAY)
        assert then.ingest(f.therapist("t-1")).ok
        n = 1_200  # more than two batches each
        with apps[0].sessions.begin() as s:
            for i in range(n):
                start = now - 120 * DAY + i * timedelta(minutes=1)
                s.add(
                    SessionRow(
                        id=f"s-{i}",
                        version=1,
                        therapist_id="t-1",
                        client_id="c",
                        client_name=None,
                        kind="follow_up",
                        start_at=start,
                        end_at=start + timedelta(minutes=50),
                        location={"type": "video"},
                        status="completed",
                        change=None,
                        cancellation=None,
                        updated_at=now - 120 * DAY,
                    )
                )
        results: list[retention.Purged] = []
        errors: list[BaseException] = []
        go = threading.Barrier(2)

        def sweep(app: App) -> None:
            try:
                go.wait()
                results.append(retention.sweep(app.sessions, app.config, now))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sweep, args=(a,)) for a in apps]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert sum(r.sessions for r in results) == n
        assert count(apps[0], SessionRow) == 0
    finally:
        for a in apps:
            a.close()


def test_the_daemon_sweeps_and_the_calendar_follows(
    sqlite_app: App, radicale_server: CalDAVServer
) -> None:
    """A running daemon purges at start, and the therapist's next pass removes the purged
    session's entry from the calendar (syncd keeps no copy of what it no longer holds)."""
    app = sqlite_app
    now = datetime.now(UTC)
    then = at(app, now - 100 * DAY)
    assert then.ingest(f.therapist("t-1")).ok
    assert then.ingest(f.session("s-done", now - 95 * DAY, status="completed")).ok
    assert then.ingest(f.session("s-next", now + 3 * DAY)).ok
    cal = connect(app, radicale_server, "t-1")
    sync(app, "t-1")
    assert uid_for("session", "s-done") in read_calendar(radicale_server, cal)

    run_daemon_until(
        app, lambda: uid_for("session", "s-done") not in read_calendar(radicale_server, cal)
    )

    assert ids(app, SessionRow) == {"s-next"}
    assert uid_for("session", "s-next") in read_calendar(radicale_server, cal)


def run_daemon_until(app: App, done: Callable[[], bool]) -> None:
    import asyncio

    async def main() -> None:
        daemon = Daemon(app)
        task = asyncio.create_task(daemon.serve())
        try:
            await asyncio.to_thread(wait_for, done, 60, "the purged entry to leave the calendar")
        finally:
            daemon.stop()
            await task

    asyncio.run(main())


def test_config_defaults() -> None:
    cfg = Config()
    assert cfg.retention.days == 90 and cfg.retention.sweep_interval == 3600

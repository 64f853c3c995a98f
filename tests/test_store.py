"""The store and the ingest path on both databases (SQLite and the real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from syncd.app import App
from syncd.ingest import Result
from syncd.store import database, queue
from syncd.store.tables import (
    Base,
    EntityHistoryRow,
    InboundEventRow,
    SessionRow,
    SyncQueueRow,
    TherapistRow,
)
from tests.support import factories as f


def counts(app: App) -> dict[str, int]:
    with app.sessions() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }


def test_migrations_create_every_table_and_are_idempotent(app: App) -> None:
    database.upgrade(app.db)  # second run: nothing to do, no error
    tables = set(inspect(app.db).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(app: App) -> None:
    """Autogenerate finds nothing to do: the migrations build exactly the tables in
    syncd/store/tables.py, column types included, on SQLite and on PostgreSQL."""
    with app.db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_instants_round_trip_as_aware_utc(app: App) -> None:
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    app.ingestor().ingest(f.therapist())
    local = start.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    out = app.ingestor().ingest(f.session("s-1", local))
    assert out.result is Result.APPLIED
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None
        assert row.start_at == start and row.start_at.utcoffset() == timedelta(0)


def test_versioned_idempotent_upserts(app: App) -> None:
    ing = app.ingestor()
    assert ing.ingest(f.therapist()).result is Result.APPLIED
    first = f.session("s-1", f.future(), version=2)
    assert ing.ingest(first).result is Result.APPLIED
    assert ing.ingest(first).result is Result.DUPLICATE
    older = f.session(
        "s-1", f.future(days=9), version=1, change={"reason": "client_requested", "by": "client"}
    )
    assert ing.ingest(older).result is Result.STALE
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None and row.version == 2 and row.start_at == f.future()
        history = s.scalar(select(func.count()).select_from(EntityHistoryRow))
    assert history == 2  # the therapist and one session version


def test_refused_event_stores_nothing(app: App) -> None:
    ing = app.ingestor()
    ing.ingest(f.therapist())
    ing.ingest(f.session("s-1", f.future()))
    before = counts(app)
    bad: list[bytes | dict[str, Any]] = [
        b"{not json",
        f.session("s-2", f.future(), therapist_id="t-nobody"),
        f.session("s-1", f.future(days=3), version=2),  # a move without a reason
        {**f.session("s-3", f.future()), "type": "session.deleted"},
    ]
    for raw in bad:
        out = ing.ingest(raw)
        assert out.result is Result.REFUSED and out.error
    assert counts(app) == before


def test_cancelled_session_kept_in_history(app: App) -> None:
    ing = app.ingestor()
    ing.ingest(f.therapist())
    ing.ingest(f.session("s-1", f.future()))
    ing.ingest(
        f.session(
            "s-1",
            f.future(),
            version=2,
            status="cancelled",
            cancellation={"reason": "client_cancelled", "by": "client"},
        )
    )
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None and row.status == "cancelled"
        versions = s.scalars(
            select(EntityHistoryRow.version).where(EntityHistoryRow.entity_id == "s-1")
        ).all()
        assert sorted(versions) == [1, 2]
        assert s.get(InboundEventRow, "evt-x") is None


def test_ingest_marks_the_therapist_due(app: App) -> None:
    app.ingestor().ingest(f.therapist())
    with app.sessions() as s:
        row = s.get(SyncQueueRow, "t-1")
        assert row is not None and row.due_at is not None


def _setup_queue(app: App, *tids: str) -> datetime:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    with app.sessions.begin() as s:
        for tid in tids:
            s.add(
                TherapistRow(
                    id=tid,
                    version=1,
                    display_name=tid,
                    timezone="UTC",
                    working_hours=[],
                    slot_minutes=50,
                    buffer_minutes=0,
                    active=True,
                    privacy={},
                    updated_at=now,
                )
            )
            s.flush()
            queue.mark_due(s, tid, now - timedelta(seconds=1))
    return now


def test_claims_are_exclusive_and_leases_expire(app: App) -> None:
    now = _setup_queue(app, "a", "b")
    lease = timedelta(seconds=30)
    with app.sessions() as s:
        first = queue.claim_due(s, "r1", now, lease, limit=10, skip=set())
    with app.sessions() as s:
        second = queue.claim_due(s, "r2", now, lease, limit=10, skip=set())
    assert sorted(c.therapist_id for c in first) == ["a", "b"]
    assert second == []
    later = now + lease + timedelta(seconds=1)  # r1 died: its leases ran out
    with app.sessions() as s:
        third = queue.claim_due(s, "r2", later, lease, limit=10, skip=set())
    assert sorted(c.therapist_id for c in third) == ["a", "b"]


def test_release_keeps_work_requested_during_the_pass(app: App) -> None:
    now = _setup_queue(app, "a", "b")
    lease = timedelta(seconds=30)
    with app.sessions() as s:
        queue.claim_due(s, "r1", now, lease, limit=10, skip=set())
    with app.sessions.begin() as s:  # a new event for "a" arrives mid-pass
        queue.mark_due(s, "a", now + timedelta(seconds=2))
    next_at = now + timedelta(seconds=60)
    with app.sessions() as s:
        queue.release(s, "a", "r1", started=now, next_at=next_at, failed=False)
        queue.release(s, "b", "r1", started=now, next_at=next_at, failed=False)
    with app.sessions() as s:
        a, b = s.get(SyncQueueRow, "a"), s.get(SyncQueueRow, "b")
        assert a is not None and b is not None
        assert a.due_at == now + timedelta(seconds=2) and a.lease_owner is None
        assert b.due_at == next_at


def test_acquire_for_manual_resync_respects_a_running_pass(app: App) -> None:
    now = _setup_queue(app, "a")
    lease = timedelta(seconds=30)
    with app.sessions() as s:
        assert queue.claim_due(s, "daemon", now, lease, limit=1, skip=set())
    with app.sessions() as s:
        assert queue.acquire(s, "a", "cli", now, lease) is False
        assert queue.acquire(s, "a", "cli", now + lease * 2, lease) is True


@pytest.mark.postgres
def test_postgres_is_really_used(pg_url: str, tmp_path: Path) -> None:
    from tests.conftest import make_config

    app = App.open(make_config(tmp_path, pg_url))
    try:
        assert app.db.dialect.name == "postgresql"
        assert app.db.dialect.driver == "psycopg"
    finally:
        app.close()

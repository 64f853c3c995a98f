"""What the status displays read (``syncd status``, the admin API, the dashboard): one row per
therapist's connection, the replicas, the conflicts. Queries only, and light to import: a CLI
command that shows status loads neither the engine nor any calendar library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from syncd.app import App
from syncd.store import replicas
from syncd.store.tables import (
    ConflictRow,
    ConnectionRow,
    DriftRow,
    MirrorRow,
    SyncQueueRow,
    TherapistRow,
)


@dataclass(frozen=True, slots=True)
class StatusRow:
    therapist_id: str
    connection_id: int | None
    provider: str | None
    state: str
    entries: int
    last_success_at: datetime | None
    due_at: datetime | None
    failures: int
    drift: int
    last_error: str | None
    busy_as_of: datetime | None = None
    busy_state: str = "-"  # fresh | stale | flagged | -
    held_by: str | None = None  # the replica (or CLI resync) running its pass now, if any
    busy_error: str | None = None  # why busy time (or a calendar's part of it) is not current
    paused_until: datetime | None = None  # the provider asked syncd to stay away until then


def busy_state(c: ConnectionRow, now: datetime, stale_after: float) -> str:
    if c.busy_flagged_at is not None:
        return "flagged"
    if c.busy_fetched_at is None:
        return "-"
    if c.busy_error or (now - c.busy_fetched_at).total_seconds() > stale_after:
        return "stale"
    return "fresh"


def status(app: App) -> list[StatusRow]:
    rows: list[StatusRow] = []
    with app.sessions() as s:
        therapists = s.scalars(select(TherapistRow).order_by(TherapistRow.id)).all()
        now = app.clock()
        queue_rows = {q.therapist_id: q for q in s.scalars(select(SyncQueueRow)).all()}
        due = {tid: q.due_at for tid, q in queue_rows.items()}
        held = {
            tid: q.lease_owner
            for tid, q in queue_rows.items()
            if q.lease_owner and q.lease_until is not None and q.lease_until > now
        }
        counts = dict(
            s.execute(
                select(MirrorRow.connection_id, func.count()).group_by(MirrorRow.connection_id)
            ).all()
        )
        drifts = dict(
            s.execute(
                select(DriftRow.connection_id, func.count()).group_by(DriftRow.connection_id)
            ).all()
        )
        by_therapist: dict[str, list[ConnectionRow]] = {}
        for c in s.scalars(select(ConnectionRow).order_by(ConnectionRow.id)).all():
            by_therapist.setdefault(c.therapist_id, []).append(c)
        for t in therapists:
            conns = by_therapist.get(t.id, [])
            if not conns:
                rows.append(
                    StatusRow(
                        t.id,
                        None,
                        None,
                        "not connected",
                        0,
                        None,
                        due.get(t.id),
                        0,
                        0,
                        None,
                        held_by=held.get(t.id),
                    )
                )
            for c in conns:
                rows.append(
                    StatusRow(
                        t.id,
                        c.id,
                        c.provider,
                        c.state,
                        counts.get(c.id, 0),
                        c.last_success_at,
                        due.get(t.id),
                        c.failures,
                        drifts.get(c.id, 0),
                        c.last_error,
                        c.busy_fetched_at,
                        busy_state(c, now, app.config.availability.stale_after),
                        held.get(t.id),
                        busy_error=c.busy_error,
                        paused_until=(
                            c.backoff_until
                            if c.backoff_until is not None and c.backoff_until > now
                            else None
                        ),
                    )
                )
    return rows


def replica_overview(app: App) -> list[replicas.ReplicaInfo]:
    """The daemon processes registered on this database and the leases each holds."""
    with app.sessions() as s:
        return replicas.overview(s, app.clock(), timedelta(seconds=app.config.daemon.lease_seconds))


def conflicts(
    app: App, *, therapist_id: str | None = None, include_resolved: bool = False
) -> list[ConflictRow]:
    with app.sessions() as s:
        query = select(ConflictRow).order_by(ConflictRow.start_at)
        if therapist_id is not None:
            query = query.where(ConflictRow.therapist_id == therapist_id)
        if not include_resolved:
            query = query.where(ConflictRow.resolved_at.is_(None))
        return list(s.scalars(query).all())

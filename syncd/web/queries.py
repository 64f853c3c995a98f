"""The dashboard's read queries: every therapist's sync health in a few statements (not one
per therapist), as the view objects of :mod:`syncd.web.views`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from syncd import connect_links, outbox
from syncd.app import App
from syncd.status import busy_state
from syncd.store import replicas, repo
from syncd.store.tables import (
    ConflictRow,
    ConnectionRow,
    DriftRow,
    MirrorRow,
    OfferRow,
    SyncQueueRow,
    TherapistRow,
)
from syncd.web.views import (
    ConnectionView,
    DriftView,
    HoldView,
    Overview,
    TherapistView,
    connection_state,
)

DRIFT_WINDOW = timedelta(days=7)


def gather(app: App, now: datetime, *, search: str = "", only: str | None = None) -> Overview:
    """Every therapist (whose id or name contains ``search``), or the one named ``only``."""
    stale_after = app.config.availability.stale_after
    with app.sessions() as s:
        query = select(TherapistRow).order_by(TherapistRow.id)
        if only is not None:
            query = query.where(TherapistRow.id == only)
        therapists = list(s.scalars(query).all())
        total = (
            len(therapists)
            if only is not None
            else int(s.scalar(select(func.count()).select_from(TherapistRow)) or 0)
        )
        needle = search.strip().casefold()
        if needle:
            therapists = [
                t
                for t in therapists
                if needle in t.id.casefold() or needle in t.display_name.casefold()
            ]
        ids = [t.id for t in therapists]
        queue_rows = {
            q.therapist_id: q
            for q in s.scalars(select(SyncQueueRow).where(SyncQueueRow.therapist_id.in_(ids)))
        }
        entries = dict(
            s.execute(
                select(MirrorRow.connection_id, func.count()).group_by(MirrorRow.connection_id)
            ).all()
        )
        conflicts = dict(
            s.execute(
                select(ConflictRow.therapist_id, func.count())
                .where(ConflictRow.resolved_at.is_(None))
                .where(ConflictRow.therapist_id.in_(ids))
                .group_by(ConflictRow.therapist_id)
            ).all()
        )
        holds: dict[str, list[HoldView]] = {}
        for o in s.scalars(
            select(OfferRow)
            .where(OfferRow.state == "pending", OfferRow.released_at.is_(None))
            .where(OfferRow.therapist_id.in_(ids))
            .order_by(OfferRow.expires_at)
        ):
            holds.setdefault(o.therapist_id, []).append(
                HoldView(o.id, o.session_id, len(o.alternatives), o.expires_at, o.expires_at - now)
            )
        drift: dict[str, list[DriftView]] = {}
        for row, tid in s.execute(
            select(DriftRow, ConnectionRow.therapist_id)
            .join(ConnectionRow, ConnectionRow.id == DriftRow.connection_id)
            .where(ConnectionRow.therapist_id.in_(ids))
            .where(DriftRow.detected_at > now - DRIFT_WINDOW)
            .order_by(DriftRow.detected_at.desc())
        ).all():
            drift.setdefault(tid, []).append(
                DriftView(row.connection_id, row.uid, row.kind, row.detected_at)
            )
        conns = {t.id: repo.connections(s, t.id) for t in therapists}
        reconnects = connect_links.open_reconnect_links(
            s,
            app.config,
            connect_links.app_signer(app),
            [
                c.id
                for cs in conns.values()
                for c in cs
                if c.state in ("needs_reauth", "auth_failed")
            ],
            now,
        )
        views: list[TherapistView] = []
        for t in therapists:
            q = queue_rows.get(t.id)
            view = TherapistView(
                t.id,
                t.display_name,
                t.timezone,
                t.active,
                q.due_at if q else None,
                holds=holds.get(t.id, []),
                open_conflicts=int(conflicts.get(t.id, 0)),
                drift=drift.get(t.id, []),
                held_by=(
                    q.lease_owner
                    if q and q.lease_owner and q.lease_until and q.lease_until > now
                    else None
                ),
            )
            for c in conns[t.id]:
                view.connections.append(
                    ConnectionView(
                        c.id,
                        c.provider,
                        connection_state(c, q, now, app),
                        c.state,
                        c.last_success_at,
                        c.last_error,
                        c.failures,
                        int(entries.get(c.id, 0)),
                        busy_state(c, now, stale_after),
                        c.busy_fetched_at,
                        c.busy_error,
                        reconnects.get(c.id),
                    )
                )
            views.append(view)
        backlog = outbox.pending_summary(s)
        alive_within = timedelta(seconds=app.config.daemon.lease_seconds)
        registry = replicas.overview(s, now, alive_within)
    return Overview(now, views, total, backlog, registry)

"""Retention: history older than ``[retention] days`` (90 by default) is purged by a daemon sweep
(every ``sweep_interval`` seconds, and once at start).

Counted from the end of each thing: cancelled and completed sessions from their end (with their
offers), expired offers from their expiry, ended reserved slots from their ``until``, stored
inbound event bodies (entity history) and event ids from their arrival, delivered notifications,
resolved conflicts and drift records from when they happened. Expired dashboard sessions, ended
rate-limit windows and unused connect links go too. A purged session or reservation leaves
syncd's calendars at the therapist's next pass, queued here: a calendar mirrors what syncd
holds, so it does not keep health data syncd no longer keeps.

Safe with several replicas: each batch picks its rows with ``FOR UPDATE SKIP LOCKED``, so two
sweeps at once take different rows (and never wait on each other), and deleting is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, delete, select
from sqlalchemy.orm import Session, sessionmaker

from syncd import domain as d
from syncd import ratelimit
from syncd.config import Config
from syncd.store import admin_sessions, queue
from syncd.store.tables import (
    ConflictRow,
    ConnectLinkRow,
    DriftRow,
    EntityHistoryRow,
    InboundEventRow,
    OAuthRequestRow,
    OfferRow,
    OutboxRow,
    ReservedSlotRow,
    SessionRow,
)

log = logging.getLogger(__name__)

BATCH = 500
CLOSED = (d.SessionStatus.CANCELLED.value, d.SessionStatus.COMPLETED.value)


@dataclass(slots=True)
class Purged:
    sessions: int = 0
    offers: int = 0
    reserved_slots: int = 0
    history: int = 0
    inbound_events: int = 0
    notifications: int = 0
    conflicts: int = 0
    drift: int = 0
    other: int = 0  # expired dashboard sessions, rate-limit windows, connect links
    therapists: set[str] = field(default_factory=set)  # whose calendars change

    @property
    def total(self) -> int:
        return (
            self.sessions
            + self.offers
            + self.reserved_slots
            + self.history
            + self.inbound_events
            + self.notifications
            + self.conflicts
            + self.drift
        )


def _count(s: Session, statement: Any) -> int:
    return cast("CursorResult[Any]", s.execute(statement)).rowcount


def _batches(
    sessions: sessionmaker[Session],
    pick: Callable[[], Select[Any]],
    purge: Callable[[Session, list[Any]], None],
) -> None:
    """Run ``purge`` on batches of the ids ``pick`` selects (rows another sweep holds are
    skipped), each batch in its own short transaction, until none are left."""
    while True:
        with sessions.begin() as s:
            ids = list(s.scalars(pick().limit(BATCH).with_for_update(skip_locked=True)))
            if ids:
                purge(s, ids)
        if len(ids) < BATCH:
            return


def _old(sessions: sessionmaker[Session], table: Any, key: Any, older: ColumnElement[bool]) -> int:
    """Delete rows of ``table`` matching ``older``, in batches."""
    done = 0

    def purge(s: Session, ids: list[Any]) -> None:
        nonlocal done
        done += _count(s, delete(table).where(key.in_(ids)))

    _batches(sessions, lambda: select(key).where(older), purge)
    return done


def sweep(sessions: sessionmaker[Session], config: Config, now: datetime) -> Purged:
    """Purge what is past retention at ``now``."""
    cutoff = now - timedelta(days=config.retention.days)
    out = Purged()

    def sessions_batch(s: Session, ids: list[str]) -> None:
        offers = list(s.scalars(select(OfferRow.id).where(OfferRow.session_id.in_(ids))))
        out.therapists.update(
            s.scalars(select(SessionRow.therapist_id).where(SessionRow.id.in_(ids)).distinct())
        )
        out.offers += _purge_offers(s, offers)
        out.conflicts += _count(
            s,
            delete(ConflictRow).where(
                ConflictRow.entity_kind == "session", ConflictRow.entity_id.in_(ids)
            ),
        )
        out.sessions += _count(s, delete(SessionRow).where(SessionRow.id.in_(ids)))
        out.history += _purge_history(s, "session", ids)

    _batches(
        sessions,
        lambda: select(SessionRow.id).where(
            SessionRow.status.in_(CLOSED), SessionRow.end_at < cutoff
        ),
        sessions_batch,
    )

    def offers_batch(s: Session, ids: list[str]) -> None:
        out.therapists.update(
            s.scalars(select(OfferRow.therapist_id).where(OfferRow.id.in_(ids)).distinct())
        )
        out.offers += _purge_offers(s, ids)

    _batches(
        sessions,
        lambda: select(OfferRow.id).where(
            OfferRow.state == d.OfferState.EXPIRED.value, OfferRow.expires_at < cutoff
        ),
        offers_batch,
    )

    def reserved_batch(s: Session, ids: list[str]) -> None:
        out.therapists.update(
            s.scalars(
                select(ReservedSlotRow.therapist_id).where(ReservedSlotRow.id.in_(ids)).distinct()
            )
        )
        out.reserved_slots += _count(s, delete(ReservedSlotRow).where(ReservedSlotRow.id.in_(ids)))
        out.history += _purge_history(s, "reserved_slot", ids)

    _batches(
        sessions,
        lambda: select(ReservedSlotRow.id).where(
            ReservedSlotRow.state == d.ReservationState.ENDED.value,
            ReservedSlotRow.until < cutoff,
        ),
        reserved_batch,
    )

    out.history += _old(
        sessions, EntityHistoryRow, EntityHistoryRow.id, EntityHistoryRow.recorded_at < cutoff
    )
    out.inbound_events += _old(
        sessions, InboundEventRow, InboundEventRow.id, InboundEventRow.received_at < cutoff
    )
    out.notifications += _old(sessions, OutboxRow, OutboxRow.id, OutboxRow.delivered_at < cutoff)
    out.conflicts += _old(sessions, ConflictRow, ConflictRow.id, ConflictRow.resolved_at < cutoff)
    out.drift += _old(sessions, DriftRow, DriftRow.id, DriftRow.detected_at < cutoff)
    out.other += _old(
        sessions, OAuthRequestRow, OAuthRequestRow.state, OAuthRequestRow.expires_at < cutoff
    )
    out.other += _old(
        sessions, ConnectLinkRow, ConnectLinkRow.id, ConnectLinkRow.expires_at < cutoff
    )
    with sessions.begin() as s:
        out.other += admin_sessions.purge_expired(s, now)
        out.other += ratelimit.purge(s, now, config.limits.window)
        for tid in sorted(out.therapists):
            queue.mark_due(s, tid, now)
    if out.total:
        log.info(
            "retention: purged %d sessions, %d offers, %d reserved slots, %d event bodies "
            "and %d other records older than %g days",
            out.sessions,
            out.offers,
            out.reserved_slots,
            out.history,
            out.inbound_events + out.notifications + out.conflicts + out.drift,
            config.retention.days,
        )
    return out


def _purge_offers(s: Session, ids: list[str]) -> int:
    if not ids:
        return 0
    s.execute(
        delete(ConflictRow).where(ConflictRow.entity_kind == "hold", ConflictRow.entity_id.in_(ids))
    )
    purged = _count(s, delete(OfferRow).where(OfferRow.id.in_(ids)))
    _purge_history(s, "offer", ids)
    return purged


def _purge_history(s: Session, kind: str, ids: list[str]) -> int:
    """The stored event bodies (and event ids) of purged entities, whatever their age."""
    s.execute(
        delete(InboundEventRow).where(
            InboundEventRow.type == f"{kind}.upserted", InboundEventRow.entity_id.in_(ids)
        )
    )
    return _count(
        s,
        delete(EntityHistoryRow).where(
            EntityHistoryRow.entity_type == kind, EntityHistoryRow.entity_id.in_(ids)
        ),
    )

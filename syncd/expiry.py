"""Releasing holds when an offer expires, whether or not the platform says anything.

The database row is the truth: an offer still ``pending`` at or after its ``expires_at`` is
expired by a conditional UPDATE (``WHERE state = 'pending'``), which succeeds for exactly one
caller even with several replicas sweeping at once. The ``offer.expired`` notification and the
therapist's next pass are written in the same transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from syncd import domain as d
from syncd import outbox
from syncd.store import queue
from syncd.store.tables import OfferRow, SessionRow

log = logging.getLogger(__name__)


BATCH = 500  # offers expired per transaction: short transactions, bounded lock sets


def expire_due(sessions: sessionmaker[Session], now: datetime) -> list[str]:
    """Expire every pending offer whose time is up; returns the ids this call expired."""
    expired: list[str] = []
    while True:
        batch = _expire_batch(sessions, now)
        expired += batch
        if len(batch) < BATCH:
            break
    if expired:
        log.info("released the holds of %d expired offers: %s", len(expired), ", ".join(expired))
    return expired


def _expire_batch(sessions: sessionmaker[Session], now: datetime) -> list[str]:
    pending = OfferRow.state == d.OfferState.PENDING.value
    # Rows another replica's sweep is expiring right now are skipped, not waited for (and two
    # sweeps cannot deadlock on each other's locks); the outer ``state = 'pending'`` re-check
    # on the locked row is what makes each offer expire exactly once.
    due = (
        select(OfferRow.id)
        .where(pending, OfferRow.expires_at <= now)
        .order_by(OfferRow.expires_at, OfferRow.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    with sessions.begin() as s:
        won = s.execute(
            update(OfferRow)
            .where(OfferRow.id.in_(due), pending)
            .values(state=d.OfferState.EXPIRED.value, released_at=now, updated_at=now)
            .returning(OfferRow.id, OfferRow.therapist_id, OfferRow.session_id, OfferRow.expires_at)
            .execution_options(synchronize_session=False)
        ).all()
        for offer_id, therapist_id, session_id, expires_at in sorted(won, key=lambda r: r[3]):
            session = s.get(SessionRow, session_id)
            outbox.enqueue(
                s,
                "offer.expired",
                {
                    "offer_id": offer_id,
                    "session_id": session_id,
                    "therapist_id": therapist_id,
                    "expires_at": expires_at.isoformat(),
                    "released_at": now.isoformat(),
                    # The session is back at (it never left) its original time.
                    "session_start": session.start_at.isoformat() if session else None,
                    "session_end": session.end_at.isoformat() if session else None,
                },
                now,
            )
        # One pass request per therapist, in therapist order: racing sweeps of other replicas
        # that touch the same therapists then lock their queue rows in the same order, and
        # wait for each other instead of deadlocking (expiry order differs between batches).
        for therapist_id in sorted({row[1] for row in won}):
            queue.mark_due(s, therapist_id, now)
        return [row[0] for row in sorted(won, key=lambda r: r[3])]


def next_expiry(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as s:
        return s.scalar(
            select(func.min(OfferRow.expires_at)).where(
                OfferRow.state == d.OfferState.PENDING.value
            )
        )

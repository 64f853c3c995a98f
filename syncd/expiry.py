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


def expire_due(sessions: sessionmaker[Session], now: datetime) -> list[str]:
    """Expire every pending offer whose time is up; returns the ids this call expired."""
    expired: list[str] = []
    with sessions.begin() as s:
        due = s.scalars(
            select(OfferRow.id)
            .where(OfferRow.state == d.OfferState.PENDING.value)
            .where(OfferRow.expires_at <= now)
            .order_by(OfferRow.expires_at)
        ).all()
        for offer_id in due:
            won = s.execute(
                update(OfferRow)
                .where(OfferRow.id == offer_id, OfferRow.state == d.OfferState.PENDING.value)
                .values(state=d.OfferState.EXPIRED.value, released_at=now, updated_at=now)
                .returning(OfferRow.therapist_id, OfferRow.session_id, OfferRow.expires_at)
            ).first()
            if won is None:
                continue  # another replica got there first
            therapist_id, session_id, expires_at = won
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
            queue.mark_due(s, therapist_id, now)
            expired.append(offer_id)
    if expired:
        log.info("released the holds of %d expired offers: %s", len(expired), ", ".join(expired))
    return expired


def next_expiry(sessions: sessionmaker[Session]) -> datetime | None:
    with sessions() as s:
        return s.scalar(
            select(func.min(OfferRow.expires_at)).where(
                OfferRow.state == d.OfferState.PENDING.value
            )
        )

"""Notifications to the platform, written in the same transaction as the change that caused them
(the transactional outbox), delivered at least once by the daemon's delivery worker
(:mod:`syncd.delivery`), so the platform dedupes on the notification ``id``.

Here: adding a notification, its wire format and signature, the retry schedule (backoff,
``Retry-After``), and the queries that show the backlog.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syncd.store.tables import OutboxRow

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

TOPICS = (
    "availability.changed",
    "conflict.detected",
    "conflict.resolved",
    "offer.expired",
    "calendar.disconnected",
)

WEBHOOK_SECRET_ENV = "SYNCD_WEBHOOK_SECRET"  # noqa: S105 - the variable name, not a secret
SIGNATURE_HEADER = "Syncd-Signature"
EVENT_ID_HEADER = "Syncd-Event-Id"
# A Retry-After is honoured even beyond retry_cap (the platform knows best), up to this bound.
MAX_RETRY_AFTER = 24 * 3600.0


def new_event_id() -> str:
    return uuid.uuid4().hex


def enqueue(s: Session, topic: str, data: dict[str, Any], now: datetime) -> None:
    """Add a notification inside the caller's transaction: it exists iff the change commits."""
    if topic not in TOPICS:
        raise ValueError(f"unknown outbox topic {topic!r}")
    s.add(OutboxRow(topic=topic, payload=data, created_at=now, attempts=0, event_id=new_event_id()))


# -- pure parts ------------------------------------------------------------------------------------


def iso_utc(when: datetime) -> str:
    """``2026-11-21T10:00:00Z`` (fractional seconds only when there are any)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def wire_body(event_id: str, topic: str, created_at: datetime, payload: dict[str, Any]) -> bytes:
    """The notification as sent: ``{"id", "type", "occurred_at", "data"}``, compact UTF-8 JSON."""
    message = {"id": event_id, "type": topic, "occurred_at": iso_utc(created_at), "data": payload}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (the Syncd-Signature header)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff(
    attempts: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds before the next try after ``attempts`` failed ones (0 after the first failure):
    ``base * 2**attempts`` capped at ``cap``, jittered into [½, 1] of that, never earlier than
    the server's ``Retry-After`` (itself bounded by ``MAX_RETRY_AFTER``)."""
    step = min(cap, base * 2.0 ** min(attempts, 60))
    delay = step * (0.5 + rng.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification and its delivery state, for status displays."""

    id: int
    event_id: str
    topic: str
    created_at: datetime
    delivered_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    therapist_id: str | None = None  # whom it is about, when it is about one therapist

    @property
    def state(self) -> str:
        """``delivered``, ``failing`` (tried and not delivered yet) or ``pending``."""
        if self.delivered_at is not None:
            return "delivered"
        return "failing" if self.attempts else "pending"


class OutboxSummary(NamedTuple):
    pending: int
    oldest_pending_created_at: datetime | None
    failing: int


# -- queries ---------------------------------------------------------------------------------------


def pending_summary(s: Session) -> OutboxSummary:
    """(undelivered count, creation time of the oldest undelivered, how many of them failed)."""
    undelivered = OutboxRow.delivered_at.is_(None)
    count, oldest = s.execute(
        select(func.count(OutboxRow.id), func.min(OutboxRow.created_at)).where(undelivered)
    ).one()
    failing = s.scalar(
        select(func.count(OutboxRow.id)).where(undelivered).where(OutboxRow.attempts > 0)
    )
    return OutboxSummary(int(count or 0), oldest, int(failing or 0))


def list_recent(s: Session, limit: int = 50) -> list[OutboxEntry]:
    """The newest ``limit`` notifications, newest first."""
    rows = s.scalars(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit)).all()
    return [
        OutboxEntry(
            r.id,
            r.event_id,
            r.topic,
            r.created_at,
            r.delivered_at,
            r.attempts,
            r.next_attempt_at,
            r.last_status,
            r.last_error,
            _therapist_of(r.payload),
        )
        for r in rows
    ]


def _therapist_of(payload: dict[str, Any]) -> str | None:
    value = payload.get("therapist_id") if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None

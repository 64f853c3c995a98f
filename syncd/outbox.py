"""Notifications to the platform, written in the same transaction as the change that caused them
(the transactional outbox), delivered at least once by the daemon's delivery worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from syncd.store.tables import OutboxRow

TOPICS = (
    "availability.changed",
    "conflict.detected",
    "conflict.resolved",
    "offer.expired",
    "calendar.disconnected",
)


def enqueue(s: Session, topic: str, data: dict[str, Any], now: datetime) -> None:
    """Add a notification inside the caller's transaction: it exists iff the change commits."""
    if topic not in TOPICS:
        raise ValueError(f"unknown outbox topic {topic!r}")
    s.add(OutboxRow(topic=topic, payload=data, created_at=now, attempts=0))

"""Builders for platform events as the platform would send them (plain JSON-able dicts)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

_ids = itertools.count(1)


def event(type_: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt-{next(_ids)}",
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": data,
    }


def therapist(
    tid: str = "t-1", version: int = 1, zone: str = "Europe/London", **extra: Any
) -> dict[str, Any]:
    data = {"id": tid, "version": version, "display_name": "Dr Test", "timezone": zone}
    data.update(extra)
    return event("therapist.upserted", data)


def session(
    sid: str,
    start: datetime,
    *,
    version: int = 1,
    therapist_id: str = "t-1",
    minutes: int = 50,
    status: str = "confirmed",
    location: dict[str, Any] | None = None,
    client_name: str = "Jane Doe",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": sid,
        "version": version,
        "therapist_id": therapist_id,
        "client": {"id": f"c-{sid}", "name": client_name},
        "kind": "follow_up",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        "location": location or {"type": "in_person", "address": "10 Harley St, London"},
        "status": status,
    }
    data.update(extra)
    return event("session.upserted", data)


def future(days: int = 7, hour: int = 10) -> datetime:
    base = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days)


def offer(
    oid: str,
    session_id: str,
    alternatives: list[datetime],
    *,
    sent_at: datetime | None = None,
    expires_at: datetime | None = None,
    version: int = 1,
    state: str = "pending",
    minutes: int = 50,
    **extra: Any,
) -> dict[str, Any]:
    """An ``offer.upserted`` event: alternatives of ``minutes`` each, sent now unless given,
    expiring when the platform says (``expires_at``) or after the default 24 hours."""
    data: dict[str, Any] = {
        "id": oid,
        "version": version,
        "session_id": session_id,
        "alternatives": [
            {"start": a.isoformat(), "end": (a + timedelta(minutes=minutes)).isoformat()}
            for a in alternatives
        ],
        "sent_at": (sent_at or datetime.now(UTC)).isoformat(),
        "state": state,
    }
    if expires_at is not None:
        data["expires_at"] = expires_at.isoformat()
    data.update(extra)
    return event("offer.upserted", data)

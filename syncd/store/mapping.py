"""Rows ↔ domain objects. The only place that knows both shapes."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from syncd import domain as d
from syncd.store.tables import OfferRow, ReservedSlotRow, SessionRow, TherapistRow


def therapist_to_row(t: d.Therapist, row: TherapistRow, now: datetime) -> None:
    row.id = t.id
    row.version = t.version
    row.display_name = t.display_name
    row.timezone = t.timezone
    row.working_hours = [
        {"weekday": w.weekday, "start": w.start.isoformat(), "end": w.end.isoformat()}
        for w in t.working_hours
    ]
    row.slot_minutes = t.slot_minutes
    row.buffer_minutes = t.buffer_minutes
    row.active = t.active
    row.privacy = {
        "client_label": t.privacy.client_label.value,
        "include_location": t.privacy.include_location,
    }
    row.updated_at = now


def therapist_from_row(row: TherapistRow) -> d.Therapist:
    return d.Therapist(
        id=row.id,
        version=row.version,
        display_name=row.display_name,
        timezone=row.timezone,
        working_hours=tuple(
            d.WorkingHours(
                w["weekday"], time.fromisoformat(w["start"]), time.fromisoformat(w["end"])
            )
            for w in row.working_hours
        ),
        slot_minutes=row.slot_minutes,
        buffer_minutes=row.buffer_minutes,
        active=row.active,
        privacy=d.Privacy(
            d.ClientLabel(row.privacy.get("client_label", "none")),
            bool(row.privacy.get("include_location", True)),
        ),
    )


def _pair(value: Any) -> dict[str, Any] | None:
    return None if value is None else {"reason": value.reason.value, "by": value.by.value}


def session_to_row(s: d.Session, row: SessionRow, now: datetime) -> None:
    row.id = s.id
    row.version = s.version
    row.therapist_id = s.therapist_id
    row.client_id = s.client.id
    row.client_name = s.client.name
    row.kind = s.kind.value
    row.start_at = s.start
    row.end_at = s.end
    row.location = {
        "type": s.location.type.value,
        "address": s.location.address,
        "url": s.location.url,
    }
    row.status = s.status.value
    row.change = _pair(s.change)
    row.cancellation = _pair(s.cancellation)
    row.updated_at = now


def session_from_row(row: SessionRow) -> d.Session:
    change = row.change
    cancel = row.cancellation
    return d.Session(
        id=row.id,
        version=row.version,
        therapist_id=row.therapist_id,
        client=d.Client(row.client_id, row.client_name),
        kind=d.SessionKind(row.kind),
        start=row.start_at,
        end=row.end_at,
        location=d.Location(
            d.LocationType(row.location["type"]),
            row.location.get("address"),
            row.location.get("url"),
        ),
        status=d.SessionStatus(row.status),
        change=d.Change(d.ChangeReason(change["reason"]), d.Actor(change["by"]))
        if change
        else None,
        cancellation=(
            d.Cancellation(d.CancellationReason(cancel["reason"]), d.Actor(cancel["by"]))
            if cancel
            else None
        ),
    )


def reserved_slot_from_row(row: ReservedSlotRow) -> d.ReservedSlot:
    return d.ReservedSlot(
        id=row.id,
        version=row.version,
        therapist_id=row.therapist_id,
        client=d.Client(row.client_id, row.client_name),
        first_start_local=datetime.fromisoformat(row.first_start_local),
        timezone=row.timezone,
        duration=timedelta(minutes=row.duration_minutes),
        rrule=row.rrule,
        until=row.until,
        state=d.ReservationState(row.state),
    )


def offer_to_row(o: d.Offer, therapist_id: str, row: OfferRow, now: datetime) -> None:
    row.id = o.id
    row.version = o.version
    row.session_id = o.session_id
    row.therapist_id = therapist_id
    row.alternatives = [
        {"start": a.start.isoformat(), "end": a.end.isoformat()} for a in o.alternatives
    ]
    row.sent_at = o.sent_at
    row.expires_at = o.expires_at
    row.state = o.state.value
    row.accepted_alternative = o.accepted_alternative
    row.responded_at = o.responded_at
    row.updated_at = now


def offer_from_row(row: OfferRow) -> d.Offer:
    return d.Offer(
        id=row.id,
        version=row.version,
        session_id=row.session_id,
        alternatives=tuple(
            d.Alternative(datetime.fromisoformat(a["start"]), datetime.fromisoformat(a["end"]))
            for a in row.alternatives
        ),
        sent_at=row.sent_at,
        expires_at=row.expires_at,
        state=d.OfferState(row.state),
        accepted_alternative=row.accepted_alternative,
        responded_at=row.responded_at,
    )


def reserved_slot_to_row(r: d.ReservedSlot, row: ReservedSlotRow, now: datetime) -> None:
    row.id = r.id
    row.version = r.version
    row.therapist_id = r.therapist_id
    row.client_id = r.client.id
    row.client_name = r.client.name
    row.first_start_local = r.first_start_local.isoformat()
    row.timezone = r.timezone
    row.duration_minutes = int(r.duration.total_seconds() // 60)
    row.rrule = r.rrule
    row.until = r.until
    row.state = r.state.value
    row.updated_at = now

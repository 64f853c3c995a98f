"""What occupies a therapist's time: sessions, holds of pending offers, reserved occurrences.
Pure; used by the booking rules (overlap checks) and by availability."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from syncd import domain as d
from syncd.domain import PlatformState
from syncd.recurrence import occurrences


@dataclass(frozen=True, slots=True)
class Occupied:
    interval: d.Interval
    kind: str  # session | hold | reserved
    entity_id: str  # the session, offer or reservation id

    @property
    def what(self) -> str:
        return {"session": "session", "hold": "hold of offer", "reserved": "reserved slot"}[
            self.kind
        ] + f" {self.entity_id}"


def pending_offers(state: PlatformState, now: datetime) -> Iterator[d.Offer]:
    for offer in state.offers:
        if offer.state is d.OfferState.PENDING and now < offer.expires_at:
            yield offer


def occupied(
    state: PlatformState,
    window: d.Interval,
    now: datetime,
    *,
    except_session: str | None = None,
    except_offer: str | None = None,
) -> Iterator[Occupied]:
    for s in state.sessions:
        if s.blocks_time and s.id != except_session and s.interval.overlaps(window):
            yield Occupied(s.interval, "session", s.id)
    for offer in pending_offers(state, now):
        if offer.id == except_offer:
            continue
        for alt in offer.alternatives:
            held = d.Interval(alt.start, alt.end)
            if held.overlaps(window):
                yield Occupied(held, "hold", offer.id)
    for slot in state.reserved_slots:
        if slot.state is d.ReservationState.ACTIVE or slot.until is not None:
            for occ in occurrences(slot, window.start, window.end):
                yield Occupied(occ, "reserved", slot.id)

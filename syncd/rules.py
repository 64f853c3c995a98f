"""The platform's booking rules (DESIGN.md §1), checked on every inbound change. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from syncd import domain as d
from syncd import occupancy
from syncd.contract import ContractError
from syncd.domain import PlatformState


def check_session_change(old: d.Session | None, new: d.Session, now: datetime) -> None:
    """Refuse a session version that would put the calendar into an impossible state."""
    if old is None:
        return
    if old.therapist_id != new.therapist_id:
        raise ContractError(
            "data.therapist_id",
            "therapist_immutable",
            f"a session cannot move to another therapist (was {old.therapist_id})",
        )
    moved = (old.start, old.end) != (new.start, new.end)
    reinstated = (
        old.status is d.SessionStatus.CANCELLED and new.status is not d.SessionStatus.CANCELLED
    )
    if not (moved or reinstated):
        return
    what = "a move" if moved else "reinstating a cancelled session"
    if new.change is None:
        raise ContractError(
            "data.change",
            "reason_required",
            f"{what} needs change {{reason, by}} with reason one of "
            + ", ".join(r.value for r in d.ChangeReason),
        )
    if old.start <= now and new.change.by is not d.Actor.TEAM:
        raise ContractError(
            "data.change.by",
            "past_session_team_only",
            f"the session started at {old.start.isoformat()}; only the platform team "
            f"(by: team) may do {what} now",
        )


def _at(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_offer(
    old: d.Offer | None,
    new: d.Offer,
    session: d.Session,
    state: PlatformState,
    now: datetime,
) -> None:
    """The rules of offers of alternative times (DESIGN.md §1)."""
    if old is not None:
        _check_offer_transition(old, new, now)
    if new.state in (d.OfferState.ACCEPTED, d.OfferState.REJECTED):
        if new.responded_at is None:
            raise ContractError(
                "data.responded_at", "response_time_required", f"an {new.state} offer needs it"
            )
        if new.responded_at > new.expires_at:
            raise ContractError(
                "data.responded_at",
                "late_response",
                f"the client responded at {_at(new.responded_at)}, after the offer expired at "
                f"{_at(new.expires_at)}; the session stays at its original time",
            )
    if old is None and new.state is d.OfferState.PENDING:
        _check_new_pending(new, session, state, now)


def _check_offer_transition(old: d.Offer, new: d.Offer, now: datetime) -> None:
    if old.session_id != new.session_id:
        raise ContractError(
            "data.session_id", "offer_session_immutable", f"offer is for {old.session_id}"
        )
    if old.state in (d.OfferState.ACCEPTED, d.OfferState.REJECTED) and new.state != old.state:
        raise ContractError("data.state", "offer_final", f"the offer was already {old.state}")
    if old.state is d.OfferState.EXPIRED and new.state is d.OfferState.PENDING:
        raise ContractError(
            "data.state",
            "offer_expired",
            f"the offer expired at {_at(old.expires_at)}; send a new offer instead",
        )
    if old.state is not d.OfferState.PENDING:
        return
    locked = (
        f"a pending offer cannot be changed or withdrawn until it expires at {_at(old.expires_at)}"
    )
    if (old.alternatives, old.expires_at, old.sent_at) != (
        new.alternatives,
        new.expires_at,
        new.sent_at,
    ):
        raise ContractError("data", "offer_locked", locked)
    if new.state is d.OfferState.EXPIRED and now < old.expires_at:
        raise ContractError("data.state", "offer_locked", locked)


def _check_new_pending(
    new: d.Offer, session: d.Session, state: PlatformState, now: datetime
) -> None:
    if not session.blocks_time:
        raise ContractError(
            "data.session_id", "session_cancelled", f"session {session.id} is cancelled"
        )
    for other in occupancy.pending_offers(state, now):
        if other.session_id == new.session_id and other.id != new.id:
            raise ContractError(
                "data.session_id",
                "one_pending_offer",
                f"offer {other.id} for this session is pending until {_at(other.expires_at)}",
            )
    spans = [d.Interval(a.start, a.end) for a in new.alternatives]
    for i, span in enumerate(spans):
        if span.start <= new.sent_at:
            raise ContractError(
                f"data.alternatives.{i}.start",
                "alternative_in_past",
                f"{_at(span.start)} is not after sent_at {_at(new.sent_at)}",
            )
        for j in range(i):
            if spans[j].overlaps(span):
                raise ContractError(
                    f"data.alternatives.{i}", "alternatives_overlap", f"overlaps alternative {j}"
                )
        for taken in occupancy.occupied(
            state, span, now, except_session=session.id, except_offer=new.id
        ):
            raise ContractError(
                f"data.alternatives.{i}",
                "slot_taken",
                f"{_at(span.start)}-{_at(span.end)} overlaps {taken.what} "
                f"({_at(taken.interval.start)}-{_at(taken.interval.end)})",
            )

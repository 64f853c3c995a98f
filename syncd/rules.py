"""The platform's booking rules (DESIGN.md §1), checked on every inbound change. Pure."""

from __future__ import annotations

from datetime import datetime

from syncd import domain as d
from syncd.contract import ContractError


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

"""The booking rules of DESIGN.md §1 as check_session_change enforces them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd import domain as d
from syncd.contract import ContractError
from syncd.rules import check_session_change

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FUTURE = NOW + timedelta(days=3)
PAST = NOW - timedelta(days=3)
HOUR = timedelta(hours=1)


def session(start: datetime = FUTURE, **changes: Any) -> d.Session:
    base = d.Session(
        id="s-1",
        version=1,
        therapist_id="t-1",
        client=d.Client("c-1", "Jane Doe"),
        kind=d.SessionKind.FOLLOW_UP,
        start=start,
        end=start + timedelta(minutes=50),
        location=d.Location(d.LocationType.VIDEO),
        status=d.SessionStatus.CONFIRMED,
    )
    return dataclasses.replace(base, **changes)


def moved(old: d.Session, by: d.Actor | None, delta: timedelta = HOUR, **more: Any) -> d.Session:
    change = None if by is None else d.Change(d.ChangeReason.CLIENT_REQUESTED, by)
    return dataclasses.replace(
        old,
        version=old.version + 1,
        start=old.start + delta,
        end=old.end + delta,
        change=change,
        **more,
    )


def cancelled(start: datetime) -> d.Session:
    return session(
        start,
        status=d.SessionStatus.CANCELLED,
        cancellation=d.Cancellation(d.CancellationReason.CLIENT_CANCELLED, d.Actor.CLIENT),
    )


def reinstated(old: d.Session, by: d.Actor) -> d.Session:
    return dataclasses.replace(
        old,
        version=old.version + 1,
        status=d.SessionStatus.CONFIRMED,
        cancellation=None,
        change=d.Change(d.ChangeReason.CORRECTING_ERROR, by),
    )


def refusal(old: d.Session | None, new: d.Session, now: datetime = NOW) -> ContractError:
    with pytest.raises(ContractError) as info:
        check_session_change(old, new, now)
    assert "\n" not in str(info.value)
    return info.value


def test_a_new_session_needs_no_change() -> None:
    check_session_change(None, session(), NOW)
    check_session_change(None, session(PAST), NOW)


@pytest.mark.parametrize("start", [FUTURE, PAST], ids=["future", "past"])
def test_a_move_without_change_needs_a_reason(start: datetime) -> None:
    old = session(start)
    err = refusal(old, moved(old, by=None))
    assert (err.field, err.rule) == ("data.change", "reason_required")
    for reason in d.ChangeReason:
        assert reason.value in err.message


def test_changing_only_the_end_is_a_move() -> None:
    old = session()
    longer = dataclasses.replace(old, version=2, end=old.end + HOUR)
    assert refusal(old, longer).rule == "reason_required"


@pytest.mark.parametrize("reason", list(d.ChangeReason))
@pytest.mark.parametrize("by", [d.Actor.THERAPIST, d.Actor.CLIENT, d.Actor.TEAM])
def test_a_future_session_moves_with_any_valid_reason(reason: d.ChangeReason, by: d.Actor) -> None:
    old = session()
    new = moved(old, by=by)
    new = dataclasses.replace(new, change=d.Change(reason, by))
    check_session_change(old, new, NOW)  # no error


@pytest.mark.parametrize("by", [d.Actor.THERAPIST, d.Actor.CLIENT, d.Actor.SYSTEM])
def test_a_past_session_moves_only_by_team(by: d.Actor) -> None:
    old = session(PAST)
    err = refusal(old, moved(old, by=by))
    assert (err.field, err.rule) == ("data.change.by", "past_session_team_only")
    assert PAST.isoformat() in err.message


def test_a_session_starting_exactly_now_counts_as_past() -> None:
    old = session(NOW)
    assert refusal(old, moved(old, by=d.Actor.THERAPIST)).rule == "past_session_team_only"


def test_a_session_starting_just_after_now_is_still_future() -> None:
    old = session(NOW + timedelta(seconds=1))
    check_session_change(old, moved(old, by=d.Actor.THERAPIST), NOW)


def test_moving_a_future_session_into_the_past_is_judged_by_its_old_start() -> None:
    old = session(NOW + HOUR)
    check_session_change(old, moved(old, by=d.Actor.THERAPIST, delta=-3 * HOUR), NOW)


def test_team_may_move_a_past_session() -> None:
    old = session(PAST)
    check_session_change(old, moved(old, by=d.Actor.TEAM), NOW)


def test_team_may_reinstate_a_cancelled_past_session() -> None:
    old = cancelled(PAST)
    check_session_change(old, reinstated(old, d.Actor.TEAM), NOW)


@pytest.mark.parametrize("by", [d.Actor.THERAPIST, d.Actor.CLIENT])
def test_others_may_not_reinstate_a_cancelled_past_session(by: d.Actor) -> None:
    old = cancelled(PAST)
    err = refusal(old, reinstated(old, by))
    assert (err.field, err.rule) == ("data.change.by", "past_session_team_only")
    assert "reinstating" in err.message


def test_reinstating_without_change_needs_a_reason() -> None:
    old = cancelled(FUTURE)
    new = dataclasses.replace(reinstated(old, d.Actor.THERAPIST), change=None)
    assert refusal(old, new).rule == "reason_required"


def test_therapist_may_reinstate_a_cancelled_future_session() -> None:
    old = cancelled(FUTURE)
    check_session_change(old, reinstated(old, d.Actor.THERAPIST), NOW)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (d.SessionStatus.CONFIRMED, d.SessionStatus.COMPLETED),
        (d.SessionStatus.UNCONFIRMED, d.SessionStatus.CONFIRMED),
    ],
)
def test_a_status_only_change_of_a_past_session_is_fine(
    before: d.SessionStatus, after: d.SessionStatus
) -> None:
    old = session(PAST, status=before)
    check_session_change(old, dataclasses.replace(old, version=2, status=after), NOW)


def test_cancelling_a_past_session_is_not_a_move() -> None:
    old = session(PAST)
    new = dataclasses.replace(
        old,
        version=2,
        status=d.SessionStatus.CANCELLED,
        cancellation=d.Cancellation(d.CancellationReason.ADMIN_ACTION, d.Actor.TEAM),
    )
    check_session_change(old, new, NOW)


@pytest.mark.parametrize("start", [FUTURE, PAST], ids=["future", "past"])
def test_the_therapist_of_a_session_is_immutable(start: datetime) -> None:
    old = session(start)
    other = dataclasses.replace(old, version=2, therapist_id="t-2")
    err = refusal(old, other)
    assert (err.field, err.rule) == ("data.therapist_id", "therapist_immutable")
    # Even with a team change and a move, the therapist cannot change.
    err = refusal(old, moved(old, by=d.Actor.TEAM, therapist_id="t-2"))
    assert err.rule == "therapist_immutable"

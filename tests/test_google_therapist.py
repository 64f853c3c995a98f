"""What therapists do in Google Calendar, and what Google itself does, against syncd: each test
runs in every profile of the stand-in's undocumented behaviour (MODE_PROFILES). The first four
are the situations of issue 13, which failed before the fixes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from syncd import operations
from syncd.store.tables import ConnectionRow, MirrorRow
from tests import test_google
from tests.support import factories as f
from tests.support.google_standin import GoogleStandIn, fixtures
from tests.support.google_standin.fixtures import build_service
from tests.test_google import ANN, BOB, CLIENT_ID, CLIENT_SECRET, World, ingest, sessions, sync

google_standin = fixtures.google_standin_every_mode
world = test_google.world
LONDON = ZoneInfo("Europe/London")


def at(when: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(when["dateTime"]).astimezone(UTC)


def full_access(world: World) -> Any:
    """A client with full calendar access, to look at the calendar as Google shows it."""
    return build_service(
        world.g,
        world.g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET),
    )


def reservation(first: datetime) -> dict[str, Any]:
    local = first.astimezone(LONDON).replace(tzinfo=None)
    return f.event(
        "reserved_slot.upserted",
        {
            "id": "r-1",
            "version": 1,
            "therapist_id": "t-ann",
            "client": {"id": "c-77", "name": "Jane Doe"},
            "first_start_local": local.isoformat(),
            "timezone": "Europe/London",
            "duration_minutes": 50,
            "rrule": "FREQ=WEEKLY;COUNT=6",
            "state": "active",
        },
    )


def test_a_session_dragged_in_google_goes_back_to_the_platform_time(world: World) -> None:
    """Situation 1: Google raises an event's ``sequence`` when the therapist drags it; a repair
    that sends the old sequence gets 400 invalidSequenceValue on every pass."""
    cid = world.connect("t-ann", ANN)
    start = f.future(days=3, hour=9)
    ingest(world.app, [f.session("s-1", start, therapist_id="t-ann")])
    sync(world.app.engine(), "t-ann")
    calendar = world.calendar(cid)
    [event] = world.ours(calendar)
    dragged = world.g.user_drag(calendar, event["id"], start + timedelta(hours=2))
    assert dragged["sequence"] == event["sequence"] + 1
    engine = world.app.engine()  # a fresh process: nothing remembered of the event
    sync(engine, "t-ann")
    back = world.g.get_event(calendar, event["id"])
    assert back is not None and at(back["start"]) == start
    assert back["sequence"] >= dragged["sequence"]
    report = engine.run_pass("t-ann")
    assert not report.failed and sum(c.applied for c in report.connections) == 0


def test_occurrences_of_a_reserved_slot_changed_in_google_are_put_back(world: World) -> None:
    """Situation 2: the therapist moves one occurrence of a reserved weekly slot, retitles
    another and deletes a third ("This event" in Google's UI: exception instances); syncd puts
    each back as the series says. The therapist's own recurring event, with an occurrence they
    moved, is left exactly as it is."""
    cid = world.connect("t-ann", ANN)
    day = date.today() + timedelta(days=7)
    first = datetime(day.year, day.month, day.day, 10, tzinfo=LONDON).astimezone(UTC)
    ingest(world.app, [reservation(first)])
    engine = world.app.engine()
    sync(engine, "t-ann")
    calendar = world.calendar(cid)
    [master] = world.ours(calendar)
    week = [(first.astimezone(LONDON) + timedelta(weeks=n)).astimezone(UTC) for n in range(6)]
    own = world.g.put_event(
        calendar,
        {
            "summary": "Supervision",
            "start": {"dateTime": (first - timedelta(hours=2)).isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": (first - timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"],
        },
    )
    own_moved = world.g.user_move_instance(
        calendar, own["id"], first - timedelta(hours=2), first - timedelta(hours=4)
    )
    world.g.user_move_instance(calendar, master["id"], week[1], week[1] + timedelta(hours=3))
    world.g.user_edit_title(calendar, world.g.instance_id(master["id"], week[2]), "Lunch")
    world.g.user_delete_instance(calendar, master["id"], week[3])

    sync(engine, "t-ann")
    report = engine.run_pass("t-ann")  # converged: nothing left to do, no loop
    assert not report.failed and sum(c.applied for c in report.connections) == 0

    listing = (
        full_access(world)
        .events()
        .list(
            calendarId=calendar,
            singleEvents=True,
            timeMin=(first - timedelta(days=1)).isoformat(),
            timeMax=(week[-1] + timedelta(days=1)).isoformat(),
        )
        .execute()["items"]
    )
    ours = [e for e in listing if e.get("summary") != "Supervision"]
    assert sorted(at(e["start"]) for e in ours) == week
    assert {e["summary"] for e in ours} == {master["summary"]}
    assert all(at(e["end"]) - at(e["start"]) == timedelta(minutes=50) for e in ours)
    theirs = sorted(at(e["start"]) for e in listing if e.get("summary") == "Supervision")
    assert theirs == [
        first - timedelta(hours=4),
        first - timedelta(hours=2) + timedelta(weeks=1),
        first - timedelta(hours=2) + timedelta(weeks=2),
    ]
    assert world.g.get_event(calendar, own_moved["id"]) == own_moved


def test_one_busy_calendar_failing_in_freebusy_leaves_the_others_counting(world: World) -> None:
    """Situation 3: freeBusy answers an error for one calendar inside a good answer (a calendar
    deleted since it was chosen: notFound). Only that calendar keeps its last known busy time;
    the others count, and the reason shows in status and in the availability response."""
    cid = world.connect("t-ann", ANN)
    work = world.g.add_calendar(ANN, "Work")
    old = world.g.add_calendar(ANN, "Old")
    engine = world.app.engine()
    sync(engine, "t-ann")
    appointment = f.future(days=2, hour=11)
    world.g.put_event(
        work,
        {
            "summary": "Dentist",
            "start": {"dateTime": appointment.isoformat()},
            "end": {"dateTime": (appointment + timedelta(hours=1)).isoformat()},
        },
    )
    world.g.fail_freebusy(old, "notFound")
    with world.app.sessions.begin() as s:  # the busy time is due again
        s.execute(update(ConnectionRow).values(busy_fetched_at=None))
    sync(engine, "t-ann")

    view = operations.availability_for(
        world.app, "t-ann", appointment - timedelta(hours=3), appointment + timedelta(hours=3)
    )
    assert all(
        slot.end <= appointment or slot.start >= appointment + timedelta(hours=1)
        for slot in view.slots
    )
    [source] = [s for s in view.sources if s.source.startswith(f"connection {cid}")]
    assert source.stale and source.error and old in source.error and "notFound" in source.error
    [row] = [r for r in operations.status(world.app) if r.connection_id == cid]
    assert row.busy_state == "stale" and row.busy_error and old in row.busy_error
    assert row.state == "ok"


def test_connecting_to_an_existing_calendar_works_under_its_scopes(world: World) -> None:
    """Situation 4: ``--calendar primary`` asks for the existing-calendar scopes and every call
    that mode makes is permitted by them (the stand-in refuses any other, 403)."""
    world.g.consenting_account = ANN
    cid = _connect_existing(world, "primary")
    ingest(world.app, sessions("t-ann", 3))
    sync(world.app.engine(), "t-ann")
    assert len(world.ours(ANN)) == 3
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None and not row.calendar_owned and row.state == "ok"


def _connect_existing(world: World, calendar: str) -> int:
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from syncd import google_auth

    url = google_auth.authorization_url(
        world.app, "t-ann", calendar_id=calendar, redirect_base="http://127.0.0.1:9"
    )
    scope = parse_qs(urlsplit(url).query)["scope"][0].split()
    assert "https://www.googleapis.com/auth/calendar.events.owned" in scope
    assert "https://www.googleapis.com/auth/calendar.app.created" not in scope
    answer = httpx.get(url, follow_redirects=False, timeout=5)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    return google_auth.complete(world.app, query["state"][0], query["code"][0])


def test_an_entry_deleted_again_and_again_is_restored_each_time(world: World) -> None:
    """Restoring a deleted entry never becomes a failure loop, whatever Google does with the
    id of a deleted event (409, 403, 410, 404, undelete, purge)."""
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 1))
    engine = world.app.engine()
    sync(engine, "t-ann")
    calendar = world.calendar(cid)
    for _ in range(4):
        [event] = world.ours(calendar)
        world.g.user_delete_event(calendar, event["id"])
        world.g.reset_counts()
        sync(engine, "t-ann")
        assert len(world.ours(calendar)) == 1
        # One generation further at most: never a walk through all the burnt ones.
        assert world.g.calls["events.insert"] <= 3, dict(world.g.calls)
    with world.app.sessions() as s:
        assert len(s.scalars(select(MirrorRow)).all()) == 1


def test_throttled_batch_parts_wait_for_the_next_pass(world: World) -> None:
    """Parts of a batch refused by the per-user rate limit are not resent at once: the pass
    ends with backoff and the next one writes them ("Send batch requests": each part counts)."""
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 20))
    throttle = world.g.inject("user_rate_limit", times=3, methods=["events.insert"])
    world.g.reset_counts()
    report = world.app.engine().run_pass("t-ann")
    assert report.failed and report.retryable and throttle.hits == 3
    assert world.g.calls["events.insert"] == 20  # the 3 refused parts were not sent again
    assert len(world.ours(world.calendar(cid))) == 17
    sync(world.app.engine(), "t-ann")
    assert len(world.ours(world.calendar(cid))) == 20


def test_a_calendar_over_its_usage_limits_pauses_that_connection_only(world: World) -> None:
    """Google's usage limits of one calendar last hours ("Avoid Calendar use limits"): syncd
    leaves that connection alone for as long as Google says (Retry-After), visibly, while
    another therapist's calendar goes on."""
    ann = world.connect("t-ann", ANN)
    bob = world.connect("t-bob", BOB)
    ingest(world.app, sessions("t-ann", 2, "a") + sessions("t-bob", 2, "b"))
    world.g.limit_calendar(world.calendar(ann), 7200, retry_after=7200)
    engine = world.app.engine()
    assert engine.run_pass("t-ann").failed
    sync(engine, "t-bob")
    assert len(world.ours(world.calendar(bob))) == 2
    [row] = [r for r in operations.status(world.app) if r.connection_id == ann]
    assert row.paused_until is not None
    assert timedelta(minutes=110) < row.paused_until - world.app.clock() <= timedelta(hours=2)
    world.g.reset_counts()
    assert not engine.run_pass("t-ann").failed  # paused: not a failure, and nothing sent
    assert world.g.calls["events.insert"] == 0 and world.g.calls["batch"] == 0
    world.g.limit_calendar(world.calendar(ann), 0)
    with world.app.sessions.begin() as s:  # as if the pause had run out
        s.execute(update(ConnectionRow).values(backoff_until=world.app.clock()))
    sync(engine, "t-ann")
    assert len(world.ours(world.calendar(ann))) == 2


@pytest.mark.parametrize("mode", ["dedicated", "existing"])
def test_the_stand_in_refuses_a_call_the_grant_does_not_permit(
    google_standin: GoogleStandIn, mode: str
) -> None:
    """Held to the discovery document's scopes: a dedicated-mode grant cannot read the
    therapist's primary calendar's events."""
    from googleapiclient.errors import HttpError

    from connectors.google.scopes import scopes_for

    token = google_standin.add_account(ANN, scopes=scopes_for(mode))
    service = build_service(google_standin, token)
    request = service.events().list(calendarId="primary")
    if mode == "existing":
        request.execute()
        return
    with pytest.raises(HttpError) as refused:
        request.execute()
    assert refused.value.resp.status == 403 and b"insufficientPermissions" in refused.value.content

"""The soak's therapist in Google Calendar (tests/support/soak/google_actions.py): each action
changes what the therapist would see, and the occurrence check finds every changed occurrence
until it is put back as its series defines it."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.google_standin import GoogleStandIn
from tests.support.google_standin.fixtures import build_service
from tests.support.soak import google_actions as soak_google

EMAIL = "therapist@example.com"
START = datetime(2027, 3, 2, 10, 0, tzinfo=UTC)
WEEK = timedelta(weeks=1)


def syncd_body(uid: str, start: datetime = START, **extra: Any) -> dict[str, Any]:
    return {
        "summary": "Reserved slot",
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(minutes=30)).isoformat(), "timeZone": "UTC"},
        "extendedProperties": {"private": {"syncdUid": uid}},
    } | extra


def occurrence_problems(g: GoogleStandIn, service: Any) -> list[str]:
    listed = service.events().list(calendarId=EMAIL).execute()["items"]
    return soak_google.check_occurrences("t-1", *soak_google.split(listed))


def test_a_changed_occurrence_is_found_until_it_is_put_back(google_standin: GoogleStandIn) -> None:
    g = google_standin
    service = build_service(g, g.add_account(EMAIL))
    series = syncd_body("syncd-reserved-r-1@syncd", recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    master = g.put_event(EMAIL, series)
    assert occurrence_problems(g, service) == []
    g.user_move_instance(EMAIL, master["id"], START + WEEK, START + WEEK + timedelta(hours=1))
    g.user_delete_instance(EMAIL, master["id"], START + 2 * WEEK)
    g.user_edit_title(EMAIL, g.instance_id(master["id"], START + 3 * WEEK), "Mine now")
    found = occurrence_problems(g, service)
    assert len(found) == 3 and all("syncd-reserved-r-1@syncd" in p for p in found), found
    # put back as the series defines them (the moved one at its time, the others confirmed
    # with the series' title): an exception that looks like its occurrence is no problem
    for week in (1, 2, 3):
        g.edit_event(
            EMAIL,
            g.instance_id(master["id"], START + week * WEEK),
            status="confirmed",
            summary="Reserved slot",
            start={"dateTime": (START + week * WEEK).isoformat(), "timeZone": "UTC"},
            end={
                "dateTime": (START + week * WEEK + timedelta(minutes=30)).isoformat(),
                "timeZone": "UTC",
            },
        )
    assert occurrence_problems(g, service) == []


def test_occurrences_the_series_no_longer_shows_are_not_held_to_it(
    google_standin: GoogleStandIn,
) -> None:
    g = google_standin
    service = build_service(g, g.add_account(EMAIL))
    series = syncd_body("syncd-reserved-r-1@syncd", recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    master = g.put_event(EMAIL, series)
    g.user_delete_instance(EMAIL, master["id"], START + WEEK)
    assert len(occurrence_problems(g, service)) == 1
    # the platform books the client's own session on that occurrence: syncd adds an EXDATE
    g.edit_event(
        EMAIL,
        master["id"],
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE:20270309T100000Z"],
    )
    assert occurrence_problems(g, service) == []


def test_each_kind_of_action_is_taken_in_turn(google_standin: GoogleStandIn) -> None:
    g = google_standin
    token = g.add_account(EMAIL)
    service = build_service(g, token)
    g.put_event(EMAIL, syncd_body("syncd-session-s-1@syncd", summary="Therapy session"))
    g.put_event(EMAIL, syncd_body("syncd-session-s-2@syncd", summary="Therapy session"))
    g.put_event(
        EMAIL, syncd_body("syncd-reserved-r-1@syncd", recurrence=["RRULE:FREQ=WEEKLY;COUNT=9"])
    )
    own = g.put_event(EMAIL, syncd_body("mine@example.com", summary="Dentist"))
    before = {e["id"]: e for e in g.events(EMAIL)}
    done: Counter[str] = Counter()
    rng = random.Random(3)
    for _ in soak_google.KINDS:
        kind = soak_google.act(rng, g, lambda _tid: service, {"t-1": EMAIL}, done)
        assert kind is not None
        done[kind] += 1
    assert done == Counter(soak_google.KINDS)
    after = g.events(EMAIL, include_deleted=True)
    changed = [e for e in after if before.get(e["id"]) != e]
    # every action left a trace: a single event dragged, retitled and deleted (one may be hit
    # twice), and two exception instances of the series, one moved and one cancelled
    assert len([e for e in changed if e.get("recurringEventId")]) == 2
    assert any(e.get("status") == "cancelled" for e in changed if not e.get("recurringEventId"))
    assert g.get_event(EMAIL, own["id"]) == own  # never the therapist's own event
    assert (
        soak_google.act(rng, g, lambda _tid: service, {"t-1": g.add_calendar(EMAIL, "x")}, done)
        is None
    )

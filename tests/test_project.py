"""Projection (DESIGN.md §2): what a therapist sees, privacy by default, stable identities, and the
iCalendar rendering of it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import domain as d
from syncd import ical
from syncd.domain import PlatformState
from syncd.project import (
    Entry,
    client_label,
    is_legacy_hash,
    is_ours,
    location_text,
    name_for,
    project,
    uid_for,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
ADDRESS = "10 Harley St, London"


def therapist(
    label: d.ClientLabel = d.ClientLabel.NONE,
    include_location: bool = True,
    zone: str = "Europe/London",
) -> d.Therapist:
    return d.Therapist(
        id="t-1",
        version=1,
        display_name="Dr Example",
        timezone=zone,
        privacy=d.Privacy(label, include_location),
    )


def session(sid: str = "s-1", start: datetime = START, **changes: Any) -> d.Session:
    base = d.Session(
        id=sid,
        version=1,
        therapist_id="t-1",
        client=d.Client("c-1", "Jane Doe"),
        kind=d.SessionKind.FOLLOW_UP,
        start=start,
        end=start + timedelta(minutes=50),
        location=d.Location(d.LocationType.IN_PERSON, ADDRESS),
        status=d.SessionStatus.CONFIRMED,
    )
    return dataclasses.replace(base, **changes)


def entries(t: d.Therapist, *sessions: d.Session) -> dict[str, Entry]:
    return project(PlatformState(therapist=t, sessions=sessions), NOW)


def only(t: d.Therapist, s: d.Session) -> Entry:
    result = entries(t, s)
    assert list(result) == [uid_for("session", s.id)]
    return result[uid_for("session", s.id)]


def text_fields(e: Entry) -> list[str]:
    return [str(value) for value in e]


# -- privacy and titles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        d.Location(d.LocationType.IN_PERSON, ADDRESS),
        d.Location(d.LocationType.VIDEO, url="https://meet.example/room"),
        d.Location(d.LocationType.PHONE),
    ],
)
@pytest.mark.parametrize(
    "status", [d.SessionStatus.CONFIRMED, d.SessionStatus.UNCONFIRMED, d.SessionStatus.COMPLETED]
)
def test_client_name_appears_nowhere_by_default(
    location: d.Location, status: d.SessionStatus
) -> None:
    client = d.Client("c-1", "Jane Doe")
    e = only(therapist(), session(client=client, location=location, status=status))
    assert e.summary.startswith("Therapy session")
    fields = [e.summary, e.description, e.location or "", *text_fields(e)]
    for text in fields:
        for part in ("jane", "doe", "j.d."):
            assert part not in text.lower(), f"client name leaked into {text!r}"
    body = ical.render(e, NOW).lower()
    assert "jane" not in body and "doe" not in body


def test_default_title_is_generic() -> None:
    assert only(therapist(), session()).summary == "Therapy session"


def test_initials_only_when_opted_in() -> None:
    e = only(therapist(d.ClientLabel.INITIALS), session())
    assert "J.D." in e.summary
    assert "Jane" not in e.summary and "Doe" not in e.summary


def test_first_name_only_when_opted_in() -> None:
    e = only(therapist(d.ClientLabel.FIRST_NAME), session())
    assert "Jane" in e.summary
    assert "Doe" not in e.summary
    assert all("Doe" not in text for text in text_fields(e))


@pytest.mark.parametrize(
    ("name", "choice", "expected"),
    [
        ("Jane Doe", d.ClientLabel.INITIALS, "J.D."),
        ("jane  mary doe", d.ClientLabel.INITIALS, "J.M.D."),
        ("Jane", d.ClientLabel.INITIALS, "J."),
        ("Jane Doe", d.ClientLabel.FIRST_NAME, "Jane"),
        ("  Jane   Doe ", d.ClientLabel.FIRST_NAME, "Jane"),
        ("Jane Doe", d.ClientLabel.NONE, None),
        (None, d.ClientLabel.INITIALS, None),
        ("   ", d.ClientLabel.FIRST_NAME, None),
    ],
)
def test_client_label(name: str | None, choice: d.ClientLabel, expected: str | None) -> None:
    assert client_label(d.Client("c-1", name), choice) == expected


def test_unknown_client_name_gives_the_generic_title() -> None:
    e = only(therapist(d.ClientLabel.FIRST_NAME), session(client=d.Client("c-1")))
    assert e.summary == "Therapy session"


def test_unconfirmed_is_tentative_and_asks_for_confirmation() -> None:
    e = only(therapist(), session(status=d.SessionStatus.UNCONFIRMED))
    assert e.status == "TENTATIVE"
    assert e.summary == "Therapy session (unconfirmed — please confirm on the platform)"
    assert "please confirm this booking on the platform" in e.description
    labelled = only(therapist(d.ClientLabel.INITIALS), session(status=d.SessionStatus.UNCONFIRMED))
    assert labelled.summary == (
        "Therapy session · J.D. (unconfirmed — please confirm on the platform)"
    )


@pytest.mark.parametrize("status", [d.SessionStatus.CONFIRMED, d.SessionStatus.COMPLETED])
def test_confirmed_is_confirmed(status: d.SessionStatus) -> None:
    e = only(therapist(), session(status=status))
    assert e.status == "CONFIRMED"
    assert "unconfirmed" not in e.summary
    assert e.kind == "session"
    assert (e.start, e.end) == (START, START + timedelta(minutes=50))
    assert e.timezone == "Europe/London"


def test_cancelled_sessions_are_absent() -> None:
    gone = session(
        "s-2",
        status=d.SessionStatus.CANCELLED,
        cancellation=d.Cancellation(d.CancellationReason.CLIENT_CANCELLED, d.Actor.CLIENT),
    )
    result = entries(therapist(), session("s-1"), gone)
    assert set(result) == {uid_for("session", "s-1")}


def test_paused_therapist_keeps_booked_sessions() -> None:
    t = dataclasses.replace(therapist(), active=False)
    assert set(entries(t, session())) == {uid_for("session", "s-1")}


# -- location ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (d.Location(d.LocationType.IN_PERSON, ADDRESS), ADDRESS),
        (d.Location(d.LocationType.VIDEO, url="https://meet.example/r"), "https://meet.example/r"),
        (d.Location(d.LocationType.VIDEO), "Video call"),
        (d.Location(d.LocationType.PHONE), "Phone call"),
    ],
)
def test_location_text_per_type(location: d.Location, expected: str) -> None:
    assert location_text(location, d.Privacy()) == expected
    assert only(therapist(), session(location=location)).location == expected
    assert location_text(location, d.Privacy(include_location=False)) is None


@pytest.mark.parametrize(
    "location",
    [
        d.Location(d.LocationType.IN_PERSON, ADDRESS),
        d.Location(d.LocationType.VIDEO, url="https://meet.example/r"),
        d.Location(d.LocationType.PHONE),
    ],
)
def test_no_location_when_turned_off(location: d.Location) -> None:
    e = only(therapist(include_location=False), session(location=location))
    assert e.location is None
    body = ical.render(e, NOW)
    assert "LOCATION" not in body
    assert "Harley" not in body and "meet.example" not in body


# -- identity ----------------------------------------------------------------------------------


def test_uid_is_stable_across_versions_and_moves() -> None:
    v1 = only(therapist(), session(version=1))
    moved = session(
        version=4,
        start=START + timedelta(days=2, hours=3),
        location=d.Location(d.LocationType.PHONE),
        change=d.Change(d.ChangeReason.CLIENT_REQUESTED, d.Actor.CLIENT),
    )
    v4 = only(therapist(), moved)
    assert (v4.uid, v4.name) == (v1.uid, v1.name)
    assert v1.uid == uid_for("session", "s-1") and v1.name == name_for(v1.uid)
    assert (v1.sequence, v4.sequence) == (1, 4)
    assert v4.content_hash != v1.content_hash
    assert is_ours(v1.name)


UNSAFE_IDS = [
    "s 1",
    "s/1",
    "../../etc/passwd",
    "séance-1",
    "会话",
    "s%2F1",
    "s@1",
    "x" * 81,
    "s\n1",
]


@pytest.mark.parametrize("entity_id", UNSAFE_IDS)
def test_unsafe_ids_give_safe_names_we_recognise(entity_id: str) -> None:
    uid = uid_for("session", entity_id)
    name = name_for(uid)
    assert is_ours(name)
    assert name.isascii()
    assert all(c.isalnum() or c in "._-" for c in name), name
    assert "/" not in uid and " " not in uid and uid.isascii()
    assert uid.endswith("@syncd")
    assert uid_for("session", entity_id) == uid  # deterministic


def test_unsafe_ids_give_different_names() -> None:
    ids = [*UNSAFE_IDS, "s-1", "s_1", "s1", "S1", "s 2", "s/2"]
    names = {name_for(uid_for("session", i)) for i in ids}
    assert len(names) == len(ids)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120))
def test_distinct_ids_never_share_a_name(a: str, b: str) -> None:
    name_a = name_for(uid_for("session", a))
    assert is_ours(name_a)
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name_a)
    if a != b:
        assert name_a != name_for(uid_for("session", b))


def test_foreign_names_are_not_ours() -> None:
    for name in ("abc.ics", "Syncd-session-1.ics", "syncd-session-1.vcf", "my-syncd-1.ics"):
        assert not is_ours(name)


# -- content hash ------------------------------------------------------------------------------


def test_content_hash_is_stable_when_nothing_changes() -> None:
    a = only(therapist(), session())
    b = only(therapist(), session())
    assert a == b and a.content_hash == b.content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"start": START + timedelta(minutes=15), "end": START + timedelta(minutes=65)},
        {"end": START + timedelta(minutes=60)},
        {"status": d.SessionStatus.UNCONFIRMED},
        {"location": d.Location(d.LocationType.PHONE)},
        {"version": 2},
    ],
    ids=["time", "end", "status", "location", "version"],
)
def test_content_hash_follows_session_changes(change: dict[str, Any]) -> None:
    before = only(therapist(), session())
    after = only(therapist(), session(**change))
    assert after.content_hash != before.content_hash


def test_content_hash_follows_the_title() -> None:
    before = only(therapist(), session())
    after = only(therapist(d.ClientLabel.INITIALS), session())
    assert after.summary != before.summary
    assert after.content_hash != before.content_hash
    assert before._replace(summary="x").content_hash != before.content_hash
    assert before._replace(status="TENTATIVE").content_hash != before.content_hash


# A reservation touches every field, exdates and non-ASCII text included.
PINNED = Entry(
    uid=uid_for("reserved", "r-1"),
    name=name_for(uid_for("reserved", "r-1")),
    kind="reserved",
    start=datetime(2026, 12, 1, 9, tzinfo=UTC),
    end=datetime(2026, 12, 1, 9, 50, tzinfo=UTC),
    timezone="Europe/London",
    summary="Reserved slot · Zoë",
    status="CONFIRMED",
    sequence=3,
    description="Regular time.",
    rrule="FREQ=WEEKLY",
    exdates=(datetime(2026, 12, 8, 9, tzinfo=UTC),),
)


def test_fingerprints_are_pinned() -> None:
    """Stored fingerprints outlive releases: a change of either value makes every deployed
    mirror row look stale, and the next pass rewrites every entry on every calendar. The legacy
    value is the one syncd 0.1 stored for this entry."""
    assert PINNED.content_hash == "v2:7aa74dce94a5ddd604324e23d5e9e4fdbd4b8a16"
    assert PINNED.legacy_content_hash == (
        "c114d849055328c79b9b996285c24b62ec07315723c57d9555433eeb6adcfe35"
    )
    assert not is_legacy_hash(PINNED.content_hash)
    assert is_legacy_hash(PINNED.legacy_content_hash)
    assert len(PINNED.content_hash) <= 64  # the mirror table's column


def test_fingerprint_does_not_depend_on_the_offset_an_instant_is_given_in() -> None:
    # Rendering converts every instant into the entry's zone, so the calendar is the same.
    paris = ZoneInfo("Europe/Paris")
    moved = PINNED._replace(start=PINNED.start.astimezone(paris), end=PINNED.end.astimezone(paris))
    assert moved.content_hash == PINNED.content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"start": PINNED.start + timedelta(microseconds=1)},
        {"end": PINNED.end + timedelta(seconds=1)},
        {"sequence": 4},
        {"location": "Room 2"},
        {"rrule": None},
        {"exdates": ()},
        {"exdates": (*PINNED.exdates, PINNED.start + timedelta(days=14))},
        {"description": "Regular time!"},
        {"kind": "session"},
        {"url": "https://platform.example/sessions/r-1"},
    ],
)
def test_fingerprint_follows_every_rendered_field(change: dict[str, Any]) -> None:
    assert PINNED._replace(**change).content_hash != PINNED.content_hash


def test_fingerprint_is_unambiguous_when_text_holds_the_separator() -> None:
    """Fields are joined by U+001F; text from the platform may hold it too, and moving it from
    one field to the next (location and description are neighbours) must still give another
    fingerprint."""
    a = PINNED._replace(location="Room\x1f2", description="Regular")
    b = PINNED._replace(location="Room", description="2\x1fRegular")
    c = PINNED._replace(location=None, description="Room\x1f2\x1fRegular")
    assert len({a.content_hash, b.content_hash, c.content_hash}) == 3


@settings(max_examples=300)
@given(*[st.text(st.sampled_from("a\x1f·\\"))] * 3)
def test_text_moved_between_fields_changes_the_fingerprint(x: str, y: str, z: str) -> None:
    a = PINNED._replace(location=x + y, description=z)
    b = PINNED._replace(location=x, description=y + z)
    assert (a.content_hash == b.content_hash) == (y == "")


# -- iCalendar rendering -----------------------------------------------------------------------


def parsed_event(e: Entry) -> tuple[icalendar.Calendar, icalendar.Event]:
    cal = icalendar.Calendar.from_ical(ical.render(e, NOW))
    events = cal.events
    assert len(events) == 1
    return cal, events[0]


def date_time(ev: icalendar.Event, name: str) -> tuple[icalendar.vDDDTypes, datetime]:
    """Property ``name`` of ``ev`` (for its parameters) and its value, which must be a date-time
    (icalendar types a property as the union of every value type)."""
    prop = ev[name]
    assert isinstance(prop, icalendar.vDDDTypes), prop
    assert isinstance(prop.dt, datetime), prop.dt
    return prop, prop.dt


def embedded_offset(cal: icalendar.Calendar, local: datetime) -> timedelta | None:
    """The UTC offset at ``local`` according to the VTIMEZONE in the body itself (not the
    system's zone database): what a client without Olson data will use."""
    (vtz,) = cal.timezones
    tz = vtz.to_tz(lookup_tzid=False)
    return local.replace(tzinfo=tz).utcoffset()


@pytest.mark.parametrize(
    ("zone", "label"),
    [("Europe/London", d.ClientLabel.NONE), ("America/New_York", d.ClientLabel.INITIALS)],
)
def test_rendered_entry_round_trips(zone: str, label: d.ClientLabel) -> None:
    s = session(version=7, status=d.SessionStatus.UNCONFIRMED)
    e = only(therapist(label, zone=zone), s)
    cal, ev = parsed_event(e)
    (dtstart, start), (dtend, end) = date_time(ev, "DTSTART"), date_time(ev, "DTEND")
    assert dtstart.params["TZID"] == zone
    assert dtend.params["TZID"] == zone
    assert start == START and end == START + timedelta(minutes=50)
    assert start.tzinfo is not None
    assert start.tzinfo.utcoffset(start) == ZoneInfo(zone).utcoffset(
        START.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    )
    tzids = [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")]
    assert tzids == [zone]
    assert str(ev["UID"]) == e.uid
    assert str(ev["CLASS"]) == "PRIVATE"
    assert str(ev["STATUS"]) == "TENTATIVE"
    assert ev.decoded("SEQUENCE") == 7
    assert str(ev["SUMMARY"]) == e.summary
    assert str(ev["X-SYNCD-HASH"]) == e.content_hash
    assert str(ev["LOCATION"]) == ADDRESS
    assert "Kept in step with the booking platform" in str(ev["DESCRIPTION"])


def test_confirmed_renders_confirmed() -> None:
    _, ev = parsed_event(only(therapist(), session(version=2)))
    assert str(ev["STATUS"]) == "CONFIRMED"
    assert ev.decoded("SEQUENCE") == 2


@pytest.mark.parametrize(
    ("local_day", "utc_instant"),
    [
        # Last Sunday of March 2027 is the 28th: Monday 29th is on BST (UTC+1).
        (datetime(2027, 3, 29, 10, 0), datetime(2027, 3, 29, 9, 0, tzinfo=UTC)),
        # Last Sunday of October 2026 is the 25th: Monday 26th is back on GMT (UTC+0).
        (datetime(2026, 10, 26, 10, 0), datetime(2026, 10, 26, 10, 0, tzinfo=UTC)),
    ],
    ids=["after-spring-forward-2027", "after-fall-back-2026"],
)
def test_london_clock_changes(local_day: datetime, utc_instant: datetime) -> None:
    london = ZoneInfo("Europe/London")
    start = local_day.replace(tzinfo=london).astimezone(UTC)
    assert start == utc_instant  # the case is what the test says it is
    e = only(therapist(zone="Europe/London"), session(start=start))
    cal, ev = parsed_event(e)
    dtstart, value = date_time(ev, "DTSTART")
    assert dtstart.params["TZID"] == "Europe/London"
    assert value.replace(tzinfo=None) == local_day  # 10:00 on the wall clock
    assert value.astimezone(UTC) == utc_instant
    assert "DTSTART;TZID=Europe/London:" + local_day.strftime("%Y%m%dT%H%M%S") in ical.render(
        e, NOW
    )
    # The VTIMEZONE shipped in the body agrees, so clients without zone data get it right too.
    assert embedded_offset(cal, local_day) == local_day - utc_instant.replace(tzinfo=None)


def test_ids_differing_only_in_case_get_names_that_differ_case_insensitively() -> None:
    from syncd.project import name_for, safe_id, uid_for

    names = {name_for(uid_for("session", i)).lower() for i in ("ABC", "abc", "Abc", "aBC")}
    assert len(names) == 4
    assert safe_id("s-1001") == "s-1001"  # ordinary ids stay readable


# -- entries that explain themselves (links, holds, blocked originals) ---------------------------

SESSION_URL = "https://platform.example/sessions/{session_id}"


def with_offer(
    t: d.Therapist, s: d.Session, alternatives: list[datetime], expires: datetime
) -> dict[str, Entry]:
    offer = d.Offer(
        id="o-1",
        version=1,
        session_id=s.id,
        alternatives=tuple(d.Alternative(a, a + timedelta(minutes=50)) for a in alternatives),
        sent_at=NOW,
        expires_at=expires,
        state=d.OfferState.PENDING,
    )
    state = PlatformState(therapist=t, sessions=(s,), offers=(offer,))
    return project(state, NOW, session_url=SESSION_URL)


def test_holds_and_the_blocked_original_say_what_they_are_in_the_therapists_zone() -> None:
    # 10:00 UTC on Tue 1 Dec is 05:00 in New York; the offer ends Wed 2 Dec 14:05 New York time.
    expires = datetime(2026, 12, 2, 19, 5, tzinfo=UTC)
    alts = [START + timedelta(days=3), START + timedelta(days=3, hours=2)]
    got = with_offer(therapist(zone="America/New_York"), session(), alts, expires)
    blocked = got[uid_for("session", "s-1")]
    assert blocked.kind == "blocked" and blocked.status == "CONFIRMED"
    assert blocked.summary == ("Therapy session — alternatives offered, open until Wed 2 Dec 14:05")
    assert "2 other times" in blocked.description
    holds = sorted((e for e in got.values() if e.kind == "hold"), key=lambda e: e.start)
    assert [h.start for h in holds] == alts
    for h in holds:
        assert h.status == "TENTATIVE"
        assert h.summary == (
            "Held for client — alternative for Tue 1 Dec 05:00 session · until Wed 2 Dec 14:05"
        )
    assert "Alternative time 2 of 2" in holds[1].description


def test_holds_name_the_client_only_when_opted_in() -> None:
    expires = datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
    got = with_offer(
        therapist(d.ClientLabel.FIRST_NAME), session(), [START + timedelta(days=3)], expires
    )
    assert got[uid_for("session", "s-1")].summary == (
        "Therapy session · Jane — alternatives offered, open until Wed 2 Dec 14:05"
    )
    hold = got[uid_for("hold", "o-1.0")]
    assert hold.summary == (
        "Held for Jane — alternative for Tue 1 Dec 10:00 session · until Wed 2 Dec 14:05"
    )
    assert all("Doe" not in str(v) for e in got.values() for v in e)


def test_entries_link_back_to_the_booking() -> None:
    s = session("s/1 ü")  # an id that needs escaping in a URL
    state = PlatformState(therapist=therapist(), sessions=(s,))
    [e] = project(state, NOW, session_url=SESSION_URL).values()
    assert e.url == "https://platform.example/sessions/s%2F1%20%C3%BC"
    assert f"Booking on the platform: {e.url}" in e.description
    _, ev = parsed_event(e)
    assert str(ev["URL"]) == e.url
    # Without a template there is no link, and the fingerprint is what it was before links.
    [plain] = project(state, NOW).values()
    assert plain.url is None and "Booking on the platform" not in plain.description
    assert "URL" not in parsed_event(plain)[1]
    assert plain.content_hash == plain._replace(url="").content_hash
    assert plain.content_hash != e._replace(description=plain.description).content_hash


def test_descriptions_never_name_the_product() -> None:
    expires = datetime(2026, 12, 2, 14, 5, tzinfo=UTC)
    got = with_offer(therapist(), session(), [START + timedelta(days=3)], expires)
    slot = d.ReservedSlot(
        id="r-1",
        version=1,
        therapist_id="t-1",
        client=d.Client("c-2"),
        first_start_local=datetime(2026, 12, 8, 9, 0),
        timezone="Europe/London",
        duration=timedelta(minutes=50),
        rrule="FREQ=WEEKLY",
        until=None,
        state=d.ReservationState.ACTIVE,
    )
    got.update(project(PlatformState(therapist=therapist(), reserved_slots=(slot,)), NOW))
    assert {e.kind for e in got.values()} == {"blocked", "hold", "reserved"}
    for e in got.values():
        assert "syncd" not in (e.summary + e.description).lower()

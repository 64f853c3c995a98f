"""The oracle (tests/support/oracle.py) and the platform model (tests/support/platform_model.py) on
their own: the texts of DESIGN.md §2 written out, the entries derived from a known platform
state, every kind of difference reported from handwritten iCalendar and Google events, the model's
answers to events, and agreement with syncd on what syncd gets right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from connectors.google.ical import to_google
from syncd import ical
from syncd.ingest import Ingestor
from syncd.project import project
from syncd.store import repo
from syncd.store.tables import Base
from tests.support import factories as f
from tests.support import oracle as o
from tests.support.platform_model import PlatformModel

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
IN_PERSON = {"type": "in_person", "address": "10 Harley St"}


def at(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


def test_titles_are_the_design_texts() -> None:
    assert o.client_label("Jane Doe", "none") is None
    assert o.client_label("Jane Doe", "initials") == "J.D."
    assert o.client_label("Ana María López", "initials") == "A.M.L."
    assert o.client_label("Jane Doe", "first_name") == "Jane"
    assert o.client_label(None, "first_name") is None
    until = o.until_text(datetime(2026, 12, 2, 14, 5, tzinfo=UTC), "Europe/London")
    assert until == "Wed 2 Dec 14:05"
    assert o.until_text(datetime(2026, 12, 2, 14, 5, tzinfo=UTC), "Asia/Kolkata") == (
        "Wed 2 Dec 19:35"
    )
    assert o.session_title(None, False) == "Therapy session"
    assert o.session_title("J.D.", True) == (
        "Therapy session · J.D. (unconfirmed — please confirm on the platform)"
    )
    assert o.blocked_title(None, until) == (
        "Therapy session — alternatives offered, open until Wed 2 Dec 14:05"
    )
    assert o.blocked_title("J.D.", until) == (
        "Therapy session · J.D. — alternatives offered, open until Wed 2 Dec 14:05"
    )
    assert o.hold_title(None, "Tue 1 Dec 10:00", until) == (
        "Held for client — alternative for Tue 1 Dec 10:00 session · until Wed 2 Dec 14:05"
    )
    assert o.hold_title("Jane", "Tue 1 Dec 10:00", until) == (
        "Held for Jane — alternative for Tue 1 Dec 10:00 session · until Wed 2 Dec 14:05"
    )
    assert o.reserved_title("J.D.") == "Reserved slot · J.D."
    assert o.location_text({"type": "video"}, True) == "Video call"
    assert o.location_text({"type": "video", "url": "https://v/1"}, True) == "https://v/1"
    assert o.location_text({"type": "phone"}, True) == "Phone call"
    assert o.location_text(IN_PERSON, False) is None


def platform(label: str = "none") -> o.Platform:
    p = o.Platform()
    p.therapists["t-1"] = o.Therapist("t-1", "America/New_York", label, include_location=True)

    def session(sid: str, start: datetime, status: str = "confirmed", client: str = "") -> None:
        p.sessions[sid] = o.Session(
            sid, "t-1", client or f"c-{sid}", "Jane Doe", start, start + timedelta(minutes=50),
            status, IN_PERSON,
        )  # fmt: skip

    session("s-1", at(5))
    session("s-2", at(6), "unconfirmed")
    session("s-3", at(7), "cancelled")
    session("s-4", at(8))
    session("s-5", at(9))
    p.offers["o-4"] = o.Offer("o-4", "s-4", [(at(20), at(21)), (at(22), at(23))], at(24), "pending")
    p.offers["o-5"] = o.Offer("o-5", "s-5", [(at(30), at(31))], at(-1), "pending")  # expired
    p.reservations["r-1"] = o.Reservation(
        "r-1", "t-1", "c-r", "Sam Reed", datetime(2027, 3, 23, 10, 0), "Europe/London", 50,
        "FREQ=WEEKLY;COUNT=4", None,
    )  # fmt: skip
    # the reserved client's session on the second occurrence (30 March, after the clock change)
    session("s-r", datetime(2027, 3, 30, 9, 0, tzinfo=UTC), client="c-r")
    return p


def test_expected_entries_follow_the_design_table() -> None:
    want = o.expected(platform("initials"), "t-1", NOW)
    assert sorted(want) == sorted(
        o.uid(kind, i)
        for kind, i in [
            ("session", "s-1"),
            ("session", "s-2"),
            ("session", "s-4"),
            ("session", "s-5"),
            ("session", "s-r"),
            ("hold", "o-4.0"),
            ("hold", "o-4.1"),
            ("reserved", "r-1"),
        ]
    )
    s1, s2, s4 = (want[o.uid("session", s)] for s in ("s-1", "s-2", "s-4"))
    assert (s1.summary, s1.status, s1.zone, s1.location) == (
        "Therapy session · J.D.",
        "CONFIRMED",
        "America/New_York",
        "10 Harley St",
    )
    assert (s2.summary, s2.status) == (
        "Therapy session · J.D. (unconfirmed — please confirm on the platform)",
        "TENTATIVE",
    )
    # at the original time, titled with the offer's expiry on the therapist's clock
    assert (s4.start, s4.status) == (at(8), "CONFIRMED")
    assert s4.summary == "Therapy session · J.D. — alternatives offered, open until Wed 2 Dec 03:00"
    hold = want[o.uid("hold", "o-4.1")]
    assert (hold.start, hold.end, hold.status) == (at(22), at(23), "TENTATIVE")
    assert hold.summary == (
        "Held for J.D. — alternative for Tue 1 Dec 11:00 session · until Wed 2 Dec 03:00"
    )
    assert want[o.uid("session", "s-5")].summary == "Therapy session · J.D."  # offer expired
    series = want[o.uid("reserved", "r-1")]
    assert series.zone == "Europe/London" and series.summary == "Reserved slot · S.R."
    assert series.start == datetime(2027, 3, 23, 10, 0, tzinfo=UTC)  # GMT
    assert series.exdates == {datetime(2027, 3, 30, 9, 0, tzinfo=UTC)}  # 10:00 BST
    assert series.occurrences == (
        datetime(2027, 3, 23, 10, 0, tzinfo=UTC),
        datetime(2027, 4, 6, 9, 0, tzinfo=UTC),
        datetime(2027, 4, 13, 9, 0, tzinfo=UTC),
    )
    assert s1.secret_words == ("Jane", "Doe")
    assert o.expected(platform("first_name"), "t-1", NOW)[s1.uid].secret_words == ("Doe",)


def vevent(**props: str) -> icalendar.cal.Component:
    """A VEVENT written by hand, as a server could hold it."""
    fields = {
        "UID": o.uid("session", "s-1"),
        "DTSTART;TZID=America/New_York": "20261201T080000",
        "DTEND;TZID=America/New_York": "20261201T085000",
        "SUMMARY": "Therapy session",
        "STATUS": "CONFIRMED",
        "CLASS": "PRIVATE",
        "LOCATION": "10 Harley St",
    }
    fields.update(props)
    lines = "".join(f"{k}:{v}\r\n" for k, v in fields.items() if v)
    return icalendar.Calendar.from_ical(
        f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n{lines}END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).walk("VEVENT")[0]


def only_s1() -> dict[str, o.Want]:
    want = o.expected(platform(), "t-1", NOW)
    return {u: w for u, w in want.items() if u == o.uid("session", "s-1")}


def test_a_calendar_as_expected_shows_no_difference() -> None:
    assert o.compare("t-1", only_s1(), [o.seen_ical(vevent())]) == []


@pytest.mark.parametrize(
    ("props", "problem"),
    [
        ({"DTSTART;TZID=America/New_York": "20261201T090000"}, "start is"),
        ({"DTEND;TZID=America/New_York": "20261201T090000"}, "end is"),
        (
            {
                "DTSTART;TZID=America/New_York": "",
                "DTSTART;TZID=America/Chicago": "20261201T070000",
            },
            "zone is 'America/Chicago'",
        ),
        ({"SUMMARY": "moved by me"}, "summary is 'moved by me'"),
        ({"STATUS": "TENTATIVE"}, "status is 'TENTATIVE'"),
        ({"CLASS": "PUBLIC"}, "private is False"),
        ({"LOCATION": ""}, "location is None"),
        ({"RRULE": "FREQ=DAILY"}, "recurs is True"),
        ({"DESCRIPTION": "Jane Doe"}, "shows ['Jane', 'Doe'] of the client's name"),
    ],
)
def test_every_difference_is_reported(props: dict[str, str], problem: str) -> None:
    found = o.compare("t-1", only_s1(), [o.seen_ical(vevent(**props))])
    assert len(found) == 1 and problem in found[0], found


def test_missing_unexpected_and_duplicate_entries_are_reported() -> None:
    other = vevent(UID="syncd-session-s-9@syncd")
    assert o.compare("t-1", only_s1(), [o.seen_ical(other)]) == [
        "t-1: missing syncd-session-s-1@syncd",
        "t-1: unexpected syncd-session-s-9@syncd",
    ]
    twice = [o.seen_ical(vevent()), o.seen_ical(vevent())]
    assert o.compare("t-1", only_s1(), twice) == ["t-1: duplicate UID syncd-session-s-1@syncd"]


def series(**props: str) -> o.Seen:
    base = {
        "UID": o.uid("reserved", "r-1"),
        "DTSTART;TZID=America/New_York": "",
        "DTEND;TZID=America/New_York": "",
        "DTSTART;TZID=Europe/London": "20270323T100000",
        "DTEND;TZID=Europe/London": "20270323T105000",
        "SUMMARY": "Reserved slot",
        "LOCATION": "",
        "RRULE": "FREQ=WEEKLY;COUNT=4",
        "EXDATE;TZID=Europe/London": "20270330T100000",
    }
    base.update(props)
    return o.seen_ical(vevent(**base))


@pytest.mark.parametrize(
    ("props", "problem"),
    [
        ({}, None),
        ({"RRULE": "FREQ=WEEKLY;COUNT=5"}, "occurrences is"),
        ({"RRULE": "FREQ=WEEKLY;UNTIL=20270414T000000Z;COUNT=4"}, "MUST NOT"),
        ({"EXDATE;TZID=Europe/London": ""}, "exdates is frozenset()"),
        # the same instants as UTC wall-clock times: wrong after the clock change
        (
            {
                "DTSTART;TZID=Europe/London": "",
                "DTEND;TZID=Europe/London": "",
                "DTSTART": "20270323T100000Z",
                "DTEND": "20270323T105000Z",
                "EXDATE;TZID=Europe/London": "",
                "EXDATE": "20270330T090000Z",
            },
            "occurrences is",
        ),
    ],
)
def test_series_are_compared_occurrence_by_occurrence(
    props: dict[str, str], problem: str | None
) -> None:
    want = {
        u: w for u, w in o.expected(platform(), "t-1", NOW).items() if u.startswith("syncd-res")
    }
    found = o.compare("t-1", want, [series(**props)])
    if problem is None:
        assert found == []
    else:
        assert any(problem in line for line in found), found


def test_google_fields_are_read_as_the_api_gives_them() -> None:
    item: dict[str, Any] = {
        "iCalUID": o.uid("reserved", "r-1"),
        "start": {"dateTime": "2027-03-23T10:00:00Z", "timeZone": "Europe/London"},
        "end": {"dateTime": "2027-03-23T10:50:00Z", "timeZone": "Europe/London"},
        "summary": "Reserved slot",
        "status": "confirmed",
        "visibility": "private",
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4", "EXDATE;TZID=Europe/London:20270330T100000"],
    }
    want = {
        u: w for u, w in o.expected(platform(), "t-1", NOW).items() if u.startswith("syncd-res")
    }
    assert o.compare("t-1", want, [o.seen_google(item)]) == []
    item["visibility"] = "default"
    item["summary"] = "Reserved slot · Sam"
    assert o.compare("t-1", want, [o.seen_google(item)]) == [
        "t-1: syncd-reserved-r-1@syncd summary is 'Reserved slot · Sam', expected 'Reserved slot'",
        "t-1: syncd-reserved-r-1@syncd private is False, expected True",
        "t-1: syncd-reserved-r-1@syncd shows ['Sam'] of the client's name, not opted in",
    ]


# -- the platform model ---------------------------------------------------------------------------


def offer_event(oid: str, sid: str, hours: list[float], **extra: Any) -> dict[str, Any]:
    return f.offer(oid, sid, [at(h) for h in hours], sent_at=NOW, **extra)


def test_the_model_answers_as_the_design_says() -> None:
    m = PlatformModel()
    first = f.therapist()
    assert str(m.send(first, NOW)) == "applied"
    assert str(m.send(first, NOW)) == "duplicate"
    assert str(m.send(dict(first, id="again"), NOW)) == "stale"
    s1 = f.session("s-1", at(5))
    assert str(m.send(s1, NOW)) == "applied"
    move = f.session("s-1", at(6), version=2)
    assert str(m.send(move, NOW)) == "refused [reason_required]"
    assert str(m.send(move, NOW)) == "refused [reason_required]"  # nothing of it was kept
    moved = f.session(
        "s-1", at(6), version=2, change={"reason": "client_requested", "by": "client"}
    )
    assert str(m.send(moved, NOW)) == "applied"
    assert str(m.send(dict(s1, id="late copy"), NOW)) == "stale"
    assert m.platform.sessions["s-1"].start == at(6)
    assert str(m.send(f.session("s-2", at(7)), NOW)) == "applied"
    taken = offer_event("o-1", "s-1", [7.5])  # overlaps s-2
    assert str(m.send(taken, NOW)) == "refused [slot_taken]"
    pending = offer_event("o-1", "s-1", [20, 22], expires_at=at(3))
    assert str(m.send(pending, NOW)) == "applied"
    assert str(m.send(offer_event("o-2", "s-1", [30]), NOW)) == "refused [one_pending_offer]"
    edited = offer_event("o-1", "s-1", [21], version=2, expires_at=at(3))
    assert str(m.send(edited, NOW)) == "refused [offer_locked]"
    answer: dict[str, Any] = {"state": "accepted", "accepted_alternative": 1}
    late = offer_event("o-1", "s-1", [20, 22], version=2, expires_at=at(3), **answer)
    late["data"]["responded_at"] = at(4).isoformat()
    assert str(m.send(late, at(4))) == "refused [late_response]"
    on_time = offer_event("o-1", "s-1", [20, 22], version=2, expires_at=at(3), **answer)
    on_time["data"]["responded_at"] = at(1).isoformat()
    assert str(m.send(on_time, at(4))) == "applied"
    assert m.platform.sessions["s-1"].start == at(22)  # moved in place to the accepted time
    assert str(m.send(offer_event("o-3", "s-2", [40], expires_at=at(1)), NOW)) == "applied"
    assert m.sweep(at(1)) == ["o-3"]
    rejected = offer_event("o-3", "s-2", [40], version=2, expires_at=at(1), state="rejected")
    rejected["data"]["responded_at"] = at(0.5).isoformat()
    assert str(m.send(rejected, at(2))) == "applied"
    assert m.platform.sessions["s-2"].status == "cancelled"
    assert str(m.send(offer_event("o-4", "s-2", [50]), at(2))) == "refused [session_cancelled]"


# -- agreement with syncd -------------------------------------------------------------------------


def test_syncd_and_the_oracle_agree_on_a_varied_state() -> None:
    """The same events through syncd's ingestor and the model; syncd's rendering of its own
    projection (iCalendar, and the Google fields made from it) matches the oracle's entries."""
    db = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(db)
    sessions = sessionmaker(db, expire_on_commit=False)
    ingestor = Ingestor(sessions, lambda: NOW)
    m = PlatformModel()
    privacy = {"client_label": "first_name", "include_location": True}
    events = [
        f.therapist(zone="Australia/Sydney", privacy=privacy),
        # on the second occurrence of the series below (16:00 in Sydney)
        f.session("s-1", at(45), client_name="Zoë O'Brien", location={"type": "phone"}),
        f.session("s-2", at(6), status="unconfirmed", location={"type": "video"}),
        f.session("s-3", at(7)),
        offer_event("o-3", "s-3", [10, 12]),
        f.event(
            "reserved_slot.upserted",
            {
                "id": "r-1",
                "version": 1,
                "therapist_id": "t-1",
                "client": {"id": "c-s-1", "name": "Zoë O'Brien"},
                "first_start_local": "2026-12-02T16:00:00",
                "timezone": "Australia/Sydney",
                "duration_minutes": 50,
                "rrule": "FREQ=DAILY;COUNT=3",
                "state": "active",
            },
        ),
    ]
    for ev in events:
        assert ingestor.ingest(ev).result.value == m.send(ev, NOW).result == "applied"
    with sessions() as s:
        state = repo.platform_state(s, "t-1")
    assert state is not None
    entries = project(state, NOW).values()
    want = o.expected(m.platform, "t-1", NOW)
    assert len(want) == 6 and any(w.exdates for w in want.values())
    bodies = [ical.render(e, NOW) for e in entries]
    on_caldav = [
        o.seen_ical(ev) for b in bodies for ev in icalendar.Calendar.from_ical(b).walk("VEVENT")
    ]
    assert o.compare("t-1", want, on_caldav) == []
    # as Google gives them back: syncd sends no iCalUID, so Google makes up its own
    on_google = [
        o.seen_google({**to_google(b, "name.ics"), "iCalUID": f"e{i}@google.com"})
        for i, b in enumerate(bodies)
    ]
    assert o.compare("t-1", want, on_google) == []

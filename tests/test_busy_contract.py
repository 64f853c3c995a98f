"""The busy-time contract (:class:`connectors.base.BusyReader`), written once and run against
Radicale, Xandikos and the Google stand-in.

The therapist's own events live in a second calendar, "Personal", written the way another client
would (raw iCalendar PUTs on CalDAV, ``put_event`` on the stand-in). Every check runs in two
modes, which exercise the two ways a connector reads busy time:

- ``dedicated``: syncd writes into its own calendar, so "Personal" holds none of its entries and
  is read with free-busy (CalDAV free-busy-query REPORT, Google freebusy.query);
- ``existing``: syncd writes into "Personal" itself, so it is read event by event
  (calendar-query, events.list) and syncd's own entries in it are left out.

Google's freebusy.query cannot say which busy time was tentative or all-day; where a check
depends on that, the documented answer for that one combination is asserted instead
(:func:`exact`). The second half holds the provider-specific checks: CalDAV servers without
free-busy-query or without expand (simulated by a proxy in front of the real server), request
counts, Google's freebusy window splitting.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest

from connectors.base import BusyInterval, BusyOptions, BusyReader, CalendarInfo, Connector
from connectors.caldav import CalDAVConnector
from connectors.errors import AuthFailed, BusyIncomplete, NotFound, Transient
from connectors.google import GoogleConnector
from tests.support.caldav_servers import (
    CalDAVServer,
    HTTPProxy,
    ProxiedRequest,
    ProxyReply,
    unused_port,
)
from tests.support.google_standin import GoogleStandIn
from tests.test_connector_contract import CalDAVTarget, GoogleTarget, raw_request

LONDON = ZoneInfo("Europe/London")
# What must never leave a connector: the therapist's own event details.
PRIVATE_TITLE = "Couples therapy with Jane Secretperson"
PRIVATE_DESCRIPTION = "Bring the Secretperson paperwork"
PRIVATE_ATTENDEE = "jane.secretperson@example.com"
PRIVATE_WORDS = ("Secretperson", "secretperson")

DEFAULT = BusyOptions()


def london(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=LONDON)


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


# A week in June 2027 (British Summer Time: London is UTC+1).
WEEK = (utc(2027, 6, 7, 0), utc(2027, 6, 14, 0))
TUESDAY_2PM = (london(2027, 6, 8, 14), london(2027, 6, 8, 15))


@dataclass(frozen=True)
class Event:
    """One of the therapist's own events, whatever the provider. Times are aware (written in
    Europe/London) or dates (all-day). ``moved`` holds (original start, new start, new end)
    overrides of a recurring event; ``exdates`` the original starts of cancelled ones."""

    start: datetime | date
    end: datetime | date
    status: str = "CONFIRMED"
    transparent: bool = False
    rrule: str | None = None
    exdates: tuple[datetime, ...] = ()
    moved: tuple[tuple[datetime, datetime, datetime], ...] = ()


# -- iCalendar for the CalDAV servers -------------------------------------------------------------

VTIMEZONE_LONDON = [
    "BEGIN:VTIMEZONE",
    "TZID:Europe/London",
    "BEGIN:DAYLIGHT",
    "TZOFFSETFROM:+0000",
    "TZOFFSETTO:+0100",
    "TZNAME:BST",
    "DTSTART:19700329T010000",
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "END:DAYLIGHT",
    "BEGIN:STANDARD",
    "TZOFFSETFROM:+0100",
    "TZOFFSETTO:+0000",
    "TZNAME:GMT",
    "DTSTART:19701025T020000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "END:STANDARD",
    "END:VTIMEZONE",
]


def _ical_when(name: str, value: datetime | date) -> str:
    if isinstance(value, datetime):
        return f"{name};TZID=Europe/London:{value.astimezone(LONDON):%Y%m%dT%H%M%S}"
    return f"{name};VALUE=DATE:{value:%Y%m%d}"


def _private_lines() -> list[str]:
    return [
        f"SUMMARY:{PRIVATE_TITLE}",
        f"DESCRIPTION:{PRIVATE_DESCRIPTION}",
        f"ATTENDEE;CN=Jane Secretperson:mailto:{PRIVATE_ATTENDEE}",
        "ORGANIZER:mailto:therapist@example.com",
    ]


def event_ics(uid: str, event: Event) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//another client//EN"]
    lines += VTIMEZONE_LONDON
    lines += [
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20270101T000000Z",
        _ical_when("DTSTART", event.start),
        _ical_when("DTEND", event.end),
        f"STATUS:{event.status}",
        f"TRANSP:{'TRANSPARENT' if event.transparent else 'OPAQUE'}",
        *_private_lines(),
    ]
    if event.rrule:
        lines.append(f"RRULE:{event.rrule}")
    lines += [_ical_when("EXDATE", exdate) for exdate in event.exdates]
    lines.append("END:VEVENT")
    for original, start, end in event.moved:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20270101T000000Z",
            _ical_when("RECURRENCE-ID", original),
            _ical_when("DTSTART", start),
            _ical_when("DTEND", end),
            *_private_lines(),
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def syncd_entry(uid: str, start: datetime, end: datetime, kind: str | None = "session") -> str:
    """An entry as syncd writes it (UTC times are enough here)."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//syncd//busy tests//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20270101T000000Z",
        f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        f"DTEND:{end.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        "SUMMARY:Therapy session",
        "STATUS:CONFIRMED",
        "TRANSP:OPAQUE",
        "CLASS:PRIVATE",
    ]
    if kind:
        lines.append(f"X-SYNCD-KIND:{kind}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


# -- targets --------------------------------------------------------------------------------------


class BusyConnector(Connector, BusyReader, Protocol):
    pass


class BusyTarget(Protocol):
    kind: str

    def connector(self, **overrides: Any) -> BusyConnector: ...

    def add_calendar(self, name: str) -> str:
        """A new calendar of the therapist's, as another client makes it; its ``ref``."""
        ...

    def put(self, calendar: str, event: Event) -> None:
        """One of the therapist's own events, written by another client."""
        ...

    def existing(self, calendar: str) -> dict[str, Any]:
        """Connector settings that make syncd write into ``calendar``."""
        ...

    def dedicated_ref(self, connector: BusyConnector) -> str:
        """The ``ref`` of the connector's dedicated calendar."""
        ...


class CalDAVBusyTarget(CalDAVTarget):
    def add_calendar(self, name: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return self.connector(calendar_id=slug, calendar_name=name).ensure_calendar()

    def put(self, calendar: str, event: Event) -> None:
        name = f"{uuid.uuid4()}.ics"
        body = event_ics(f"{uuid.uuid4()}@other.client", event).encode()
        status, _, _ = raw_request(
            self.server, "PUT", calendar + quote(name), body, {"Content-Type": "text/calendar"}
        )
        assert status in (201, 204), status

    def existing(self, calendar: str) -> dict[str, Any]:
        return {"calendar_url": calendar}

    def dedicated_ref(self, connector: BusyConnector) -> str:
        return connector.ensure_calendar()


class GoogleBusyTarget(GoogleTarget):
    def add_calendar(self, name: str) -> str:
        return self.stand_in.add_calendar(self.email, name)

    def put(self, calendar: str, event: Event) -> None:
        def when(value: datetime | date) -> dict[str, str]:
            if isinstance(value, datetime):
                return {
                    "dateTime": value.astimezone(LONDON).isoformat(),
                    "timeZone": "Europe/London",
                }
            return {"date": value.isoformat()}

        body: dict[str, Any] = {
            "summary": PRIVATE_TITLE,
            "description": PRIVATE_DESCRIPTION,
            "attendees": [{"email": PRIVATE_ATTENDEE, "displayName": "Jane Secretperson"}],
            "start": when(event.start),
            "end": when(event.end),
            "status": event.status.lower(),
            "transparency": "transparent" if event.transparent else "opaque",
        }
        if event.rrule:
            body["recurrence"] = [f"RRULE:{event.rrule}"] + [
                f"EXDATE;TZID=Europe/London:{x.astimezone(LONDON):%Y%m%dT%H%M%S}"
                for x in event.exdates
            ]
        created = self.stand_in.put_event(calendar, body)
        for original, start, end in event.moved:
            instance = f"{created['id']}_{original.astimezone(UTC):%Y%m%dT%H%M%SZ}"
            self.stand_in.edit_event(calendar, instance, start=when(start), end=when(end))

    def existing(self, calendar: str) -> dict[str, Any]:
        return {"calendar_url": calendar}

    def dedicated_ref(self, connector: BusyConnector) -> str:
        path = urlsplit(connector.ensure_calendar()).path
        return unquote(path.split("/calendars/")[1].strip("/"))


@pytest.fixture(params=["radicale", "xandikos", "google"])
def busy_target(request: pytest.FixtureRequest) -> Iterator[BusyTarget]:
    made: CalDAVBusyTarget | GoogleBusyTarget
    if request.param == "google":
        made = GoogleBusyTarget(request.getfixturevalue("google_standin"))
    else:
        made = CalDAVBusyTarget(request.getfixturevalue(f"{request.param}_server"))
    yield made
    made.close()


@dataclass
class Case:
    target: BusyTarget
    mode: str
    personal: str  # the ref of the therapist's "Personal" calendar
    reader: BusyConnector  # the connector under test, as the engine would make it

    def busy(
        self,
        window: tuple[datetime, datetime] = WEEK,
        options: BusyOptions = DEFAULT,
        calendars: Sequence[str] | None = None,
    ) -> list[BusyInterval]:
        found = self.reader.busy(
            *window, [self.personal] if calendars is None else calendars, options
        )
        assert_well_formed(found, window)
        return found

    @property
    def freebusy(self) -> bool:
        """The personal calendar is read with free-busy (no event refs)."""
        return self.mode == "dedicated"


@pytest.fixture(params=["dedicated", "existing"])
def case(request: pytest.FixtureRequest, busy_target: BusyTarget) -> Case:
    personal = busy_target.add_calendar("Personal")
    if request.param == "dedicated":
        reader = busy_target.connector()
    else:
        reader = busy_target.connector(**busy_target.existing(personal))
    reader.ensure_calendar()
    return Case(busy_target, request.param, personal, reader)


def exact(case: Case) -> bool:
    """Whether tentative and all-day information reaches busy(): everywhere but Google's
    freebusy.query, which reports neither (documented in connectors.google.freebusy)."""
    return not (case.target.kind == "google" and case.freebusy)


def assert_well_formed(found: list[BusyInterval], window: tuple[datetime, datetime]) -> None:
    for interval in found:
        assert interval.start.tzinfo is not None and interval.start.utcoffset() == timedelta(0)
        assert interval.end.utcoffset() == timedelta(0)
        assert window[0] <= interval.start < interval.end <= window[1], interval
    assert found == sorted(found, key=lambda i: (i.start, i.end, i.calendar, i.ref or ""))
    text = repr(found)
    assert not any(word in text for word in PRIVATE_WORDS)


def spans(found: list[BusyInterval]) -> list[tuple[datetime, datetime]]:
    return [(i.start, i.end) for i in found]


# -- the contract ---------------------------------------------------------------------------------


def test_calendars_lists_the_personal_calendar_and_marks_the_dedicated_one(case: Case) -> None:
    dedicated = case.target.dedicated_ref(case.target.connector())
    listed = case.reader.calendars()
    assert all(isinstance(c, CalendarInfo) for c in listed)
    by_ref = {c.ref: c for c in listed}
    assert by_ref[case.personal].name == "Personal"
    assert by_ref[case.personal].is_syncd is False
    assert by_ref[dedicated].is_syncd is True
    assert by_ref[dedicated].name == "Therapy sessions"
    assert [c.ref for c in listed if c.is_syncd] == [dedicated]


def test_a_busy_event_is_one_interval_at_the_right_instants(case: Case) -> None:
    case.target.put(case.personal, Event(*TUESDAY_2PM))
    found = case.busy()
    # 14:00-15:00 British Summer Time is 13:00-14:00 UTC.
    assert spans(found) == [(utc(2027, 6, 8, 13), utc(2027, 6, 8, 14))]
    assert found[0].calendar == case.personal
    assert found[0].tentative is False
    if case.freebusy:
        assert found[0].ref is None
    else:
        assert found[0].ref


def test_a_winter_event_is_at_the_same_utc_wall_time(case: Case) -> None:
    case.target.put(case.personal, Event(london(2027, 1, 12, 14), london(2027, 1, 12, 15)))
    found = case.busy((utc(2027, 1, 11, 0), utc(2027, 1, 18, 0)))
    assert spans(found) == [(utc(2027, 1, 12, 14), utc(2027, 1, 12, 15))]


def test_transparent_and_cancelled_events_are_not_busy(case: Case) -> None:
    case.target.put(case.personal, Event(*TUESDAY_2PM, transparent=True))
    case.target.put(case.personal, Event(*TUESDAY_2PM, status="CANCELLED"))
    assert case.busy() == []
    assert case.busy(options=BusyOptions(tentative_busy=False, all_day="busy")) == []


def test_tentative_events_count_only_when_asked(case: Case) -> None:
    case.target.put(case.personal, Event(*TUESDAY_2PM, status="TENTATIVE"))
    found = case.busy()
    assert spans(found) == [(utc(2027, 6, 8, 13), utc(2027, 6, 8, 14))]
    without = case.busy(options=BusyOptions(tentative_busy=False))
    if exact(case):
        assert found[0].tentative is True
        assert without == []
    else:
        # freebusy.query counts tentative events and does not say which they are.
        assert found[0].tentative is False
        assert spans(without) == spans(found)


@pytest.mark.parametrize(
    ("all_day", "expected"),
    [("transparency", ["opaque"]), ("busy", ["opaque", "transparent"]), ("free", [])],
)
def test_all_day_events_follow_the_option(case: Case, all_day: Any, expected: list[str]) -> None:
    days = {"opaque": date(2027, 6, 9), "transparent": date(2027, 6, 10)}
    for kind, day in days.items():
        case.target.put(
            case.personal, Event(day, day + timedelta(days=1), transparent=kind == "transparent")
        )
    found = case.busy(options=BusyOptions(all_day=all_day))
    if not exact(case):
        expected = ["opaque"]  # freebusy.query: the event's own transparency, whatever asked
    # All-day dates are whole days in the calendar's zone: UTC for these calendars.
    assert spans(found) == [
        (utc(d.year, d.month, d.day, 0), utc(d.year, d.month, d.day, 0) + timedelta(days=1))
        for d in (days[k] for k in expected)
    ]


# Tuesdays at 18:00 London from 2 March to 16 November 2027; 6 April cancelled (EXDATE), 15 June
# moved to Wednesday 16 June. The clocks change on 28 March and 31 October.
WEEKLY = Event(
    london(2027, 3, 2, 18),
    london(2027, 3, 2, 19),
    rrule="FREQ=WEEKLY;BYDAY=TU;UNTIL=20271116T180000Z",
    exdates=(london(2027, 4, 6, 18),),
    moved=((london(2027, 6, 15, 18), london(2027, 6, 16, 18), london(2027, 6, 16, 19)),),
)


def weekly_expected() -> list[tuple[datetime, datetime]]:
    expected = []
    day = date(2027, 3, 2)
    while day <= date(2027, 11, 16):
        if day == date(2027, 6, 15):
            day_start = london(2027, 6, 16, 18)
        else:
            day_start = london(day.year, day.month, day.day, 18)
        if day != date(2027, 4, 6):
            expected.append(
                (day_start.astimezone(UTC), (day_start + timedelta(hours=1)).astimezone(UTC))
            )
        day += timedelta(days=7)
    return expected


def test_a_weekly_event_is_expanded_in_its_zone_with_its_exceptions(case: Case) -> None:
    case.target.put(case.personal, WEEKLY)
    found = case.busy((utc(2027, 3, 1, 0), utc(2027, 12, 1, 0)))
    expected = weekly_expected()
    assert len(expected) == 37
    assert spans(found) == expected
    # 18:00 local on both sides of both clock changes.
    assert (utc(2027, 3, 23, 18), utc(2027, 3, 23, 19)) in expected
    assert (utc(2027, 3, 30, 17), utc(2027, 3, 30, 18)) in expected
    assert (utc(2027, 10, 26, 17), utc(2027, 10, 26, 18)) in expected
    assert (utc(2027, 11, 2, 18), utc(2027, 11, 2, 19)) in expected
    assert (utc(2027, 4, 6, 17), utc(2027, 4, 6, 18)) not in spans(found)
    # A week around the moved occurrence: only the Wednesday.
    week = case.busy((utc(2027, 6, 14, 0), utc(2027, 6, 21, 0)))
    assert spans(week) == [(utc(2027, 6, 16, 17), utc(2027, 6, 16, 18))]


def test_syncd_entries_never_count(case: Case) -> None:
    target = case.target
    own = Event(*TUESDAY_2PM)
    target.put(case.personal, own)
    # syncd's dedicated calendar, with entries written through the connector.
    dedicated_writer = target.connector()
    dedicated = target.dedicated_ref(dedicated_writer)
    dedicated_writer.create(
        "syncd-session-s1.ics",
        syncd_entry("syncd-session-s1@syncd.test", utc(2027, 6, 9, 9), utc(2027, 6, 9, 10)),
    )
    # syncd writing into the personal calendar (only ever in the existing-calendar mode).
    if case.mode == "existing":
        case.reader.create(
            "syncd-hold-h1.ics",
            syncd_entry("syncd-hold-h1@syncd.test", utc(2027, 6, 10, 9), utc(2027, 6, 10, 10)),
        )
        case.reader.create(
            "marked-only.ics",
            syncd_entry("marked-only@syncd.test", utc(2027, 6, 11, 9), utc(2027, 6, 11, 10)),
        )
    found = case.busy(calendars=[case.personal, dedicated])
    assert spans(found) == [(utc(2027, 6, 8, 13), utc(2027, 6, 8, 14))]
    assert case.busy(calendars=[dedicated]) == []
    assert case.busy(calendars=[dedicated], options=BusyOptions(all_day="busy")) == []


def test_only_intervals_overlapping_the_window_are_returned_clipped(case: Case) -> None:
    window = (utc(2027, 6, 8, 12), utc(2027, 6, 8, 16))
    for start, end in [
        (london(2027, 6, 8, 11), london(2027, 6, 8, 13)),  # ends at the window's start
        (london(2027, 6, 8, 12), london(2027, 6, 8, 14)),  # straddles the start
        (london(2027, 6, 8, 15), london(2027, 6, 8, 16)),  # inside
        (london(2027, 6, 8, 16, 30), london(2027, 6, 8, 18)),  # straddles the end
        (london(2027, 6, 8, 17), london(2027, 6, 8, 18)),  # starts at the window's end
        (london(2027, 6, 1, 14), london(2027, 6, 1, 15)),  # a week before
        (london(2027, 6, 15, 14), london(2027, 6, 15, 15)),  # a week after
    ]:
        case.target.put(case.personal, Event(start, end))
    found = case.busy(window)
    assert spans(found) == [
        (utc(2027, 6, 8, 12), utc(2027, 6, 8, 13)),
        (utc(2027, 6, 8, 14), utc(2027, 6, 8, 15)),
        (utc(2027, 6, 8, 15, 30), utc(2027, 6, 8, 16)),
    ]
    assert case.busy((window[1], window[0])) == []
    with pytest.raises(ValueError, match="aware"):
        case.reader.busy(datetime(2027, 6, 8), datetime(2027, 6, 9), [case.personal], DEFAULT)


def test_several_calendars_in_one_call(case: Case) -> None:
    other = case.target.add_calendar("Family")
    case.target.put(case.personal, Event(*TUESDAY_2PM))
    case.target.put(other, Event(london(2027, 6, 9, 8), london(2027, 6, 9, 9)))
    found = case.busy(calendars=[case.personal, other])
    assert [(i.calendar, i.start) for i in found] == [
        (case.personal, utc(2027, 6, 8, 13)),
        (other, utc(2027, 6, 9, 7)),
    ]
    assert case.busy(calendars=[]) == []


def test_nothing_private_leaves_the_connector(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    case.target.put(case.personal, Event(*TUESDAY_2PM))
    case.target.put(case.personal, WEEKLY)
    caplog.set_level(logging.DEBUG, logger="connectors")
    found = case.busy(options=BusyOptions(all_day="busy"))
    found += case.busy()
    listed = case.reader.calendars()
    assert found
    text = repr(found) + repr(listed)
    own_lines = [r.getMessage() for r in caplog.records if r.name.startswith("connectors")]
    assert not any(word in text + "\n".join(own_lines) for word in PRIVATE_WORDS)


def test_a_calendar_that_does_not_exist_is_not_found(case: Case) -> None:
    if isinstance(case.reader, CalDAVConnector):
        missing = case.personal.rstrip("/").rsplit("/", 1)[0] + "/no-such-calendar/"
    else:
        missing = "c_0000@group.calendar.google.com"
        # Google answers freeBusy per calendar (freebusy.query reference, calendars.errors):
        # the missing one is named with its reason, the others would still count.
        with pytest.raises(BusyIncomplete) as partial:
            case.reader.busy(*WEEK, [missing], DEFAULT)
        assert partial.value.failed == {missing: "notFound"} and partial.value.intervals == []
        return
    with pytest.raises(NotFound):
        case.reader.busy(*WEEK, [missing], DEFAULT)


def test_a_server_that_is_down_is_transient(busy_target: BusyTarget) -> None:
    port = unused_port()
    conn = busy_target.connector(url=f"http://127.0.0.1:{port}/", timeout=2.0)
    ref = (
        f"http://127.0.0.1:{port}/therapist/personal/"
        if busy_target.kind != "google"
        else "personal@example.com"
    )
    with pytest.raises(Transient):
        conn.busy(*WEEK, [ref], DEFAULT)
    with pytest.raises(Transient):
        conn.calendars()


# -- CalDAV: how the method is chosen ------------------------------------------------------------


def _refuse_free_busy(status: int) -> Callable[[ProxiedRequest], ProxyReply | None]:
    def hook(request: ProxiedRequest) -> ProxyReply | None:
        if request.method == "REPORT" and b"free-busy-query" in request.body:
            body = b""
            if status == 403:
                body = (
                    b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>'
                )
            return ProxyReply(status, {"Content-Type": "application/xml"}, body)
        return None

    return hook


def _strip_expand(request: ProxiedRequest) -> ProxyReply | None:
    """A server that ignores <C:expand>: the proxy removes it before the server sees it."""
    request.body = re.sub(rb"<C:expand [^>]*/>", b"", request.body)
    return None


def reports(proxy: HTTPProxy, marker: bytes) -> list[ProxiedRequest]:
    return [r for r in proxy.requests if r.method == "REPORT" and marker in r.body]


@dataclass
class Proxied:
    proxy: HTTPProxy
    reader: CalDAVConnector
    personal: str


@pytest.fixture
def proxied(
    caldav_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> Iterator[Proxied]:
    """The dedicated-mode reader behind a proxy, "Personal" holding a busy event and the weekly
    series; authentication and discovery already done, the proxy's record empty."""
    target = CalDAVBusyTarget(caldav_server)
    personal = target.add_calendar("Personal")
    target.put(personal, Event(*TUESDAY_2PM, status="TENTATIVE"))
    target.put(personal, WEEKLY)
    target.connector().ensure_calendar()  # syncd's dedicated calendar
    proxy = http_proxy(caldav_server.url)
    reader = target.connector(url=proxy.url)
    refs = {c.name: c.ref for c in reader.calendars()}
    del proxy.requests[:]
    yield Proxied(proxy, reader, refs["Personal"])
    target.close()


JUNE = (utc(2027, 6, 1, 0), utc(2027, 7, 1, 0))
JUNE_WEEKLY = [s for s in weekly_expected() if JUNE[0] <= s[0] < JUNE[1]]
JUNE_ALL = sorted([*JUNE_WEEKLY, (utc(2027, 6, 8, 13), utc(2027, 6, 8, 14))])


def test_caldav_free_busy_query_is_used_for_calendars_without_syncd_entries(
    proxied: Proxied,
) -> None:
    first = proxied.reader.busy(*JUNE, [proxied.personal], DEFAULT)
    second = proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(tentative_busy=False))
    assert spans(first) == JUNE_ALL
    assert [i.tentative for i in first if i.start == utc(2027, 6, 8, 13)] == [True]
    assert spans(second) == JUNE_WEEKLY
    # One request per call, no probing on the side.
    assert proxied.proxy.methods() == ["REPORT", "REPORT"]
    assert len(reports(proxied.proxy, b"free-busy-query")) == 2
    assert proxied.reader._busy.freebusy_supported is True


def test_caldav_options_free_busy_cannot_honour_use_calendar_query(proxied: Proxied) -> None:
    found = proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(all_day="busy"))
    assert spans(found) == JUNE_ALL
    assert reports(proxied.proxy, b"free-busy-query") == []
    assert len(reports(proxied.proxy, b"calendar-query")) == 1
    assert all(i.ref and i.ref.endswith(".ics") for i in found)


@pytest.mark.parametrize("status", [403, 501, 405])
def test_caldav_without_free_busy_query_falls_back_once(proxied: Proxied, status: int) -> None:
    proxied.proxy.on_request = _refuse_free_busy(status)
    answers = [proxied.reader.busy(*JUNE, [proxied.personal], DEFAULT) for _ in range(3)]
    assert all(spans(found) == JUNE_ALL for found in answers)
    assert len(reports(proxied.proxy, b"free-busy-query")) == 1
    assert len(reports(proxied.proxy, b"calendar-query")) == 3
    assert proxied.reader._busy.freebusy_supported is False


def test_caldav_server_side_expansion_is_used_when_the_server_expands(proxied: Proxied) -> None:
    for _ in range(2):
        found = proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(all_day="free"))
        assert spans(found) == JUNE_ALL
    assert len(reports(proxied.proxy, b"<C:expand ")) == 2
    assert proxied.reader._busy.expand_supported is True


def test_caldav_without_server_side_expansion_recurrences_are_expanded_here(
    proxied: Proxied,
) -> None:
    proxied.proxy.on_request = _strip_expand
    answers = [
        proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(all_day="free"))
        for _ in range(3)
    ]
    # Right from the first answer, which showed the RRULE still in place.
    assert all(spans(found) == JUNE_ALL for found in answers)
    assert len(reports(proxied.proxy, b"calendar-query")) == 3
    assert proxied.reader._busy.expand_supported is False


def test_caldav_expansion_is_asked_for_only_until_the_server_shows_it_ignores_it(
    proxied: Proxied,
) -> None:
    sent: list[bytes] = []

    def record_then_strip(request: ProxiedRequest) -> ProxyReply | None:
        sent.append(request.body)
        return _strip_expand(request)

    proxied.proxy.on_request = record_then_strip
    for _ in range(3):
        proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(all_day="busy"))
    assert [b"<C:expand " in body for body in sent] == [True, False, False]


def test_caldav_a_refused_expand_request_is_retried_without_it_once(proxied: Proxied) -> None:
    def refuse_expand(request: ProxiedRequest) -> ProxyReply | None:
        if b"<C:expand " in request.body:
            return ProxyReply(501, {"Content-Type": "text/plain"}, b"no")
        return None

    proxied.proxy.on_request = refuse_expand
    for _ in range(2):
        found = proxied.reader.busy(*JUNE, [proxied.personal], BusyOptions(all_day="busy"))
        assert spans(found) == JUNE_ALL
    queries = reports(proxied.proxy, b"calendar-query")
    assert [b"<C:expand " in r.body for r in queries] == [True, False, False]


def test_caldav_server_errors_during_busy_are_transient(proxied: Proxied) -> None:
    proxied.proxy.on_request = lambda request: ProxyReply(503, {"Retry-After": "9"}, b"busy")
    with pytest.raises(Transient) as caught:
        proxied.reader.busy(*JUNE, [proxied.personal], DEFAULT)
    assert caught.value.retry_after == 9.0
    # A 503 says nothing about free-busy support: nothing was decided.
    assert proxied.reader._busy.freebusy_supported is None


def test_caldav_a_bare_403_on_free_busy_is_auth_failed_and_decides_nothing(
    proxied: Proxied,
) -> None:
    proxied.proxy.on_request = lambda request: ProxyReply(403, {}, b"")
    with pytest.raises(AuthFailed):
        proxied.reader.busy(*JUNE, [proxied.personal], DEFAULT)
    assert proxied.reader._busy.freebusy_supported is None


def test_caldav_the_dedicated_calendar_costs_no_request(proxied: Proxied) -> None:
    dedicated = [c.ref for c in proxied.reader.calendars() if c.is_syncd]
    del proxied.proxy.requests[:]
    assert proxied.reader.busy(*JUNE, dedicated, DEFAULT) == []
    assert proxied.proxy.requests == []


# -- Google: requests --------------------------------------------------------------------------


@pytest.fixture
def google_busy(google_standin: GoogleStandIn) -> Iterator[GoogleBusyTarget]:
    target = GoogleBusyTarget(google_standin)
    yield target
    target.close()


def test_google_reads_the_calendar_list_once_per_connector(google_busy: GoogleBusyTarget) -> None:
    personal = google_busy.add_calendar("Personal")
    google_busy.put(personal, Event(*TUESDAY_2PM))
    dedicated = google_busy.connector()
    existing = google_busy.connector(calendar_url=personal)
    stand_in = google_busy.stand_in
    stand_in.reset_counts()
    for _ in range(3):
        assert len(dedicated.busy(*WEEK, [personal], DEFAULT)) == 1
    assert stand_in.calls["calendarList.list"] == 1
    assert stand_in.calls["freebusy.query"] == 3
    assert stand_in.calls["events.list"] == 0
    stand_in.reset_counts()
    for _ in range(3):
        assert len(existing.busy(*WEEK, [personal], DEFAULT)) == 1
    assert stand_in.calls["calendarList.list"] == 1
    assert stand_in.calls["events.list"] == 3
    assert stand_in.calls["freebusy.query"] == 0


def test_google_freebusy_is_one_request_for_many_calendars_and_split_in_time(
    google_busy: GoogleBusyTarget,
) -> None:
    calendars = [google_busy.add_calendar(f"Calendar {n}") for n in range(3)]
    # A three-day event across the 60-day boundary of a 150-day window.
    window = (utc(2027, 1, 1, 0), utc(2027, 5, 31, 0))
    google_busy.put(calendars[1], Event(london(2027, 3, 1, 12), london(2027, 3, 4, 12)))
    conn = google_busy.connector()
    google_busy.stand_in.reset_counts()
    found = conn.busy(*window, calendars, DEFAULT)
    assert google_busy.stand_in.calls["freebusy.query"] == 3  # 60 + 60 + 30 days
    assert [(i.calendar, i.start, i.end) for i in found] == [
        (calendars[1], utc(2027, 3, 1, 12), utc(2027, 3, 4, 12))
    ]


def test_google_existing_calendar_refs_are_event_ids(google_busy: GoogleBusyTarget) -> None:
    personal = google_busy.add_calendar("Personal")
    google_busy.put(personal, WEEKLY)
    conn = google_busy.connector(calendar_url=personal)
    found = conn.busy(utc(2027, 6, 14, 0), utc(2027, 6, 21, 0), [personal], DEFAULT)
    assert len(found) == 1 and found[0].ref
    stored = google_busy.stand_in.get_event(personal, found[0].ref)
    assert stored is not None and stored["start"]["dateTime"].startswith("2027-06-16T18:00")


def test_google_the_dedicated_calendar_is_never_read(google_busy: GoogleBusyTarget) -> None:
    conn = google_busy.connector()
    dedicated = google_busy.dedicated_ref(conn)
    conn.create(
        "syncd-session-s1.ics",
        syncd_entry("syncd-session-s1@syncd.test", utc(2027, 6, 9, 9), utc(2027, 6, 9, 10)),
    )
    google_busy.stand_in.reset_counts()
    assert conn.busy(*WEEK, [dedicated], DEFAULT) == []
    assert google_busy.stand_in.calls["freebusy.query"] == 0
    assert google_busy.stand_in.calls["events.list"] == 0
    # Also when the engine names it as the calendar to write into.
    stored = google_busy.connector(calendar_url=dedicated)
    assert stored.busy(*WEEK, [dedicated], DEFAULT) == []
    assert isinstance(stored, GoogleConnector)


def test_google_errors_during_busy_are_typed(google_busy: GoogleBusyTarget) -> None:
    personal = google_busy.add_calendar("Personal")
    stand_in = google_busy.stand_in
    dedicated = google_busy.connector()
    stand_in.inject("server_error", methods=["freebusy.query"])
    with pytest.raises(Transient):
        dedicated.busy(*WEEK, [personal], DEFAULT)
    existing = google_busy.connector(calendar_url=personal)
    stand_in.inject("rate_limit", methods=["events.list"], retry_after=7)
    with pytest.raises(Transient) as caught:
        existing.busy(*WEEK, [personal], DEFAULT)
    assert caught.value.retry_after == 7.0
    # Both work again once the faults are spent.
    assert dedicated.busy(*WEEK, [personal], DEFAULT) == []
    assert existing.busy(*WEEK, [personal], DEFAULT) == []

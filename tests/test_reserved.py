"""Reserved recurring slots on real CalDAV servers, across both London clock changes: what the
server stores is expanded with recurring-ical-events, as a calendar app would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events

from syncd import operations
from syncd.app import App
from syncd.ingest import Result
from syncd.project import uid_for
from syncd.store import repo
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_raw
from tests.support.clock import FakeClock

LONDON = ZoneInfo("Europe/London")
UID = uid_for("reserved", "r-1")


def reservation(version: int = 1, state: str = "active", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "r-1",
        "version": version,
        "therapist_id": "t-1",
        "client": {"id": "c-77", "name": "Jane Doe"},
        "first_start_local": "2027-03-02T10:00:00",
        "timezone": "Europe/London",
        "duration_minutes": 50,
        "rrule": "FREQ=WEEKLY;BYDAY=TU",
        "state": state,
    }
    data.update(extra)
    return f.event("reserved_slot.upserted", data)


def client_session(sid: str, local_day: date, version: int = 1, **extra: Any) -> dict[str, Any]:
    start = datetime(local_day.year, local_day.month, local_day.day, 10, tzinfo=LONDON)
    ev = f.session(sid, start.astimezone(UTC), version=version, **extra)
    ev["data"]["client"] = {"id": "c-77", "name": "Jane Doe"}
    return ev


# The app, occurrences(start, end) of the reservation as the calendar shows them after a pass,
# and the app's clock.
World = tuple[App, Callable[..., list[datetime]], FakeClock]


@pytest.fixture
def world(tmp_path: Path, caldav_server: CalDAVServer) -> Iterator[World]:
    clock = FakeClock(datetime(2027, 2, 1, 12, tzinfo=UTC))
    app = App.open(make_config(tmp_path / "state"), clock=clock)
    app.ingestor().ingest(f.therapist(zone="Europe/London"))
    operations.connect_caldav(
        app,
        "t-1",
        url=caldav_server.url,
        username=caldav_server.username,
        password=caldav_server.password,
    )
    with app.sessions() as s:
        cal = repo.connections(s, "t-1")[0].calendar_url
    assert cal is not None

    def occurrences(
        start: date = date(2027, 3, 1), end: date = date(2027, 12, 1)
    ) -> list[datetime]:
        app_report = app.engine().run_pass("t-1")
        assert not app_report.failed
        found = []
        for stored in read_raw(caldav_server, cal):
            for ev in recurring_ical_events.of(stored).between(start, end):
                if str(ev["UID"]) == UID:
                    found.append(ev.decoded("DTSTART"))
        return sorted(found)

    yield app, occurrences, clock
    app.close()


def tuesdays(start: date, end: date) -> list[date]:
    days, d = [], start
    while d < end:
        days.append(d)
        d += timedelta(days=7)
    return days


def test_weekly_tuesday_stays_ten_local_across_clock_changes(world: World) -> None:
    app, occurrences, _clock = world
    assert app.ingestor().ingest(reservation()).result is Result.APPLIED
    got = occurrences()
    expected_days = tuesdays(date(2027, 3, 2), date(2027, 12, 1))
    assert [o.date() for o in got] == expected_days
    assert all(o.astimezone(LONDON).hour == 10 for o in got)
    utc = {o.date(): o.astimezone(UTC).hour for o in got}
    assert utc[date(2027, 3, 23)] == 10  # GMT, before the last Sunday of March (28th)
    assert utc[date(2027, 3, 30)] == 9  # BST
    assert utc[date(2027, 10, 26)] == 9  # BST, before the last Sunday of October (31st)
    assert utc[date(2027, 11, 2)] == 10  # GMT again


def test_occurrence_taken_by_a_session_is_excluded_and_comes_back(world: World) -> None:
    app, occurrences, _clock = world
    app.ingestor().ingest(reservation())
    taken = date(2027, 4, 13)
    app.ingestor().ingest(client_session("s-77", taken))
    got = [o.date() for o in occurrences()]
    assert taken not in got and date(2027, 4, 6) in got and date(2027, 4, 20) in got
    app.ingestor().ingest(
        client_session(
            "s-77",
            taken,
            version=2,
            status="cancelled",
            cancellation={"reason": "client_cancelled", "by": "client"},
        )
    )
    assert taken in [o.date() for o in occurrences()]
    # another client's session the same morning does not take the reserved occurrence
    other = f.session("s-88", datetime(2027, 4, 20, 9, tzinfo=UTC))
    app.ingestor().ingest(other)
    assert date(2027, 4, 20) in [o.date() for o in occurrences()]


def test_ending_keeps_the_past_and_removes_the_future(world: World) -> None:
    app, occurrences, clock = world
    app.ingestor().ingest(reservation())
    before = occurrences()
    clock.now = datetime(2027, 6, 2, 12, tzinfo=UTC)  # a Wednesday: the client stops
    assert app.ingestor().ingest(reservation(version=2, state="ended")).result is Result.APPLIED
    after = occurrences()
    assert after == [o for o in before if o < clock.now]
    assert after[-1].date() == date(2027, 6, 1) and len(after) == 14


def test_ending_a_counted_series_recounts_it_instead_of_adding_until(world: World) -> None:
    """RFC 5545 §3.3.10: COUNT and UNTIL MUST NOT occur in the same rule."""
    app, occurrences, clock = world
    counted = "FREQ=WEEKLY;BYDAY=TU;COUNT=10"
    app.ingestor().ingest(reservation(rrule=counted))
    before = occurrences()
    assert len(before) == 10
    clock.now = datetime(2027, 3, 17, 12, tzinfo=UTC)  # a Wednesday, after three Tuesdays
    ended = reservation(version=2, state="ended", rrule=counted)
    assert app.ingestor().ingest(ended).result is Result.APPLIED
    assert occurrences() == before[:3]
    desired = app.engine().desired("t-1")
    assert desired is not None and desired[UID].rrule == "FREQ=WEEKLY;BYDAY=TU;COUNT=3"


def test_a_reservation_that_never_started_is_removed(world: World) -> None:
    app, occurrences, _clock = world
    app.ingestor().ingest(reservation())
    assert occurrences()
    app.ingestor().ingest(reservation(version=2, state="ended"))  # now is Feb, before March 2
    assert occurrences() == []


def test_bad_rrule_is_refused(world: World) -> None:
    app, _occ, _clock = world
    for rule, needle in [
        ("FREQ=SOMETIMES", "not a valid RRULE"),
        ("FREQ=WEEKLY;UNTIL=20270101T000000Z", "until field"),
    ]:
        out = app.ingestor().ingest(reservation(rrule=rule))
        assert out.result is Result.REFUSED and "data.rrule" in (out.error or "")
        assert needle in (out.error or "")

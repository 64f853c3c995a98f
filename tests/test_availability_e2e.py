"""Availability and conflicts end to end, on Radicale, Xandikos and the Google stand-in: the
therapist's own events (in a personal calendar, written as another client would) hide slots,
clashes with bookings are recorded and announced, and an unreachable calendar keeps its last
known busy time. Time moves only through an injected clock."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from connectors.caldav import CalDAVConnector, CalDAVSettings
from syncd import google_auth, operations
from syncd.app import App
from syncd.store.tables import ConnectionRow, OutboxRow, SessionRow
from tests.conftest import LOOPBACK_OK, make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import raw_request
from tests.support.clock import FakeClock
from tests.support.google_standin import GoogleStandIn

LONDON = ZoneInfo("Europe/London")
MONDAY = datetime(2027, 1, 11, 8, 0, tzinfo=UTC)
TUESDAY = datetime(2027, 1, 12, tzinfo=LONDON)  # GMT: local == UTC
WORKDAYS = [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(5)]


def at(hour: int, minute: int = 0, day: datetime = TUESDAY) -> datetime:
    return day.replace(hour=hour, minute=minute).astimezone(UTC)


class Personal(Protocol):
    """The therapist's own calendar, written the way their calendar app would."""

    def add(self, start: datetime, end: datetime, **props: str) -> str: ...

    def move(self, ref: str, start: datetime, end: datetime) -> None: ...

    def remove(self, ref: str) -> None: ...


def vevent(uid: str, start: datetime, end: datetime, props: dict[str, str]) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//therapist//phone//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20270101T000000Z",
        f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        f"DTEND:{end.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        "SUMMARY:Private appointment",
        *[f"{k}:{v}" for k, v in props.items()],
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


class CalDAVPersonal:
    def __init__(self, server: CalDAVServer) -> None:
        self.server = server
        creator = CalDAVConnector(
            CalDAVSettings(
                url=server.url,
                username=server.username,
                password=server.password,
                calendar_id="personal",
                calendar_name="Personal",
                egress=LOOPBACK_OK,
            )
        )
        self.url = creator.ensure_calendar()
        creator.close()

    def add(self, start: datetime, end: datetime, **props: str) -> str:
        uid = f"{uuid.uuid4()}@phone"
        self._put(uid, start, end, props)
        return uid

    def _put(self, uid: str, start: datetime, end: datetime, props: dict[str, str]) -> None:
        status = raw_request(
            self.server,
            urljoin(self.url, f"{uid}.ics"),
            "PUT",
            vevent(uid, start, end, props),
            {"Content-Type": "text/calendar"},
        )
        assert status in (201, 204), status

    def move(self, ref: str, start: datetime, end: datetime) -> None:
        self._put(ref, start, end, {})

    def remove(self, ref: str) -> None:
        assert raw_request(self.server, urljoin(self.url, f"{ref}.ics"), "DELETE") in (200, 204)


class GooglePersonal:
    def __init__(self, g: GoogleStandIn, email: str) -> None:
        self.g = g
        self.calendar = g.add_calendar(email, "Personal")

    def add(self, start: datetime, end: datetime, **props: str) -> str:
        body: dict[str, Any] = {
            "summary": "Private appointment",
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": end.isoformat()},
        }
        if props.get("TRANSP") == "TRANSPARENT":
            body["transparency"] = "transparent"
        if props.get("STATUS") == "TENTATIVE":
            body["status"] = "tentative"
        return str(self.g.put_event(self.calendar, body)["id"])

    def move(self, ref: str, start: datetime, end: datetime) -> None:
        self.g.edit_event(
            self.calendar,
            ref,
            start={"dateTime": start.isoformat()},
            end={"dateTime": end.isoformat()},
        )

    def remove(self, ref: str) -> None:
        self.g.delete_event(self.calendar, ref)


class World:
    def __init__(self, app: App, clock: FakeClock, personal: Personal) -> None:
        self.app, self.clock, self.personal = app, clock, personal

    def sync(self) -> None:
        report = self.app.engine().run_pass("t-1")
        assert not report.failed, [c.error for c in report.connections]

    def slots(self) -> set[datetime]:
        view = operations.availability_for(self.app, "t-1", at(0), at(23, 59))
        return {s.start for s in view.slots}

    def notes(self, topic: str) -> list[dict[str, Any]]:
        with self.app.sessions() as s:
            rows = s.scalars(
                select(OutboxRow).where(OutboxRow.topic == topic).order_by(OutboxRow.id)
            ).all()
            return [r.payload for r in rows]


@pytest.fixture(params=["radicale", "xandikos", "google"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    clock = FakeClock(MONDAY)
    sections: dict[str, dict[str, object]] = {"availability": {"busy_refresh": 0}}
    g: GoogleStandIn | None = None
    if request.param == "google":
        g = request.getfixturevalue("google_standin")
        g.add_account("ann@example.com", client_id="cid", client_secret="csecret")
        monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", "csecret")
        sections["google"] = {
            "client_id": "cid",
            "api_url": g.root_url,
            "token_url": g.token_url,
            "auth_url": g.auth_url,
            "revoke_url": g.revoke_url,
            "min_request_interval": 0,
        }
    app = App.open(make_config(tmp_path / "state", **sections), clock=clock)
    app.ingestor().ingest(f.therapist(working_hours=WORKDAYS, slot_minutes=50, buffer_minutes=10))
    personal: Personal
    if g is not None:
        from urllib.parse import parse_qs, urlsplit

        import httpx

        g.consenting_account = "ann@example.com"
        link = google_auth.authorization_url(app, "t-1", redirect_base="http://127.0.0.1:9")
        q = parse_qs(urlsplit(httpx.get(link, timeout=5).headers["location"]).query)
        google_auth.complete(app, q["state"][0], q["code"][0])
        personal = GooglePersonal(g, "ann@example.com")
    else:
        server: CalDAVServer = request.getfixturevalue(f"{request.param}_server")
        operations.connect_caldav(
            app, "t-1", url=server.url, username=server.username, password=server.password
        )
        personal = CalDAVPersonal(server)
    w = World(app, clock, personal)
    w.sync()
    yield w
    app.close()


def removed_by(before: set[datetime], start: datetime, end: datetime) -> set[datetime]:
    """The slots a busy interval removes: 50-minute slots within the 10-minute buffers."""
    lo, hi = start - timedelta(minutes=10), end + timedelta(minutes=10)
    return {s for s in before if s < hi and lo < s + timedelta(minutes=50)}


def test_a_private_event_hides_its_slots_and_announces_once(world: World) -> None:
    before = world.slots()
    assert at(14) in before and len(before) == 8
    announced = len(world.notes("availability.changed"))
    ref = world.personal.add(at(14), at(15))
    world.sync()
    after = world.slots()
    assert before - after == removed_by(before, at(14), at(15)) == {at(14), at(15)}
    new = world.notes("availability.changed")[announced:]
    assert len(new) == 1
    window = (datetime.fromisoformat(new[0]["from"]), datetime.fromisoformat(new[0]["to"]))
    assert window[0] <= at(14) and at(15, 50) <= window[1]
    world.personal.remove(ref)
    world.sync()
    assert world.slots() == before
    assert len(world.notes("availability.changed")) == announced + 2


def test_a_private_event_over_a_session_is_a_conflict_until_it_moves(world: World) -> None:
    world.app.ingestor().ingest(f.session("s-1", at(10)))
    world.sync()
    ref = world.personal.add(at(10, 30), at(11, 30))
    world.sync()
    [conflict] = operations.conflicts(world.app)
    assert (conflict.entity_kind, conflict.entity_id) == ("session", "s-1")
    assert (conflict.start_at, conflict.end_at) == (at(10, 30), at(10, 50))
    assert len(world.notes("conflict.detected")) == 1
    world.sync()  # still there: not announced again
    assert len(world.notes("conflict.detected")) == 1
    world.personal.move(ref, at(12), at(13))
    world.sync()
    assert operations.conflicts(world.app) == []
    [resolved] = world.notes("conflict.resolved")
    assert resolved["entity"] == {"kind": "session", "id": "s-1"}
    with world.app.sessions() as s:
        session = s.get(SessionRow, "s-1")
        assert session is not None and session.status == "confirmed"
        assert session.start_at == at(10) and session.version == 1


def test_transparent_is_ignored_and_tentative_is_busy(world: World) -> None:
    before = world.slots()
    world.personal.add(at(9), at(10), TRANSP="TRANSPARENT")
    world.personal.add(at(16), at(17), STATUS="TENTATIVE")
    world.sync()
    after = world.slots()
    assert at(9) in after
    assert at(16) not in after and before - after == {at(16)}


def test_an_unreachable_calendar_keeps_its_busy_time_then_is_flagged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.personal.add(at(14), at(15))
    world.sync()
    known = world.slots()
    with world.app.sessions() as s:
        row = s.scalars(select(ConnectionRow)).one()
        cid = row.id
    original = world.app.connector_for

    def unreachable(row: ConnectionRow) -> Any:
        # The server goes away: the connection now points at a closed loopback port (the same
        # typed Transient errors a stopped server gives), on every provider alike.
        # Every provider's connector keeps its settings dataclass and is built from it alone,
        # which the Connector protocol does not say.
        connector: Any = original(row)
        settings = connector.settings
        changes = {"url": "http://127.0.0.1:9/"}
        if settings.calendar_url and settings.calendar_url.startswith("http"):
            changes["calendar_url"] = "http://127.0.0.1:9" + urlsplit(settings.calendar_url).path
        connector.close()
        return type(connector)(dataclasses.replace(settings, **changes))

    with monkeypatch.context() as m:
        m.setattr(world.app, "connector_for", unreachable)
        world.clock.advance(timedelta(minutes=5))
        world.app.engine().run_pass("t-1")
        assert world.slots() == known  # last known busy time still applies
        view = operations.availability_for(world.app, "t-1", at(0), at(23))
        assert [s.stale for s in view.sources if s.source.startswith("connection")] == [True]
        assert world.notes("calendar.disconnected") == []
        world.clock.advance(timedelta(hours=2))  # past [availability] stale_after
        world.app.engine().run_pass("t-1")
        world.app.engine().run_pass("t-1")
        [flagged] = world.notes("calendar.disconnected")
        assert flagged["connection_id"] == cid and "busy time" in flagged["reason"]
        assert world.slots() == known
    world.sync()  # it is back
    with world.app.sessions() as s:
        back = s.get(ConnectionRow, cid)
        assert back is not None and back.busy_error is None and back.busy_flagged_at is None
    assert world.slots() == known


def test_status_shows_how_fresh_busy_time_is(world: World) -> None:
    [row] = operations.status(world.app)
    assert row.busy_state == "fresh" and row.busy_as_of == world.clock.now
    world.clock.advance(timedelta(hours=3))
    [row] = operations.status(world.app)
    assert row.busy_state == "stale"

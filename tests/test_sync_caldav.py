"""End to end on real CalDAV servers (Radicale and Xandikos): platform events in, calendar out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from syncd import operations
from syncd.app import App
from syncd.ingest import Result
from syncd.plan import Op
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow, DriftRow, EntityHistoryRow, SessionRow
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy
from tests.support.calendar_view import raw_request, read_calendar

MOVE = {"reason": "client_requested", "by": "client"}


def connect(
    app: App, server: CalDAVServer, tid: str = "t-1", calendar_url: str | None = None
) -> str:
    operations.connect_caldav(
        app,
        tid,
        url=server.url,
        username=server.username,
        password=server.password,
        calendar_url=calendar_url,
    )
    with app.sessions() as s:
        row = s.scalars(select(ConnectionRow).where(ConnectionRow.therapist_id == tid)).one()
        assert row.calendar_url
        return row.calendar_url


def sync(app: App, tid: str = "t-1", **kw: bool) -> list[Op]:
    report = app.engine().run_pass(tid, **kw)
    assert not report.failed, [c.error for c in report.connections]
    return [a.op for c in report.connections for a in c.actions]


# The app, its CalDAV server and the URL of the therapist's calendar there.
Setup = tuple[App, CalDAVServer, str]


@pytest.fixture
def setup(sqlite_app: App, caldav_server: CalDAVServer) -> Setup:
    assert sqlite_app.ingestor().ingest(f.therapist(zone="Europe/London")).ok
    return sqlite_app, caldav_server, connect(sqlite_app, caldav_server)


def test_confirmed_session_appears_with_time_title_location_and_zone(setup: Setup) -> None:
    app, server, cal = setup
    start = f.future(days=10)
    assert app.ingestor().ingest(f.session("s-1", start)).result is Result.APPLIED
    assert sync(app) == [Op.CREATE]
    seen = read_calendar(server, cal)
    ev = seen[uid_for("session", "s-1")]
    assert ev.start == start and ev.start.tzinfo == ZoneInfo("Europe/London")
    assert ev.event.decoded("DTEND") == start + timedelta(minutes=50)
    assert str(ev.event["SUMMARY"]) == "Therapy session"
    assert str(ev.event["STATUS"]) == "CONFIRMED"
    assert str(ev.event["CLASS"]) == "PRIVATE"
    assert str(ev.event["LOCATION"]) == "10 Harley St, London"
    body = ev.event.to_ical().decode()
    assert "Jane" not in body and "Doe" not in body  # no client name without opt-in


def test_move_updates_in_place_same_uid_and_href(setup: Setup) -> None:
    app, server, cal = setup
    start = f.future(days=10)
    app.ingestor().ingest(f.session("s-1", start))
    sync(app)
    before = read_calendar(server, cal)[uid_for("session", "s-1")]
    moved = start + timedelta(days=1, hours=3)
    out = app.ingestor().ingest(f.session("s-1", moved, version=2, change=MOVE))
    assert out.result is Result.APPLIED
    assert sync(app) == [Op.UPDATE]
    after = read_calendar(server, cal)
    assert list(after) == [uid_for("session", "s-1")]
    ev = after[uid_for("session", "s-1")]
    assert ev.href == before.href and ev.etag != before.etag
    assert ev.start == moved and ev.event.decoded("SEQUENCE") == 2


def test_cancelled_session_is_removed_and_kept_in_history(setup: Setup) -> None:
    app, server, cal = setup
    app.ingestor().ingest(f.session("s-1", f.future(days=10)))
    app.ingestor().ingest(f.session("s-2", f.future(days=11)))
    sync(app)
    app.ingestor().ingest(
        f.session(
            "s-1",
            f.future(days=10),
            version=2,
            status="cancelled",
            cancellation={"reason": "client_cancelled", "by": "client"},
        )
    )
    assert sync(app) == [Op.DELETE]
    assert list(read_calendar(server, cal)) == [uid_for("session", "s-2")]
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None and row.status == "cancelled"
        assert (
            len(
                s.scalars(select(EntityHistoryRow).where(EntityHistoryRow.entity_id == "s-1")).all()
            )
            == 2
        )


def test_duplicate_and_stale_deliveries_change_nothing(setup: Setup) -> None:
    app, server, cal = setup
    start = f.future(days=10)
    v2 = f.session("s-1", start, version=2)
    app.ingestor().ingest(v2)
    sync(app)
    before = read_calendar(server, cal)
    assert app.ingestor().ingest(v2).result is Result.DUPLICATE
    stale = f.session("s-1", start + timedelta(hours=2), version=1, change=MOVE)
    assert app.ingestor().ingest(stale).result is Result.STALE
    assert sync(app) == []
    assert read_calendar(server, cal) == before


def test_entries_deleted_or_edited_on_the_server_are_restored_and_recorded(setup: Setup) -> None:
    app, server, cal = setup
    for i in range(3):
        app.ingestor().ingest(f.session(f"s-{i}", f.future(days=10 + i)))
    sync(app)
    seen = read_calendar(server, cal)
    gone, edited = seen[uid_for("session", "s-0")], seen[uid_for("session", "s-1")]
    assert raw_request(server, gone.href, "DELETE") in (200, 204)
    tampered = edited.event.to_ical().decode().replace("Therapy session", "Lunch")
    body = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//someone//EN\r\n{tampered}END:VCALENDAR\r\n"
    assert raw_request(server, edited.href, "PUT", body, {"Content-Type": "text/calendar"}) in (
        201,
        204,
    )
    ops = sync(app)
    assert sorted(ops) == sorted([Op.CREATE, Op.UPDATE])
    restored = read_calendar(server, cal)
    assert len(restored) == 3
    assert {str(e.event["SUMMARY"]) for e in restored.values()} == {"Therapy session"}
    with app.sessions() as s:
        kinds = sorted(d.kind for d in s.scalars(select(DriftRow)).all())
    assert kinds == ["deleted", "edited"]
    assert sync(app) == []  # repaired for good
    [row] = operations.status(app)
    assert row.drift == 2 and row.entries == 3 and row.state == "ok"


def test_dry_run_plans_without_changing_anything(setup: Setup) -> None:
    app, server, cal = setup
    app.ingestor().ingest(f.session("s-1", f.future(days=10)))
    [result] = operations.resync(app, ["t-1"], dry_run=True)
    assert result.report is not None
    [conn] = result.report.connections
    assert [a.op for a in conn.actions] == [Op.CREATE] and conn.applied == 0
    assert read_calendar(server, cal) == {}
    assert sync(app) == [Op.CREATE]


def test_foreign_events_in_an_existing_calendar_are_never_touched(
    sqlite_app: App, caldav_server: CalDAVServer
) -> None:
    app, server = sqlite_app, caldav_server
    app.ingestor().ingest(f.therapist())
    own = connect(app, server)  # creates the dedicated calendar; reuse it as "existing"
    foreign = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//me//EN\r\nBEGIN:VEVENT\r\nUID:dentist-1\r\n"
        "DTSTAMP:20261101T000000Z\r\nDTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\n"
        "SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    assert raw_request(
        server, own + "dentist-1.ics", "PUT", foreign, {"Content-Type": "text/calendar"}
    ) in (201, 204)
    app.ingestor().ingest(f.therapist("t-2"))
    connect(app, server, "t-2", calendar_url=own)
    app.ingestor().ingest(f.session("s-9", f.future(days=10), therapist_id="t-2"))
    sync(app, "t-2", full=True)
    app.ingestor().ingest(
        f.session(
            "s-9",
            f.future(days=10),
            therapist_id="t-2",
            version=2,
            status="cancelled",
            cancellation={"reason": "admin_action", "by": "team"},
        )
    )
    sync(app, "t-2", full=True)
    seen = read_calendar(server, own)
    assert list(seen) == ["dentist-1"]
    assert seen["dentist-1"].event.to_ical().decode().count("Dentist") == 1


def test_a_pass_with_nothing_changed_costs_one_request(
    sqlite_app: App, radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    app = sqlite_app
    proxy = http_proxy(radicale_server.url)
    app.ingestor().ingest(f.therapist())
    operations.connect_caldav(
        app,
        "t-1",
        url=proxy.url,
        username=radicale_server.username,
        password=radicale_server.password,
    )
    app.ingestor().ingest(f.session("s-1", f.future(days=10)))
    sync(app)
    sync(app)  # first incremental pass sees our own write echoed back: still no action
    n = len(proxy.methods())
    assert sync(app) == []
    assert proxy.methods()[n:] == ["REPORT"]  # one sync-collection REPORT, nothing else


def test_session_at_clock_change_keeps_local_time(setup: Setup) -> None:
    app, server, cal = setup
    london = ZoneInfo("Europe/London")
    from datetime import datetime

    before = datetime(2027, 3, 26, 10, tzinfo=london).astimezone(UTC)  # GMT
    after = datetime(2027, 3, 29, 10, tzinfo=london).astimezone(UTC)  # BST
    app.ingestor().ingest(f.session("s-a", before))
    app.ingestor().ingest(f.session("s-b", after))
    sync(app)
    seen = read_calendar(server, cal)
    assert seen[uid_for("session", "s-a")].start.hour == 10
    assert seen[uid_for("session", "s-b")].start.hour == 10
    assert before.hour == 10 and after.hour == 9


def test_connecting_the_same_account_again_keeps_one_mirror(setup: Setup) -> None:
    app, server, cal = setup
    app.ingestor().ingest(f.session("s-1", f.future(days=10)))
    sync(app)
    assert connect(app, server) == cal
    with app.sessions() as s:
        assert len(s.scalars(select(ConnectionRow)).all()) == 1
    assert sync(app, full=True) == []
    assert list(read_calendar(server, cal)) == [uid_for("session", "s-1")]


def test_stored_password_is_encrypted(setup: Setup) -> None:
    app, server, _cal = setup
    with app.sessions() as s:
        row = s.scalars(select(ConnectionRow)).one()
    assert server.password.encode() not in row.secret
    assert app.box.open(row.secret) == server.password


def test_unconfirmed_is_tentative_confirming_updates_in_place_timeout_removes(setup: Setup) -> None:
    app, server, cal = setup
    start = f.future(days=10)
    app.ingestor().ingest(f.session("s-1", start, status="unconfirmed"))
    sync(app)
    ev = read_calendar(server, cal)[uid_for("session", "s-1")]
    assert str(ev.event["STATUS"]) == "TENTATIVE"
    assert str(ev.event["SUMMARY"]) == (
        "Therapy session (unconfirmed — please confirm on the platform)"
    )
    app.ingestor().ingest(f.session("s-1", start, version=2))
    assert sync(app) == [Op.UPDATE]
    confirmed = read_calendar(server, cal)[uid_for("session", "s-1")]
    assert confirmed.href == ev.href and str(confirmed.event["STATUS"]) == "CONFIRMED"
    app.ingestor().ingest(f.session("s-2", start + timedelta(hours=3), status="unconfirmed"))
    sync(app)
    app.ingestor().ingest(
        f.session(
            "s-2",
            start + timedelta(hours=3),
            version=2,
            status="cancelled",
            cancellation={"reason": "unconfirmed_timeout", "by": "system"},
        )
    )
    assert sync(app) == [Op.DELETE]
    assert list(read_calendar(server, cal)) == [uid_for("session", "s-1")]


def test_disconnect_deletes_the_dedicated_calendar_or_only_our_entries(
    sqlite_app: App, caldav_server: CalDAVServer
) -> None:
    app, server = sqlite_app, caldav_server
    app.ingestor().ingest(f.therapist())
    own = connect(app, server)
    app.ingestor().ingest(f.session("s-1", f.future(days=10)))
    sync(app)
    with app.sessions() as s:
        cid = s.scalars(select(ConnectionRow.id)).one()
    assert operations.disconnect(app, "t-1", cid) == 1
    assert raw_request(server, own, "GET") == 404  # the dedicated calendar is gone whole
    # In a calendar the therapist chose, only syncd's entries go; theirs stay.
    app.ingestor().ingest(f.therapist("t-2"))
    mine = connect(app, server, "t-2")  # a calendar of theirs, as far as t-3 is concerned
    foreign = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//me//EN\r\nBEGIN:VEVENT\r\nUID:gym\r\n"
        "DTSTAMP:20261101T000000Z\r\nDTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\n"
        "SUMMARY:Gym\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    raw_request(server, mine + "gym.ics", "PUT", foreign, {"Content-Type": "text/calendar"})
    app.ingestor().ingest(f.therapist("t-3"))
    connect(app, server, "t-3", calendar_url=mine)
    app.ingestor().ingest(f.session("s-3", f.future(days=11), therapist_id="t-3"))
    sync(app, "t-3")
    with app.sessions() as s:
        cid3 = s.scalars(select(ConnectionRow.id).where(ConnectionRow.therapist_id == "t-3")).one()
    assert operations.disconnect(app, "t-3", cid3) == 1
    assert list(read_calendar(server, mine)) == ["gym"]

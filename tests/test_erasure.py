"""Erasure on request: ``syncd forget client|therapist`` (and the admin API) remove the person
from the store, history, inbound event bodies and outbox, and from the calendars on a real
CalDAV server (Radicale); for a therapist the calendars are cleaned first. On SQLite and
PostgreSQL."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from syncd import auth, connect_links, erasure, operations, outbox
from syncd.app import App
from syncd.daemon import Daemon
from syncd.ingest import Result
from syncd.project import uid_for
from syncd.store.tables import Base, ConnectionRow, SessionRow, TherapistRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import raw_request, read_calendar
from tests.support.http_daemon import with_http_daemon
from tests.support.proc import run_syncd

CLIENT = {"id": "c-erase-88", "name": "Jane Secretname"}
OTHER = {"id": "c-keep-99", "name": "Bob Keepme"}
# Every id and name of the erased client's data: none may be left in any table.
ERASED = ("c-erase-88", "Jane Secretname", "s-gone-1", "s-gone-2", "o-gone-2", "r-gone")
MOVE = {"reason": "client_requested", "by": "client"}


def dump(app: App) -> str:
    """Every value of every row of every table, as text."""
    lines = []
    with app.sessions() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def rows_of(app: App, table: str) -> list[tuple[Any, ...]]:
    with app.sessions() as s:
        t = Base.metadata.tables[table]
        return sorted((tuple(r) for r in s.execute(select(t)).all()), key=repr)


def reserved(rid: str, client: dict[str, str], tid: str = "t-1") -> dict[str, Any]:
    first = (f.future(days=12)).strftime("%Y-%m-%dT09:00:00")
    return f.event(
        "reserved_slot.upserted",
        {
            "id": rid,
            "version": 1,
            "therapist_id": tid,
            "client": client,
            "first_start_local": first,
            "timezone": "Europe/London",
            "duration_minutes": 50,
            "rrule": "FREQ=WEEKLY;COUNT=4",
            "state": "active",
        },
    )


def populate(app: App) -> list[dict[str, Any]]:
    """Two therapists (t-1 shows first names); the client to erase has sessions with both, an
    offer, a reserved slot, and was once the client of a session now someone else's; another
    client's data must survive. Returns the erased client's events, for redelivery."""
    ing = app.ingestor()
    t1 = f.therapist("t-1", privacy={"client_label": "first_name", "include_location": True})
    assert ing.ingest(t1).ok and ing.ingest(f.therapist("t-2")).ok
    start = f.future(days=5)
    mine = [
        f.session("s-gone-1", start, client=CLIENT),
        f.session("s-gone-2", start + timedelta(days=1), therapist_id="t-2", client=CLIENT),
        f.offer("o-gone-2", "s-gone-2", [start + timedelta(days=2), start + timedelta(days=3)]),
        reserved("r-gone", CLIENT),
    ]
    for event in [*mine, f.session("s-kept", start + timedelta(hours=3), client=OTHER)]:
        assert ing.ingest(event).result is Result.APPLIED, event
    # Booked for the client, then given to another client: the first body names ours.
    handed = start + timedelta(days=4)
    assert ing.ingest(f.session("s-handed", handed, client=CLIENT)).ok
    assert ing.ingest(f.session("s-handed", handed, version=2, client=OTHER)).ok
    now = app.clock()
    with app.sessions.begin() as s:
        outbox.enqueue(
            s,
            "conflict.detected",
            {"therapist_id": "t-1", "entity": {"kind": "session", "id": "s-gone-1"}},
            now,
        )
        outbox.enqueue(s, "offer.expired", {"therapist_id": "t-2", "offer_id": "o-gone-2"}, now)
        outbox.enqueue(s, "availability.changed", {"therapist_id": "t-1"}, now)
    return mine


def connect(app: App, server: CalDAVServer, tid: str, **kw: Any) -> str:
    operations.connect_caldav(
        app, tid, url=server.url, username=server.username, password=server.password, **kw
    )
    with app.sessions() as s:
        row = s.scalars(select(ConnectionRow).where(ConnectionRow.therapist_id == tid)).one()
        assert row.calendar_url
        return row.calendar_url


def sync(app: App, tid: str) -> None:
    report = app.engine().run_pass(tid)
    assert not report.failed, [c.error for c in report.connections]


def test_forget_client(app: App, radicale_server: CalDAVServer) -> None:
    mine = populate(app)
    cal = connect(app, radicale_server, "t-1")
    sync(app, "t-1")
    before = read_calendar(radicale_server, cal)
    assert "Jane" in str(before[uid_for("session", "s-gone-1")].event["SUMMARY"])
    assert uid_for("reserved", "r-gone") in before
    kept_rows = [r for r in rows_of(app, "sessions") if r[0] == "s-kept"]

    erased = erasure.forget_client(app, CLIENT["id"])

    assert (erased.sessions, erased.offers, erased.reserved_slots) == (2, 1, 1)
    assert erased.notifications == 2  # the two naming them; availability.changed stays
    assert erased.calendar_entries == 2 and not erased.pending_calendars
    text = dump(app)
    for secret in ERASED:
        assert secret not in text, secret
    assert "Bob Keepme" in text and "s-handed" in text  # the other client's, untouched
    assert [r for r in rows_of(app, "sessions") if r[0] == "s-kept"] == kept_rows
    after = read_calendar(radicale_server, cal)
    assert set(after) == set(before) - {
        uid_for("session", "s-gone-1"),
        uid_for("reserved", "r-gone"),
    }
    assert uid_for("session", "s-kept") in after

    # A delivery still in flight (at least once) does not bring the data back...
    for event in mine:
        assert app.ingestor().ingest(event).result is Result.STALE
    assert all(secret not in dump(app) for secret in ERASED)
    # ...but a newer version is the platform's new word.
    newer = f.session("s-gone-1", f.future(days=5), version=2, client=CLIENT, change=MOVE)
    assert app.ingestor().ingest(newer).result is Result.APPLIED

    again = erasure.forget_client(app, "c-never-seen")
    assert not again.found


def test_forget_therapist_cleans_the_calendar_first(
    app: App, radicale_server: CalDAVServer
) -> None:
    populate(app)
    cal = connect(app, radicale_server, "t-1")
    sync(app, "t-1")
    assert read_calendar(radicale_server, cal)
    with app.sessions.begin() as s:
        auth.create(s, "ops", auth.Scope.ADMIN, app.clock())
        connect_links.issue(s, app.config, connect_links.app_signer(app), "t-1", app.clock())
    t2_before = [r for r in rows_of(app, "sessions") if r[2] == "t-2"]

    erased = erasure.forget_therapist(app, "t-1")

    assert erased.connections == 1 and erased.therapists == 1
    assert erased.sessions == 3  # s-gone-1, s-kept, s-handed
    # syncd created that calendar, so it went whole.
    assert raw_request(radicale_server, cal, "PROPFIND", "", {"Depth": "0"}) == 404
    text = dump(app)
    for gone in ("'t-1'", "s-gone-1", "s-kept", "s-handed", "r-gone", "Bob Keepme"):
        assert gone not in text, gone
    assert [r for r in rows_of(app, "sessions") if r[2] == "t-2"] == t2_before
    assert app.ingestor().ingest(f.therapist("t-1")).result is Result.STALE
    assert app.ingestor().ingest(f.therapist("t-1", version=2)).result is Result.APPLIED


def test_forget_therapist_keeps_the_therapists_own_events(
    sqlite_app: App, radicale_server: CalDAVServer
) -> None:
    """With an existing calendar (``--calendar``) syncd removes its own entries one by one and
    leaves the therapist's events alone."""
    app, server = sqlite_app, radicale_server
    populate(app)
    home = connect(app, server, "t-1").rstrip("/").rsplit("/", 1)[0]
    own = f"{home}/own/"
    assert raw_request(server, own, "MKCALENDAR") in (200, 201)
    foreign = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:mine-1\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART:20300101T100000Z\r\nDTEND:20300101T110000Z\r\n"
        "SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    put = raw_request(server, own + "mine-1.ics", "PUT", foreign, {"Content-Type": "text/calendar"})
    assert put in (201, 204)
    connect(app, server, "t-2", calendar_url=own)
    sync(app, "t-2")
    assert uid_for("session", "s-gone-2") in read_calendar(server, own)

    erasure.forget_therapist(app, "t-2")

    assert list(read_calendar(server, own)) == ["mine-1"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_forget_therapist_refuses_while_a_calendar_is_unreachable(
    sqlite_app: App, radicale_server: CalDAVServer
) -> None:
    app = sqlite_app
    populate(app)
    connect(app, radicale_server, "t-1")
    sync(app, "t-1")
    gone = f"http://127.0.0.1:{_closed_port()}/"
    with app.sessions.begin() as s:
        s.execute(update(ConnectionRow).values(url=gone, calendar_url=gone + "cal/"))
    with pytest.raises(erasure.NotErased, match=r"not erased.*--keep-calendar-entries"):
        erasure.forget_therapist(app, "t-1")
    with app.sessions() as s:
        assert s.get(TherapistRow, "t-1") is not None
        assert s.get(SessionRow, "s-gone-1") is not None
    erased = erasure.forget_therapist(app, "t-1", keep_calendar_entries=True)
    assert erased.therapists == 1
    assert "'t-1'" not in dump(app)


def test_forget_from_the_cli(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state")
    config = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    try:
        populate(app)
    finally:
        app.close()
    asked = run_syncd(config, "forget", "client", CLIENT["id"], stdin="n\n")
    assert asked.returncode == 1 and "Aborted" in asked.stderr
    done = run_syncd(config, "forget", "client", CLIENT["id"], "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"erased client {CLIENT['id']}: 2 sessions, 1 offers")
    assert "Jane" not in done.stdout
    repeat = run_syncd(config, "forget", "client", CLIENT["id"], "--yes")
    assert repeat.stdout.strip() == f"nothing stored about client {CLIENT['id']}"
    therapist = run_syncd(config, "forget", "therapist", "t-2", "--yes")
    assert therapist.returncode == 0, therapist.stderr
    assert therapist.stdout.startswith("erased therapist t-2: 0 sessions")  # theirs went above
    bad = run_syncd(config, "forget", "client", "x" * 300, "--yes")
    assert bad.returncode == 1
    assert bad.stderr == "error: a client id is 1 to 200 characters\n"


def test_forget_over_the_admin_api(sqlite_app: App) -> None:
    app = sqlite_app
    populate(app)
    with app.sessions.begin() as s:
        admin = auth.create(s, "ops", auth.Scope.ADMIN, app.clock())
        viewer = auth.create(s, "viewer", auth.Scope.READ, app.clock())

    def check(_daemon: Daemon, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            path = f"/v1/admin/clients/{CLIENT['id']}"
            read = c.delete(path, headers={"Authorization": f"Bearer {viewer}"})
            assert read.status_code == 403
            head = {"Authorization": f"Bearer {admin}"}
            done = c.delete(path, headers=head)
            assert done.status_code == 200, done.text
            body = done.json()
            assert body["found"] is True
            assert (body["sessions"], body["offers"], body["reserved_slots"]) == (2, 1, 1)
            assert c.delete(path, headers=head).json()["found"] is False
            bad = c.delete("/v1/admin/therapists/t-1?keep_calendar_entries=maybe", headers=head)
            assert bad.status_code == 400
            gone = c.delete("/v1/admin/therapists/t-1", headers=head)
            assert gone.status_code == 200 and gone.json()["sessions"] == 2

    with_http_daemon(app, check, timeout=60)
    text = dump(app)
    assert all(secret not in text for secret in ERASED)
    assert "'t-1'" not in text


def test_forget_therapist_whose_provider_is_no_longer_configured(sqlite_app: App) -> None:
    """A Google connection on a daemon without a Google client (found by the endpoint fuzz: a
    500): refused with the reason, unless the caller accepts leaving the entries there."""
    app = sqlite_app
    populate(app)
    with app.sessions.begin() as s:
        row = ConnectionRow(
            therapist_id="t-1",
            provider="google",
            url="",
            username="",
            secret=app.box.seal("refresh-token"),
            state="ok",
            failures=0,
            created_at=app.clock(),
        )
        s.add(row)
        s.flush()
        cid = row.id
    with pytest.raises(erasure.NotErased, match=r"client_id is not configured"):
        erasure.forget_therapist(app, "t-1")
    assert "'t-1'" in dump(app)
    erased = erasure.forget_therapist(app, "t-1", keep_calendar_entries=True)
    assert erased.calendars_left == [cid] and erased.therapists == 1
    assert "'t-1'" not in dump(app)

"""Google end to end, against the Calendar v3 stand-in driven by the real client library:
connecting through OAuth, batched mirrors, crashes, concurrent edits, throttling, revoked grants,
expired sync tokens, push notifications and disconnecting."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from connectors.google import GoogleConnector
from syncd import google_auth, operations
from syncd.app import App
from syncd.apply import Applier
from syncd.engine import Engine
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow, MirrorRow, OutboxRow
from syncd.watch import renew_watches
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.google_standin import GoogleStandIn, fixtures
from tests.support.google_standin.fixtures import entry_uid
from tests.support.inprocess import run_daemon_until
from tests.support.proc import jsonl, run_syncd, start_syncd, wait_for
from tests.support.tls import TLSForwarder

# Every test here runs against each profile of Google's undocumented behaviour.
google_standin = fixtures.google_standin_every_mode

CLIENT_ID, CLIENT_SECRET = "syncd-client", "syncd-client-secret"
ANN, BOB = "ann@example.com", "bob@example.com"


@dataclass
class World:
    app: App
    g: GoogleStandIn
    tmp: Path

    def connect(self, therapist: str, email: str) -> int:
        """The real OAuth flow, with the stand-in's consent screen answering at once and the
        browser's redirect read instead of followed (the callback route is tested separately)."""
        self.g.consenting_account = email
        url = google_auth.authorization_url(self.app, therapist, redirect_base="http://127.0.0.1:9")
        answer = httpx.get(url, follow_redirects=False, timeout=5)
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        return google_auth.complete(self.app, query["state"][0], query["code"][0])

    def calendar(self, connection_id: int) -> str:
        with self.app.sessions() as s:
            row = s.get(ConnectionRow, connection_id)
            assert row is not None and row.calendar_url
            return urlsplit(row.calendar_url).path.split("/calendars/")[1].strip("/")

    def ours(self, calendar: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.g.events(calendar)
            if (e.get("extendedProperties") or {}).get("private", {}).get("syncd") == "1"
        ]

    def mirror_rows(self) -> int:
        with self.app.sessions() as s:
            return s.scalar(select(func.count()).select_from(MirrorRow)) or 0


def google_section(g: GoogleStandIn, **extra: Any) -> dict[str, Any]:
    section = {
        "client_id": CLIENT_ID,
        "api_url": g.root_url,
        "token_url": g.token_url,
        "auth_url": g.auth_url,
        "revoke_url": g.revoke_url,
        "timeout": 5,
        "min_request_interval": 0,
    }
    section.update(extra)
    return section


@pytest.fixture
def world(
    tmp_path: Path, google_standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    g = google_standin
    for email in (ANN, BOB):
        g.add_account(email, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    app = App.open(make_config(tmp_path / "state", google=google_section(g)))
    for tid in ("t-ann", "t-bob"):
        assert app.ingestor().ingest(f.therapist(tid)).ok
    yield World(app, g, tmp_path)
    app.close()


def sessions(therapist: str, n: int, prefix: str = "s") -> list[dict[str, Any]]:
    return [
        f.session(
            f"{prefix}-{i:03d}", f.future(days=1 + i // 8, hour=8 + i % 8), therapist_id=therapist
        )
        for i in range(n)
    ]


def ingest(app: App, events: list[dict[str, Any]]) -> None:
    for e in events:
        assert app.ingestor().ingest(e).ok


def sync(engine: Engine, therapist: str) -> None:
    report = engine.run_pass(therapist)
    assert not report.failed, [c.error for c in report.connections]


def test_connecting_creates_the_dedicated_calendar_with_minimal_scopes(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    calendar = world.calendar(cid)
    assert calendar in world.g.calendars(ANN) and calendar != ANN
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None and row.calendar_owned and row.provider == "google"
        assert b"1//" not in row.secret  # the refresh token is stored encrypted
    url = google_auth.authorization_url(world.app, "t-ann")
    scope = parse_qs(urlsplit(url).query)["scope"][0].split()
    assert "https://www.googleapis.com/auth/calendar" not in scope
    assert "https://www.googleapis.com/auth/calendar.app.created" in scope
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["access_type"] == ["offline"]
    # Connecting again finds the same calendar and keeps one connection.
    assert world.connect("t-ann", ANN) == cid
    assert world.calendar(cid) == calendar


def test_initial_mirror_of_500_is_batched(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 500))
    world.g.reset_counts()
    engine = world.app.engine()
    sync(engine, "t-ann")
    calls = dict(world.g.calls)
    # The same pass also reads the therapist's busy time once (calendar list + one freebusy
    # query); the mirror itself is the token, one listing and ten batches.
    busy_reading = calls.get("calendarList.list", 0) + calls.get("freebusy.query", 0)
    assert busy_reading == 2, calls
    assert world.g.requests - busy_reading <= 12, calls
    assert calls.get("batch") == 10 and calls.get("events.insert") == 500
    ours = world.ours(world.calendar(cid))
    assert len(ours) == 500 and len({entry_uid(e) for e in ours}) == 500
    assert world.mirror_rows() == 500
    world.g.reset_counts()
    sync(engine, "t-ann")  # nothing changed: one incremental listing
    assert dict(world.g.calls) == {"events.list": 1}


def test_a_crash_between_the_writes_and_their_record_duplicates_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 120))

    class Crash(BaseException):
        pass

    def crash(*_args: object) -> None:
        raise Crash  # the process "dies" right after Google accepted the batch

    engine = world.app.engine()
    with monkeypatch.context() as m:
        m.setattr(Applier, "_record", staticmethod(crash))
        with pytest.raises(Crash):
            engine.run_pass("t-ann")
    calendar = world.calendar(cid)
    assert len(world.ours(calendar)) == 50 and world.mirror_rows() == 0
    sync(world.app.engine(), "t-ann")  # a fresh process
    ours = world.ours(calendar)
    assert len(ours) == 120 and len({entry_uid(e) for e in ours}) == 120
    assert world.mirror_rows() == 120


def test_killing_a_real_daemon_mid_mirror_duplicates_nothing(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    cfg = make_config(
        world.tmp / "state", google=google_section(world.g, max_batch=10), sync={"interval": 3600}
    )
    path = write_config(world.tmp / "syncd.toml", cfg)
    n = 300
    assert run_syncd(path, "ingest", "-", stdin=jsonl(sessions("t-ann", n))).returncode == 0
    calendar = world.calendar(cid)
    world.g.inject("slow", times=None, delay=0.05, methods=["events.insert"])
    proc = start_syncd(path, "run", log=world.tmp / "run.log")
    try:
        wait_for(lambda: len(world.ours(calendar)) >= 40, 60, "the mirror to be under way", 0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = len(world.ours(calendar))
    assert written < n, "the pass finished before the kill; the test proves nothing"
    world.g.clear_faults()
    proc = start_syncd(path, "run", log=world.tmp / "run2.log")
    try:
        wait_for(lambda: world.mirror_rows() == n, 60, "the mirror to complete after restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    ours = world.ours(calendar)
    assert len(ours) == n and len({entry_uid(e) for e in ours}) == n


def test_a_concurrent_edit_gets_412_then_is_reread_and_reapplied(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 3))
    engine = world.app.engine()
    sync(engine, "t-ann")
    calendar = world.calendar(cid)
    target = next(e for e in world.ours(calendar) if entry_uid(e) == uid_for("session", "s-001"))
    moved = f.future(days=20)
    ingest(
        world.app,
        [
            f.session(
                "s-001",
                moved,
                version=2,
                therapist_id="t-ann",
                change={"reason": "client_requested", "by": "client"},
            )
        ],
    )
    original = GoogleConnector.changes

    def changes_then_someone_edits(self: GoogleConnector, token: str | None) -> Any:
        result = original(self, token)
        world.g.edit_event(calendar, target["id"], summary="Lunch with Sam")
        return result

    world.g.reset_counts()
    with monkeypatch.context() as m:
        m.setattr(GoogleConnector, "changes", changes_then_someone_edits)
        sync(engine, "t-ann")
    assert world.g.calls["events.get"] >= 1  # re-read after the 412
    event = world.g.get_event(calendar, target["id"])
    assert event is not None and event["summary"] == "Therapy session"
    assert event["start"]["dateTime"].startswith(moved.strftime("%Y-%m-%d"))
    sync(engine, "t-ann")  # the therapist's edit was overwritten on purpose: nothing left to do
    assert len(world.ours(calendar)) == 3


def test_one_therapists_rate_limit_storm_does_not_delay_another(world: World) -> None:
    ann = world.connect("t-ann", ANN)
    bob = world.connect("t-bob", BOB)
    ingest(world.app, sessions("t-ann", 20, "a") + sessions("t-bob", 20, "b"))
    storm = world.g.inject("rate_limit", times=None, account=ANN)
    world.g.inject("too_many", times=None, account=ANN, retry_after=1)
    ann_cal, bob_cal = world.calendar(ann), world.calendar(bob)
    run_daemon_until(world.app, lambda d: len(world.ours(bob_cal)) == 20, timeout=60)
    assert len(world.ours(ann_cal)) == 0 and storm.hits > 0
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, ann)
        assert row is not None and row.state == "error" and "rate" in (row.last_error or "")
    world.g.clear_faults()
    sync(world.app.engine(), "t-ann")  # once the storm stops, Ann converges
    assert len(world.ours(ann_cal)) == 20


def test_a_revoked_grant_needs_reauth_once_and_stops_all_requests(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 2))
    sync(world.app.engine(), "t-ann")
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None
        token = world.app.box.open(row.secret)
    world.g.revoke(token)
    world.g.reset_counts()
    for _ in range(3):
        world.app.engine().run_pass("t-ann")
    assert world.g.requests == 1, dict(world.g.calls)  # the one refresh that learnt it
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None and row.state == "needs_reauth"
        notes = s.scalars(select(OutboxRow).where(OutboxRow.topic == "calendar.disconnected")).all()
        assert len(notes) == 1 and notes[0].payload["connection_id"] == cid
    [status] = [r for r in operations.status(world.app) if r.therapist_id == "t-ann"]
    assert status.state == "needs_reauth"
    assert world.connect("t-ann", ANN) == cid  # the therapist reconnects: same mirror
    sync(world.app.engine(), "t-ann")
    assert len(world.ours(world.calendar(cid))) == 2


def test_an_expired_sync_token_means_one_full_listing_then_incremental(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 5))
    engine = world.app.engine()
    sync(engine, "t-ann")
    world.g.expire_sync_tokens()
    ingest(world.app, [f.session("s-new", f.future(days=30), therapist_id="t-ann")])
    world.g.reset_counts()
    sync(engine, "t-ann")
    assert world.g.calls["events.list"] == 2  # the refused token, then the full listing
    world.g.reset_counts()
    sync(engine, "t-ann")
    assert dict(world.g.calls) == {"events.list": 1}
    ours = world.ours(world.calendar(cid))
    assert len(ours) == 6 and len({entry_uid(e) for e in ours}) == 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_push_notification_triggers_a_pass_at_once(
    tmp_path: Path, google_standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = google_standin
    g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    port = free_port()
    # Google pushes only to HTTPS: the forwarder plays the operator's TLS reverse proxy.
    proxy = TLSForwarder(port).__enter__()
    cfg = make_config(
        tmp_path / "state",
        google=google_section(g),
        http={"port": port, "public_url": proxy.url},
        sync={"interval": 3600},  # the periodic pass cannot be what repairs it
    )
    app = App.open(cfg)
    try:
        app.ingestor().ingest(f.therapist("t-ann"))
        world = World(app, g, tmp_path)
        ingest(app, sessions("t-ann", 2))
        state: dict[str, Any] = {}

        def browser() -> None:
            # The therapist's browser, on its own thread: the daemon's loop serves the callback.
            url = google_auth.authorization_url(app, "t-ann")
            g.consenting_account = ANN
            # The test's own certificate: the browser is told to trust it.
            page = httpx.get(url, follow_redirects=True, timeout=10, verify=False)
            state["page"] = (page.status_code, page.text)

        def scenario(daemon: Any) -> bool:
            if daemon.web is None or not daemon.web.running:
                return False
            if "browser" not in state:
                state["browser"] = threading.Thread(target=browser, daemon=True)
                state["browser"].start()
                return False
            if "cid" not in state:
                with app.sessions() as s:
                    cid = s.scalars(select(ConnectionRow.id)).first()
                if cid is None:
                    return False
                state["cid"] = cid
            calendar = world.calendar(state["cid"])
            ours = world.ours(calendar)
            if "edited" not in state:
                if len(ours) == 2 and g.active_channels:
                    state["edited"] = ours[0]["id"]
                    state["passes"] = daemon.passes
                    g.edit_event(calendar, ours[0]["id"], summary="Dentist")
                return False
            event = g.get_event(calendar, state["edited"])
            return event is not None and event["summary"] == "Therapy session"

        daemon = run_daemon_until(app, scenario, timeout=120)
        status, text = state["page"]
        assert status == 200 and "Calendar connected" in text
        assert daemon.passes > state["passes"]
        states = [n.resource_state for n in g.notifications_sent]
        assert states[0] == "sync" and "exists" in states
        assert all(n.address.startswith("https://") for n in g.notifications_sent)
    finally:
        app.close()
        proxy.__exit__(None, None, None)


def test_disconnect_removes_the_calendar_and_revokes_the_grant(world: World) -> None:
    cid = world.connect("t-ann", ANN)
    ingest(world.app, sessions("t-ann", 3))
    sync(world.app.engine(), "t-ann")
    calendar = world.calendar(cid)
    with world.app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None
        token = world.app.box.open(row.secret)
    assert operations.disconnect(world.app, "t-ann", cid) == 3
    assert calendar not in world.g.calendars(ANN)
    refused = httpx.post(
        world.g.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=5,
    )
    assert refused.status_code == 400 and "invalid_grant" in refused.text
    with world.app.sessions() as s:
        assert s.get(ConnectionRow, cid) is None
        assert world.mirror_rows() == 0


def test_replicas_renewing_one_watch_at_once_leave_exactly_one_channel_open(
    tmp_path: Path, google_standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = google_standin
    g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    # Notifications go to a closed port: the stand-in gives up on them without blocking.
    cfg = make_config(
        tmp_path / "state",
        google=google_section(g),
        http={"port": 0, "public_url": "https://127.0.0.1:9"},
    )
    app = App.open(cfg)
    try:
        assert app.ingestor().ingest(f.therapist("t-ann")).ok
        cid = World(app, g, tmp_path).connect("t-ann", ANN)
        sync(app.engine(), "t-ann")  # watches are opened for healthy connections only
        # Two replicas both find the connection without a channel and both open one before
        # either records it: the barrier holds each inside watch() until the other got there.
        both_opened = threading.Barrier(2, timeout=10)
        original = GoogleConnector.watch

        def watch(self: GoogleConnector, *args: Any, **kwargs: Any) -> Any:
            channel = original(self, *args, **kwargs)
            both_opened.wait()
            return channel

        monkeypatch.setattr(GoogleConnector, "watch", watch)
        opened: list[int] = []
        replicas = [
            threading.Thread(target=lambda: opened.append(renew_watches(app))) for _ in range(2)
        ]
        for t in replicas:
            t.start()
        for t in replicas:
            t.join(30)
        assert sorted(opened) == [0, 1]  # one swap won; the other stopped its own channel
        with app.sessions() as s:
            row = s.get(ConnectionRow, cid)
            assert row is not None
            recorded = row.channel_id
        assert g.active_channels == [recorded]
    finally:
        app.close()


def test_a_reply_cut_off_mid_body_is_retried_and_the_pass_converges(
    tmp_path: Path,
    google_standin: GoogleStandIn,
    fault_proxy: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch reaches the stand-in and is applied, but its answer is cut short: httplib2
    lets http.client's IncompleteRead through unwrapped, which must be a retryable error (the
    soak found it crashing the pass). The retry finds the events there and adopts them."""
    from tests.support.faults import Action, Rule, first

    g = google_standin
    g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    proxy = fault_proxy(g.root_url)
    app = App.open(make_config(tmp_path / "state", google=google_section(g, api_url=proxy.url)))
    try:
        assert app.ingestor().ingest(f.therapist("t-ann")).ok
        world = World(app, g, tmp_path)
        cid = world.connect("t-ann", ANN)
        ingest(app, sessions("t-ann", 3))
        proxy.add(Rule(Action.TRUNCATE, keep=40, method="POST", path="batch", schedule=first(1)))
        sync(app.engine(), "t-ann")
        assert proxy.injected[Action.TRUNCATE] == 1
        ours = world.ours(world.calendar(cid))
        assert len(ours) == 3 and len({entry_uid(e) for e in ours}) == 3
        assert world.mirror_rows() == 3
    finally:
        app.close()

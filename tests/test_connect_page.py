"""Connect links and the therapist's connect page, in process (the browser test is
tests/test_connect_browser.py): signed single-use expiring links, CalDAV presets tried before
anything is stored, RFC 6764 discovery through an injected resolver, the outbound-request policy
before any request, busy calendars, sample entries, disconnect, the reconnect link sent with
``calendar.disconnected`` restoring the same connection, the admin API, the CLI and the
dashboard. Every server is a real one on loopback (Radicale, the Google stand-in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from starlette.testclient import TestClient

from connectors.egress_http import httpx_client
from connectors.errors import AuthFailed, NotFound, Transient
from syncd import auth, caldav_presets, connect_links, google_auth, pending_grants
from syncd.app import App
from syncd.caldav_discovery import Srv
from syncd.cli import main
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.store.tables import ConnectionRow, ConnectLinkRow, MirrorRow, OutboxRow
from syncd.web import connect_links_api, dashboard
from syncd.web.app import build_app, google_routes
from syncd.web.connect_page import ConnectPage
from tests.conftest import LOOPBACK_OK, make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, unused_port
from tests.support.calendar_view import read_calendar
from tests.support.google_standin import GoogleStandIn
from tests.support.http_daemon import NoDaemon
from tests.test_dashboard import sign_in

PASSWORD, NEW_PASSWORD = "first pw", "second pw"
CLIENT_ID, CLIENT_SECRET = "syncd-client", "syncd-client-secret"
ANN = "ann@example.com"
PRACTICE = "practice@example.com"
SHARED_ROLES = ("writer", "reader", "freeBusyReader")


class FakeDns:
    """DNS answers from a mapping, so discovery never leaves this machine."""

    def __init__(self, srv: dict[str, list[Srv]], txt: dict[str, list[str]]) -> None:
        self.srv_records, self.txt_records = srv, txt
        self.asked: list[str] = []

    def srv(self, name: str) -> list[Srv]:
        self.asked.append(name)
        return self.srv_records.get(name, [])

    def txt(self, name: str) -> list[str]:
        return self.txt_records.get(name, [])


@dataclass
class World:
    app: App
    radicale: EmbeddedRadicale
    client: TestClient
    dns: FakeDns
    tmp: Path

    @property
    def server(self) -> CalDAVServer:
        return CalDAVServer("radicale", self.radicale.url, "therapist", self.password)

    password: str = PASSWORD

    def change_password(self, new: str) -> None:
        (self.radicale.folder / "htpasswd").write_text(f"therapist:{new}\n")
        self.password = new

    def link(self, **kw: Any) -> tuple[connect_links.Link, str]:
        link = connect_links.create(self.app, "t-1", **kw)
        return link, urlsplit(link.url).path

    def connections(self) -> list[ConnectionRow]:
        with self.app.sessions() as s:
            return list(s.scalars(select(ConnectionRow)).all())

    def outbox(self, topic: str = "calendar.disconnected") -> list[OutboxRow]:
        with self.app.sessions() as s:
            return list(s.scalars(select(OutboxRow).where(OutboxRow.topic == topic)).all())


def make_client(app: App, dns: FakeDns, *extra: Any) -> TestClient:
    page = ConnectPage(app, NoDaemon(), dns=dns)
    routes = [*page.routes(), *extra]
    return TestClient(build_app(app, NoDaemon(), routes))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with EmbeddedRadicale(tmp_path / "radicale", username="therapist", password=PASSWORD) as rad:
        cfg = make_config(
            tmp_path / "state",
            sync={"interval": 3600},
            platform={"session_url": "https://platform.example/sessions/{session_id}"},
        )
        app = App.open(cfg)
        assert app.ingestor().ingest(f.therapist("t-1", privacy={"client_label": "initials"})).ok
        dns = FakeDns({}, {})
        with make_client(app, dns) as client:
            yield World(app, rad, client, dns, tmp_path)
        app.close()


def connect_form(w: World, path: str, password: str, address: str | None = None) -> Any:
    data = {"address": address or w.radicale.url, "username": "therapist", "password": password}
    return w.client.post(f"{path}/caldav/other", data=data, follow_redirects=False)


# -- links -------------------------------------------------------------------------------------


def test_tokens_are_signed_and_links_single_use_and_expiring(world: World) -> None:
    link, _path = world.link()
    signer = connect_links.app_signer(world.app)
    assert signer.link_id(link.token) == link.id
    link_id, mac = link.token.split(".")
    for forged in (f"{link_id}.{'A' * len(mac)}", f"x{link_id}.{mac}", link_id, "", "a.b.c"):
        assert signer.link_id(forged) is None
        with pytest.raises(connect_links.LinkError) as refused:
            connect_links.check_link(world.app, forged)
        assert refused.value.kind == "invalid"
    # Another deployment's key signs other tokens: a database dump opens no link.
    other = connect_links.LinkSigner(b"another key")
    assert other.link_id(link.token) is None
    with world.app.sessions.begin() as s:
        row = s.get(ConnectLinkRow, link.id)
        assert row is not None and link.token not in repr(row.__dict__)
        row.pending_secret = b"sealed grant"  # as if a consent awaited its calendar choice
    assert pending_grants.discard_expired(world.app) == 0  # its link is open: kept
    with world.app.sessions.begin() as s:
        row = s.get(ConnectLinkRow, link.id)
        assert row is not None and row.pending_secret is not None
        row.expires_at = world.app.clock() - timedelta(seconds=1)
    # The daemon's sweep drops grants left waiting past their link's life (this one, sealed
    # under no key, cannot even be opened to revoke: dropped all the same).
    assert pending_grants.discard_expired(world.app) == 1
    with world.app.sessions.begin() as s:
        row = s.get(ConnectLinkRow, link.id)
        assert row is not None and row.pending_secret is None
        row.expires_at = row.created_at + timedelta(days=7)
        assert row.expires_at - row.created_at == timedelta(days=7)  # the default lifetime
    now = world.app.clock()
    connect_links.require_open(link, now)
    with pytest.raises(connect_links.LinkError) as late:
        connect_links.require_open(link, link.expires_at)
    assert late.value.kind == "expired"
    with world.app.sessions.begin() as s:
        assert connect_links.consume(s, link.id, 1, now)
        assert not connect_links.consume(s, link.id, 2, now)  # once
    used = connect_links.check_link(world.app, link.token)
    with pytest.raises(connect_links.LinkError) as again:
        connect_links.require_open(used, now)
    assert again.value.kind == "used" and used.connection_id == 1


def test_expired_used_and_forged_links_say_so(world: World) -> None:
    link, path = world.link()
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    r = world.client.get(forged)
    assert r.status_code == 404 and "This link does not work" in r.text
    with world.app.sessions.begin() as s:
        row = s.get(ConnectLinkRow, link.id)
        assert row is not None
        row.expires_at = world.app.clock() - timedelta(seconds=1)
    r = world.client.get(path)
    assert r.status_code == 410 and "This link has expired" in r.text
    # Nothing can be done with it either.
    assert connect_form(world, path, PASSWORD).status_code == 410
    assert world.connections() == []
    _link, fresh = world.link()
    assert connect_form(world, fresh, PASSWORD).status_code == 303
    with make_client(world.app, world.dns) as stranger:  # no cookie: another browser
        r = stranger.get(fresh)
        assert r.status_code == 410 and "This link was already used" in r.text
        assert stranger.get(f"{fresh}/done").status_code == 410


# -- CalDAV ------------------------------------------------------------------------------------


def test_caldav_is_tried_before_anything_is_stored(world: World) -> None:
    link, path = world.link()
    page = world.client.get(path)
    assert page.status_code == 200
    for name in ("Apple iCloud", "Fastmail", "Nextcloud", "Other CalDAV"):
        assert name in page.text
    assert "Google Calendar" not in page.text  # no OAuth client configured here
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text

    wrong = connect_form(world, path, "not the password")
    assert wrong.status_code == 400
    assert "The server did not accept this user name and password." in wrong.text
    assert "AuthFailed" in wrong.text  # the detail, second, for support
    assert 'aria-invalid="true"' in wrong.text and 'role="alert"' in wrong.text
    down = connect_form(world, path, PASSWORD, f"http://127.0.0.1:{unused_port()}/")
    assert down.status_code == 400 and "We could not reach 127.0.0.1" in down.text
    assert world.connections() == []
    assert connect_links.check_link(world.app, link.token).used_at is None

    ok = connect_form(world, path, PASSWORD)
    assert ok.status_code == 303 and ok.headers["location"] == f"{path}/calendars"
    cookie = ok.headers["set-cookie"].lower()
    for flag in ("httponly", "samesite=lax", "path=/connect/", "max-age=3600"):
        assert flag in cookie
    [conn] = world.connections()
    assert conn.therapist_id == "t-1" and conn.calendar_owned and conn.state == "new"
    assert PASSWORD.encode() not in conn.secret
    assert connect_links.check_link(world.app, link.token).connection_id == conn.id

    busy = world.client.get(f"{path}/calendars")
    assert busy.status_code == 200 and "Which calendars show when you are busy?" in busy.text
    assert "Therapy sessions" not in busy.text  # syncd's own calendar is never offered
    refused = world.client.post(f"{path}/calendars", data={"busy": ["http://elsewhere/"]})
    assert refused.status_code == 400
    saved = world.client.post(f"{path}/calendars", data={}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == f"{path}/done"
    with world.app.sessions() as s:
        assert s.get_one(ConnectionRow, conn.id).busy_calendars == []

    done = world.client.get(f"{path}/done")
    assert done.status_code == 200
    assert "Therapy session · A.M." in done.text  # their privacy choice: initials
    assert "Therapy session · A.M. (unconfirmed — please confirm on the platform)" in done.text
    assert "Held for A.M. — alternative for" in done.text
    assert "Booking on the platform: https://platform.example/sessions/example-1" in done.text
    assert "Alex" not in done.text and "Morgan" not in done.text

    # Disconnecting from the confirmation removes syncd's calendar and forgets the password.
    world.app.ingestor().ingest(f.session("s-1", f.future(days=3)))
    report = world.app.engine().run_pass("t-1")
    assert not report.failed
    calendar = conn.calendar_url
    assert calendar and len(read_calendar(world.server, calendar)) == 1
    other = world.client.post(f"{path}/disconnect", data={"connection": str(conn.id + 1)})
    assert other.status_code == 403
    gone = world.client.post(f"{path}/disconnect", data={"connection": str(conn.id)})
    assert gone.status_code == 200 and "Disconnected" in gone.text
    assert world.connections() == []
    probe = httpx.request(
        "PROPFIND", calendar, auth=("therapist", PASSWORD), headers={"Depth": "0"}, timeout=10
    )
    assert probe.status_code == 404
    [note] = world.outbox()
    assert note.payload["reason"] == "disconnected by the therapist"


def test_a_private_address_is_refused_before_any_request(
    tmp_path: Path, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    with EmbeddedRadicale(tmp_path / "rad", username="therapist", password=PASSWORD) as rad:
        proxy = http_proxy(rad.url)
        app = App.open(make_config(tmp_path / "s", outbound={"allow_private_hosts": False}))
        try:
            assert app.ingestor().ingest(f.therapist("t-1")).ok
            dns = FakeDns(
                {"_caldavs._tcp.therapy.test": [Srv(0, 0, "127.0.0.1", proxy.port)]},
                {"_caldavs._tcp.therapy.test": ["path=/"]},
            )
            with make_client(app, dns) as client:
                link = connect_links.create(app, "t-1")
                path = urlsplit(link.url).path
                for address in (proxy.url, "ann@therapy.test", "http://[::1]:1/"):
                    data = {"address": address, "username": "therapist", "password": PASSWORD}
                    r = client.post(f"{path}/caldav/other", data=data)
                    assert r.status_code == 400, address
                    assert "This address cannot be used" in r.text
                nextcloud = {"address": "10.0.0.7", "username": "u", "password": "p"}
                assert client.post(f"{path}/caldav/nextcloud", data=nextcloud).status_code == 400
            assert proxy.requests == []  # refused before anything was sent
            assert dns.asked[0] == "_caldavs._tcp.therapy.test"  # it was looked up, then refused
            with app.sessions() as s:
                assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 0
        finally:
            app.close()


def _client(timeout: float) -> httpx.Client:
    return httpx_client(LOOPBACK_OK, timeout=timeout)


def test_discovery_from_an_email_address_or_a_domain(world: World) -> None:
    port = world.radicale.port
    world.dns.srv_records = {
        # RFC 2782: a target of "." says the service is not offered; the plain one is.
        "_caldavs._tcp.therapy.test": [Srv(0, 0, ".", 0)],
        "_caldav._tcp.therapy.test": [Srv(10, 0, "127.0.0.1", port)],
    }
    world.dns.txt_records = {"_caldav._tcp.therapy.test": ["path=/"]}
    checked: list[str] = []

    def check(url: str) -> None:
        checked.append(url)

    from syncd import caldav_discovery as cd

    found = cd.discover(
        cd.parse_address("ann@therapy.test"),
        resolver=world.dns,
        check_url=check,
        open_client=_client,
        timeout=5,
    )
    assert found == f"http://127.0.0.1:{port}/" and checked == [found]
    # No SRV for localhost: the well-known URI, https refused, then http, redirected to /.
    checked.clear()
    found = cd.discover(
        cd.parse_address(f"localhost:{port}"),
        resolver=world.dns,
        check_url=check,
        open_client=_client,
        timeout=5,
    )
    assert found == f"http://localhost:{port}/"
    assert checked == [
        f"https://localhost:{port}/.well-known/caldav",
        f"http://localhost:{port}/.well-known/caldav",
        f"http://localhost:{port}/",
    ]
    with pytest.raises(cd.DiscoveryError) as nothing:
        cd.discover(
            cd.parse_address(f"localhost:{unused_port()}"),
            resolver=world.dns,
            check_url=check,
            open_client=_client,
            timeout=5,
        )
    assert "We could not find a calendar server" in str(nothing.value)
    for bad in ("", "not an address", "ftp://x/", "@therapy.test", "exa mple.com"):
        with pytest.raises(cd.DiscoveryError):
            cd.parse_address(bad)

    # Through the page: the email address is also the user name when none is given.
    (world.radicale.folder / "htpasswd").write_text(f"ann@therapy.test:{PASSWORD}\n")
    _link, path = world.link()
    data = {"address": "ann@therapy.test", "username": "", "password": PASSWORD}
    r = world.client.post(f"{path}/caldav/other", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    [conn] = world.connections()
    assert conn.url == f"http://127.0.0.1:{port}/" and conn.username == "ann@therapy.test"


def test_presets_say_what_went_wrong_in_plain_words() -> None:
    icloud = caldav_presets.explain(
        caldav_presets.ICLOUD, AuthFailed("HTTP 401"), "https://caldav.icloud.com/"
    )
    assert icloud.message.startswith(
        "Apple did not accept this password. iCloud needs an app-specific password"
    )
    assert "appleid.apple.com" in icloud.message and icloud.detail == "AuthFailed: HTTP 401"
    assert icloud.field == "password"
    fastmail = caldav_presets.explain(caldav_presets.FASTMAIL, AuthFailed("x"), "https://x/")
    assert fastmail.message.startswith("Fastmail did not accept this password.")
    down = caldav_presets.explain(caldav_presets.OTHER, Transient("refused"), "https://dav.x/")
    assert down.message.startswith("We could not reach dav.x.")
    missing = caldav_presets.explain(caldav_presets.NEXTCLOUD, NotFound("404"), "https://n.x/")
    assert "we found no calendar there" in missing.message


# -- failures reach the therapist, and the reconnect link restores the connection -------------


def test_a_changed_password_sends_one_reconnect_link_that_restores_the_same_connection(
    world: World, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(world.radicale.url)
    _link, path = world.link()
    assert connect_form(world, path, PASSWORD, proxy.url).status_code == 303
    [conn] = world.connections()
    for i in range(3):
        world.app.ingestor().ingest(f.session(f"s-{i}", f.future(days=2 + i)))
    engine = world.app.engine()
    assert not engine.run_pass("t-1").failed
    world.change_password(NEW_PASSWORD)
    report = engine.run_pass("t-1")
    assert report.failed and report.connections[0].error_class == "AuthFailed"
    [row] = world.connections()
    assert row.state == "needs_reauth"
    # No retry storm: nothing is sent to the server until the therapist reconnects.
    proxy.requests.clear()
    for _ in range(3):
        engine.run_pass("t-1")
        world.app.engine().run_pass("t-1")
    assert proxy.requests == []
    [note] = world.outbox()
    payload = note.payload
    assert payload["connection_id"] == conn.id and "changed password" in payload["reason"]
    reconnect = urlsplit(payload["reconnect_url"]).path
    assert reconnect.startswith("/connect/")
    landing = world.client.get(reconnect)
    assert "A calendar needs reconnecting" in landing.text
    form = world.client.get(f"{reconnect}/reconnect/{conn.id}")
    assert form.status_code == 200 and "Reconnect" in form.text and "therapist" in form.text
    stale = world.client.post(f"{reconnect}/reconnect/{conn.id}", data={"password": PASSWORD})
    assert stale.status_code == 400 and "did not accept" in stale.text
    assert world.connections()[0].state == "needs_reauth"
    ok = world.client.post(
        f"{reconnect}/reconnect/{conn.id}", data={"password": NEW_PASSWORD}, follow_redirects=False
    )
    assert ok.status_code == 303
    [after] = world.connections()
    assert (after.id, after.calendar_url, after.state) == (conn.id, conn.calendar_url, "new")
    assert not engine.run_pass("t-1").failed
    through_proxy = CalDAVServer("radicale", proxy.url, "therapist", NEW_PASSWORD)
    assert conn.calendar_url and len(read_calendar(through_proxy, conn.calendar_url)) == 3
    with world.app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MirrorRow)) == 3
    assert len(world.outbox()) == 1  # still the one notification


# -- Google ------------------------------------------------------------------------------------


@pytest.fixture
def google_world(
    tmp_path: Path, google_standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[App, GoogleStandIn, TestClient]]:
    g = google_standin
    g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    google = {
        "client_id": CLIENT_ID,
        "api_url": g.root_url,
        "token_url": g.token_url,
        "auth_url": g.auth_url,
        "revoke_url": g.revoke_url,
        "timeout": 5,
        "min_request_interval": 0,
        "watch": False,
    }
    app = App.open(make_config(tmp_path / "state", google=google, sync={"interval": 3600}))
    assert app.ingestor().ingest(f.therapist("t-1")).ok
    extra = google_routes(app, NoDaemon())
    with make_client(app, FakeDns({}, {}), *extra) as client:
        yield app, g, client
    app.close()


SCOPE_OWNED_EVENTS = "https://www.googleapis.com/auth/calendar.events.owned"
consent_scopes: list[list[str]] = []


def through_google(client: TestClient, path: str, data: dict[str, str]) -> Any:
    """The browser's trip: our form → Google's consent (the stand-in) → our callback."""
    start = client.post(f"{path}/google", data=data, follow_redirects=False)
    assert start.status_code == 303, start.text
    consent_url = start.headers["location"]
    consent_scopes.append(parse_qs(urlsplit(consent_url).query)["scope"][0].split())
    consent = httpx.get(consent_url, follow_redirects=False, timeout=10)
    assert consent.status_code == 302
    back = urlsplit(consent.headers["location"])
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_google_dedicated_existing_and_reconnect_through_links(
    google_world: tuple[App, GoogleStandIn, TestClient],
) -> None:
    app, g, client = google_world
    link = connect_links.create(app, "t-1")
    path = urlsplit(link.url).path
    assert 'href="' + path + '/google"' in client.get(path).text
    assert "A separate calendar “Therapy sessions”" in client.get(f"{path}/google").text
    g.consenting_account = None  # the therapist says no
    denied = through_google(client, path, {"mode": "dedicated"})
    assert denied.status_code == 400 and "You did not give access" in denied.text
    g.consenting_account = ANN
    back = through_google(client, path, {"mode": "dedicated"})
    assert back.status_code == 303 and back.headers["location"] == f"{path}/calendars"
    with app.sessions() as s:
        [conn] = s.scalars(select(ConnectionRow)).all()
    assert conn.provider == "google" and conn.calendar_owned
    assert SCOPE_OWNED_EVENTS not in consent_scopes[-1]  # the dedicated mode's scopes
    busy = client.get(f"{path}/calendars")
    assert ANN in busy.text  # the primary calendar is offered as busy
    assert client.post(f"{path}/calendars", data={"busy": [ANN]}).status_code == 200

    # Existing-calendar mode: consent first, then the calendar, from the account's own list.
    second = connect_links.create(app, "t-1")
    path2 = urlsplit(second.url).path
    client.cookies.clear()
    chosen = through_google(client, path2, {"mode": "existing"})
    assert chosen.headers["location"] == f"{path2}/google/calendar"
    assert SCOPE_OWNED_EVENTS in consent_scopes[-1]
    listing = client.get(f"{path2}/google/calendar")
    assert ANN in listing.text and "Therapy sessions" not in listing.text
    assert client.post(f"{path2}/google/calendar", data={"calendar": "nope"}).status_code == 400
    done = client.post(f"{path2}/google/calendar", data={"calendar": ANN}, follow_redirects=False)
    assert done.status_code == 303
    with app.sessions() as s:
        rows = s.scalars(select(ConnectionRow).order_by(ConnectionRow.id)).all()
    assert len(rows) == 2 and not rows[1].calendar_owned and ANN in (rows[1].calendar_url or "")

    # The grant is revoked: one notification with a reconnect link, which restores it.
    g.revoke(app.box.open(rows[0].secret))
    app.ingestor().ingest(f.session("s-1", f.future(days=2)))
    app.engine().run_pass("t-1")
    with app.sessions() as s:
        [note] = s.scalars(select(OutboxRow).where(OutboxRow.topic == "calendar.disconnected"))
        assert s.get_one(ConnectionRow, rows[0].id).state == "needs_reauth"
    assert note.payload["connection_id"] == rows[0].id
    reconnect = urlsplit(note.payload["reconnect_url"]).path
    client.cookies.clear()
    assert "Reconnect Google Calendar" in client.get(f"{reconnect}/reconnect/{rows[0].id}").text
    again = through_google(client, reconnect, {"mode": "reconnect", "connection": str(rows[0].id)})
    assert again.status_code == 303
    with app.sessions() as s:
        after = s.get(ConnectionRow, rows[0].id)
        assert after is not None and after.state == "new"
        assert after.calendar_url == rows[0].calendar_url
        assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 2


def test_google_existing_mode_offers_only_calendars_the_therapist_owns(
    google_world: tuple[App, GoogleStandIn, TestClient],
) -> None:
    """Issue 15: calendars shared with the therapist (to read, or even to edit: the
    existing-calendar consent reaches only calendars they own) are not offered to write into,
    one named anyway is refused in plain words with nothing stored, and all of them can still
    count as busy time."""
    app, g, client = google_world
    own = g.add_calendar(ANN, "Ann's practice")
    g.add_account(PRACTICE)
    shared = {role: g.add_calendar(PRACTICE, f"Shared {role}") for role in SHARED_ROLES}
    for role, calendar in shared.items():
        g.share_calendar(calendar, ANN, role)
    g.consenting_account = ANN
    path = urlsplit(connect_links.create(app, "t-1").url).path
    assert through_google(client, path, {"mode": "existing"}).status_code == 303
    listing = client.get(f"{path}/google/calendar")
    assert f'value="{ANN}"' in listing.text and f'value="{own}"' in listing.text
    for role, calendar in shared.items():
        assert calendar not in listing.text and f"Shared {role}" not in listing.text, role
    for calendar in shared.values():
        refused = client.post(f"{path}/google/calendar", data={"calendar": calendar})
        assert refused.status_code == 400
        assert "That calendar is not yours (it is shared with you)" in refused.text
        assert calendar not in refused.text  # the list shown again offers only the own ones
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 0
    chosen = client.post(f"{path}/google/calendar", data={"calendar": own}, follow_redirects=False)
    assert chosen.status_code == 303
    with app.sessions() as s:
        [row] = s.scalars(select(ConnectionRow)).all()
    assert own in (row.calendar_url or "") and not row.calendar_owned
    busy = client.get(f"{path}/calendars").text
    assert all(f"Shared {role}" in busy for role in SHARED_ROLES)


def test_a_google_calendar_not_owned_is_refused_before_the_connection_is_stored(
    google_world: tuple[App, GoogleStandIn, TestClient],
) -> None:
    """The CLI's way (``syncd connect google --calendar X``): the calendar is checked when the
    consent comes back, and one shared with the therapist is refused on Google's callback page,
    nothing stored."""
    app, g, client = google_world
    g.add_account(PRACTICE)
    calendar = g.add_calendar(PRACTICE, "Team rota")
    g.share_calendar(calendar, ANN, "writer")
    g.consenting_account = ANN
    url = google_auth.authorization_url(app, "t-1", calendar_id=calendar)
    consent = httpx.get(url, follow_redirects=False, timeout=10)
    back = urlsplit(consent.headers["location"])
    page = client.get(f"{back.path}?{back.query}")
    assert page.status_code == 400 and "Not connected" in page.text
    assert "is not owned by this account (accessRole writer)" in page.text
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 0


# -- the admin API, the CLI and the dashboard -----------------------------------------------------


def test_admin_api_makes_links(world: World) -> None:
    with world.app.sessions.begin() as s:
        read = auth.create(s, "viewer", auth.Scope.READ, world.app.clock())
        admin = auth.create(s, "operator", auth.Scope.ADMIN, world.app.clock())
    routes = connect_links_api.routes(world.app, NoDaemon())
    with TestClient(build_app(world.app, NoDaemon(), routes)) as c:
        url = connect_links_api.PATH
        assert c.post(url, json={"therapist_id": "t-1"}).status_code == 401
        headers = {"Authorization": f"Bearer {read}"}
        assert c.post(url, json={"therapist_id": "t-1"}, headers=headers).status_code == 403
        headers = {"Authorization": f"Bearer {admin}"}
        for body, field in (
            ({}, "therapist_id"),
            ({"therapist_id": 7}, "therapist_id"),
            ({"therapist_id": "t-1", "days": 0}, "days"),
            ({"therapist_id": "t-1", "days": True}, "days"),
            ({"therapist_id": "t-1", "extra": 1}, "extra"),
        ):
            r = c.post(url, json=body, headers=headers)
            assert r.status_code == 400 and field in r.json()["error"], body
        assert c.post(url, content=b"{", headers=headers).status_code == 400
        missing = c.post(url, json={"therapist_id": "t-9"}, headers=headers)
        assert missing.status_code == 404 and "unknown therapist" in missing.json()["error"]
        made = c.post(url, json={"therapist_id": "t-1", "days": 2}, headers=headers)
        assert made.status_code == 201
        body = made.json()
        assert body["therapist_id"] == "t-1" and "/connect/" in body["url"]
    with world.app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ConnectLinkRow)) == 1
    assert world.client.get(urlsplit(body["url"]).path).status_code == 200


def test_cli_prints_a_link(world: World) -> None:
    config = write_config(world.tmp / "syncd.toml", world.app.config)
    out = CliRunner().invoke(main, ["--config", str(config), "connect-link", "t-1", "--days", "3"])
    assert out.exit_code == 0, out.output
    url = out.output.strip().splitlines()[-1]
    assert "/connect/" in url and "public_url is not set" in out.output
    assert world.client.get(urlsplit(url).path).status_code == 200
    missing = CliRunner().invoke(main, ["--config", str(config), "connect-link", "t-9"])
    assert missing.exit_code != 0 and "unknown therapist 't-9'" in missing.output


def test_dashboard_shows_the_reconnect_link_beside_the_connection(world: World) -> None:
    _link, path = world.link()
    assert connect_form(world, path, PASSWORD).status_code == 303
    world.change_password(NEW_PASSWORD)
    world.app.engine().run_pass("t-1")
    [note] = world.outbox()
    with world.app.sessions.begin() as s:
        admin = auth.create(s, "operator", auth.Scope.ADMIN, world.app.clock())
        read = auth.create(s, "viewer", auth.Scope.READ, world.app.clock())
    routes = dashboard.routes(world.app, NoDaemon())
    for token, shown in ((admin, True), (read, False)):
        with TestClient(build_app(world.app, NoDaemon(), routes)) as c:
            assert sign_in(c, token).status_code == 303
            for page in ("/admin", "/admin/therapists/t-1"):
                text = c.get(page).text
                assert "Needs re-auth" in text
                assert (note.payload["reconnect_url"] in text) is shown, (page, token)
            if shown:
                csrf = c.get("/admin").text.split('name="csrf" value="')[1].split('"')[0]
                [conn] = world.connections()
                action = f"/admin/therapists/t-1/connections/{conn.id}/reconnect-link"
                assert c.post(action, data={"csrf": "x"}).status_code == 403
                for cid in (conn.id + 1, 10**20):
                    other = f"/admin/therapists/t-1/connections/{cid}/reconnect-link"
                    assert c.post(other, data={"csrf": csrf}).status_code == 404
                made = c.post(action, data={"csrf": csrf}, follow_redirects=False)
                assert made.status_code == 303
                text = c.get("/admin/therapists/t-1").text
                assert note.payload["reconnect_url"] not in text  # the newer link is shown
                assert "/connect/" in text


def test_hostile_input_gets_a_page_never_a_500(world: World) -> None:
    _link, path = world.link()
    page = ConnectPage(world.app, NoDaemon(), dns=world.dns)
    web = build_app(world.app, NoDaemon(), page.routes())
    with TestClient(web, raise_server_exceptions=False) as c:
        for target in (
            "/connect/%ED%A0%80.abc",
            "/connect/%00",
            "/connect/" + "a" * 5000,
            "/connect/a.b/done",
            f"{path}/caldav/%ff",
            f"{path}/reconnect/5",
            f"{path}/reconnect/99999999999999999999999",
        ):
            assert c.get(target).status_code in (404, 410), target
        for data in (
            {"address": "a" * 3000, "username": "x", "password": "y"},
            {"address": "x@y", "username": "a\nb", "password": "p"},
            {"address": "x@y", "username": "u", "password": ""},
        ):
            assert c.post(f"{path}/caldav/other", data=data).status_code == 400, data
        raw = b"address=%ED%A0%80&username=x&password=y"
        form = {"content-type": "application/x-www-form-urlencoded"}
        assert c.post(f"{path}/caldav/other", content=raw, headers=form).status_code == 400
        assert c.post(f"{path}/disconnect", data={"connection": "abc"}).status_code == 400
        assert c.post(f"{path}/google", data={"mode": "everything"}).status_code == 400
    assert world.connections() == []

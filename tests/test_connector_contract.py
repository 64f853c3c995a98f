"""The connector contract, written once and run against every provider.

Each provider is a :class:`ContractTarget`: the CalDAV connector against real Radicale and
Xandikos servers, the Google connector against its Calendar v3 stand-in, and the in-memory
account of tests/support/memory_calendar.py that the stateful model (tests/test_model.py) runs
on, so that the double is held to the same contract as the connectors it stands in for.

The second half holds the CalDAV-only checks that need a fault-injecting proxy in front of a real
server (exact bytes on the wire, missing ETags, no sync-collection, rate limits).
"""

from __future__ import annotations

import base64
import http.client
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import pytest

from connectors.base import Connector
from connectors.caldav import CalDAVConnector, CalDAVSettings, ServerMemory
from connectors.common import parse_retry_after as _parse_retry_after
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
)
from connectors.google import GoogleConnector, GoogleSettings, event_id_for
from connectors.google.ical import fields_from_ical
from tests.conftest import LOOPBACK_OK
from tests.support.caldav_servers import *  # noqa: F403 - the server fixtures
from tests.support.caldav_servers import (
    CalDAVServer,
    HTTPProxy,
    ProxiedRequest,
    ProxyReply,
    unused_port,
)
from tests.support.google_standin import GoogleStandIn
from tests.support.google_standin.fixtures import build_service
from tests.support.memory_calendar import MemoryCalendar, MemoryServer

# -- bodies -------------------------------------------------------------------------------------


def vcalendar(uid: str, summary: str = "Therapy session", sequence: int = 3) -> str:
    """A minimal valid VCALENDAR with one VEVENT, CRLF line endings."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//syncd//contract tests//EN",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20240101T090000Z",
        "DTSTART:20300107T100000Z",
        "DTEND:20300107T105000Z",
        f"SEQUENCE:{sequence}",
        f"SUMMARY:{summary}",
        "STATUS:CONFIRMED",
        "CLASS:PRIVATE",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def content_lines(body: str) -> list[str]:
    """Unfolded content lines, sorted: the body's meaning, without line order or endings."""
    unfolded: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += line[1:]
        elif line:
            unfolded.append(line)
    return sorted(unfolded)


def lf(body: str) -> str:
    return body.replace("\r\n", "\n")


def new_uid() -> str:
    return f"{uuid.uuid4()}@syncd.test"


# -- targets ------------------------------------------------------------------------------------


class ContractTarget(Protocol):
    kind: str

    def connector(self, **overrides: Any) -> Connector:
        """A connector for this target's account; ``overrides`` change its settings."""
        ...

    def put_foreign(self, connector: Connector, name: str, body: str) -> None:
        """Create an event the way another client would, bypassing the connector."""
        ...

    def count_calendars(self, connector: Connector, display_name: str) -> int:
        """How many calendars of the account carry ``display_name``."""
        ...

    def same_event(self, stored: str, written: str) -> bool:
        """Whether the body read back for a foreign event is the one another client wrote.
        Servers that store bodies (CalDAV) give it back line for line; Google stores fields,
        so there the event's meaning (UID, times, title, status) must survive."""
        ...


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def raw_request(
    server: CalDAVServer,
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    # Generous: Radicale indexes hostile items slowly on a loaded machine.
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        all_headers = {"Authorization": _basic(server.username, server.password)}
        all_headers.update(headers or {})
        conn.request(method, parts.path or "/", body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class CalDAVTarget:
    def __init__(self, server: CalDAVServer, memory: ServerMemory | None = None) -> None:
        self.kind = server.kind
        self.server = server
        self._connectors: list[CalDAVConnector] = []
        # Shared by this target's connectors, as the App shares one among those it makes.
        self.memory = memory if memory is not None else ServerMemory()

    def settings(self, **overrides: Any) -> CalDAVSettings:
        values: dict[str, Any] = {
            "url": self.server.url,
            "username": self.server.username,
            "password": self.server.password,
            "timeout": 10.0,
            "egress": LOOPBACK_OK,
        }
        values.update(overrides)
        return CalDAVSettings(**values)

    def connector(self, **overrides: Any) -> CalDAVConnector:
        connector = CalDAVConnector(self.settings(**overrides), self.memory)
        self._connectors.append(connector)
        return connector

    def put_foreign(self, connector: Connector, name: str, body: str) -> None:
        url = connector.ensure_calendar() + quote(name)
        status, _, _ = raw_request(
            self.server, "PUT", url, body.encode(), {"Content-Type": "text/calendar"}
        )
        assert status in (201, 204), status

    def count_calendars(self, connector: Connector, display_name: str) -> int:
        calendar = connector.ensure_calendar()
        home = calendar.rstrip("/").rsplit("/", 1)[0] + "/"
        status, _, body = raw_request(
            self.server,
            "PROPFIND",
            home,
            b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop>'
            b"<displayname/><resourcetype/></prop></propfind>",
            {"Depth": "1", "Content-Type": "application/xml"},
        )
        assert status == 207, status
        tree = ET.fromstring(body)
        count = 0
        for response in tree.iterfind("{DAV:}response"):
            name = response.findtext(".//{DAV:}displayname")
            is_calendar = response.find(".//{urn:ietf:params:xml:ns:caldav}calendar") is not None
            count += int(is_calendar and name == display_name)
        return count

    def same_event(self, stored: str, written: str) -> bool:
        return content_lines(stored) == content_lines(written)

    def close(self) -> None:
        for connector in self._connectors:
            connector.close()


class GoogleTarget:
    """The Google connector against the Calendar v3 stand-in (tests/support/google_standin)."""

    kind = "google"

    def __init__(self, stand_in: GoogleStandIn) -> None:
        self.stand_in = stand_in
        self.email = "therapist@example.com"
        self.refresh_token = stand_in.add_account(self.email)
        self._connectors: list[GoogleConnector] = []

    def connector(self, **overrides: Any) -> GoogleConnector:
        client_id, client_secret = self.stand_in.client_credentials(self.refresh_token)
        values: dict[str, Any] = {
            "refresh_token": self.refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
            "url": self.stand_in.root_url,
            "token_uri": self.stand_in.token_url,
            "timeout": 10.0,
            "egress": LOOPBACK_OK,
        }
        values.update(overrides)
        connector = GoogleConnector(GoogleSettings(**values))
        self._connectors.append(connector)
        return connector

    def put_foreign(self, connector: Connector, name: str, body: str) -> None:
        # Another client (Google's UI, another app) writes plain fields, no syncd properties;
        # the id is the one the name maps to, so the suite's name-based checks apply unchanged.
        calendar = urlsplit(connector.ensure_calendar()).path.split("/calendars/")[1].strip("/")
        event = fields_from_ical(body)
        event["id"] = event_id_for(name)
        self.stand_in.put_event(unquote(calendar), event)

    def count_calendars(self, connector: Connector, display_name: str) -> int:
        service = build_service(self.stand_in, self.refresh_token)
        items = service.calendarList().list().execute().get("items", [])
        return sum(1 for item in items if item.get("summary") == display_name)

    def same_event(self, stored: str, written: str) -> bool:
        keys = ("UID", "DTSTART", "DTEND", "SUMMARY", "STATUS")
        return [ln for ln in content_lines(stored) if ln.split(":")[0].split(";")[0] in keys] == [
            ln for ln in content_lines(written) if ln.split(":")[0].split(";")[0] in keys
        ]

    def close(self) -> None:
        for connector in self._connectors:
            connector.close()


class MemoryTarget:
    """The in-memory account of tests/support/memory_calendar.py (the model tests' double)."""

    kind = "memory"

    def __init__(self) -> None:
        self.server = MemoryServer("http://memory.invalid/")

    def connector(self, **overrides: Any) -> MemoryCalendar:
        # Nothing in memory waits: an address where nothing answers fails at once.
        overrides.pop("timeout", None)
        return MemoryCalendar(self.server, **overrides)

    def put_foreign(self, connector: Connector, name: str, body: str) -> None:
        assert isinstance(connector, MemoryCalendar)
        connector.put(connector.href_for(name), body)

    def count_calendars(self, connector: Connector, display_name: str) -> int:
        return self.server.count_named(display_name)

    def same_event(self, stored: str, written: str) -> bool:
        return content_lines(stored) == content_lines(written)

    def close(self) -> None:
        pass


@pytest.fixture(params=["radicale", "xandikos", "google", "memory"])
def target(request: pytest.FixtureRequest) -> Iterator[ContractTarget]:
    made: CalDAVTarget | GoogleTarget | MemoryTarget
    if request.param == "google":
        made = GoogleTarget(request.getfixturevalue("google_standin"))
    elif request.param == "memory":
        made = MemoryTarget()
    else:
        made = CalDAVTarget(request.getfixturevalue(f"{request.param}_server"))
    yield made
    made.close()


@pytest.fixture
def conn(target: ContractTarget) -> Connector:
    return target.connector()


# -- the contract -------------------------------------------------------------------------------


def test_ensure_calendar_creates_the_dedicated_calendar_once(target: ContractTarget) -> None:
    first = target.connector()
    url = first.ensure_calendar()
    assert url.startswith("http") and url.endswith("/")
    assert first.ensure_calendar() == url
    # A new connector (another process, a restart) finds the same calendar instead of adding one.
    assert target.connector().ensure_calendar() == url
    assert target.count_calendars(first, "Therapy sessions") == 1


def test_existing_calendar_by_url(target: ContractTarget) -> None:
    owner = target.connector(calendar_id="existing", calendar_name="Mine")
    url = owner.ensure_calendar()
    conn = target.connector(calendar_url=url)
    assert conn.ensure_calendar() == url
    item = conn.create("x.ics", vcalendar(new_uid()))
    assert owner.changes(None).changed == {item.href: item.etag}
    # Writing into a given calendar never creates the dedicated one.
    assert target.count_calendars(owner, "Therapy sessions") == 0


def test_calendar_url_that_does_not_exist_is_not_found(target: ContractTarget) -> None:
    home = target.connector().ensure_calendar().rstrip("/").rsplit("/", 1)[0]
    conn = target.connector(calendar_url=f"{home}/no-such-calendar/")
    with pytest.raises(NotFound):
        conn.ensure_calendar()
    with pytest.raises(NotFound):
        conn.changes(None)


def test_create_is_listed_with_the_same_href_and_etag(conn: Connector) -> None:
    assert conn.changes(None).changed == {}
    item = conn.create("session-1.ics", vcalendar(new_uid()))
    listing = conn.changes(None)
    assert listing.full is True
    assert listing.changed == {item.href: item.etag}
    assert item.href.startswith("/") and item.href.endswith("/session-1.ics")
    fetched = conn.get(item.href)
    assert (fetched.href, fetched.etag) == (item.href, item.etag)


def test_href_for_predicts_the_href_of_a_create(conn: Connector) -> None:
    predicted = conn.href_for("predicted.ics")
    item = conn.create("predicted.ics", vcalendar(new_uid()))
    assert item.href == predicted
    assert list(conn.changes(None).changed) == [predicted]
    with pytest.raises(ProtocolError):
        conn.href_for("no/slashes.ics")


def test_create_twice_is_already_exists(conn: Connector) -> None:
    uid = new_uid()
    first = conn.create("twice.ics", vcalendar(uid))
    with pytest.raises(AlreadyExists):
        conn.create("twice.ics", vcalendar(uid, summary="second"))
    kept = conn.get(first.href)
    assert kept.etag == first.etag
    assert "second" not in kept.body


def test_create_with_a_uid_taken_by_another_resource_is_already_exists(conn: Connector) -> None:
    if isinstance(conn, GoogleConnector):
        # Google is given only the event id at creation ("only one of [id and iCalUID] should
        # be supplied", events resource), so nothing on its side ties names to UIDs; syncd
        # derives each name from its UID, so it never writes one UID under two names.
        pytest.skip("Google: UIDs are not sent, names alone identify entries")
    uid = new_uid()
    conn.create("first.ics", vcalendar(uid))
    with pytest.raises(AlreadyExists):
        conn.create("second.ics", vcalendar(uid))


def test_update_with_the_current_etag_gives_a_new_etag(conn: Connector) -> None:
    uid = new_uid()
    item = conn.create("u.ics", vcalendar(uid))
    updated = conn.update(item.href, vcalendar(uid, summary="Moved"), item.etag)
    assert updated.href == item.href
    assert updated.etag != item.etag
    fetched = conn.get(item.href)
    assert fetched.etag == updated.etag
    assert "SUMMARY:Moved" in fetched.body
    assert conn.changes(None).changed == {item.href: updated.etag}


def test_update_with_a_stale_etag_is_precondition_failed(conn: Connector) -> None:
    uid = new_uid()
    item = conn.create("u.ics", vcalendar(uid))
    conn.update(item.href, vcalendar(uid, summary="by someone else"), item.etag)
    with pytest.raises(PreconditionFailed):
        conn.update(item.href, vcalendar(uid, summary="ours"), item.etag)
    assert "by someone else" in conn.get(item.href).body


def test_update_of_a_deleted_resource_is_not_found(conn: Connector) -> None:
    uid = new_uid()
    item = conn.create("gone.ics", vcalendar(uid))
    conn.delete(item.href, item.etag)
    with pytest.raises(NotFound):
        conn.update(item.href, vcalendar(uid), item.etag)


def test_delete_with_a_stale_etag_is_precondition_failed(conn: Connector) -> None:
    uid = new_uid()
    item = conn.create("d.ics", vcalendar(uid))
    current = conn.update(item.href, vcalendar(uid, summary="changed"), item.etag)
    with pytest.raises(PreconditionFailed):
        conn.delete(item.href, item.etag)
    assert conn.get(item.href).etag == current.etag


def test_delete_then_not_found(conn: Connector) -> None:
    item = conn.create("d.ics", vcalendar(new_uid()))
    conn.delete(item.href, item.etag)
    with pytest.raises(NotFound):
        conn.delete(item.href, item.etag)
    with pytest.raises(NotFound):
        conn.delete(item.href, None)
    with pytest.raises(NotFound):
        conn.get(item.href)
    assert conn.changes(None).changed == {}


def test_unconditional_delete(conn: Connector) -> None:
    item = conn.create("d.ics", vcalendar(new_uid()))
    conn.delete(item.href, None)
    assert conn.changes(None).changed == {}


def test_changes_since_a_token_without_changes_is_empty(conn: Connector) -> None:
    conn.create("a.ics", vcalendar(new_uid()))
    full = conn.changes(None)
    assert full.token is not None
    delta = conn.changes(full.token)
    assert delta.full is False
    assert delta.changed == {}
    assert delta.deleted == frozenset()
    assert delta.token is not None
    again = conn.changes(delta.token)
    assert (again.full, again.changed, again.deleted) == (False, {}, frozenset())


def test_changes_since_a_token_report_exactly_what_changed(conn: Connector) -> None:
    keep = conn.create("keep.ics", vcalendar(new_uid()))
    uid_edit = new_uid()
    edit = conn.create("edit.ics", vcalendar(uid_edit))
    drop = conn.create("drop.ics", vcalendar(new_uid()))
    token = conn.changes(None).token
    assert token is not None

    added = conn.create("added.ics", vcalendar(new_uid()))
    edited = conn.update(edit.href, vcalendar(uid_edit, summary="edited"), edit.etag)
    conn.delete(drop.href, drop.etag)

    delta = conn.changes(token)
    assert delta.full is False
    assert delta.changed == {added.href: added.etag, edited.href: edited.etag}
    assert delta.deleted == frozenset({drop.href})
    assert keep.href not in delta.changed

    assert delta.token is not None
    quiet = conn.changes(delta.token)
    assert (quiet.changed, quiet.deleted) == ({}, frozenset())


def test_an_invalid_token_falls_back_to_a_full_listing(conn: Connector) -> None:
    item = conn.create("a.ics", vcalendar(new_uid()))
    for token in ("garbage", "http://radicale.org/ns/sync/0000", "<&>", ""):
        listing = conn.changes(token)
        assert listing.full is True, token
        assert listing.changed == {item.href: item.etag}
        assert listing.deleted == frozenset()
        assert listing.token is not None


def test_body_round_trips_without_being_rewritten(conn: Connector) -> None:
    uid = new_uid()
    body = vcalendar(uid, sequence=3)
    item = conn.create("body.ics", body)
    fetched = conn.get(item.href)
    # Both servers re-serialise what they store (their own property order), so the server's
    # copy equals ours line for line, not byte for byte; what matters is that nothing was
    # added or bumped on the way.
    assert content_lines(fetched.body) == content_lines(body)
    assert "SEQUENCE:3" in fetched.body.splitlines()

    # A body already in the server's own form comes back byte for byte.
    rewritten = conn.update(item.href, fetched.body, fetched.etag)
    assert lf(conn.get(item.href).body) == lf(fetched.body)
    assert "SEQUENCE:3" in conn.get(rewritten.href).body.splitlines()


def test_hrefs_with_reserved_characters(conn: Connector) -> None:
    uid = new_uid()
    for name in ("with space.ics", "at@sign.ics", "plus+pct%2B.ics", "ünï.ics"):
        item = conn.create(name, vcalendar(f"{name}-{uid}"))
        assert item.href.endswith("/" + name)
        assert conn.changes(None).changed[item.href] == item.etag
        fetched = conn.get(item.href)
        assert fetched.etag == item.etag
        updated = conn.update(item.href, vcalendar(f"{name}-{uid}", summary="x"), item.etag)
        conn.delete(item.href, updated.etag)
    assert conn.changes(None).changed == {}


def test_foreign_events_are_listed_and_readable(target: ContractTarget, conn: Connector) -> None:
    ours = conn.create("ours.ics", vcalendar(new_uid()))
    token = conn.changes(None).token
    foreign_body = vcalendar(new_uid(), summary="Dentist")
    target.put_foreign(conn, "foreign-event.ics", foreign_body)

    delta = conn.changes(token)
    assert list(delta.changed) == [h for h in delta.changed if h.endswith("/foreign-event.ics")]
    assert len(delta.changed) == 1
    listing = conn.changes(None)
    assert set(listing.changed) == {ours.href, *delta.changed}
    foreign_href = next(iter(delta.changed))
    assert target.same_event(conn.get(foreign_href).body, foreign_body)
    assert conn.get(ours.href).etag == ours.etag


def test_a_server_that_is_down_is_transient_quickly(target: ContractTarget) -> None:
    """A refused connection is Transient at once, not after the timeout: with a timeout of
    five minutes, both calls end within a generous minute."""
    conn = target.connector(url=f"http://127.0.0.1:{unused_port()}/", timeout=300.0)
    started = time.monotonic()
    with pytest.raises(Transient):
        conn.ensure_calendar()
    with pytest.raises(Transient):
        conn.changes(None)
    assert time.monotonic() - started < 60


def test_a_server_that_does_not_answer_times_out_as_transient(target: ContractTarget) -> None:
    # Accepts the connection (kernel backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        # Never answered, the call can only end by the connector's own timeout: it ends.
        conn = target.connector(url=f"http://127.0.0.1:{port}/", timeout=2.0)
        started = time.monotonic()
        with pytest.raises(Transient):
            conn.ensure_calendar()
        assert time.monotonic() - started < 120


# -- CalDAV specifics ---------------------------------------------------------------------------


# One memory per server for the connectors made one at a time below, as one App shares one.
_MEMORIES: dict[str, ServerMemory] = {}


def caldav_connector(server: CalDAVServer, **overrides: Any) -> CalDAVConnector:
    memory = _MEMORIES.setdefault(server.url, ServerMemory())
    return CalDAVTarget(server, memory).connector(**overrides)


def test_calendar_url_that_is_not_a_calendar_is_a_protocol_error(
    caldav_server: CalDAVServer,
) -> None:
    calendar = caldav_connector(caldav_server).ensure_calendar()
    home = calendar.rstrip("/").rsplit("/", 1)[0] + "/"
    with pytest.raises(ProtocolError):
        caldav_connector(caldav_server, calendar_url=home).ensure_calendar()


def test_wrong_password_is_auth_failed(radicale_server: CalDAVServer) -> None:
    conn = caldav_connector(radicale_server, password="wrong")
    with pytest.raises(AuthFailed):
        conn.ensure_calendar()
    with pytest.raises(AuthFailed):
        conn.changes(None)


def test_a_new_connector_for_a_known_account_authenticates_at_once(
    radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(radicale_server.url)
    first = caldav_connector(radicale_server, url=proxy.url)
    calendar = first.ensure_calendar()
    token = first.changes(None).token
    assert proxy.requests[0].headers.get("Authorization") is None  # learnt from the 401
    del proxy.requests[:]
    # What the engine does on every pass: a fresh connector for the stored calendar.
    second = caldav_connector(radicale_server, url=proxy.url, calendar_url=calendar)
    assert second.changes(token).changed == {}
    assert proxy.methods() == ["REPORT"]
    assert proxy.requests[0].headers["Authorization"].startswith("Basic ")


def test_a_changed_password_is_auth_failed_even_when_basic_was_assumed(
    radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(radicale_server.url)
    calendar = caldav_connector(radicale_server, url=proxy.url).ensure_calendar()
    stale = caldav_connector(radicale_server, url=proxy.url, password="old password")
    with pytest.raises(AuthFailed):
        stale.changes(None)
    fixed = caldav_connector(radicale_server, url=proxy.url)
    assert fixed.ensure_calendar() == calendar


def test_another_users_calendar_is_auth_failed(radicale_server: CalDAVServer) -> None:
    url = caldav_connector(radicale_server).ensure_calendar()
    # owner_only rights: the calendar exists but belongs to someone else.
    other = url.replace(f"/{radicale_server.username}/", "/somebody-else/")
    conn = caldav_connector(radicale_server, calendar_url=other)
    with pytest.raises(AuthFailed):
        conn.ensure_calendar()


def test_body_is_sent_byte_for_byte(
    caldav_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(caldav_server.url)
    conn = caldav_connector(caldav_server, url=proxy.url)
    uid = new_uid()
    # Deliberately not what a server would store: LF line endings and non-ASCII text.
    body = lf(vcalendar(uid, summary="Séance — privée"))
    item = conn.create("exact.ics", body)
    conn.update(item.href, body.replace("SEQUENCE:3", "SEQUENCE:4"), item.etag)
    puts = [r for r in proxy.requests if r.method == "PUT"]
    assert [r.body for r in puts] == [
        body.encode(),
        body.replace("SEQUENCE:3", "SEQUENCE:4").encode(),
    ]
    assert puts[0].headers["If-None-Match"] == "*"
    assert puts[0].headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert puts[1].headers["If-Match"] == item.etag


def test_missing_etag_on_put_is_fetched_with_propfind(
    caldav_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(caldav_server.url)

    def strip_etag(request: ProxiedRequest, reply: ProxyReply) -> ProxyReply:
        if request.method == "PUT":
            reply.headers = {k: v for k, v in reply.headers.items() if k.lower() != "etag"}
        return reply

    proxy.on_response = strip_etag
    conn = caldav_connector(caldav_server, url=proxy.url)
    conn.ensure_calendar()
    del proxy.requests[:]
    uid = new_uid()
    item = conn.create("noetag.ics", vcalendar(uid))
    assert proxy.methods() == ["PUT", "PROPFIND"]
    assert conn.changes(None).changed == {item.href: item.etag}
    updated = conn.update(item.href, vcalendar(uid, summary="x"), item.etag)
    assert conn.changes(None).changed == {item.href: updated.etag}
    assert "GET" not in proxy.methods()


def test_without_sync_collection_changes_uses_propfind(
    caldav_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(caldav_server.url)

    def no_sync(request: ProxiedRequest) -> ProxyReply | None:
        if request.method == "REPORT" and b"sync-collection" in request.body:
            return ProxyReply(
                403,
                {"Content-Type": "application/xml"},
                b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>',
            )
        return None

    proxy.on_request = no_sync
    conn = caldav_connector(caldav_server, url=proxy.url)
    item = conn.create("a.ics", vcalendar(new_uid()))
    listing = conn.changes(None)
    assert (listing.full, listing.changed, listing.token) == (True, {item.href: item.etag}, None)
    again = conn.changes("stale-token-from-before")
    assert (again.full, again.changed) == (True, {item.href: item.etag})
    # Detected once: later calls go straight to PROPFIND.
    assert proxy.methods().count("REPORT") == 1


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "7", 7.0),
        (503, "http-date", 120.0),
        (503, None, None),
        (500, None, None),
        (502, None, None),
    ],
)
def test_overload_and_server_errors_are_transient(
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
    status: int,
    retry_after: str | None,
    expected: float | None,
) -> None:
    proxy = http_proxy(radicale_server.url)
    conn = caldav_connector(radicale_server, url=proxy.url)
    conn.ensure_calendar()
    headers = {"Content-Type": "text/plain"}
    if retry_after == "http-date":
        headers["Retry-After"] = format_datetime(datetime.now(UTC) + timedelta(seconds=120), True)
    elif retry_after is not None:
        headers["Retry-After"] = retry_after
    proxy.on_request = lambda request: ProxyReply(status, headers, b"busy")
    for call in (
        lambda: conn.changes(None),
        lambda: conn.create("x.ics", vcalendar(new_uid())),
        lambda: conn.get("/therapist/syncd/x.ics"),
    ):
        with pytest.raises(Transient) as caught:
            call()
        if expected is None:
            assert caught.value.retry_after is None
        else:
            assert caught.value.retry_after == pytest.approx(expected, abs=2)


def test_garbage_replies_are_protocol_errors(
    radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(radicale_server.url)
    conn = caldav_connector(radicale_server, url=proxy.url)
    conn.ensure_calendar()
    proxy.on_request = lambda request: ProxyReply(207, {"Content-Type": "text/xml"}, b"<not xml")
    with pytest.raises(ProtocolError):
        conn.changes(None)
    proxy.on_request = lambda request: ProxyReply(200, {"Content-Type": "text/html"}, b"<html/>")
    with pytest.raises(ProtocolError):
        conn.changes(None)
    proxy.on_request = lambda request: ProxyReply(418, {}, b"")
    with pytest.raises(ProtocolError):
        conn.create("x.ics", vcalendar(new_uid()))


def test_parse_retry_after() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert _parse_retry_after("120", now) == 120.0
    assert _parse_retry_after(" 0 ", now) == 0.0
    assert _parse_retry_after("Tue, 01 Jan 2030 12:01:30 GMT", now) == 90.0
    assert _parse_retry_after("Tue, 01 Jan 2030 11:00:00 GMT", now) == 0.0
    assert _parse_retry_after("soon", now) is None
    assert _parse_retry_after(None, now) is None

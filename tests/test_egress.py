"""The outbound-request policy (issue 14, deliverable 1): every connector, OAuth call and the
webhook sender reach only public addresses, checked on the resolved address when each
connection opens (redirect hops and discovered URLs included), unless allowed.

No test here sends a packet anywhere but loopback. Names such as ``dav.test`` are mapped by an
injected resolver to the addresses under test; the ``connects`` fixture records every TCP
connect the process makes and refuses any that is not plain loopback, and a ``Tripwire``
listening on 127.0.0.2 (a loopback address the policy refuses) proves by its empty accept queue
that a refused destination was never contacted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors import egress_http
from connectors.base import BusyOptions
from connectors.caldav import CalDAVConnector, CalDAVSettings
from connectors.egress import EgressPolicy, check_url, refusal
from connectors.errors import ConnectorError, DestinationRefused
from connectors.google import GoogleConnector, GoogleSettings
from syncd import delivery, google_auth, operations, outbox
from syncd.app import App
from syncd.config import PlatformConfig, load
from syncd.store.tables import ConnectionRow, OutboxRow
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, ProxiedRequest, ProxyReply
from tests.support.google_standin.server import GoogleStandIn

# Address -> words its refusal must contain. The embedded forms are the findings.
NON_PUBLIC = {
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "2002:7f00:1::1": "6to4 form of 127.0.0.1",
    "2002:a9fe:a9fe::": "6to4 form of 169.254.169.254",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "Teredo form of 10.0.0.1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",  # client 192.0.2.45, documentation
    "64:ff9b::a00:1": "NAT64 form of 10.0.0.1",
    "64:ff9b::7f00:1": "NAT64 form of 127.0.0.1",
    "64:ff9b:1::a00:1": "local-use NAT64",
    "::ffff:127.0.0.1": "IPv4-mapped form of 127.0.0.1",
    "::ffff:169.254.169.254": "IPv4-mapped form of 169.254.169.254",
    "::127.0.0.1": "IPv4-compatible",
    "127.0.0.1": "loopback",
    "127.0.0.2": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private-network",
    "172.16.0.1": "private-network",
    "192.168.1.1": "private-network",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "fd12:3456::1": "unique-local",
    "fec0::1": "site-local",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.1": "documentation",
    "2001:db8::1": "documentation",
    "198.18.0.1": "benchmarking",
}
# Public, including the NAT64 and 6to4 forms of a public address.
PUBLIC = [
    "93.184.215.14",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "64:ff9b::5db8:d70e",
    "2002:5db8:d70e::",
]
# The forms each transport test runs through (one of each kind the issue names).
TRANSPORT_CASES = ["100.64.0.1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe",
                   "64:ff9b::a00:1", "::ffff:127.0.0.1", "169.254.169.254",
                   "127.0.0.2"]  # fmt: skip
LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.1/32"),)
REBOUND = re.escape("evil.test resolves to 127.0.0.2")


class Names:
    """The injected resolver: a mutable table of test names; an unknown name fails like DNS."""

    def __init__(self, **table: str) -> None:
        self.table: dict[str, list[str]] = {k.replace("_", "."): [v] for k, v in table.items()}
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: unknown test name")
        return list(self.table[host])


class Tripwire:
    """A listening socket on 127.0.0.2 that nobody should reach: any connect attempt would sit
    in its accept queue, so an empty queue at the end means no connection was tried."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.2", port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]

    def hits(self) -> int:
        self.sock.setblocking(False)
        count = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                conn, _ = self.sock.accept()
                conn.close()
                count += 1
        return count

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TCP connect of this process, by address; anything but 127.0.0.1 / ::1 / the
    tripwire is refused here, so even a broken policy sends nothing off this machine."""
    seen: list[str] = []
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            host = str(address[0])
            seen.append(host)
            if host not in ("127.0.0.1", "::1", "127.0.0.2"):
                raise ConnectionRefusedError(f"test guard: {host} is not loopback")
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return seen


# -- the policy itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "why"), sorted(NON_PUBLIC.items()))
def test_every_non_public_form_is_refused_with_a_plain_reason(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason, reason
    policy = EgressPolicy(resolver=Names(dav_test=address))
    with pytest.raises(DestinationRefused) as caught:
        policy.check_url("https://dav.test/caldav/")
    message = str(caught.value)
    assert f"dav.test resolves to {address}" in message and why in message
    assert "allowed_networks" in message and "\n" not in message
    assert caught.value.address == address and caught.value.host == "dav.test"
    # An address given literally is judged the same way, without asking the resolver.
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(DestinationRefused, match=re.escape(why)):
        EgressPolicy(resolver=Names()).check_url(f"http://{literal}:8080/")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None
    EgressPolicy(resolver=Names(dav_test=address)).check_url("https://dav.test/")


def test_one_refused_address_among_public_ones_refuses_the_name() -> None:
    names = Names()
    names.table["mixed.test"] = ["93.184.215.14", "10.0.0.7"]
    with pytest.raises(DestinationRefused, match=re.escape("10.0.0.7")):
        EgressPolicy(resolver=names).check_url("https://mixed.test/")


def test_allow_private_and_allowed_networks() -> None:
    names = Names(lan_test="10.20.0.5", other_test="10.30.0.5", cgnat_test="100.64.0.9")
    EgressPolicy(allow_private=True, resolver=names).check_url("http://cgnat.test/")
    lan = EgressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),), resolver=names)
    lan.check_url("http://lan.test/")
    with pytest.raises(DestinationRefused, match=re.escape("10.30.0.5")):
        lan.check_url("http://other.test/")


def test_urls_that_are_not_http_or_do_not_resolve_are_refused_in_plain_words() -> None:
    policy = EgressPolicy(resolver=Names())
    for url, words in (
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("ftp://dav.test/", "not an http:// or https:// URL"),
        ("http:///nohost", "not an http:// or https:// URL"),
        ("http://dav.test:99999/", "invalid port"),
        ("https://nowhere.test/", "cannot resolve nowhere.test"),
    ):
        with pytest.raises(DestinationRefused, match=re.escape(words)):
            policy.check_url(url)
    with pytest.raises(DestinationRefused, match="loopback"):
        check_url("http://127.0.0.1:1/")  # the module-level entry point: the strict policy


def test_config_builds_the_policy_and_names_a_bad_network() -> None:
    cfg = load(None, env={"SYNCD_OUTBOUND_ALLOWED_NETWORKS": "10.20.0.0/16, fd00::/8"})
    assert cfg.egress.allowed_networks == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert not cfg.egress.allow_private
    assert load(None, env={"SYNCD_OUTBOUND_ALLOW_PRIVATE_HOSTS": "true"}).egress.allow_private
    # The older [caldav] spelling still allows, for configurations written before [outbound].
    assert load(None, env={"SYNCD_CALDAV_ALLOW_PRIVATE_HOSTS": "true"}).egress.allow_private
    with pytest.raises(Exception, match=re.escape("'10.0.0.0/33' is not an IP network")):
        load(None, env={"SYNCD_OUTBOUND_ALLOWED_NETWORKS": "10.0.0.0/33"})


# -- every client, refused before any connection -------------------------------------------------


def caldav(url: str, policy: EgressPolicy, **extra: Any) -> CalDAVConnector:
    return CalDAVConnector(
        CalDAVSettings(url=url, username="u", password="p", timeout=5, egress=policy, **extra)
    )


@pytest.mark.parametrize("address", TRANSPORT_CASES)
def test_caldav_requests_are_refused_before_connecting(
    address: str, connects: list[str], tripwire: Tripwire
) -> None:
    policy = EgressPolicy(resolver=Names(dav_test=address))
    connector = caldav(f"http://dav.test:{tripwire.port}/", policy)
    try:
        with pytest.raises(DestinationRefused, match=re.escape(NON_PUBLIC[address])):
            connector.ensure_calendar()
    finally:
        connector.close()
    assert connects == [] and tripwire.hits() == 0


@pytest.mark.parametrize("address", TRANSPORT_CASES)
def test_google_api_and_token_calls_are_refused_before_connecting(
    address: str, connects: list[str], tripwire: Tripwire
) -> None:
    policy = EgressPolicy(resolver=Names(google_test=address))
    root = f"http://google.test:{tripwire.port}/"
    settings = GoogleSettings("1//refresh", "id", "secret", url=root, token_uri=root + "token")
    connector = GoogleConnector(dataclasses.replace(settings, egress=policy))
    try:
        with pytest.raises(DestinationRefused, match=re.escape(NON_PUBLIC[address])):
            connector.ensure_calendar()
    finally:
        connector.close()
    assert connects == [] and tripwire.hits() == 0


@pytest.mark.parametrize("address", TRANSPORT_CASES)
def test_the_webhook_is_refused_before_connecting(
    address: str, tmp_path: Path, connects: list[str], tripwire: Tripwire
) -> None:
    app = App.open(make_config(tmp_path / "state", outbound={"allow_private_hosts": False}))
    try:
        with app.sessions.begin() as s:
            outbox.enqueue(s, "availability.changed", {"therapist_id": "t-1"}, app.clock())
        config = PlatformConfig(webhook_url=f"http://platform.test:{tripwire.port}/hook")
        policy = EgressPolicy(resolver=Names(platform_test=address))
        with delivery.Deliverer(app.sessions, config, b"secret", app.clock, egress=policy) as d:
            assert d.deliver_due() == 0
        with app.sessions() as s:
            row = s.scalars(select(OutboxRow)).one()
        assert row.delivered_at is None and row.attempts == 1
        assert row.last_error is not None and row.last_error.startswith("DestinationRefused")
        assert NON_PUBLIC[address] in row.last_error
    finally:
        app.close()
    assert connects == [] and tripwire.hits() == 0


def test_oauth_code_exchange_and_revocation_are_refused_before_connecting(
    tmp_path: Path,
    connects: list[str],
    tripwire: Tripwire,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", "client-secret")
    oauth = f"http://oauth.test:{tripwire.port}"
    google = {"client_id": "cid", "token_url": oauth + "/token", "revoke_url": oauth + "/revoke"}
    cfg = make_config(tmp_path / "state", outbound={"allow_private_hosts": False}, google=google)
    app = App.open(cfg, resolver=Names(oauth_test="100.64.0.1"))
    try:
        assert app.ingestor().ingest(f.therapist()).ok
        link = google_auth.authorization_url(app, "t-1", redirect_base="http://127.0.0.1:9")
        state = re.search(r"state=([^&]+)", link)
        assert state
        with pytest.raises(operations.OperationError, match="carrier-grade NAT"):
            google_auth.complete(app, state.group(1), "the-code")
        google_auth.revoke(app, "1//refresh")  # logged, never raised
        assert "could not revoke" in caplog.text and "carrier-grade NAT" in caplog.text
    finally:
        app.close()
    assert connects == [] and tripwire.hits() == 0


# -- --calendar, discovered URLs, redirects, rebinding --------------------------------------------


@pytest.fixture
def strict_app(tmp_path: Path) -> Iterator[tuple[App, Names]]:
    """An App under the strict policy except 127.0.0.1 (where the real test servers listen),
    resolving ``dav.test`` to 127.0.0.1 through an injected resolver."""
    names = Names(dav_test="127.0.0.1", evil_test="127.0.0.2")
    cfg = make_config(
        tmp_path / "state",
        outbound={"allow_private_hosts": False, "allowed_networks": ["127.0.0.1/32"]},
    )
    app = App.open(cfg, resolver=names)
    assert app.ingestor().ingest(f.therapist()).ok
    yield app, names
    app.close()


def connection_rows(app: App) -> list[ConnectionRow]:
    with app.sessions() as s:
        return list(s.scalars(select(ConnectionRow)).all())


def test_a_calendar_url_is_checked_like_the_server_url(
    strict_app: tuple[App, Names],
    radicale_server: CalDAVServer,
    connects: list[str],
    tripwire: Tripwire,
) -> None:
    app, _names = strict_app
    port = radicale_server.url.rsplit(":", 1)[1].strip("/")
    for calendar in (
        f"http://evil.test:{tripwire.port}/therapist/cal/",
        "http://100.64.0.1/therapist/cal/",
        f"http://[2002:7f00:1::1]:{tripwire.port}/cal/",
    ):
        with pytest.raises(operations.OperationError, match="refused CalDAV URL") as caught:
            operations.connect_caldav(
                app,
                "t-1",
                url=f"http://dav.test:{port}/",
                username=radicale_server.username,
                password=radicale_server.password,
                calendar_url=calendar,
            )
        assert "allowed_networks" in str(caught.value)
    assert connection_rows(app) == []
    assert tripwire.hits() == 0 and set(connects) <= {"127.0.0.1"}


def text(reply: ProxyReply) -> str:
    if reply.headers.get("Content-Encoding", "").lower() == "gzip":
        return gzip.decompress(reply.body).decode()
    return reply.body.decode()


def plain(reply: ProxyReply, body: str) -> ProxyReply:
    """``reply`` with ``body``, sent uncompressed."""
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-encoding"}
    return ProxyReply(reply.status, headers, body.encode())


def rewrite_hrefs(proxy: HTTPProxy, marker: str, target: str) -> None:
    """The proxied server's PROPFIND answers name ``target`` (another host) in every
    ``<marker>`` property: a server pointing syncd at an address of its choosing."""
    pattern = re.compile(rf"(<(?:\w+:)?{marker}[^>]*>\s*<(?:\w+:)?href>)(/[^<]*)(<)")

    def on_response(request: ProxiedRequest, reply: ProxyReply) -> ProxyReply:
        if request.method != "PROPFIND":
            return reply
        body = pattern.sub(lambda m: m.group(1) + target + m.group(2) + m.group(3), text(reply))
        return plain(reply, body)

    proxy.on_response = on_response


@pytest.mark.parametrize(
    ("marker", "refused_by"),
    [
        # The caldav library itself refuses a principal on another host than the server URL.
        ("current-user-principal", "can't be joined"),
        # A calendar home elsewhere is followed, and meets the policy when it is connected to.
        ("calendar-home-set", REBOUND),
    ],
)
def test_discovered_principal_and_calendar_home_urls_are_checked(
    marker: str,
    refused_by: str,
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
    connects: list[str],
    tripwire: Tripwire,
) -> None:
    proxy = http_proxy(radicale_server.url)
    rewrite_hrefs(proxy, marker, f"http://evil.test:{tripwire.port}")
    names = Names(dav_test="127.0.0.1", evil_test="127.0.0.2")
    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=names)
    settings = CalDAVSettings(
        url=f"http://dav.test:{proxy.port}/",
        username=radicale_server.username,
        password=radicale_server.password,
        egress=policy,
    )
    with CalDAVConnector(settings) as connector, pytest.raises(ConnectorError) as caught:
        connector.ensure_calendar()
    assert re.search(refused_by, str(caught.value)), caught.value
    assert any(marker in r.body.decode(errors="replace") for r in proxy.requests)
    assert tripwire.hits() == 0 and set(connects) <= {"127.0.0.1"}


def test_calendars_listed_on_another_host_are_checked_when_read(
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
    connects: list[str],
    tripwire: Tripwire,
) -> None:
    proxy = http_proxy(radicale_server.url)
    names = Names(dav_test="127.0.0.1", evil_test="127.0.0.2")
    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=names)
    settings = CalDAVSettings(
        url=f"http://dav.test:{proxy.port}/",
        username=radicale_server.username,
        password=radicale_server.password,
        egress=policy,
    )
    with CalDAVConnector(dataclasses.replace(settings, calendar_id="personal")) as setup:
        setup.ensure_calendar()
    evil = f"http://evil.test:{tripwire.port}"

    def on_response(request: ProxiedRequest, reply: ProxyReply) -> ProxyReply:
        if request.method == "PROPFIND" and request.headers.get("Depth") == "1":
            here = "<href>/therapist/personal/"
            return plain(reply, text(reply).replace(here, f"<href>{evil}/therapist/personal/"))
        return reply

    proxy.on_response = on_response
    with CalDAVConnector(settings) as connector:
        listed = [c.ref for c in connector.calendars()]
        refs = [ref for ref in listed if ref.startswith(evil)]
        assert refs, listed
        now = datetime.now(UTC)
        with pytest.raises(DestinationRefused, match=REBOUND):
            connector.busy(now, now + timedelta(days=7), refs, BusyOptions())
    assert tripwire.hits() == 0 and set(connects) <= {"127.0.0.1"}


def test_a_redirect_to_a_refused_host_is_not_followed(
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
    connects: list[str],
    tripwire: Tripwire,
) -> None:
    proxy = http_proxy(radicale_server.url)
    proxy.on_request = lambda r: ProxyReply(
        307, {"Location": f"http://evil.test:{tripwire.port}{r.path}"}
    )
    names = Names(dav_test="127.0.0.1", evil_test="127.0.0.2")
    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=names)
    with (
        CalDAVConnector(
            CalDAVSettings(
                url=f"http://dav.test:{proxy.port}/",
                username=radicale_server.username,
                password=radicale_server.password,
                egress=policy,
            )
        ) as connector,
        pytest.raises(DestinationRefused, match=REBOUND),
    ):
        connector.ensure_calendar()
    assert proxy.requests, "the redirect was never answered: proves nothing"
    assert tripwire.hits() == 0 and set(connects) <= {"127.0.0.1"}


def test_google_never_follows_a_redirect_with_its_bearer_token(
    google_standin: GoogleStandIn,
    http_proxy: Callable[[str], HTTPProxy],
    connects: list[str],
    tripwire: Tripwire,
) -> None:
    token = google_standin.add_account("ann@example.com")
    client_id, client_secret = google_standin.client_credentials(token)
    proxy = http_proxy(google_standin.root_url)
    evil = f"http://evil.test:{tripwire.port}"
    proxy.on_request = lambda r: (
        ProxyReply(302, {"Location": evil + r.path}) if "/calendar/v3/" in r.path else None
    )
    root = f"http://google.test:{proxy.port}/"
    names = Names(google_test="127.0.0.1", evil_test="127.0.0.1")  # would even be allowed
    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=names)
    settings = GoogleSettings(
        token, client_id, client_secret, url=root, token_uri=root + "token", egress=policy
    )
    with GoogleConnector(settings) as connector, pytest.raises(Exception, match="302"):
        connector.ensure_calendar()
    assert any("/calendar/v3/" in r.path for r in proxy.requests)
    assert "evil.test" not in names.calls
    assert tripwire.hits() == 0 and set(connects) <= {"127.0.0.1"}


def test_a_name_rebound_to_a_refused_address_is_refused_on_the_next_pass(
    strict_app: tuple[App, Names], radicale_server: CalDAVServer, connects: list[str]
) -> None:
    app, names = strict_app
    port = int(radicale_server.url.rsplit(":", 1)[1].strip("/"))
    cid = operations.connect_caldav(
        app,
        "t-1",
        url=f"http://dav.test:{port}/",
        username=radicale_server.username,
        password=radicale_server.password,
    )
    assert app.ingestor().ingest(f.session("s-1", f.future(days=3))).ok
    report = app.engine().run_pass("t-1")
    assert not report.failed and report.connections[0].applied == 1
    # The name now answers with another loopback address, the same port: a rebinding attack.
    names.table["dav.test"] = ["127.0.0.2"]
    wire = Tripwire(port)
    try:
        assert app.ingestor().ingest(f.session("s-2", f.future(days=4))).ok
        report = app.engine().run_pass("t-1")  # a new engine: new connections, as a later pass
        assert report.failed
        (row,) = connection_rows(app)
        assert row.id == cid and row.state == "error"
        assert row.last_error and "dav.test resolves to 127.0.0.2" in row.last_error
        assert wire.hits() == 0
    finally:
        wire.close()
    assert set(connects) <= {"127.0.0.1"}


@pytest.mark.parametrize("client", ["niquests", "httplib2", "httpx"])
def test_each_client_connects_to_the_address_it_checked(
    client: str, radicale_server: CalDAVServer, connects: list[str]
) -> None:
    """A resolver that answers 127.0.0.1 once and 127.0.0.2 ever after: a client that
    checked one answer and then let the name be resolved again would go to 127.0.0.2."""
    port = int(radicale_server.url.rsplit(":", 1)[1].strip("/"))
    answers = iter([["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["127.0.0.2"])

    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=rebinding)
    url = f"http://rebind.test:{port}/"
    wire = Tripwire(port)
    try:
        # OPTIONS: answered at once, where GET / would redirect (a second connection, rightly
        # resolved and refused again).
        if client == "niquests":
            with egress_http.niquests_session(policy) as session:
                status = session.options(url, timeout=10).status_code
        elif client == "httplib2":
            answer = egress_http.PolicyHttp(policy, timeout=10).request(url, "OPTIONS")
            status = int(answer[0].status)
        else:
            with egress_http.httpx_client(policy, timeout=10) as httpx_client:
                status = httpx_client.options(url).status_code
        assert status == 200
        assert calls == ["rebind.test"] and connects == ["127.0.0.1"]
        assert wire.hits() == 0
    finally:
        wire.close()


def test_connect_stores_nothing_for_a_refused_server(
    strict_app: tuple[App, Names], connects: list[str]
) -> None:
    app, names = strict_app
    names.table["cgnat.test"] = ["100.64.3.4"]
    with pytest.raises(operations.UrlRefused, match="carrier-grade NAT") as caught:
        operations.connect_caldav(app, "t-1", url="https://cgnat.test/", username="u", password="p")
    assert str(caught.value).startswith("refused CalDAV URL https://cgnat.test/")
    assert connection_rows(app) == [] and connects == []


def test_a_redirect_to_another_allowed_host_carries_no_credentials(
    http_proxy: Callable[[str], HTTPProxy], radicale_server: CalDAVServer, connects: list[str]
) -> None:
    """Re-checked rather than refused: a redirect to another host is followed (when its
    address passes), and the CalDAV session sends the account's credentials only to the host
    they were given for."""
    other = http_proxy(radicale_server.url)
    first = http_proxy(radicale_server.url)
    first.on_request = lambda r: ProxyReply(
        307, {"Location": f"http://other.test:{other.port}{r.path}"}
    )
    names = Names(dav_test="127.0.0.1", other_test="127.0.0.1")
    policy = EgressPolicy(allowed_networks=LOOPBACK_ONLY, resolver=names)
    with egress_http.niquests_session(policy) as session:
        answer = session.request(
            "PROPFIND",
            f"http://dav.test:{first.port}/",
            auth=(radicale_server.username, radicale_server.password),
            headers={"Depth": "0"},
            timeout=10,
        )
    assert first.requests and first.requests[0].headers.get("Authorization")
    assert other.requests, "the redirect was not followed"
    assert all("Authorization" not in r.headers for r in other.requests)
    assert answer.status_code == 401  # the other host asks for credentials it never got
    assert names.calls.count("other.test") == 1 and set(connects) <= {"127.0.0.1"}

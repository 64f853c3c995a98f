"""The CalDAV connector's write path (PUT, DELETE over its own keep-alive connection once the
server has shown which credentials it wants), against real servers."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from connectors.caldav import CalDAVConnector, CalDAVSettings
from tests.conftest import LOOPBACK_OK
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, ProxiedRequest, ProxyReply


def body(uid: str, summary: str = "x") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20300101T100000Z\r\n"
        f"DTEND:20300101T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def connector(server: CalDAVServer, url: str | None = None) -> CalDAVConnector:
    return CalDAVConnector(
        CalDAVSettings(
            url=url or server.url,
            username=server.username,
            password=server.password,
            calendar_id=f"w-{uuid.uuid4().hex[:8]}",
            egress=LOOPBACK_OK,
        )
    )


class CountingTCPProxy:
    """Passes bytes through to ``upstream`` and counts the TCP connections clients open."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self._upstream, timeout=10)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def counting_proxy() -> Iterator[Callable[[str], CountingTCPProxy]]:
    proxies: list[CountingTCPProxy] = []

    def make(upstream: str) -> CountingTCPProxy:
        proxies.append(CountingTCPProxy(upstream))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def test_writes_share_one_kept_alive_connection(
    xandikos_server: CalDAVServer, counting_proxy: Callable[[str], CountingTCPProxy]
) -> None:
    # Xandikos keeps connections open (Radicale closes each one, so it cannot show this).
    proxy = counting_proxy(xandikos_server.url)
    conn = connector(xandikos_server, url=proxy.url)
    try:
        conn.ensure_calendar()
        before = proxy.connections
        items = [conn.create(f"k-{i}.ics", body(f"k-{i}")) for i in range(10)]
        for item in items[:5]:
            conn.delete(item.href, item.etag)
        updated = conn.update(items[5].href, body("k-5", "moved"), items[5].etag)
        assert updated.etag and updated.etag != items[5].etag
        # 16 writes, at most one new connection: they share the HTTP session's keep-alive pool
        # (usually the connection discovery opened).
        assert proxy.connections - before <= 1
        assert set(conn.changes(None).changed) == {i.href for i in items[5:]}
    finally:
        conn.close()


def test_a_401_on_a_write_is_negotiated_by_the_library_and_the_write_goes_through(
    radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    proxy = http_proxy(radicale_server.url)
    conn = connector(radicale_server, url=proxy.url)
    try:
        conn.ensure_calendar()  # Basic is now known: writes carry it from the start
        challenged: list[str] = []

        def challenge_once(request: ProxiedRequest) -> ProxyReply | None:
            if request.method != "PUT" or challenged:
                return None
            challenged.append(request.headers.get("Authorization", ""))
            return ProxyReply(401, {"WWW-Authenticate": 'Basic realm="again"'})

        proxy.on_request = challenge_once
        del proxy.requests[:]
        item = conn.create("c-1.ics", body("c-1"))
        assert challenged and challenged[0].startswith("Basic ")
        puts = [r for r in proxy.requests if r.method == "PUT"]
        assert len(puts) == 2 and puts[1].headers["Authorization"].startswith("Basic ")
        assert conn.get(item.href).etag == item.etag
    finally:
        conn.close()

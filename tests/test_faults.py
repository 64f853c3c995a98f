"""The fault-injecting proxy (tests/support/faults.py) in front of a real Radicale: every fault
reaches the CalDAV connector as ``Transient`` from the one request it hit (a stalled answer by the
connector's own timeout), and a pass with faults on its first attempts still converges thanks
to the engine's retries. Nothing here is timed: a loaded machine changes no outcome."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.caldav import CalDAVConnector, CalDAVSettings
from connectors.errors import Transient
from syncd import operations
from syncd.app import App
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow
from tests.conftest import LOOPBACK_OK, make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, ProxiedRequest, ProxyReply
from tests.support.calendar_view import read_calendar
from tests.support.faults import (
    Action,
    FaultProxy,
    Rule,
    every,
    fault_proxy,
    first,
    probability,
    window,
)
from tests.support.google_standin import GoogleStandIn

__all__ = ["fault_proxy"]

# The connectors' timeout: generous, so that only a stalled answer (``delay``, far longer)
# ever meets it, however loaded the machine.
TIMEOUT = 5.0

FAULTS: dict[str, Rule] = {
    "delay": Rule(Action.DELAY, delay=6 * TIMEOUT),
    "drop": Rule(Action.DROP),
    "reset": Rule(Action.RESET),
    "truncate": Rule(Action.TRUNCATE, keep=10),
    "500": Rule(Action.STATUS, status=500),
    "502": Rule(Action.STATUS, status=502),
    "503-retry-after": Rule(Action.STATUS, status=503, retry_after=0),
    "503": Rule(Action.STATUS, status=503),
    "429-retry-after": Rule(Action.STATUS, status=429, retry_after=0),
    "429": Rule(Action.STATUS, status=429),
}


def fresh(rule: Rule, **changes: object) -> Rule:
    values = {k: getattr(rule, k) for k in ("action", "delay", "status", "retry_after", "keep")}
    values.update(changes)
    return Rule(**values)


# A fault proxy and the Radicale server as seen through it.
Proxied = tuple[FaultProxy, CalDAVServer]


@pytest.fixture
def proxied(radicale_server: CalDAVServer, fault_proxy: Callable[[str], FaultProxy]) -> Proxied:
    proxy = fault_proxy(radicale_server.url)
    return proxy, CalDAVServer(
        "radicale", proxy.url, radicale_server.username, radicale_server.password
    )


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_is_transient_and_quick(name: str, proxied: Proxied) -> None:
    proxy, server = proxied
    settings = CalDAVSettings(
        url=server.url,
        username=server.username,
        password=server.password,
        timeout=TIMEOUT,
        egress=LOOPBACK_OK,
    )
    connector = CalDAVConnector(settings)
    try:
        connector.ensure_calendar()
        body = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
            "UID:x-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20300101T100000Z\r\n"
            "DTEND:20300101T110000Z\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        item = connector.create("x-1.ics", body)
        answered: list[str] = []  # replies the proxy passed on (its own injected ones too)

        def record(request: ProxiedRequest, reply: ProxyReply) -> ProxyReply:
            answered.append(request.path)
            return reply

        proxy.on_response = record
        rule = proxy.add(fresh(FAULTS[name], method="GET|REPORT|PROPFIND", schedule=first(1)))
        sent = len(proxy.requests)
        with pytest.raises(Transient):
            connector.get(item.href)
        # At once, from the one request the fault hit: no retries inside the connector.
        assert len(proxy.requests) == sent + 1
        if rule.action is Action.DELAY:
            # given up on by the connector's timeout while the proxy still held the answer back
            assert answered == []
        assert rule.fired == 1 and proxy.injected[rule.action] == 1
        # The next request goes through: the fault was only on the first.
        assert connector.get(item.href).body
    finally:
        connector.close()


def test_status_with_retry_after_carries_the_hint(proxied: Proxied) -> None:
    proxy, server = proxied
    connector = CalDAVConnector(
        CalDAVSettings(
            url=server.url,
            username=server.username,
            password=server.password,
            timeout=TIMEOUT,
            egress=LOOPBACK_OK,
        )
    )
    try:
        connector.ensure_calendar()
        proxy.add(Rule(Action.STATUS, status=503, retry_after=7, schedule=first(1)))
        with pytest.raises(Transient) as caught:
            connector.changes(None)
        assert caught.value.retry_after == 7
    finally:
        connector.close()


def test_schedules(proxied: Proxied) -> None:
    proxy, _ = proxied
    import http.client

    def status() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        try:
            conn.request("GET", "/.well-known/x")
            return conn.getresponse().status
        finally:
            conn.close()

    nth = proxy.add(Rule(Action.STATUS, status=502, method="GET", schedule=every(3)))
    assert [status() == 502 for _ in range(6)] == [False, False, True, False, False, True]
    proxy.clear()
    a = proxy.add(Rule(Action.STATUS, status=500, schedule=probability(0.5, seed=42)))
    first_run = [status() == 500 for _ in range(20)]
    proxy.clear()
    b = proxy.add(Rule(Action.STATUS, status=500, schedule=probability(0.5, seed=42)))
    assert [status() == 500 for _ in range(20)] == first_run and 0 < a.fired < 20
    assert b.fired == a.fired
    proxy.clear()
    proxy.add(Rule(Action.STATUS, status=503, path=r"^/nomatch", schedule=first(5)))
    timed = proxy.add(Rule(Action.STATUS, status=429, schedule=window(0, 60)))
    assert status() == 429
    timed.added -= 61  # as if a minute had passed: the window is over
    assert status() != 429
    assert nth.fired == 2 and proxy.total_injected == 2 + 2 * a.fired + 1


@pytest.mark.parametrize("name", ["delay", "drop", "reset", "truncate", "502", "429-retry-after"])
def test_pass_converges_despite_faults_on_first_attempts(
    name: str, proxied: Proxied, tmp_path: Path
) -> None:
    proxy, server = proxied
    app = App.open(make_config(tmp_path / "state", caldav={"timeout": TIMEOUT}))
    try:
        assert app.ingestor().ingest(f.therapist(zone="Europe/London")).ok
        operations.connect_caldav(
            app, "t-1", url=server.url, username=server.username, password=server.password
        )
        with app.sessions() as s:
            cal = s.scalars(select(ConnectionRow)).one().calendar_url
        assert cal is not None
        start = f.future(days=10)
        assert app.ingestor().ingest(f.session("s-1", start)).ok
        # Two faults in a row on every kind of request: the engine retries (4 attempts).
        rule = proxy.add(fresh(FAULTS[name], schedule=first(2)))
        report = app.engine().run_pass("t-1")
        assert not report.failed, [c.error for c in report.connections]
        assert rule.fired == 2
        assert uid_for("session", "s-1") in read_calendar(server, cal)
    finally:
        app.close()


def test_usable_in_front_of_the_google_standin(
    google_standin: GoogleStandIn, fault_proxy: Callable[[str], FaultProxy]
) -> None:
    import httpx

    proxy = fault_proxy(google_standin.root_url)
    proxy.add(Rule(Action.STATUS, status=429, retry_after=3, path="calendar/v3", schedule=first(1)))
    url = proxy.url + "calendar/v3/users/me/calendarList"
    with httpx.Client(timeout=5) as client:
        injected = client.get(url)
        real = client.get(url)
    assert injected.status_code == 429 and injected.headers["Retry-After"] == "3"
    assert real.status_code != 429 and real.content != injected.content  # the stand-in answered
    assert proxy.injected[Action.STATUS] == 1 and len(proxy.requests) == 2

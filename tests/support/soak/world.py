"""What the soak's driver talks to: fault proxies, the webhook receiver, the calendars."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import caldav
import httpx

from syncd import google_auth, operations
from syncd.app import App
from syncd.config import Config
from syncd.metrics import iter_samples
from syncd.store.tables import ConnectionRow
from tests.support.caldav_servers import CalDAVServer
from tests.support.faults import Action, FaultProxy, Rule
from tests.support.google_standin import GoogleStandIn
from tests.support.google_standin.fixtures import build_service
from tests.support.soak import verdict
from tests.support.soak.report import Report
from tests.support.soak.workload import (
    CLIENT_ID,
    CLIENT_SECRET,
    FOREIGN_END,
    FOREIGN_START,
    WEBHOOK_SECRET,
    Workload,
    foreign_uid,
)

# -- faults ------------------------------------------------------------------------------------

# What the proxies inject, each kind with an equal share of the fault rate: answers that never
# reach the server (5xx, 429, a dropped or reset connection) and one that does but whose answer
# is cut off (the write happened; the client cannot know).
FAULT_KINDS: tuple[Rule, ...] = (
    Rule(Action.STATUS, status=503),
    Rule(Action.STATUS, status=500),
    Rule(Action.STATUS, status=429, retry_after=0),
    Rule(Action.DROP),
    Rule(Action.RESET),
    Rule(Action.TRUNCATE, keep=10),
)


class FaultSwitch:
    """Seeded faults for every proxy, only while ``on``."""

    def __init__(self, seed: int, rate: float) -> None:
        self.seed, self.rate, self.on = seed, rate, False
        self.proxies: dict[str, FaultProxy] = {}

    def proxy(self, name: str, upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream)
        for i, kind in enumerate(FAULT_KINDS):
            rng = random.Random(f"{self.seed}/{name}/{i}")
            proxy.add(
                Rule(
                    kind.action,
                    status=kind.status,
                    retry_after=kind.retry_after,
                    keep=kind.keep,
                    schedule=self._schedule(rng, self.rate / len(FAULT_KINDS)),
                )
            )
        self.proxies[name] = proxy
        return proxy

    def _schedule(self, rng: random.Random, share: float) -> Callable[[int, float], bool]:
        return lambda _n, _elapsed: self.on and rng.random() < share

    def counts(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for name, proxy in self.proxies.items():
            for action, n in proxy.injected.items():
                out[f"{name}:{action.value}"] += n
        return out

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()


# -- the platform's webhook receiver -----------------------------------------------------------


class Receiver:
    """The platform's end of the outbox: records every notification id it is sent and checks
    each signature (HMAC-SHA256 of ``"<t>." + body``, computed here independently)."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.bad: list[str] = []
        # bodies cut short: the proxy forwards what it got from a daemon SIGKILLed mid-send
        self.torn = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = receiver.record(self.headers.get("Syncd-Signature", ""), body)
                # a body, so that a truncated answer is a failed delivery to syncd
                answer = b'{"received": true}' if ok else b'{"error": "unreadable"}'
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def record(self, signature: str, body: bytes) -> bool:
        """Count a notification with a valid signature; False for any other."""
        parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
        mac = hmac.new(WEBHOOK_SECRET, f"{parts.get('t', '')}.".encode() + body, hashlib.sha256)
        try:
            ident = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            with self.lock:
                self.torn += 1
            return False
        with self.lock:
            if not hmac.compare_digest(mac.hexdigest(), parts.get("v1", "")):
                self.bad.append(ident)
                return False
            self.ids[ident] += 1
        return True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- reading calendars back as the therapist's own client would --------------------------------


@dataclass
class GoogleTarget:
    """The Google stand-in and, per therapist, the account's own grant (a refresh token for
    a client of the therapist's, not syncd's) to read the calendar back through the API."""

    standin: GoogleStandIn
    proxy_url: str
    tokens: dict[str, str] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)

    def email(self, tid: str) -> str:
        return f"{tid}@example.com"

    def service(self, tid: str) -> Any:
        if tid not in self.services:
            self.services[tid] = build_service(self.standin, self.tokens[tid], timeout=10)
        return self.services[tid]

    def read(self, tid: str, calendar: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            answer = (
                self.service(tid)
                .events()
                .list(calendarId=calendar, maxResults=2500, pageToken=page)
                .execute()
            )
            items.extend(answer.get("items", []))
            page = answer.get("nextPageToken")
            if not page:
                return items


def google_calendar_id(calendar_url: str) -> str:
    return unquote(urlsplit(calendar_url).path.split("/calendars/", 1)[1].strip("/"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scrape_passes(port: int) -> Counter[str]:
    """Passes this daemon process ran so far, by outcome (``syncd_pass_duration_seconds``)."""
    out: Counter[str] = Counter()
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out  # not listening yet: killed right after its start
    for name, labels, value in iter_samples(text):
        if name == "syncd_pass_duration_seconds_count":
            out[labels["outcome"]] += int(value)
    return out


def make_calendar(server: CalDAVServer, name: str, tid: str) -> tuple[str, str]:
    """A calendar holding the therapist's own event: the calendar's URL and the event's."""
    with caldav.DAVClient(  # type: ignore[operator]  # untyped: caldav ships no stubs
        url=server.url, username=server.username, password=server.password, timeout=10
    ) as client:
        cal = client.principal().make_calendar(name=name, cal_id=name)
        own = cal.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//soak//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{foreign_uid(tid)}\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:20270105T090000Z\r\nDTEND:20270105T100000Z\r\nSUMMARY:Dentist\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        return str(cal.url), str(own.url)


def connect_google(app: App, google: GoogleTarget, tid: str) -> tuple[str, str]:
    """The therapist's OAuth consent (the stand-in consents at once; the browser's redirect is
    read instead of followed), then their own event in the calendar syncd created: the
    calendar's id and the event's."""
    g = google.standin
    email = google.email(tid)
    google.tokens[tid] = g.add_account(email, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    g.consenting_account = email
    url = google_auth.authorization_url(app, tid, redirect_base="http://127.0.0.1:9")
    answer = httpx.get(url, follow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    cid = google_auth.complete(app, query["state"][0], query["code"][0])
    with app.sessions() as s:
        row = s.get(ConnectionRow, cid)
        assert row is not None and row.calendar_url
        calendar = google_calendar_id(row.calendar_url)
    own = g.put_event(
        calendar,
        {
            "iCalUID": foreign_uid(tid),
            "summary": "Dentist",
            "start": {"dateTime": FOREIGN_START},
            "end": {"dateTime": FOREIGN_END},
        },
    )
    return calendar, str(own["id"])


@dataclass
class World:
    """What the driver talks to; every server is reached through a fault-injecting proxy."""

    cfg: Config
    path: Path  # the config file of the daemon and of ``syncd ingest``
    port: int  # the daemon's HTTP port (/metrics)
    faults: FaultSwitch
    receiver: Receiver
    servers: list[CalDAVServer]
    via: dict[str, str]  # real server url -> the url syncd is given (through its proxy)
    google: GoogleTarget | None
    # therapist -> their own event, as first read from the server
    foreign: dict[str, verdict.Foreign] = field(default_factory=dict)
    # CalDAV therapist -> the real server and calendar url (for the therapist's own edits)
    calendars: dict[str, tuple[CalDAVServer, str]] = field(default_factory=dict)
    # Google therapist -> the id of the calendar syncd created (for their actions in Google)
    google_calendars: dict[str, str] = field(default_factory=dict)

    @property
    def behind(self) -> dict[str, CalDAVServer]:
        """The real server behind each url syncd was given."""
        return {self.via[s.url]: s for s in self.servers}


def setup(world: World, report: Report, work: Workload) -> None:
    targets: list[CalDAVServer | None] = [*world.servers, *([None] if world.google else [])]
    app = App.open(world.cfg)
    try:
        ing = app.ingestor()
        for i, tid in enumerate(work.tids):
            # working all day every day, so every booking changes public availability and
            # availability.changed notifications flow to the webhook
            ev = work.therapist(tid)
            [want] = work.predict([ev], datetime.now(UTC))
            assert ing.ingest(ev).result.value == want.result == "applied"
            server = targets[i % len(targets)]
            if server is None:
                assert world.google is not None
                calendar, own = connect_google(app, world.google, tid)
                world.google_calendars[tid] = calendar
                work.on_google.append(tid)
                service = world.google.service(tid)
                world.foreign[tid] = verdict.google_event(service, calendar, own)
                report.targets["google"] += 1
                continue
            cal, own = make_calendar(server, f"soak-{tid}", tid)
            world.foreign[tid] = verdict.caldav_resource(server, own)
            world.calendars[tid] = (server, cal)
            operations.connect_caldav(
                app,
                tid,
                url=world.via[server.url],
                username=server.username,
                password=server.password,
                calendar_url=urlsplit(cal).path,
            )
            report.targets[server.kind] += 1
    finally:
        app.close()

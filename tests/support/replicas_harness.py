"""Pieces for running several real ``syncd run`` replicas against one PostgreSQL database and one
Radicale, and for judging them from the outside: a proxy that timestamps every request with the
pass it belongs to (``X-Syncd-Pass``), a webhook receiver that timestamps deliveries, and helpers
to seed many therapists and to read who did what from the replicas' JSON logs.

Shared by tests/test_replicas.py and bench/replicas.py.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from connectors.base import PASS_HEADER
from syncd import operations
from syncd.app import App
from syncd.store.tables import ConnectionRow, MirrorRow, ReplicaRow, SyncQueueRow
from tests.support import factories as f
from tests.support import oracle
from tests.support.caldav_servers import CalDAVServer, HTTPProxy
from tests.support.calendar_view import read_calendar
from tests.support.platform_model import PlatformModel
from tests.support.proc import start_syncd

# -- the server side's view of passes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as the proxy saw it: from the moment its head was read until the reply was
    written (wall clock, comparable with the database's timestamps)."""

    began: float
    ended: float
    method: str
    path: str
    pass_id: str | None


@dataclass(frozen=True, slots=True)
class PassSpan:
    pass_id: str
    therapist: str
    began: float  # first request arrived
    ended: float  # last reply written
    requests: int


class TimedProxy(HTTPProxy):
    """The recording proxy, plus arrival and completion time and pass id of every request."""

    def __init__(self, upstream: str) -> None:
        self.hits: list[Hit] = []
        super().__init__(upstream)

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        began = time.time()
        try:
            super()._serve(handler)
        finally:
            hit = Hit(
                began,
                time.time(),
                handler.command,
                urlsplit(handler.path).path,
                handler.headers.get(PASS_HEADER),
            )
            with self._lock:
                self.hits.append(hit)
                # The bodies are not needed here; keeping thousands of them only costs memory.
                self.requests.clear()

    def snapshot(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)


def therapist_of(path: str) -> str | None:
    """Each therapist logs in to Radicale as itself, so its principal, calendar home and
    calendar all live under ``/<therapist id>/``; discovery of ``/`` belongs to nobody."""
    first = path.strip("/").split("/", 1)[0]
    return first or None


def pass_spans(hits: Iterable[Hit]) -> list[PassSpan]:
    """Group requests by pass id. A pass that touched two therapists' collections is a bug in
    itself and fails here."""
    by_pass: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.pass_id:
            by_pass[hit.pass_id].append(hit)
    spans = []
    for pass_id, group in by_pass.items():
        owners = {t for h in group if (t := therapist_of(h.path)) is not None}
        assert len(owners) <= 1, f"pass {pass_id} touched the calendars of {sorted(owners)}"
        if not owners:
            continue  # only discovery requests reached the server (it died right after)
        spans.append(
            PassSpan(
                pass_id,
                owners.pop(),
                min(h.began for h in group),
                max(h.ended for h in group),
                len(group),
            )
        )
    return spans


def overlapping(spans: Iterable[PassSpan]) -> list[tuple[PassSpan, PassSpan]]:
    """Pairs of passes of one therapist whose [first request, last reply] spans intersect."""
    by_therapist: dict[str, list[PassSpan]] = defaultdict(list)
    for span in spans:
        by_therapist[span.therapist].append(span)
    found = []
    for group in by_therapist.values():
        group.sort(key=lambda s: s.began)
        latest = group[0]
        for span in group[1:]:
            if span.began < latest.ended:
                found.append((latest, span))
            if span.ended > latest.ended:
                latest = span
    return found


# -- a platform webhook receiver -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    topic: str
    began: float
    ended: float


class WebhookReceiver:
    """A loopback HTTP server that accepts every notification (204) and records when each was
    received. ``delay`` keeps each request open a moment, so concurrent sends would overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                began = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                message = json.loads(body)
                if delay:
                    time.sleep(delay)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                got = Delivery(str(message["id"]), str(message["type"]), began, time.time())
                with receiver._lock:
                    receiver.deliveries.append(got)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# -- PostgreSQL ------------------------------------------------------------------------------------


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url``, dropped afterwards (the bench's pg_url)."""
    admin_url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url.render_as_string(False), isolation_level="AUTOCOMMIT")
    name = f"syncd_b_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- seeding ---------------------------------------------------------------------------------------


def therapist_ids(n: int) -> list[str]:
    return [f"t-{i:04d}" for i in range(n)]


def session_start(j: int) -> datetime:
    """Session ``j`` of any therapist: one a day at 09:00 UTC from tomorrow."""
    return f.future(days=1 + j, hour=9)


LABELS = ("none", "initials", "first_name")


def therapist_event(tid: str) -> dict[str, Any]:
    """Therapists' privacy choices vary with their number: every label, locations on and off."""
    i = int(tid.rsplit("-", 1)[1]) if tid.rsplit("-", 1)[1].isdigit() else 0
    privacy = {"client_label": LABELS[i % 3], "include_location": i % 2 == 0}
    return f.therapist(tid, privacy=privacy)


class Model:
    """The platform as the test knows it (tests/support/platform_model.py), fed by threads: each
    event's answer is predicted under a lock, then syncd's is compared with it."""

    def __init__(self) -> None:
        self.platform_model = PlatformModel()
        self._lock = threading.Lock()

    @property
    def platform(self) -> oracle.Platform:
        return self.platform_model.platform

    def ingest(self, app: App, event: dict[str, Any]) -> None:
        with self._lock:
            want = self.platform_model.send(event, datetime.now(UTC))
        got = app.ingestor().ingest(event)
        assert got.result.value == want.result, (event["id"], got, want)


def _ingest(app: App, model: Model | None, event: dict[str, Any]) -> None:
    if model is not None:
        model.ingest(app, event)
        return
    out = app.ingestor().ingest(event)
    assert out.ok, out


def seed(
    app: App,
    tids: list[str],
    sessions_each: int,
    *,
    threads: int = 4,
    model: Model | None = None,
) -> float:
    """Ingest ``tids`` with ``sessions_each`` sessions each through the ingest API, a few
    therapists at a time (ingest waits on PostgreSQL round trips, not on the CPU), through
    ``model`` when given. Returns the seconds per event, for deadlines that follow the
    machine's speed."""

    def one(tid: str) -> None:
        _ingest(app, model, therapist_event(tid))
        for j in range(sessions_each):
            _ingest(app, model, f.session(f"{tid}-s{j}", session_start(j), therapist_id=tid))

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, tids))
    return (time.perf_counter() - began) / max(1, len(tids) * (1 + sessions_each))


def offer_event(tid: str, j: int, expires_at: datetime) -> dict[str, Any]:
    """A pending offer for session ``j`` of ``tid`` with one alternative the same afternoon."""
    alt = session_start(j) + timedelta(hours=5)
    return f.offer(
        f"{tid}-o{j}",
        f"{tid}-s{j}",
        [alt],
        sent_at=expires_at - timedelta(hours=1),
        expires_at=expires_at,
    )


def ingest_all(
    app: App, events: list[dict[str, Any]], *, threads: int = 4, model: Model | None = None
) -> None:
    def one(event: dict[str, Any]) -> None:
        _ingest(app, model, event)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, events))


def connect_all(app: App, tids: Iterable[str], url: str) -> None:
    """One CalDAV connection per therapist, logged in as itself (Radicale without auth accepts
    any login), so each writes into its own dedicated calendar ``/<id>/syncd/``. Not verified
    here: the replicas' first passes discover and create the calendars."""
    for tid in tids:
        operations.connect_caldav(app, tid, url=url, username=tid, password="unused", verify=False)


# -- convergence, as the database records it ---------------------------------------------------


Expected = dict[str, dict[str, str]]  # therapist -> uid -> content hash


def expected_entries(app: App, tids: Iterable[str]) -> Expected:
    engine = app.engine()
    try:
        out = {}
        for tid in tids:
            desired = engine.desired(tid)
            assert desired is not None, tid
            out[tid] = {uid: e.content_hash for uid, e in desired.items()}
        return out
    finally:
        engine.close()


def mirrored(app: App) -> Expected:
    """What the mirror status tables say each therapist's calendar holds."""
    with app.sessions() as s:
        rows = s.execute(
            select(ConnectionRow.therapist_id, MirrorRow.uid, MirrorRow.content_hash).join(
                MirrorRow, MirrorRow.connection_id == ConnectionRow.id
            )
        ).all()
    out: Expected = defaultdict(dict)
    for tid, uid, content_hash in rows:
        out[str(tid)][str(uid)] = str(content_hash)
    return out


def missing(app: App, expected: Expected) -> int:
    """How many expected entries are not (yet) mirrored as expected, plus extra ones."""
    have = mirrored(app)
    wrong = 0
    for tid, entries in expected.items():
        got = have.get(tid, {})
        wrong += sum(1 for uid, h in entries.items() if got.get(uid) != h)
        wrong += sum(1 for uid in got if uid not in entries)
    return wrong


def leases(app: App) -> dict[str, tuple[str, datetime]]:
    """therapist -> (owner, lease_until) for every lease row set."""
    with app.sessions() as s:
        rows = s.execute(
            select(
                SyncQueueRow.therapist_id, SyncQueueRow.lease_owner, SyncQueueRow.lease_until
            ).where(SyncQueueRow.lease_owner.is_not(None))
        ).all()
    return {str(t): (str(o), u) for t, o, u in rows if u is not None}


def check_calendars(
    server_url: str, tids: Iterable[str], model: Model, now: datetime | None = None
) -> int:
    """Each therapist's calendar read straight from Radicale (not through syncd's connector)
    against the oracle's entries for the model's platform at ``now``: every entry, every field.
    Returns the number of entries seen."""
    problems: list[str] = []
    seen_total = 0
    when = now or datetime.now(UTC)
    for tid in tids:
        server = CalDAVServer("radicale", server_url, tid, "unused")
        seen = read_calendar(server, f"{server_url}{tid}/syncd/")
        want = oracle.expected(model.platform, tid, when)
        problems += oracle.compare(tid, want, [oracle.seen_ical(s.event) for s in seen.values()])
        seen_total += len(seen)
    assert problems == [], "\n".join(problems[:50])
    return seen_total


# -- the replicas themselves ---------------------------------------------------------------------


class Replicas:
    """``n`` ``syncd run`` processes on one configuration file, each logging JSON to its own
    file."""

    def __init__(self, config: Path, n: int, logs: Path) -> None:
        self.config = config
        self.logs = [logs / f"replica-{i}.log" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def start(self) -> None:
        for log in self.logs:
            self.procs.append(start_syncd(self.config, "run", log=log))

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)
        self.killed.add(i)

    def stop(self, timeout: float = 20) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> Replicas:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def owner_ids(self, app: App, timeout: float = 30) -> list[str]:
        """The replica id of each process, from the registry (waits for all to register)."""
        deadline = time.monotonic() + timeout
        while True:
            with app.sessions() as s:
                by_pid = {r.pid: r.id for r in s.scalars(select(ReplicaRow)).all()}
            if all(p.pid in by_pid for p in self.procs):
                return [by_pid[p.pid] for p in self.procs]
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise AssertionError(f"replica {i} exited: {self.tail(i)}")
            if time.monotonic() > deadline:
                raise AssertionError("the replicas did not all register")
            time.sleep(0.1)

    def records(self, i: int) -> list[dict[str, Any]]:
        out = []
        for line in self.logs[i].read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):  # a line cut short by SIGKILL
                    out.append(json.loads(line))
        return out

    def pass_ids(self, i: int) -> set[str]:
        """Passes that logged something (every pass that wrote to a calendar does)."""
        return {str(r["pass_id"]) for r in self.records(i) if r.get("pass_id")}

    def errors(self, i: int) -> list[str]:
        return [
            str(r.get("message"))
            for r in self.records(i)
            if r.get("level") in ("ERROR", "CRITICAL")
        ]

    def tail(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")[-3000:]

    def alive(self) -> bool:
        """Every replica not killed on purpose is still running."""
        return all(p.poll() is None for i, p in enumerate(self.procs) if i not in self.killed)

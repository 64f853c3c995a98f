"""Hold expiry delay (DESIGN.md §7: "a hold is released within 2 s of its expiry, also after a
restart"), against embedded Radicale with the in-process daemon of ``bench_propagation``.

Each offer is for its own session and holds two alternative slots; nothing but the clock
releases them (the platform never says the offer expired). A hold counts as released when a GET
of its resource answers 404; the pollers GET only the holds whose expiry is at most 0.2 s away,
every 2 ms, so a poll cycle is a few GETs (its length is reported: it bounds the resolution).

- live: offers expire one by one, ~0.5 s apart, a few seconds after the daemon started;
- restart: the daemon is stopped, some offers expire while it is down, then a fresh App and
  daemon start on the same database; those holds are timed from the start (App.open) and from
  their expiry, and more offers expire a few seconds after the restart.

The reference, in the same run on the same server: a bare DELETE of the same resources (each
PUT back first with the body read while it was a hold).
"""

from __future__ import annotations

import http.client
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from bench.run import DaemonThread, _app, _auth, _ingest, add, pct, server
from syncd import operations
from syncd.app import App
from syncd.project import name_for, uid_for
from syncd.store.tables import ConnectionRow
from tests.support import factories as f

TID = "t-x"
ALTERNATIVES = 2
LOOKAHEAD = 0.2  # start polling a hold this long before its expiry
GIVE_UP = 30.0  # a hold still there this long after its expiry counts as never released


@dataclass
class Hold:
    path: str
    expires: float  # wall-clock seconds (time.time())
    body: bytes = b""
    gone: float | None = None
    early: bool = False  # seen gone before its expiry: a bug, not a fast release


@dataclass
class Poller:
    conn: http.client.HTTPConnection
    auth: str
    cycles: list[float] = field(default_factory=list)

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers={"Authorization": self.auth})
        r = self.conn.getresponse()
        return r.status, r.read()

    def visible(self, holds: list[Hold], deadline: float) -> None:
        """Wait until every hold is on the server (keeping its body for the reference)."""
        for h in holds:
            while True:
                status, body = self.get(h.path)
                if status == 200:
                    h.body = body
                    break
                if time.time() > deadline:
                    raise TimeoutError(f"hold not written before its offer expired: {h.path}")
                time.sleep(0.02)

    def until_gone(self, holds: list[Hold]) -> None:
        waiting = list(holds)
        while waiting:
            t0 = time.perf_counter()
            now = time.time()
            for h in [h for h in waiting if now >= h.expires - LOOKAHEAD]:
                status, _ = self.get(h.path)
                at = time.time()
                if status == 404:
                    h.gone, h.early = at, at < h.expires
                    waiting.remove(h)
                elif at > h.expires + GIVE_UP:
                    waiting.remove(h)
            self.cycles.append(time.perf_counter() - t0)
            time.sleep(0.002)


def offer(oid: str, session_id: str, slots: list[datetime], expires: datetime) -> dict[str, Any]:
    return f.offer(oid, session_id, slots, expires_at=expires)


class World:
    """One therapist on Radicale with one session per offer to come."""

    def __init__(self, tmp: Path, url: str, user: str, password: str, sessions: int) -> None:
        # The daemon's own default poll interval (make_config shortens it for the tests).
        self.app = _app(tmp, daemon={"poll_interval": 0.2})
        self.next_offer = 0
        assert self.app.ingestor().ingest(f.therapist(TID)).ok
        operations.connect_caldav(self.app, TID, url=url, username=user, password=password)
        with self.app.sessions() as s:
            cal = s.scalars(select(ConnectionRow.calendar_url)).one()
        assert cal is not None
        self.cal_path = urlsplit(cal).path
        day0 = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
        # Sessions on days 1.., alternatives on days 100..: nothing ever overlaps.
        self.session_starts = [day0 + timedelta(days=1 + i) for i in range(sessions)]
        _ingest(
            self.app,
            [
                f.session(f"s-{i}", start, therapist_id=TID)
                for i, start in enumerate(self.session_starts)
            ],
        )
        self.day0 = day0
        report = self.app.engine().run_pass(TID)
        assert not report.failed, [c.error for c in report.connections]

    def reopen(self) -> None:
        self.app = App.open(self.app.config)

    def offer(self, expires: float) -> list[Hold]:
        i = self.next_offer
        self.next_offer += 1
        oid = f"o-{i}"
        slots = [self.day0 + timedelta(days=100 + i, hours=2 * k) for k in range(ALTERNATIVES)]
        at = datetime.fromtimestamp(expires, UTC)
        assert self.app.ingestor().ingest(offer(oid, f"s-{i}", slots, at)).ok
        return [
            Hold(self.cal_path + name_for(uid_for("hold", f"{oid}.{k}")), expires)
            for k in range(ALTERNATIVES)
        ]


def _ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1000:.0f} / {pct(values, 0.99) * 1000:.0f} ms"


def _delays(holds: list[Hold], since: float | None = None) -> list[float]:
    return [h.gone - (h.expires if since is None else since) for h in holds if h.gone is not None]


def _check(holds: list[Hold], what: str) -> None:
    early = [h.path for h in holds if h.early]
    never = [h.path for h in holds if h.gone is None]
    if early or never:
        raise AssertionError(f"{what}: released early {early}, never released {never}")


def bench_expiry(live: int, down: int, after: int, tmp: Path) -> None:
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)  # noise on stop
    with server("radicale", tmp / "srv") as (url, user, password):
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
        poll = Poller(conn, _auth(user, password))
        world = World(tmp / "state", url, user, password, live + down + after)
        try:
            # (a) live: holds written by the running daemon, then released one offer at a time.
            runner = DaemonThread(world.app)
            try:
                lead = 2.0 + 0.3 * ALTERNATIVES * live  # Radicale takes ~0.1 s per PUT
                first = time.time() + lead
                live_holds = [h for i in range(live) for h in world.offer(first + 0.53 * i)]
                runner.wake()
                poll.visible(live_holds, first - 0.5)
                poll.until_gone(live_holds)
            finally:
                runner.stop()
            _check(live_holds, "live")

            # (b) across a restart: written by a daemon that then stops; some offers expire
            # while it is down, the rest a few seconds after a fresh daemon starts.
            runner = DaemonThread(world.app)
            try:
                lead = 2.0 + 0.3 * ALTERNATIVES * (down + after)
                first = time.time() + lead
                down_holds = [h for i in range(down) for h in world.offer(first + 0.21 * i)]
                restart_at = first + 0.21 * down + 2.0
                after_holds = [
                    h for i in range(after) for h in world.offer(restart_at + 2.0 + 0.53 * i)
                ]
                runner.wake()
                poll.visible(down_holds + after_holds, first - 0.5)
            finally:
                runner.stop()
                world.app.close()
            time.sleep(max(0.0, restart_at - time.time()))
            started = time.time()
            world.reopen()
            runner = DaemonThread(world.app)
            try:
                poll.until_gone(down_holds + after_holds)
            finally:
                runner.stop()
            _check(down_holds + after_holds, "restart")

            # Reference: the same resources put back and deleted bare, one request each.
            bare: list[float] = []
            headers = {"Authorization": poll.auth}
            for h in live_holds + down_holds + after_holds:
                conn.request(
                    "PUT",
                    h.path,
                    body=h.body,
                    headers={**headers, "Content-Type": "text/calendar; charset=utf-8"},
                )
                r = conn.getresponse()
                r.read()
                assert r.status in (200, 201, 204), r.status
                t0 = time.perf_counter()
                conn.request("DELETE", h.path, headers=headers)
                r = conn.getresponse()
                r.read()
                bare.append(time.perf_counter() - t0)
                assert r.status in (200, 204), r.status
        finally:
            conn.close()
            world.app.close()
    # Holds of "after" offers whose expiry came before the daemon was up belong with "down".
    late = [h for h in after_holds if h.expires < started]
    down_holds += late
    after_holds = [h for h in after_holds if h not in late]
    ref = f"bare DELETE p50/p99 {_ms(bare)}; poll cycle p99 {pct(poll.cycles, 0.99) * 1000:.0f} ms"
    live_d = _delays(live_holds)
    add(
        "6 hold expiry (radicale)",
        f"live: expiry->gone p50/p99, {len(live_d)} holds",
        _ms(live_d),
        ref,
        "p99 < 2 s",
        pct(live_d, 0.99) < 2.0,
    )
    since_start = _delays(down_holds, started)
    down_for = started - min(h.expires for h in down_holds)
    add(
        "6 hold expiry (radicale)",
        f"expired while down: restart->gone p50/p99, {len(since_start)} holds",
        _ms(since_start),
        f"expiry->gone {_ms(_delays(down_holds))} (expired up to {down_for:.1f} s before)",
        "p99 < 2 s",
        pct(since_start, 0.99) < 2.0,
    )
    after_d = _delays(after_holds)
    if after_d:
        add(
            "6 hold expiry (radicale)",
            f"expiring after restart: expiry->gone p50/p99, {len(after_d)} holds",
            _ms(after_d),
            f"first expiry {min(h.expires for h in after_holds) - started:.1f} s after restart",
            "p99 < 2 s",
            pct(after_d, 0.99) < 2.0,
        )

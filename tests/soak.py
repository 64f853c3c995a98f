"""Soak: a seeded, mixed platform workload fed with ``syncd ingest`` while the real ``syncd run``
is SIGKILLed and restarted at random moments; afterwards every calendar must equal the projection
of the final platform state.

From pytest (tests/test_soak.py) or the command line::

    python -m tests.soak --events 1000 --therapists 50 --kills 20 --seconds 600
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import caldav
from sqlalchemy import select

from syncd import operations
from syncd.app import App
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.store.tables import ConnectionRow, OfferRow, OutboxRow
from tests import factories as f
from tests.caldav_servers import (
    CalDAVServer,
    HTTPProxy,
    ProxiedRequest,
    ProxyReply,
    XandikosProcess,
)
from tests.calendar_view import read_calendar
from tests.conftest import make_config, write_config
from tests.proc import jsonl, run_syncd, start_syncd


def foreign_uid(tid: str) -> str:
    return f"foreign-{tid}@example.com"


@dataclass
class Report:
    events: int = 0
    duplicates_sent: int = 0
    stale_sent: int = 0
    refused: int = 0
    kills: int = 0
    faults: int = 0
    passes_with_changes: int = 0
    offers: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    mismatches: list[str] = field(default_factory=list)
    expired_offers: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"events={self.events} duplicates={self.duplicates_sent} stale={self.stale_sent} "
            f"refused={self.refused} kills={self.kills} faults={self.faults} "
            f"offers={self.offers} passes_with_changes={self.passes_with_changes} "
            f"convergence_checks={self.checks} expired_offers={self.expired_offers} "
            f"mismatches={len(self.mismatches)} seconds={self.seconds:.1f}"
        )


class Workload:
    """Generates events for therapists ``t-0..t-(n-1)``; every time slot is unique, so no
    alternative ever overlaps another session."""

    def __init__(self, rng: random.Random, therapists: int) -> None:
        self.rng = rng
        self.tids = [f"t-{i}" for i in range(therapists)]
        self.sessions: dict[str, dict[str, Any]] = {}  # sid -> latest event sent
        self.history: list[dict[str, Any]] = []  # every event sent, for resends
        self.offered: set[str] = set()
        self.expiring: list[str] = []  # offer ids left to expire
        self.slot = 0
        self.n = 0
        self.duplicates = 0
        self.fates: dict[str, int] = {}

    def _start(self) -> datetime:
        self.slot += 1
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        return base + timedelta(days=3, hours=self.slot)

    def _session(self, sid: str, tid: str, version: int, start: datetime, **extra: Any) -> Any:
        return f.session(sid, start, version=version, therapist_id=tid, **extra)

    def next(self) -> list[dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        live = [s for s, e in self.sessions.items() if e["data"]["status"] == "confirmed"]
        if roll < 0.35 or not live:
            self.n += 1
            sid = f"s-{self.n}"
            ev = self._session(sid, rng.choice(self.tids), 1, self._start())
        elif roll < 0.5:
            ev = self._bump(rng.choice(live), start=self._start())
        elif roll < 0.58:
            ev = self._bump(
                rng.choice(live),
                status="cancelled",
                cancellation={"reason": "client_cancelled", "by": "client"},
            )
        elif roll < 0.78:
            return self._offer(rng.choice(live))
        elif roll < 0.88 and self.history:
            self.duplicates += 1
            return [rng.choice(self.history)]  # the same event id again
        else:
            return self._reservation()
        self.history.append(ev)
        self.sessions[ev["data"]["id"]] = ev
        return [ev]

    def _bump(self, sid: str, start: datetime | None = None, **extra: Any) -> dict[str, Any]:
        old = self.sessions[sid]["data"]
        version = old["version"] + 1
        s = datetime.fromisoformat(old["start"]) if start is None else start
        if start is not None:
            extra["change"] = {"reason": "client_requested", "by": "client"}
        ev: dict[str, Any] = self._session(sid, old["therapist_id"], version, s, **extra)
        return ev

    def _offer(self, sid: str) -> list[dict[str, Any]]:
        if sid in self.offered:
            return []
        self.offered.add(sid)
        oid = f"o-{sid}"
        now = datetime.now(UTC)
        alts = [self._start(), self._start()]
        fate = self.rng.choice(["accepted", "rejected", "expire"])
        self.fates[fate] = self.fates.get(fate, 0) + 1
        expires = now + (
            timedelta(seconds=self.rng.uniform(2, 6)) if fate == "expire" else timedelta(hours=2)
        )
        data: dict[str, Any] = {
            "id": oid,
            "version": 1,
            "session_id": sid,
            "alternatives": [
                {"start": a.isoformat(), "end": (a + timedelta(minutes=50)).isoformat()}
                for a in alts
            ],
            "sent_at": (now - timedelta(minutes=1)).isoformat(),
            "expires_at": expires.isoformat(),
            "state": "pending",
        }
        out = [f.event("offer.upserted", data)]
        if fate == "expire":
            self.expiring.append(oid)
        else:
            answer = {**data, "version": 2, "state": fate, "responded_at": now.isoformat()}
            if fate == "accepted":
                answer["accepted_alternative"] = self.rng.randrange(2)
            out.append(f.event("offer.upserted", answer))
        self.history.extend(out)
        return out

    def _reservation(self) -> list[dict[str, Any]]:
        self.n += 1
        rid = f"r-{self.n}"
        first = datetime.now(UTC) + timedelta(days=400 + self.n)
        data: dict[str, Any] = {
            "id": rid,
            "version": 1,
            "therapist_id": self.rng.choice(self.tids),
            "client": {"id": f"c-{rid}", "name": "Res Client"},
            "first_start_local": first.strftime("%Y-%m-%dT07:13:00"),
            "timezone": "Europe/London",
            "duration_minutes": 30,
            "rrule": "FREQ=WEEKLY;COUNT=4",
            "state": "active",
        }
        out = [f.event("reserved_slot.upserted", data)]
        if self.rng.random() < 0.5:  # started then ended (before its first occurrence)
            out.append(f.event("reserved_slot.upserted", {**data, "version": 2, "state": "ended"}))
        self.history.extend(out)
        return out

    def stale(self, batch: list[dict[str, Any]], report: Report) -> None:
        """Now and then, an older session version after a newer one, under a new event id (a
        real redelivery of an old state), which must be ignored as stale."""
        if self.rng.random() < 0.2:
            old = [e for e in self.history if e["type"] == "session.upserted"]
            if old:
                e = self.rng.choice(old)
                batch.append(f.event(e["type"], e["data"]))
                report.stale_sent += 1


def make_calendar(server: CalDAVServer, name: str, tid: str) -> str:
    with caldav.DAVClient(
        url=server.url, username=server.username, password=server.password, timeout=10
    ) as client:
        cal = client.principal().make_calendar(name=name, cal_id=name)
        cal.save_event(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//soak//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{foreign_uid(tid)}\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:20270105T090000Z\r\nDTEND:20270105T100000Z\r\nSUMMARY:Dentist\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        return str(cal.url)


def check(cfg: Any, servers: dict[str, CalDAVServer]) -> list[str]:
    """Every calendar against the projection of the final platform state."""
    problems: list[str] = []
    app = App.open(cfg, migrate=False)
    try:
        engine = app.engine()
        with app.sessions() as s:
            conns = [
                (c.therapist_id, c.url, c.calendar_url) for c in s.scalars(select(ConnectionRow))
            ]
        for tid, url, cal in conns:
            desired = engine.desired(tid) or {}
            server = servers[url]  # the real server behind the connection's proxy
            try:
                seen = read_calendar(server, urljoin(server.url, urlsplit(str(cal)).path))
            except AssertionError as exc:  # duplicate UID
                problems.append(f"{tid}: {exc}")
                continue
            foreign = foreign_uid(tid)
            if foreign not in seen or str(seen[foreign].event["SUMMARY"]) != "Dentist":
                problems.append(f"{tid}: foreign event touched")
            ours = {u: v for u, v in seen.items() if u != foreign}
            for uid in sorted(set(desired) - set(ours)):
                problems.append(f"{tid}: missing {uid}")
            for uid in sorted(set(ours) - set(desired)):
                problems.append(f"{tid}: orphan {uid}")
            for uid in sorted(set(desired) & set(ours)):
                got = str(ours[uid].event.get("X-SYNCD-HASH"))
                if got != desired[uid].content_hash:
                    problems.append(f"{tid}: {uid} hash {got} != {desired[uid].content_hash}")
    finally:
        app.close()
    return problems


def check_offers(cfg: Any, expiring: list[str]) -> tuple[int, list[str]]:
    problems: list[str] = []
    app = App.open(cfg, migrate=False)
    expired = 0
    try:
        with app.sessions() as s:
            notes = list(
                s.scalars(select(OutboxRow.payload).where(OutboxRow.topic == "offer.expired"))
            )
            for oid in expiring:
                row = s.get(OfferRow, oid)
                if row is None:
                    continue  # refused at ingest (e.g. its session was cancelled meanwhile)
                if row.state != "expired":
                    problems.append(f"{oid}: state {row.state}, expected expired")
                    continue
                expired += 1
                n = sum(1 for p in notes if p.get("offer_id") == oid)
                if n != 1:
                    problems.append(f"{oid}: {n} offer.expired notifications")
    finally:
        app.close()
    return expired, problems


def run(
    workdir: Path,
    servers: list[CalDAVServer],
    *,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    seed: int = 7,
    fault_rate: float = 0.05,
    log: Any = print,
) -> Report:
    t0 = time.monotonic()
    rng = random.Random(seed)
    report = Report()
    cfg = make_config(workdir / "state", sync={"interval": 2}, offers={"sweep_interval": 0.5})
    path = write_config(workdir / "syncd.toml", cfg)
    # every server behind a proxy that answers 503 to a seeded fraction of requests
    faults = Faults(random.Random(seed + 1), fault_rate)
    proxies = [HTTPProxy(srv.url) for srv in servers]
    via: dict[str, str] = {}  # real server url -> the url syncd is given (through the proxy)
    by_url: dict[str, CalDAVServer] = {}  # and back
    for srv, proxy in zip(servers, proxies, strict=True):
        proxy.on_request = faults
        via[srv.url] = urljoin(proxy.url, urlsplit(srv.url).path)
        by_url[via[srv.url]] = srv
    try:
        return _drive(
            workdir,
            servers,
            via,
            by_url,
            faults,
            rng,
            report,
            cfg,
            path,
            events,
            therapists,
            kills,
            seconds,
            t0,
            log,
        )
    finally:
        report.faults = faults.count
        for proxy in proxies:
            proxy.close()


class Faults:
    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate, self.on, self.count = rng, rate, False, 0
        self.lock = threading.Lock()

    def __call__(self, _req: ProxiedRequest) -> ProxyReply | None:
        with self.lock:
            if self.on and self.rng.random() < self.rate:
                self.count += 1
                return ProxyReply(503, {"Content-Type": "text/plain"}, b"injected fault")
        return None


def _drive(
    workdir: Path,
    servers: list[CalDAVServer],
    via: dict[str, str],
    by_url: dict[str, CalDAVServer],
    faults: Faults,
    rng: random.Random,
    report: Report,
    cfg: Any,
    path: Path,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    t0: float,
    log: Any,
) -> Report:
    app = App.open(cfg)
    try:
        ing = app.ingestor()
        for i in range(therapists):
            tid = f"t-{i}"
            assert ing.ingest(f.therapist(tid)).ok
            server = servers[i % len(servers)]
            cal = make_calendar(server, f"soak-{tid}", tid)
            operations.connect_caldav(
                app,
                tid,
                url=via[server.url],
                username=server.username,
                password=server.password,
                calendar_url=urlsplit(cal).path,
            )
    finally:
        app.close()
    work = Workload(rng, therapists)
    runlog = workdir / "run.log"
    proc = start_syncd(path, "run", log=runlog)
    faults.on = True
    batches = 0
    try:
        while report.events < events:
            if time.monotonic() - t0 > seconds:
                log(f"time bound reached after {report.events} events")
                break
            # batches are made just before they are sent: offer expiries are real time
            batch: list[dict[str, Any]] = []
            for _ in range(rng.randint(4, 20)):
                batch.extend(work.next())
            work.stale(batch, report)
            out = run_syncd(path, "ingest", "-", stdin=jsonl(batch))
            report.events += len(batch)
            batches += 1
            report.refused += out.stderr.count("refused")
            if out.returncode not in (0, 1) or "Traceback" in out.stderr:
                raise AssertionError(f"ingest failed: {out.stderr}")
            left = max(1.0, (events - report.events) / (report.events / batches))
            if report.kills < kills and rng.random() < (kills - report.kills) / left:
                time.sleep(rng.uniform(0, 0.8))  # a random moment, often mid-pass
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                report.kills += 1
                proc = start_syncd(path, "run", log=runlog)
        # faults off; let every left-to-expire offer pass its expiry, then converge
        faults.on = False
        time.sleep(7)
        deadline = time.monotonic() + max(30.0, seconds - (time.monotonic() - t0))
        while True:
            report.checks += 1
            problems = check(cfg, by_url)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report.mismatches = check(cfg, by_url)
    report.expired_offers, offer_problems = check_offers(cfg, work.expiring)
    report.mismatches += offer_problems
    if "Traceback" in runlog.read_text():
        report.mismatches.append("Traceback in the daemon log")
    report.passes_with_changes = runlog.read_text().count("actions applied")
    report.duplicates_sent = work.duplicates
    report.offers = dict(work.fates)
    report.seconds = time.monotonic() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--therapists", type=int, default=50)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp:
        root = Path(tmp)
        (root / "xandikos").mkdir()
        (root / "radicale").mkdir()
        xandikos = XandikosProcess(root / "xandikos")
        xandikos.start()
        try:
            with EmbeddedRadicale(
                root / "radicale", username="therapist", password="s3cret pw"
            ) as rad:
                servers = [
                    CalDAVServer("radicale", rad.url, "therapist", "s3cret pw"),
                    CalDAVServer("xandikos", xandikos.url, "user", "unused"),
                ]
                (root / "work").mkdir()
                report = run(
                    root / "work",
                    servers,
                    events=a.events,
                    therapists=a.therapists,
                    kills=a.kills,
                    seconds=a.seconds,
                    seed=a.seed,
                )
        finally:
            xandikos.stop()
    print(report.summary())
    for m in report.mismatches[:50]:
        print("MISMATCH", m)
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

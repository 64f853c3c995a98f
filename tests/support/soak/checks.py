"""The soak's checks of calendars, offers and outbox, read from outside syncd."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import icalendar
from sqlalchemy import select

from syncd.app import App
from syncd.config import Config
from syncd.project import Entry
from syncd.store.tables import ConnectionRow, OfferRow, OutboxRow
from tests.support import oracle
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.google_standin.fixtures import entry_uid
from tests.support.soak import google_actions, verdict
from tests.support.soak.report import Report
from tests.support.soak.workload import FOREIGN_START, REFUSED, Workload, foreign_uid
from tests.support.soak.world import GoogleTarget, Receiver, World, google_calendar_id


def _instant(when: dict[str, str]) -> datetime:
    return datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00")).astimezone(UTC)


def check_google_events(
    tid: str, items: list[dict[str, Any]], desired: dict[str, Entry]
) -> list[str]:
    """A Google calendar against the desired entries: what the therapist sees (times, title,
    status, recurrence) and the body syncd stored with it (its X-SYNCD-HASH)."""
    problems: list[str] = []
    foreign = foreign_uid(tid)
    by_uid: dict[str, dict[str, Any]] = {}
    for item in items:
        uid = entry_uid(item)
        if uid in by_uid:
            problems.append(f"{tid}: duplicate UID {uid}")
        by_uid[uid] = item
    other = by_uid.pop(foreign, None)
    if (
        other is None
        or other.get("summary") != "Dentist"
        or _instant(other["start"]) != datetime.fromisoformat(FOREIGN_START)
    ):
        problems.append(f"{tid}: foreign event touched")
    for uid in sorted(set(desired) - set(by_uid)):
        problems.append(f"{tid}: missing {uid}")
    for uid in sorted(set(by_uid) - set(desired)):
        problems.append(f"{tid}: orphan {uid}")
    for uid in sorted(set(desired) & set(by_uid)):
        item, entry = by_uid[uid], desired[uid]
        private = (item.get("extendedProperties") or {}).get("private") or {}
        body = "".join(private[k] for k in sorted(private, key=_chunk_no) if _chunk_no(k) >= 0)
        try:
            [vevent] = icalendar.Calendar.from_ical(body).walk("VEVENT")
            got = str(vevent.get("X-SYNCD-HASH"))
        except ValueError:
            got = "unreadable body"
        if got != entry.content_hash:
            problems.append(f"{tid}: {uid} hash {got} != {entry.content_hash}")
        seen = (
            _instant(item["start"]),
            _instant(item["end"]),
            item.get("summary"),
            item.get("status"),
            any(line.startswith("RRULE:") for line in item.get("recurrence") or []),
        )
        want = (
            entry.start.astimezone(UTC),
            entry.end.astimezone(UTC),
            entry.summary,
            entry.status.lower(),
            entry.rrule is not None,
        )
        if seen != want:
            problems.append(f"{tid}: {uid} shows {seen}, expected {want}")
    return problems


def _chunk_no(key: str) -> int:
    rest = key.removeprefix("syncdBody")
    return int(rest) if rest != key and rest.isdigit() else -1


def check_caldav_events(tid: str, seen: dict[str, Any], desired: dict[str, Entry]) -> list[str]:
    problems: list[str] = []
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
    return problems


def check(
    cfg: Config,
    servers: dict[str, CalDAVServer],
    google: GoogleTarget | None,
    model: oracle.Platform | None = None,
) -> list[str]:
    """Every calendar against the oracle's entries for ``model`` (the platform as the workload
    knows it), and against syncd's own projection of the state it stored."""
    problems: list[str] = []
    now = datetime.now(UTC)
    app = App.open(cfg, migrate=False)
    try:
        engine = app.engine()
        with app.sessions() as s:
            conns = [
                (c.therapist_id, c.provider, c.url, c.calendar_url)
                for c in s.scalars(select(ConnectionRow))
            ]
        for tid, provider, url, cal in conns:
            desired = engine.desired(tid) or {}
            if provider == "google":
                assert google is not None and cal
                items, exceptions = google_actions.split(google.read(tid, google_calendar_id(cal)))
                problems += google_actions.check_occurrences(tid, items, exceptions)
                if model is not None:
                    problems += verdict.check_google(tid, items, foreign_uid(tid), model, now)
                problems += check_google_events(tid, items, desired)
                continue
            server = servers[url]  # the real server behind the connection's proxy
            try:
                seen = read_calendar(server, urljoin(server.url, urlsplit(str(cal)).path))
            except AssertionError as exc:  # duplicate UID
                problems.append(f"{tid}: {exc}")
                continue
            if model is not None:
                problems += verdict.check_caldav(tid, seen, foreign_uid(tid), model, now)
            problems += check_caldav_events(tid, seen, desired)
    finally:
        app.close()
    return problems


def check_outbox(cfg: Config, receiver: Receiver) -> tuple[Counter[str], list[str]]:
    """Every notification written was delivered (marked, and received with a valid signature)."""
    problems: list[str] = []
    topics: Counter[str] = Counter()
    app = App.open(cfg, migrate=False)
    try:
        with app.sessions() as s:
            rows = s.execute(select(OutboxRow.event_id, OutboxRow.topic, OutboxRow.delivered_at))
            for event_id, topic, delivered_at in rows:
                topics[topic] += 1
                if delivered_at is None or receiver.ids[event_id] == 0:
                    problems.append(f"notification {event_id} ({topic}) not delivered")
    finally:
        app.close()
    problems += [f"notification {i}: bad signature" for i in receiver.bad]
    return topics, problems


def check_offers(
    cfg: Config, expiring: list[str]
) -> tuple[list[tuple[str, datetime, datetime]], list[str]]:
    """Every offer left to expire was expired, once: its (id, expires_at, released_at), and
    what is wrong."""
    problems: list[str] = []
    released: list[tuple[str, datetime, datetime]] = []
    app = App.open(cfg, migrate=False)
    try:
        with app.sessions() as s:
            notes = list(
                s.scalars(select(OutboxRow.payload).where(OutboxRow.topic == "offer.expired"))
            )
            for oid in expiring:
                row = s.get(OfferRow, oid)
                if row is None:
                    problems.append(f"{oid}: not stored")
                    continue
                if row.state != "expired" or row.released_at is None:
                    problems.append(f"{oid}: state {row.state}, expected expired")
                    continue
                released.append((oid, _utc(row.expires_at), _utc(row.released_at)))
                n = sum(1 for p in notes if p.get("offer_id") == oid)
                if n != 1:
                    problems.append(f"{oid}: {n} offer.expired notifications")
    finally:
        app.close()
    return released, problems


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def release_lags(
    released: list[tuple[str, datetime, datetime]],
    stored: dict[str, datetime],
    kills: list[datetime],
    log_text: str,
) -> tuple[list[float], list[float]]:
    """Seconds from when a hold was due to go (its expiry, or when ``syncd ingest`` stored the
    offer if that was later, on a machine loaded enough to start it after the expiry) to its
    release, for holds due while a daemon was running; and for those due while none was (from
    a SIGKILL until the next daemon's first sweep, which runs before it logs "syncd
    running"), seconds from that readiness to release (<= 0 when that first sweep did it)."""
    ready = sorted(
        datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00"))
        for line in log_text.splitlines()
        if '"syncd running as' in line
    )
    never = datetime.max.replace(tzinfo=UTC)
    down = [(k, next((r for r in ready if r > k), never)) for k in kills]
    up_lags: list[float] = []
    down_lags: list[float] = []
    for oid, expires, at in released:
        # ingest's own commit comes before the command returns: lags below 0 are 0
        due = min(max(expires, stored.get(oid, expires)), at)
        window = next(((k, r) for k, r in down if k <= due <= r), None)
        if window is None:
            up_lags.append((at - due).total_seconds())
        else:
            down_lags.append((at - window[1]).total_seconds())
    return up_lags, down_lags


def check_foreign(world: World) -> list[str]:
    """Every therapist's own event exactly as it was (bytes and ETag; on Google the whole
    resource, etag and updated included)."""
    problems: list[str] = []
    for tid, before in world.foreign.items():
        if isinstance(before.content, bytes):
            server = world.calendars[tid][0]
            after = verdict.caldav_resource(server, before.where)
        else:
            assert world.google is not None
            calendar, event_id = before.where.rsplit("/", 1)
            after = verdict.google_event(world.google.service(tid), calendar, event_id)
        problems += verdict.compare_foreign(tid, before, after)
    return problems


def refusals(stderr: str, work: Workload, report: Report) -> dict[str, str]:
    """Count refusals by rule; each must be one of the generator's intended negatives.
    Returns them: event id -> rule."""
    found = {}
    for line in stderr.splitlines():
        m = REFUSED.search(line)
        if m is None:
            continue
        event_id, rule = m.group(1), m.group(2) or "contract"
        found[event_id] = rule
        report.refused[rule] += 1
        work.refused.add(event_id)
        if work.negatives.get(event_id) != rule:
            report.mismatches.append(f"unintended refusal: {line}")
    return found


def check_quiet(cfg: Config, since: datetime) -> list[str]:
    """Every connection has had a successful pass since ``since`` (the faults stopped)."""
    app = App.open(cfg, migrate=False)
    try:
        with app.sessions() as s:
            return [
                f"{c.therapist_id}: no successful pass since the faults stopped ({c.state})"
                for c in s.scalars(select(ConnectionRow))
                if c.last_success_at is None or _utc(c.last_success_at) < since
            ]
    finally:
        app.close()


def converged(
    world: World, expiring: list[str], quiet_from: datetime, model: oracle.Platform
) -> list[str]:
    problems = check_quiet(world.cfg, quiet_from)
    if not problems:
        problems = check(world.cfg, world.behind, world.google, model)
    if not problems:
        problems = check_offers(world.cfg, expiring)[1]
    if not problems:
        problems = check_outbox(world.cfg, world.receiver)[1]
    return problems


def tracebacks(log_text: str) -> dict[str, tuple[int, str]]:
    """Tracebacks in the daemon's log (JSON lines), by where they were logged and their last
    line: how many, and the end of the first one."""
    out: dict[str, tuple[int, str]] = {}
    for line in log_text.splitlines():
        if "Traceback" not in line:
            continue
        try:
            record = json.loads(line)
            trace = str(record.get("exception") or line)
            where = f"{record.get('logger')}: {str(record.get('message'))[:120]}"
        except ValueError:
            trace, where = line, "?"
        key = f"{where} | {trace.strip().splitlines()[-1][:200]}"
        n, first = out.get(key, (0, trace[-2000:]))
        out[key] = (n + 1, first)
    return out

"""The soak's verdicts from outside syncd (tests/soak.py): each calendar read back from its
server and compared with the oracle's entries (tests/support/oracle.py) for the platform state the
workload's own model holds; every answer of ``syncd ingest`` compared with the model's
prediction; the therapist's own events compared byte for byte (CalDAV) or field for field with
their ETag (Google) before and after; and the therapist's hand edits of syncd's entries."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select

from syncd.app import App
from syncd.config import Config
from syncd.store.tables import InboundEventRow
from tests.support import oracle
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import Seen, read_calendar
from tests.support.platform_model import Outcome

# -- what syncd answered ---------------------------------------------------------------------------

_COUNTS = re.compile(r"(\d+) (applied|duplicate|stale|refused)")


def answer_counts(stdout: str) -> Counter[str]:
    """The closing line of ``syncd ingest``: "12 applied, 2 duplicate, 1 refused, 3 stale"."""
    return Counter({kind: int(n) for n, kind in _COUNTS.findall(stdout)})


def check_answers(
    batch: list[dict[str, Any]],
    predicted: list[Outcome],
    counts: Counter[str],
    refusals: dict[str, str],
) -> list[str]:
    """One ``syncd ingest`` run against the model: as many of each answer as predicted, and
    every refusal (event id -> rule, from its stderr) the one predicted for that event."""
    problems = []
    want = Counter(p.result for p in predicted)
    if +counts != +want:
        problems.append(f"ingest answered {dict(counts)}, the model expects {dict(want)}")
    expect = {ev["id"]: p for ev, p in zip(batch, predicted, strict=True)}
    for event_id, rule in refusals.items():
        p = expect.get(event_id)
        if p is None or p != Outcome("refused", rule):
            problems.append(f"event {event_id} refused [{rule}], the model expects {p}")
    return problems


def check_stored_answers(cfg: Config, expect: dict[str, Outcome]) -> list[str]:
    """Every event syncd keeps a record of (``inbound_events``) was answered as the model
    predicted on its first delivery (``applied`` or ``stale``), and no refused one is kept."""
    app = App.open(cfg, migrate=False)
    try:
        with app.sessions() as s:
            stored = dict(s.execute(select(InboundEventRow.id, InboundEventRow.outcome)).all())
    finally:
        app.close()
    problems = []
    for event_id, want in expect.items():
        got = stored.get(event_id)
        if want.result == "refused":
            if got is not None:
                problems.append(f"event {event_id}: refused, yet stored as {got}")
        elif got != want.result:
            problems.append(f"event {event_id}: stored as {got}, the model expects {want}")
    return problems


# -- calendars against the oracle ------------------------------------------------------------------


def check_caldav(
    tid: str, seen: dict[str, Seen], foreign: str, model: oracle.Platform, now: datetime
) -> list[str]:
    ours = [oracle.seen_ical(s.event) for uid, s in seen.items() if uid != foreign]
    return oracle.compare(tid, oracle.expected(model, tid, now), ours)


def check_google(
    tid: str, items: list[dict[str, Any]], foreign: str, model: oracle.Platform, now: datetime
) -> list[str]:
    ours = [oracle.seen_google(i) for i in items if i.get("iCalUID") != foreign]
    return oracle.compare(tid, oracle.expected(model, tid, now), ours)


# -- the therapist's own events --------------------------------------------------------------------


@dataclass(frozen=True)
class Foreign:
    """The therapist's own event as its server gives it: ETag and body bytes (CalDAV), or the
    whole event resource, ``etag`` and ``updated`` included (Google)."""

    where: str
    etag: str | None
    content: bytes | dict[str, Any]


def caldav_resource(server: CalDAVServer, url: str) -> Foreign:
    auth = (server.username, server.password)
    answer = httpx.get(url, auth=auth, timeout=10)
    answer.raise_for_status()
    return Foreign(url, answer.headers.get("etag"), answer.content)


def google_event(service: Any, calendar: str, event_id: str) -> Foreign:
    item: dict[str, Any] = service.events().get(calendarId=calendar, eventId=event_id).execute()
    return Foreign(f"{calendar}/{event_id}", item.get("etag"), item)


def compare_foreign(tid: str, before: Foreign, after: Foreign) -> list[str]:
    if (before.etag, before.content) == (after.etag, after.content):
        return []
    return [f"{tid}: the therapist's own event {before.where} changed: {before} -> {after}"]


# -- the therapist's hand edits --------------------------------------------------------------------


def hand_edit(rng: random.Random, server: CalDAVServer, calendar_url: str) -> str | None:
    """The therapist, in their own calendar app, retitles or deletes one of syncd's entries
    (If-Match on the ETag just read, as a client does); syncd must restore it. Returns what was
    done, None if there was nothing to touch or the entry changed meanwhile."""
    ours = sorted(
        (s for uid, s in read_calendar(server, calendar_url).items() if uid.startswith("syncd-")),
        key=lambda s: s.href,
    )
    if not ours:
        return None
    target = rng.choice(ours)
    url = httpx.URL(calendar_url).join(target.href)
    auth = (server.username, server.password)
    current = httpx.get(url, auth=auth, timeout=10)
    if current.status_code != 200:
        return None
    match = {"If-Match": current.headers.get("etag", "*")}
    if rng.random() < 0.7:
        body = current.text.replace("SUMMARY:", "SUMMARY:moved by me ", 1)
        headers = {**match, "Content-Type": "text/calendar; charset=utf-8"}
        answer = httpx.put(url, content=body.encode(), headers=headers, auth=auth, timeout=10)
        done = "edit"
    else:
        answer = httpx.delete(url, headers=match, auth=auth, timeout=10)
        done = "delete"
    return done if answer.status_code < 300 else None

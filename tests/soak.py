"""Soak: a seeded, mixed platform workload fed with ``syncd ingest`` while the real ``syncd run``
is SIGKILLed and restarted at random moments and a fault-injecting proxy sits in front of every
server (Radicale, Xandikos, the Google stand-in, the platform's webhook receiver), and the
therapists edit syncd's entries by hand. Every answer of ingest must be the one the workload's
own platform model predicts; afterwards every calendar must hold exactly the oracle's entries
for the platform as the workload knows it (tests/oracle.py; syncd's projection of what it
stored is compared as well), the therapists' own events must be as they were, and every
notification must have been delivered (the verdicts: tests/soak_verdict.py).

From pytest (tests/test_soak.py) or the command line::

    python -m tests.soak --events 1000 --therapists 50 --kills 20 --seconds 900 [--keep DIR]
    python -m tests.soak ... --mutation NAME   # syncd broken on purpose (tests/mutations.py)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import caldav
import httpx
import icalendar
from sqlalchemy import select

from syncd import google_auth, operations
from syncd.app import App
from syncd.config import Config
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.metrics import iter_samples
from syncd.project import Entry
from syncd.store.tables import ConnectionRow, OfferRow, OutboxRow
from tests import factories as f
from tests import mutations, oracle, soak_google
from tests import soak_verdict as verdict
from tests.caldav_servers import CalDAVServer, XandikosProcess
from tests.calendar_view import read_calendar
from tests.conftest import make_config, write_config
from tests.faults import Action, FaultProxy, Rule
from tests.google_standin import GoogleStandIn
from tests.google_standin.fixtures import build_service, entry_uid
from tests.platform_model import Outcome, PlatformModel
from tests.proc import jsonl, run_syncd, start_syncd

CLIENT_ID, CLIENT_SECRET = "syncd-soak", "syncd-soak-client-secret"
# What therapists choose and who their clients are: every privacy choice, zones on both sides
# of UTC and with half hours, names of one to three words, every kind of location.
ZONES = ("Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Sydney")
LABELS = ("none", "initials", "first_name")
NAMES = ("Jane Doe", "Ana María López", "Zoë O'Brien", "Li Wei", "Sam Reed")
LOCATIONS: tuple[dict[str, str], ...] = (
    {"type": "in_person", "address": "10 Harley St, London"},
    {"type": "video", "url": "https://video.example/room-7"},
    {"type": "video"},
    {"type": "phone"},
)
FATES = ("accepted", "rejected", "expire", "pending")  # of offers, in turn
WORKING_ALL_DAY = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
WEBHOOK_SECRET = b"soak-webhook-secret"
FOREIGN_START, FOREIGN_END = "2027-01-05T09:00:00+00:00", "2027-01-05T10:00:00+00:00"
REFUSED = re.compile(r"event (\S+) refused: .*?(?:\[rule: ([a-z_]+)\])?$")


def foreign_uid(tid: str) -> str:
    return f"foreign-{tid}@example.com"


@dataclass
class Report:
    events: int = 0
    duplicates_sent: int = 0
    stale_sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # what ingest answered, by result
    hand_edits: Counter[str] = field(default_factory=Counter)  # the therapists' own, by kind
    google_actions: Counter[str] = field(default_factory=Counter)  # in Google's UI, by kind
    negatives_sent: Counter[str] = field(default_factory=Counter)  # intended refusals, by rule
    refused: Counter[str] = field(default_factory=Counter)  # refusals seen, by rule
    kills: int = 0
    faults: Counter[str] = field(default_factory=Counter)  # by target and action
    passes: Counter[str] = field(default_factory=Counter)  # every pass, by outcome
    passes_with_changes: int = 0
    final_restarts: int = 0  # starts after the convergence, to deliver the last notifications
    targets: Counter[str] = field(default_factory=Counter)  # therapists per calendar server
    offers: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    mismatches: list[str] = field(default_factory=list)
    expired_offers: int = 0
    # holds released: seconds after expiry with a daemon running; after the restarted daemon
    # was ready when none was running at expiry (<= 0: by its first sweep, before anything else)
    release_lag: list[float] = field(default_factory=list)
    release_after_restart: list[float] = field(default_factory=list)
    notifications: Counter[str] = field(default_factory=Counter)  # outbox rows, by topic
    deliveries: int = 0  # webhook POSTs received (at least once: repeats included)
    torn_posts: int = 0  # POSTs whose body was cut short (the sender was killed mid-send)
    seconds: float = 0.0

    def summary(self) -> str:
        lag = sorted(self.release_lag)
        lag_text = f"{lag[len(lag) // 2]:.3f}/{lag[-1]:.3f}" if lag else "-"
        after = self.release_after_restart
        after_text = f"{len(after)} (latest {max(after):+.3f}s after ready)" if after else "0"
        return "\n".join(
            [
                f"events={self.events} duplicates={self.duplicates_sent} "
                f"stale={self.stale_sent} kills={self.kills} seconds={self.seconds:.1f}",
                f"answers={dict(sorted(self.answers.items()))} "
                f"hand_edits={dict(sorted(self.hand_edits.items()))} "
                f"google_actions={dict(sorted(self.google_actions.items()))}",
                f"therapists={dict(self.targets)}",
                f"refused={sum(self.refused.values())} by_rule={dict(sorted(self.refused.items()))}"
                f" intended={dict(sorted(self.negatives_sent.items()))}",
                f"faults={sum(self.faults.values())} {dict(sorted(self.faults.items()))}",
                f"passes={sum(self.passes.values())} {dict(sorted(self.passes.items()))} "
                f"passes_with_changes={self.passes_with_changes}",
                f"offers={self.offers} expired_offers={self.expired_offers} "
                f"hold_release_s(median/max)={lag_text} expired_while_down={after_text}",
                f"notifications={sum(self.notifications.values())} "
                f"{dict(sorted(self.notifications.items()))} webhook_posts={self.deliveries} "
                f"torn_posts={self.torn_posts}",
                f"convergence_checks={self.checks} final_restarts={self.final_restarts} "
                f"mismatches={len(self.mismatches)}",
            ]
        )


class Workload:
    """Generates events for therapists ``t-0..t-(n-1)`` as the platform would: it keeps its own
    view of each session (including what accepting or rejecting an offer did to it), and every
    time slot is unique, so no alternative ever overlaps another session. A few events are
    deliberately invalid (``negatives``: event id -> the rule that must refuse it).

    Every event also goes through ``model`` (tests/platform_model.py), which predicts syncd's
    answer and keeps the platform state the calendars are judged by (tests/oracle.py)."""

    def __init__(self, rng: random.Random, therapists: int) -> None:
        self.rng = rng
        self.tids = [f"t-{i}" for i in range(therapists)]
        self.model = PlatformModel()
        self.expect: dict[str, Outcome] = {}  # event id -> the answer to its first delivery
        self.therapists: dict[str, dict[str, Any]] = {}  # tid -> the platform's current data
        self.base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.sessions: dict[str, dict[str, Any]] = {}  # sid -> the platform's current data
        self.history: list[dict[str, Any]] = []  # every valid event sent, for resends
        self.offered: set[str] = set()
        self.expiring: list[dict[str, Any]] = []  # offers left to expire (their data)
        self.pending: list[dict[str, Any]] = []  # offers left pending past the run
        self.negatives: dict[str, str] = {}
        self.refused: set[str] = set()  # event ids ingest refused
        self.late: set[str] = set()  # expired offers already answered too late
        self.slot = 0
        self.n = 0
        self.steps = 0
        self.batches = 0
        self.duplicates = 0
        self.fates: Counter[str] = Counter()
        # therapists whose calendar is on Google: every other reserved slot is theirs, so the
        # therapists' actions in Google have occurrences of a series to move and delete
        self.on_google: list[str] = []

    def _start(self) -> datetime:
        self.slot += 1
        return self.base + timedelta(days=3, hours=self.slot)

    def therapist(self, tid: str) -> dict[str, Any]:
        """Therapist ``t-i``'s first version: its zone and privacy choices vary with ``i``."""
        i = int(tid.split("-")[1])
        data: dict[str, Any] = {
            "zone": ZONES[i % len(ZONES)],
            "working_hours": WORKING_ALL_DAY,
            "privacy": {
                "client_label": LABELS[i % len(LABELS)],
                "include_location": i % 4 != 3,
            },
        }
        self.therapists[tid] = {"version": 1, **data}
        return f.therapist(tid, **data)

    def _therapist_changes(self) -> dict[str, Any]:
        """The therapist changes their privacy choices (now and then their zone too): every
        entry is retitled."""
        tid = self.rng.choice(self.tids)
        old = self.therapists[tid]
        data = {
            **old,
            "version": old["version"] + 1,
            "privacy": {
                "client_label": self.rng.choice(LABELS),
                "include_location": self.rng.random() < 0.7,
            },
        }
        if self.rng.random() < 0.3:
            data["zone"] = self.rng.choice(ZONES)
        self.therapists[tid] = data
        ev = f.therapist(tid, **data)
        self.history.append(ev)
        return ev

    def predict(self, batch: list[dict[str, Any]], now: datetime) -> list[Outcome]:
        """The model's answer to each event of ``batch``, in order (a refusal changes
        nothing). Checks the generator too: each intended negative must be refused by its
        rule, everything else accepted."""
        answers = []
        for ev in batch:
            answer = self.model.send(ev, now)
            self.expect.setdefault(ev["id"], answer)
            want = self.negatives.get(ev["id"])
            if (answer.result == "refused") != (want is not None) or answer.rule != want:
                raise AssertionError(f"the generator made {ev} meaning {want}: {answer}")
            answers.append(answer)
        return answers

    def _client(self) -> dict[str, Any]:
        return {
            "client_name": self.rng.choice(NAMES),
            "location": self.rng.choice(LOCATIONS),
            "status": "unconfirmed" if self.rng.random() < 0.25 else "confirmed",
        }

    def _negative(self, ev: dict[str, Any], rule: str) -> list[dict[str, Any]]:
        self.negatives[ev["id"]] = rule
        return [ev]

    def next(self) -> list[dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        live = [s for s, d in self.sessions.items() if d["status"] != "cancelled"]
        self.steps += 1
        if live and self.steps % 25 == 0:  # one step in 25: what the rules must refuse
            return self._invalid(live)
        if self.steps <= len(self.on_google[:2]):  # a series to act on in Google, early
            return self._reservation(self.on_google[self.steps - 1])
        if roll < 0.33 or not live:
            self.n += 1
            sid = f"s-{self.n}"
            ev = f.session(sid, self._start(), therapist_id=rng.choice(self.tids), **self._client())
        elif roll < 0.47:
            sid = rng.choice(live)
            if self.sessions[sid]["status"] == "unconfirmed" and rng.random() < 0.5:
                ev = self._bump(sid)  # confirmed where it is
            else:
                ev = self._bump(sid, start=self._start())
        elif roll < 0.55:
            ev = self._bump(
                rng.choice(live),
                status="cancelled",
                cancellation={"reason": "client_cancelled", "by": "client"},
            )
        elif roll < 0.75:
            return self._offer(rng.choice(live))
        elif roll < 0.85 and self.history:
            self.duplicates += 1
            return [rng.choice(self.history)]  # the same event id again
        elif roll < 0.98:
            return self._reservation()
        else:
            return [self._therapist_changes()]
        self.history.append(ev)
        self.sessions[ev["data"]["id"]] = ev["data"]
        return [ev]

    def _bump(self, sid: str, start: datetime | None = None, **extra: Any) -> dict[str, Any]:
        old = self.sessions[sid]
        s = datetime.fromisoformat(old["start"]) if start is None else start
        if start is not None:
            extra["change"] = {"reason": "client_requested", "by": "client"}
        ev: dict[str, Any] = f.session(
            sid,
            s,
            version=old["version"] + 1,
            therapist_id=old["therapist_id"],
            client=old["client"],
            location=old["location"],
            **extra,
        )
        return ev

    def _invalid(self, live: list[str]) -> list[dict[str, Any]]:
        """One event the booking rules must refuse, chosen among what can be made right now."""
        now = datetime.now(UTC)
        late = [o for o in self.expiring if o["id"] not in self.late and _at(o["expires_at"]) < now]
        kinds = (
            ["reason_required"]
            + (["late_response"] * bool(late))
            + (["offer_locked"] * bool(self.pending))
        )
        kind = self.rng.choice(kinds)
        if kind == "late_response":  # the client accepted after the offer had expired
            offer = self.rng.choice(late)
            self.late.add(offer["id"])
            responded = _at(offer["expires_at"]) + timedelta(seconds=30)
            answer = {
                **offer,
                "version": 2,
                "state": "accepted",
                "accepted_alternative": 0,
                "responded_at": responded.isoformat(),
            }
            return self._negative(f.event("offer.upserted", answer), kind)
        if kind == "offer_locked":  # the therapist tries to change a pending offer
            offer = self.rng.choice(self.pending)
            alt = self._start()
            changed = {
                **offer,
                "version": offer["version"] + 1,
                "alternatives": [
                    {"start": alt.isoformat(), "end": (alt + timedelta(minutes=50)).isoformat()}
                ],
            }
            return self._negative(f.event("offer.upserted", changed), kind)
        # a move without the reason the rules require
        old = self.sessions[self.rng.choice(live)]
        ev = f.session(
            old["id"],
            self._start(),
            version=old["version"] + 1,
            therapist_id=old["therapist_id"],
            client=old["client"],
            location=old["location"],
        )
        return self._negative(ev, "reason_required")

    def _offer(self, sid: str) -> list[dict[str, Any]]:
        if sid in self.offered:
            return []
        self.offered.add(sid)
        session = self.sessions[sid]
        now = datetime.now(UTC)
        alts = [self._start(), self._start()]
        fate = FATES[sum(self.fates.values()) % len(FATES)]  # each in turn
        self.fates[fate] += 1
        expires = now + (
            # long enough for ingest to store it first on a loaded machine, so that the time
            # from expiry to release is syncd's alone
            timedelta(seconds=self.rng.uniform(10, 20)) if fate == "expire" else timedelta(hours=2)
        )
        data: dict[str, Any] = {
            "id": f"o-{sid}",
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
            self.expiring.append(dict(data))
        elif fate == "pending":
            self.pending.append(dict(data))
        else:
            answer = {**data, "version": 2, "state": fate, "responded_at": now.isoformat()}
            if fate == "accepted":
                i = self.rng.randrange(2)
                answer["accepted_alternative"] = i
                # the session moves in place to the accepted time (same version)
                self.sessions[sid] = {
                    **session,
                    "start": data["alternatives"][i]["start"],
                    "end": data["alternatives"][i]["end"],
                }
            else:  # rejected: the session is cancelled
                self.sessions[sid] = {**session, "status": "cancelled"}
            out.append(f.event("offer.upserted", answer))
        self.history.extend(out)
        return out

    def _reservation(self, tid: str | None = None) -> list[dict[str, Any]]:
        """A weekly reserved slot in the therapist's zone, four times; then, at random: ended
        before it began, ended after two occurrences, its client's session booked on the
        second occurrence (an EXDATE), or left as it is. For ``tid``: left as it is."""
        self.n += 1
        rid = f"r-{self.n}"
        kept = tid is not None
        if tid is None:
            tid = self.rng.choice(self.on_google if self.on_google and self.n % 2 else self.tids)
        zone = ZoneInfo(self.therapists[tid]["zone"])
        first = (self.base + timedelta(days=400 + self.n)).replace(tzinfo=None, hour=7, minute=13)
        data: dict[str, Any] = {
            "id": rid,
            "version": 1,
            "therapist_id": tid,
            "client": {"id": f"c-{rid}", "name": self.rng.choice(NAMES)},
            "first_start_local": first.isoformat(),
            "timezone": zone.key,
            "duration_minutes": 30,
            "rrule": "FREQ=WEEKLY;COUNT=4",
            "state": "active",
        }
        out = [f.event("reserved_slot.upserted", data)]
        second = (first + timedelta(days=7)).replace(tzinfo=zone).astimezone(UTC)
        fate = 1.0 if kept else self.rng.random()
        if fate < 0.35:  # ended before its first occurrence
            out.append(f.event("reserved_slot.upserted", {**data, "version": 2, "state": "ended"}))
        elif fate < 0.55:  # the client stops after two weeks
            until = (second + timedelta(days=1)).isoformat()
            ended = {**data, "version": 2, "state": "ended", "until": until}
            out.append(f.event("reserved_slot.upserted", ended))
        elif fate < 0.8:  # the client's own session on the second occurrence
            sid = f"s-{rid}"
            ev = f.session(sid, second, therapist_id=tid, client=data["client"])
            self.sessions[sid] = ev["data"]
            out.append(ev)
        self.history.extend(out)
        return out

    def stale(self, batch: list[dict[str, Any]], report: Report) -> None:
        """Every fourth batch, an older session version after a newer one, under a new event id
        (a real redelivery of an old state), which must be ignored as stale."""
        self.batches += 1
        if self.batches % 4 == 1:
            sent = [e for e in self.history if e["type"] == "session.upserted"]
            # a version older than the session's latest when there is one, best an earlier
            # move (which the rules would let through): out of order for real, so that
            # applying it would show in the calendar, not only in the answer
            older = [
                e for e in sent if e["data"]["version"] < self.sessions[e["data"]["id"]]["version"]
            ]
            moves = [e for e in older if "change" in e["data"]]
            if sent:
                e = self.rng.choice(moves or older or sent)
                batch.append(f.event(e["type"], e["data"]))
                report.stale_sent += 1


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


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
                items, exceptions = soak_google.split(google.read(tid, google_calendar_id(cal)))
                problems += soak_google.check_occurrences(tid, items, exceptions)
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


# -- driving -----------------------------------------------------------------------------------


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


def run(
    workdir: Path,
    servers: list[CalDAVServer],
    *,
    google: GoogleStandIn | None = None,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    seed: int = 7,
    fault_rate: float = 0.05,
    batch_steps: tuple[int, int] = (4, 20),
    log: Callable[[str], object] = print,
    mutation: str | None = None,
) -> Report:
    """``batch_steps``: how many workload steps (one to three events each) go into one
    ``syncd ingest`` run, at random between the two bounds. ``seconds`` is a deadline, not a
    budget: the run does ``events`` and ``kills`` whatever the machine's speed, and reaching
    the deadline first is a mismatch. ``mutation``: run the ``syncd`` processes broken by
    that mutation of tests/mutations.py (to see the verdicts catch it)."""
    t0 = time.monotonic()
    report = Report()
    with ExitStack() as stack:
        if mutation is not None:
            stack.enter_context(mutated_processes(mutation))
        faults = FaultSwitch(seed, fault_rate)
        stack.callback(faults.close)
        receiver = Receiver()
        stack.callback(receiver.close)
        via = {}
        for srv in servers:
            proxy = faults.proxy(srv.kind, srv.url)
            via[srv.url] = urljoin(proxy.url, urlsplit(srv.url).path)
        hook = faults.proxy("webhook", receiver.url)
        secret = workdir / "webhook.secret"
        secret.write_bytes(WEBHOOK_SECRET)
        port = free_port()
        sections: dict[str, Any] = {
            "sync": {"interval": 2},
            "offers": {"sweep_interval": 0.5},
            "http": {"port": port},
            "platform": {
                "webhook_url": hook.url + "hook",
                "webhook_secret_file": str(secret),
                "timeout": 5,
                "retry_base": 0.2,
                "retry_cap": 2,
                "poll_interval": 0.5,
                "batch": 200,
            },
        }
        target: GoogleTarget | None = None
        if google is not None:
            gproxy = faults.proxy("google", google.root_url)
            target = GoogleTarget(google, gproxy.url)
            client_secret = workdir / "google.secret"
            client_secret.write_text(CLIENT_SECRET)
            sections["google"] = {
                "client_id": CLIENT_ID,
                "client_secret_file": str(client_secret),
                "api_url": gproxy.url,
                "token_url": gproxy.url + "token",  # token refreshes meet the faults too
                "auth_url": google.auth_url,
                "revoke_url": google.revoke_url,
                "timeout": 10,
                "min_request_interval": 0,
            }
        cfg = make_config(workdir / "state", **sections)
        path = write_config(workdir / "syncd.toml", cfg)
        world = World(cfg, path, port, faults, receiver, servers, via, target)
        try:
            _drive(
                workdir,
                world,
                report,
                seed,
                events,
                therapists,
                kills,
                seconds,
                batch_steps,
                t0,
                log,
            )
        finally:
            report.faults = faults.counts()
            report.deliveries = sum(receiver.ids.values())
            report.torn_posts = receiver.torn
    report.seconds = time.monotonic() - t0
    return report


def _setup(world: World, report: Report, work: Workload) -> None:
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


def _refusals(stderr: str, work: Workload, report: Report) -> dict[str, str]:
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


def _converged(
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


def _drive(
    workdir: Path,
    world: World,
    report: Report,
    seed: int,
    events: int,
    therapists: int,
    kills: int,
    seconds: float,
    batch_steps: tuple[int, int],
    t0: float,
    log: Callable[[str], object],
) -> None:
    rng = random.Random(seed)
    work = Workload(rng, therapists)
    _setup(world, report, work)
    log(f"set up {therapists} therapists in {time.monotonic() - t0:.1f}s")
    edits = random.Random(f"{seed}/edits")
    runlog = workdir / "run.log"
    world.faults.on = True
    batches = 0
    kill_times: list[datetime] = []
    stored: dict[str, datetime] = {}  # offer id -> when ingest had stored it (at the latest)
    with daemon(world.path, runlog) as proc:
        # The workload is a count (events and kills), whatever the machine's speed; ``seconds``
        # is only a deadline, and reaching it is a failure, not a shorter run.
        while report.events < events or report.kills < kills:
            if time.monotonic() - t0 > seconds:
                report.mismatches.append(
                    f"deadline of {seconds:.0f}s reached after {report.events} of {events} "
                    f"events and {report.kills} of {kills} kills"
                )
                break
            # batches are made just before they are sent: offer expiries are real time
            batch: list[dict[str, Any]] = []
            for _ in range(rng.randint(*batch_steps)):
                batch.extend(work.next())
            work.stale(batch, report)
            predicted = work.predict(batch, datetime.now(UTC))
            out = run_syncd(world.path, "ingest", "-", stdin=jsonl(batch))
            report.events += len(batch)
            batches += 1
            if out.returncode not in (0, 1) or "Traceback" in out.stderr:
                raise AssertionError(f"ingest failed: {out.stderr}")
            refused = _refusals(out.stderr, work, report)
            counts = verdict.answer_counts(out.stdout)
            report.answers += counts
            report.mismatches += verdict.check_answers(batch, predicted, counts, refused)
            done = datetime.now(UTC)
            for ev in batch:
                if ev["type"] == "offer.upserted" and ev["data"]["state"] == "pending":
                    stored.setdefault(ev["data"]["id"], done)
            if world.calendars and batches % 3 == 1:
                tid = edits.choice(sorted(world.calendars))
                touched = verdict.hand_edit(edits, *world.calendars[tid])
                if touched:
                    report.hand_edits[touched] += 1
            elif world.google and world.google_calendars:
                g = world.google
                acted = soak_google.act(
                    edits, g.standin, g.service, world.google_calendars, report.google_actions
                )
                if acted:
                    report.google_actions[acted] += 1
            if batches % 10 == 0:
                log(f"{report.events} events, {report.kills} kills, {time.monotonic() - t0:.0f}s")
            left = max(1.0, (events - report.events) / (report.events / batches))
            if report.kills < kills and rng.random() < (kills - report.kills) / left:
                time.sleep(rng.uniform(0, 0.8))  # a random moment, often mid-pass
                report.passes += scrape_passes(world.port)
                kill_times.append(datetime.now(UTC))
                proc[0].send_signal(signal.SIGKILL)
                proc[0].wait(timeout=10)
                report.kills += 1
                proc[0] = start_syncd(world.path, "run", log=runlog)
        # faults off; let every left-to-expire offer pass its expiry, then wait for one quiet
        # pass of every therapist and convergence
        world.faults.on = False
        quiet_from = datetime.now(UTC)
        last_expiry = max((_at(o["expires_at"]) for o in work.expiring), default=quiet_from)
        time.sleep(max(0.0, (last_expiry - datetime.now(UTC)).total_seconds()) + 2)
        deadline = time.monotonic() + max(60.0, seconds - (time.monotonic() - t0))
        expiring = [o["id"] for o in work.expiring]
        shown = time.monotonic()
        while True:
            report.checks += 1
            pending = _converged(world, expiring, quiet_from, work.model.platform)
            if not pending or time.monotonic() > deadline:
                break
            if time.monotonic() - shown > 30:  # what it still waits for, now and then
                shown = time.monotonic()
                log(f"waiting for convergence: {len(pending)} left, first: {pending[0]}")
            time.sleep(1)
        report.passes += scrape_passes(world.port)
        proc[0].send_signal(signal.SIGTERM)
        proc[0].wait(timeout=30)
        # A notification written just before the stop waits in the outbox for the next start
        # (at least once, not at once): start again until the outbox is empty.
        while check_outbox(world.cfg, world.receiver)[1] and time.monotonic() < deadline + 60:
            report.final_restarts += 1
            proc[0] = start_syncd(world.path, "run", log=runlog)
            until = time.monotonic() + 30
            while check_outbox(world.cfg, world.receiver)[1] and time.monotonic() < until:
                time.sleep(1)
            report.passes += scrape_passes(world.port)
            proc[0].send_signal(signal.SIGTERM)
            proc[0].wait(timeout=30)
    # the final verdict, with the daemon stopped
    report.mismatches += check(world.cfg, world.behind, world.google, work.model.platform)
    report.mismatches += check_foreign(world)
    report.mismatches += verdict.check_stored_answers(world.cfg, work.expect)
    released, problems = check_offers(world.cfg, expiring)
    report.mismatches += problems
    report.expired_offers = len(released)
    report.notifications, problems = check_outbox(world.cfg, world.receiver)
    report.mismatches += problems
    for event_id, rule in work.negatives.items():
        report.negatives_sent[rule] += 1
        if event_id not in work.refused:
            report.mismatches.append(f"intended negative {event_id} ({rule}) was not refused")
    text = runlog.read_text()
    report.release_lag, report.release_after_restart = release_lags(
        released, stored, kill_times, text
    )
    for key, (n, first) in _tracebacks(text).items():
        report.mismatches.insert(0, f"{n} tracebacks in the daemon log: {key}\n{first}")
    report.passes_with_changes = len(re.findall(r": [1-9][0-9]*/[0-9]+ actions applied", text))
    report.duplicates_sent = work.duplicates
    report.offers = dict(work.fates)


def _tracebacks(log_text: str) -> dict[str, tuple[int, str]]:
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


@contextmanager
def mutated_processes(name: str) -> Iterator[None]:
    """Every ``syncd`` process started meanwhile loads tests/mutation_hook/sitecustomize.py,
    which applies mutation ``name``."""
    assert name in mutations.MUTATIONS, name
    root = Path(__file__).resolve().parent.parent
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", mutations.ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(mutations.HOOK_DIR), str(root), *filter(None, [saved["PYTHONPATH"]])]
    )
    os.environ[mutations.ENV] = name
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def daemon(path: Path, runlog: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The running ``syncd run`` (replaced in place on restart), killed if left running."""
    holder = [start_syncd(path, "run", log=runlog)]
    try:
        yield holder
    finally:
        if holder[0].poll() is None:
            holder[0].kill()
            holder[0].wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--therapists", type=int, default=50)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--batch", type=int, nargs=2, default=(6, 36), metavar=("MIN", "MAX"))
    p.add_argument("--keep", type=Path, help="work in this (new) directory and keep it")
    p.add_argument(
        "--mutation",
        choices=sorted(mutations.MUTATIONS),
        help="run syncd broken this way (tests/mutations.py): the verdicts must catch it",
    )
    a = p.parse_args(argv)
    with ExitStack() as stack:
        if a.keep:
            root = a.keep
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncd-soak-")))
        for sub in ("xandikos", "radicale", "work"):
            (root / sub).mkdir()
        xandikos = XandikosProcess(root / "xandikos")
        xandikos.start()
        stack.callback(xandikos.stop)
        rad = stack.enter_context(
            EmbeddedRadicale(root / "radicale", username="therapist", password="s3cret pw")
        )
        google = stack.enter_context(GoogleStandIn())
        servers = [
            CalDAVServer("radicale", rad.url, "therapist", "s3cret pw"),
            CalDAVServer("xandikos", xandikos.url, "user", "unused"),
        ]
        report = run(
            root / "work",
            servers,
            google=google,
            events=a.events,
            therapists=a.therapists,
            kills=a.kills,
            seconds=a.seconds,
            seed=a.seed,
            batch_steps=tuple(a.batch),
            mutation=a.mutation,
        )
    print(report.summary())
    for m in report.mismatches[:50]:
        print("MISMATCH", m)
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

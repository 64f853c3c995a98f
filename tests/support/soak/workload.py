"""The soak's workload: events as the platform would send them, and what it chose."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.support import factories as f
from tests.support.platform_model import Outcome, PlatformModel
from tests.support.soak.report import Report

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


class Workload:
    """Generates events for therapists ``t-0..t-(n-1)`` as the platform would: it keeps its own
    view of each session (including what accepting or rejecting an offer did to it), and every
    time slot is unique, so no alternative ever overlaps another session. A few events are
    deliberately invalid (``negatives``: event id -> the rule that must refuse it).

    Every event also goes through ``model`` (tests/support/platform_model.py), which predicts
    syncd's answer and keeps the platform state the calendars are judged by
    (tests/support/oracle.py)."""

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
        late = [
            o
            for o in self.expiring
            if o["id"] not in self.late and parse_instant(o["expires_at"]) < now
        ]
        kinds = (
            ["reason_required"]
            + (["late_response"] * bool(late))
            + (["offer_locked"] * bool(self.pending))
        )
        kind = self.rng.choice(kinds)
        if kind == "late_response":  # the client accepted after the offer had expired
            offer = self.rng.choice(late)
            self.late.add(offer["id"])
            responded = parse_instant(offer["expires_at"]) + timedelta(seconds=30)
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


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)

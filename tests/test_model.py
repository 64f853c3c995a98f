"""A stateful model of the whole engine (issue 7, part 3).

The real Engine, Ingestor, expiry sweep and availability run against a real SQLAlchemy store
(in-memory SQLite) and the in-memory calendar of tests/support/memory_calendar.py. Hypothesis
interleaves platform events, clock advances, therapist edits, connector faults and restarts.

The machine keeps its own model of the platform (tests/support/platform_model.py): every event's
answer (applied, duplicate, stale, refused by a named rule) must be the one the model predicts,
every sweep must expire exactly the offers the model says are due, and after every quiet pass the
calendar must hold exactly what the oracle (tests/support/oracle.py) derives from that model: UIDs,
instants, zones, titles under the therapist's privacy choices, status, CLASS, location, series
and their EXDATEs. It must also be the projection of the stored state (syncd's own view),
compared as well, never instead."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from connectors.base import Changes, FetchedItem, RemoteItem
from connectors.errors import Transient
from syncd import availability
from syncd import domain as d
from syncd.engine import Engine
from syncd.expiry import expire_due
from syncd.ingest import Ingestor
from syncd.occupancy import occupied
from syncd.plan import resource_name
from syncd.project import is_ours, project, uid_for
from syncd.retry import RetryPolicy
from syncd.store import repo
from syncd.store.tables import Base, ConnectionRow
from tests.support import factories as f
from tests.support import oracle
from tests.support.clock import FakeClock
from tests.support.memory_calendar import MemoryCalendar
from tests.support.platform_model import Outcome, PlatformModel
from tests.test_plan import edited_by_therapist, foreign_body, parse_ours

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SESSIONS = ["s-1", "s-2", "s-3", "s-4"]
RESERVATIONS = ["r-1", "r-2"]
WORKDAYS = [{"weekday": wd, "start": "09:00", "end": "17:00"} for wd in range(7)]
# Each session's client and place: names of several words and scripts, every kind of location.
CLIENTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "s-1": ({"id": "c-s-1", "name": "Jane Doe"}, {"type": "in_person", "address": "10 Harley St"}),
    "s-2": (
        {"id": "c-s-2", "name": "Ana María López"},
        {"type": "video", "url": "https://meet.example/abc"},
    ),
    "s-3": ({"id": "c-s-3", "name": "Zoë O'Brien"}, {"type": "video"}),
    "s-4": ({"id": "c-s-4", "name": "Li Wei"}, {"type": "phone"}),
    # the sessions of the clients with a reserved slot, which take its occurrences
    "s-r-1": ({"id": "c-r-1", "name": "Sam Reed"}, {"type": "in_person", "address": "Room 2"}),
    "s-r-2": ({"id": "c-r-2", "name": "Kim Park"}, {"type": "phone"}),
}
RULE = re.compile(r"\[rule: ([a-z_]+)\]$")
_evt = itertools.count(1)


class FaultyCalendar(MemoryCalendar):
    """The in-memory calendar, failing the next ``fail_next`` protocol calls with Transient."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0

    def _fault(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise Transient("injected fault")

    def changes(self, token: str | None) -> Changes:
        self._fault()
        return super().changes(token)

    def get(self, href: str) -> FetchedItem:
        self._fault()
        return super().get(href)

    def create(self, name: str, body: str) -> RemoteItem:
        self._fault()
        return super().create(name, body)

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        self._fault()
        return super().update(href, body, etag)

    def delete(self, href: str, etag: str | None) -> None:
        self._fault()
        super().delete(href, etag)


def event(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"m-{next(_evt)}", "type": type_, "occurred_at": T0.isoformat(), "data": data}


class EngineModel(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        db = create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        Base.metadata.create_all(db)
        self.db = db
        self.sessions = sessionmaker(db, expire_on_commit=False)
        self.clock = FakeClock(T0)
        self.cal = FaultyCalendar()
        self.ingestor = Ingestor(self.sessions, self.clock, hold=timedelta(hours=24))
        self.engine = self._new_engine()
        self.model = PlatformModel(hold=timedelta(hours=24))
        self.versions: dict[str, int] = {}
        self.sent: list[dict[str, Any]] = []
        self.offers: dict[str, dict[str, Any]] = {}  # offer id -> its last version stored
        self.foreign: dict[str, tuple[str, str]] = {}
        self._ingest(
            f.therapist(
                working_hours=WORKDAYS, slot_minutes=50, buffer_minutes=10, version=self._next("t")
            )
        )
        with self.sessions.begin() as s:
            s.add(
                ConnectionRow(
                    therapist_id="t-1",
                    provider="caldav",
                    url="https://fake.invalid/",
                    username="therapist",
                    secret=b"not used",
                    calendar_url=None,
                    state="ok",
                    sync_token=None,
                    failures=0,
                    created_at=T0,
                )
            )

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
            self.db.dispose()

    def _new_engine(self) -> Engine:
        return Engine(
            self.sessions,
            lambda _conn: self.cal,
            clock=self.clock,
            policy=RetryPolicy(attempts=2, base=1e-6, cap=1e-6),
        )

    def _ingest(self, raw: dict[str, Any]) -> bool:
        """Send one event; syncd's answer must be the model's (refusals included: nothing of
        them is stored, by the model or by syncd)."""
        self.sent.append(raw)
        want = self.model.send(raw, self.clock.now)
        got = self.ingestor.ingest(raw)
        found = RULE.search(got.error or "")
        answer = Outcome(got.result.value, found.group(1) if found else None)
        assert answer == want, (
            f"event {raw['id']} ({raw['type']} {raw['data']['id']} v{raw['data']['version']}): "
            f"syncd answered {answer}, the model expects {want} ({got.error})"
        )
        return got.ok

    def _next(self, entity: str) -> int:
        self.versions[entity] = self.versions.get(entity, 0) + 1
        return self.versions[entity]

    # -- platform events ----------------------------------------------------------------------

    @rule(
        zone=st.sampled_from(["Europe/London", "America/New_York", "Australia/Sydney"]),
        active=st.booleans(),
        buffer=st.sampled_from([0, 10, 30]),
        label=st.sampled_from(["none", "initials", "first_name"]),
        location=st.booleans(),
    )
    def therapist_upserted(
        self, zone: str, active: bool, buffer: int, label: str, location: bool
    ) -> None:
        self._ingest(
            f.therapist(
                version=self._next("t"),
                zone=zone,
                working_hours=WORKDAYS,
                slot_minutes=50,
                buffer_minutes=buffer,
                active=active,
                privacy={"client_label": label, "include_location": location},
            )
        )

    def _session(self, sid: str, start: datetime, **extra: Any) -> bool:
        client, location = CLIENTS[sid]
        return self._ingest(
            f.session(
                sid, start, version=self._next(sid), client=client, location=location, **extra
            )
        )

    def _stored_start(self, sid: str) -> datetime | None:
        """Where the platform has the session now (an accepted offer moved it, too)."""
        known = self.model.platform.sessions.get(sid)
        return None if known is None else known.start

    @rule(
        sid=st.sampled_from(SESSIONS),
        hours=st.sampled_from([0, 0]) | st.integers(1, 24 * 5),
        status=st.sampled_from(["confirmed", "unconfirmed"]),
        # mostly a valid move; without a reason the move is refused whole
        reason=st.sampled_from([None, "client_requested", "client_requested", "correcting_error"]),
    )
    def session_upserted(self, sid: str, hours: int, status: str, reason: str | None) -> None:
        """A new session, or a known one moved (``hours`` 0: kept in place, e.g. confirmed)."""
        old = self._stored_start(sid)
        start = self.clock.now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)
        extra: dict[str, Any] = {}
        if old is not None and hours == 0:
            start = old
        elif old is not None and reason is not None:
            extra["change"] = self._change(reason, old)
        self._session(sid, start, status=status, **extra)

    def _change(self, reason: str, old: datetime) -> dict[str, str]:
        return {"reason": reason, "by": "team" if old <= self.clock.now else "therapist"}

    @rule(sid=st.sampled_from([*SESSIONS, "s-r-1"]))
    def session_cancelled(self, sid: str) -> None:
        start = self._stored_start(sid) or self.clock.now + timedelta(hours=5)
        self._session(
            sid,
            start,
            status="cancelled",
            cancellation={"reason": "client_cancelled", "by": "client"},
        )

    @rule(rid=st.sampled_from(RESERVATIONS), k=st.integers(0, 3))
    def session_on_reserved_slot(self, rid: str, k: int) -> None:
        """The reserved client's own session booked (or moved) onto occurrence ``k`` of the
        series, which must then carry an EXDATE for it."""
        slot = self.model.platform.reservations.get(rid)
        starts = oracle.occurrences(slot) if slot is not None else []
        if len(starts) <= k:
            return
        sid = f"s-{rid}"
        old = self._stored_start(sid)
        extra = {"change": self._change("client_requested", old)} if old is not None else {}
        self._session(sid, starts[k], **extra)

    @rule(
        data=st.data(),
        series=st.sampled_from("ab"),
        offsets=st.lists(st.integers(2, 24 * 4), min_size=1, max_size=3, unique=True),
        state=st.sampled_from(["pending", "pending", "pending", "accepted", "rejected"]),
    )
    def offer_upserted(
        self, data: st.DataObject, series: str, offsets: list[int], state: str
    ) -> None:
        """A new offer for a session (mostly a known one), or a changed one (refused while
        the offer is open)."""
        known = sorted(self.model.platform.sessions)
        unknown_too = not known or data.draw(st.integers(0, 5), label="any session") == 0
        sid = data.draw(st.sampled_from(SESSIONS if unknown_too else known))
        self.offer(sid, series, offsets, state)

    def offer(self, sid: str, series: str, offsets: list[int], state: str) -> None:
        oid = f"o-{sid}-{series}"
        base = self.clock.now.replace(minute=0, second=0, microsecond=0)
        data: dict[str, Any] = {
            "id": oid,
            "version": self._next(oid),
            "session_id": sid,
            "alternatives": [
                {
                    "start": (base + timedelta(hours=h)).isoformat(),
                    "end": (base + timedelta(hours=h, minutes=50)).isoformat(),
                }
                for h in offsets
            ],
            "sent_at": (self.clock.now - timedelta(minutes=5)).isoformat(),
            "state": state,
        }
        if state != "pending":
            data["responded_at"] = self.clock.now.isoformat()
        if state == "accepted":
            data["accepted_alternative"] = 0
        if self._ingest(event("offer.upserted", data)):
            self.offers[oid] = data

    @rule(data=st.data(), accept=st.booleans())
    def offer_answered(self, data: st.DataObject, accept: bool) -> None:
        """The client's answer to an offer, as its next version (refused as late after the
        expiry, or once the offer was answered)."""
        if not self.offers:
            return
        oid = data.draw(st.sampled_from(sorted(self.offers)))
        self.answer(oid, data.draw(st.integers(0, 2)) if accept else None)

    def answer(self, oid: str, alternative: int | None) -> None:
        answer = dict(self.offers[oid], version=self._next(oid))
        answer["responded_at"] = self.clock.now.isoformat()
        if alternative is None:
            answer["state"] = "rejected"
        else:
            answer["state"] = "accepted"
            answer["accepted_alternative"] = alternative % len(answer["alternatives"])
        if self._ingest(event("offer.upserted", answer)):
            self.offers[oid] = answer

    @rule(
        rid=st.sampled_from(RESERVATIONS),
        state=st.sampled_from(["active", "ended"]),
        rrule=st.sampled_from(["FREQ=WEEKLY", "FREQ=WEEKLY;COUNT=6", "FREQ=DAILY;INTERVAL=3"]),
    )
    def reserved_slot(self, rid: str, state: str, rrule: str) -> None:
        local = (self.clock.now + timedelta(days=1)).replace(tzinfo=None, minute=0, hour=11)
        data: dict[str, Any] = {
            "id": rid,
            "version": self._next(rid),
            "therapist_id": "t-1",
            "client": CLIENTS[f"s-{rid}"][0],
            "first_start_local": local.isoformat(),
            "timezone": "Europe/London",
            "duration_minutes": 50,
            "rrule": rrule,
            "state": state,
        }
        if state == "ended":
            data["until"] = (self.clock.now + timedelta(days=8)).isoformat()
        self._ingest(event("reserved_slot.upserted", data))

    @rule(data=st.data())
    def duplicate_or_stale(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        """The same event again (answered ``duplicate`` unless it was refused, as nothing of a
        refusal is kept), or its data under a new event id (``stale`` unless it is still the
        newest version): ``_ingest`` holds syncd to the model's answer."""
        raw = data.draw(st.sampled_from(self.sent))
        if data.draw(st.booleans(), label="stale copy"):
            raw = dict(raw, id=f"m-{next(_evt)}")  # a new id, an old version
        self._ingest(raw)

    # -- time, the therapist, faults, restarts --------------------------------------------------

    @rule(delta=st.sampled_from([timedelta(minutes=10), timedelta(hours=3), timedelta(hours=25)]))
    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    @rule(data=st.data(), act=st.sampled_from(["edit", "delete"]))
    def therapist_touches_ours(self, data: st.DataObject, act: str) -> None:
        ours = sorted(h for h in self.cal.items if is_ours(resource_name(h)))
        if ours:
            self.touch(data.draw(st.sampled_from(ours)), act)

    def touch(self, href: str, act: str) -> None:
        if act == "edit":
            self.cal.put(href, edited_by_therapist(self.cal.items[href][1]))
        else:
            self.cal.remove(href)

    @rule(name=st.sampled_from(["dentist.ics", "gym class.ics", "3F2504E0-4F89.ics"]))
    def therapist_adds_foreign(self, name: str) -> None:
        href = self.cal.href_for(name)
        self.cal.put(href, foreign_body(name, len(self.foreign)))
        self.foreign[href] = self.cal.items[href]

    @rule(n=st.integers(1, 4))
    def faulty_pass(self, n: int) -> None:
        self.cal.fail_next = n
        self.engine.run_pass("t-1")  # may fail; the next quiet pass must repair everything
        self.cal.fail_next = 0

    @rule()
    def restart(self) -> None:
        self.engine.close()
        self.engine = self._new_engine()

    @rule()
    def quiet_pass(self) -> None:
        now = self.clock.now
        expired = expire_due(self.sessions, now)
        assert sorted(expired) == sorted(self.model.sweep(now))
        report = self.engine.run_pass("t-1")
        assert not report.failed, report
        self.check_oracle()
        self.check_converged()
        self.check_no_expired_holds()
        self.check_availability()

    # -- invariants ------------------------------------------------------------------------------

    def check_oracle(self) -> None:
        """The calendar, every event but the therapist's own, against the oracle's entries."""
        seen = [
            oracle.seen_ical(ev)
            for href, (_etag, body) in self.cal.items.items()
            if href not in self.foreign
            for ev in icalendar.Calendar.from_ical(body).walk("VEVENT")
        ]
        want = oracle.expected(self.model.platform, "t-1", self.clock.now)
        problems = oracle.compare("t-1", want, seen)
        assert problems == [], "\n".join(problems)

    def check_converged(self) -> None:
        """syncd's own view as well: the calendar is the projection of the stored state."""
        now = self.clock.now
        with self.sessions() as s:
            state = repo.platform_state(s, "t-1")
        assert state is not None
        desired = {e.uid: e.content_hash for e in project(state, now).values()}
        seen: dict[str, str] = {}
        for href, (_etag, body) in self.cal.items.items():
            if not is_ours(resource_name(href)):
                continue
            uid, content_hash = parse_ours(body)
            assert uid not in seen, f"duplicate {uid}"
            seen[uid] = content_hash
        assert seen == desired

    def check_no_expired_holds(self) -> None:
        now = self.clock.now
        with self.sessions() as s:
            state = repo.platform_state(s, "t-1")
        assert state is not None
        uids = {
            parse_ours(body)[0]
            for h, (_e, body) in self.cal.items.items()
            if is_ours(resource_name(h))
        }
        for offer in state.offers:
            if offer.expires_at <= now:
                assert offer.state is not d.OfferState.PENDING, offer
                for i in range(len(offer.alternatives)):
                    assert uid_for("hold", f"{offer.id}.{i}") not in uids

    def check_availability(self) -> None:
        now = self.clock.now
        with self.sessions() as s:
            state = repo.platform_state(s, "t-1")
        assert state is not None
        window = d.Interval(now, now + timedelta(weeks=2))
        busy = [o.interval for o in occupied(state, window, now)]
        for slot in availability.available_slots(state.therapist, window, busy):
            for b in busy:
                assert not (slot.start < b.end and b.start < slot.end), (slot, b)

    @invariant()
    def foreign_untouched(self) -> None:
        if hasattr(self, "cal"):
            for href, item in self.foreign.items():
                assert self.cal.items.get(href) == item


EngineModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineModel = EngineModel.TestCase

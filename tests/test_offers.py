"""Offers of alternative times on real CalDAV servers: holds, the blocked original, acceptance,
rejection, and syncd releasing the holds itself at expiry, across a daemon restart. Time moves
only through an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syncd import operations
from syncd.app import App
from syncd.daemon import Daemon
from syncd.ingest import Result
from syncd.project import uid_for
from syncd.store.tables import Base, OfferRow, OutboxRow, SessionRow
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import Seen, read_calendar
from tests.support.clock import FakeClock
from tests.support.inprocess import run_daemon_until

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # a Tuesday morning
SESSION_START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def offer(
    oid: str,
    alternatives: list[datetime],
    *,
    version: int = 1,
    state: str = "pending",
    sent_at: datetime = T0,
    session_id: str = "s-1",
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": oid,
        "version": version,
        "session_id": session_id,
        "alternatives": [
            {"start": a.isoformat(), "end": (a + timedelta(minutes=50)).isoformat()}
            for a in alternatives
        ],
        "sent_at": sent_at.isoformat(),
        "state": state,
    }
    data.update(extra)
    return f.event("offer.upserted", data)


ALTS = [datetime(2026, 12, 4, h, 0, tzinfo=UTC) for h in (9, 11, 14)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


# The app, its CalDAV server and the URL of the therapist's calendar there.
World = tuple[App, CalDAVServer, str]


@pytest.fixture
def world(tmp_path: Path, clock: FakeClock, caldav_server: CalDAVServer) -> Iterator[World]:
    app = App.open(make_config(tmp_path / "state"), clock=clock)
    ing = app.ingestor()
    assert ing.ingest(f.therapist(zone="Europe/London")).ok
    assert ing.ingest(f.session("s-1", SESSION_START)).ok
    operations.connect_caldav(
        app,
        "t-1",
        url=caldav_server.url,
        username=caldav_server.username,
        password=caldav_server.password,
    )
    with app.sessions() as s:
        from syncd.store import repo

        cal = repo.connections(s, "t-1")[0].calendar_url
    assert cal
    yield app, caldav_server, cal
    app.close()


def sync(app: App) -> None:
    report = app.engine().run_pass("t-1")
    assert not report.failed, [c.error for c in report.connections]


def holds(seen: dict[str, Any]) -> list[Any]:
    return sorted(
        (e for e in seen.values() if e.uid.startswith("syncd-hold-")), key=lambda e: e.start
    )


def test_pending_offer_holds_each_time_and_blocks_the_original_then_accept(world: World) -> None:
    app, server, cal = world
    assert app.ingestor().ingest(offer("o-1", ALTS)).result is Result.APPLIED
    sync(app)
    seen = read_calendar(server, cal)
    session = seen[uid_for("session", "s-1")]
    assert session.start == SESSION_START
    # expires_at defaults to sent_at + 24 h, shown in the therapist's local time (GMT in Dec)
    assert str(session.event["SUMMARY"]) == (
        "Therapy session — alternatives offered, open until Wed 2 Dec 09:00"
    )
    assert str(session.event["STATUS"]) == "CONFIRMED"
    held = holds(seen)
    assert [h.start for h in held] == ALTS
    for h in held:
        assert str(h.event["STATUS"]) == "TENTATIVE"
        assert str(h.event["TRANSP"]) == "OPAQUE"
        assert str(h.event["SUMMARY"]) == (
            "Held for client — alternative for Thu 3 Dec 10:00 session · until Wed 2 Dec 09:00"
        )
    accepted = offer(
        "o-1",
        ALTS,
        version=2,
        state="accepted",
        accepted_alternative=1,
        responded_at=(T0 + timedelta(hours=3)).isoformat(),
    )
    assert app.ingestor().ingest(accepted).result is Result.APPLIED
    sync(app)
    after = read_calendar(server, cal)
    assert list(after) == [uid_for("session", "s-1")]
    moved = after[uid_for("session", "s-1")]
    assert moved.start == ALTS[1] and moved.href == session.href
    assert str(moved.event["SUMMARY"]) == "Therapy session"


def test_rejected_offer_cancels_the_session_and_releases_everything(world: World) -> None:
    app, server, cal = world
    app.ingestor().ingest(offer("o-1", ALTS))
    sync(app)
    assert len(read_calendar(server, cal)) == 4
    rejected = offer(
        "o-1", ALTS, version=2, state="rejected", responded_at=(T0 + timedelta(hours=1)).isoformat()
    )
    assert app.ingestor().ingest(rejected).result is Result.APPLIED
    sync(app)
    assert read_calendar(server, cal) == {}
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None and row.status == "cancelled"
        assert row.cancellation == {"reason": "alternatives_rejected", "by": "client"}


def test_holds_are_released_at_expiry_even_across_a_restart(world: World, clock: FakeClock) -> None:
    app, server, cal = world
    app.ingestor().ingest(offer("o-1", ALTS))
    run_daemon_until(app, lambda d: d.passes >= 1)
    assert len(holds(read_calendar(server, cal))) == 3
    # The daemon is down across the expiry instant (sent_at + 24 h); the platform says nothing.
    clock.advance(timedelta(hours=24, minutes=5))
    first: dict[str, Seen] = {}

    def first_pass_done(d: Daemon) -> bool:
        if d.passes >= 1 and not first:
            first.update(read_calendar(server, cal))
        return bool(first)

    run_daemon_until(app, first_pass_done)
    assert list(first) == [uid_for("session", "s-1")]
    back = first[uid_for("session", "s-1")]
    assert back.start == SESSION_START and str(back.event["SUMMARY"]) == "Therapy session"
    with app.sessions() as s:
        notes = s.scalars(select(OutboxRow).where(OutboxRow.topic == "offer.expired")).all()
        assert len(notes) == 1 and notes[0].payload["offer_id"] == "o-1"
        o = s.get(OfferRow, "o-1")
        assert o is not None and o.state == "expired" and o.released_at == clock.now
    before = read_calendar(server, cal)
    clock.advance(timedelta(seconds=61))  # the periodic pass is due: a second start changes nothing
    run_daemon_until(app, lambda d: d.passes >= 1)
    assert read_calendar(server, cal) == before
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)) == 1


def counts(app: App) -> dict[str, int]:
    with app.sessions() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
            if t.name not in ("sync_queue",)
        }


@pytest.fixture
def offline(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    app = App.open(make_config(tmp_path / "state"), clock=clock)
    ing = app.ingestor()
    ing.ingest(f.therapist(zone="Europe/London"))
    ing.ingest(f.session("s-1", SESSION_START))
    ing.ingest(f.session("s-2", datetime(2026, 12, 4, 16, 0, tzinfo=UTC)))
    yield app
    app.close()


def refused(app: App, event: dict[str, Any], field: str, rule: str) -> str:
    before = counts(app)
    out = app.ingestor().ingest(event)
    assert out.result is Result.REFUSED, out
    assert out.error and f"{field}:" in out.error and f"[rule: {rule}]" in out.error, out.error
    assert "\n" not in out.error
    assert counts(app) == before
    return out.error


def test_offer_rules_refuse_and_store_nothing(offline: App, clock: FakeClock) -> None:
    app = offline
    ing = app.ingestor()
    assert ing.ingest(offer("o-1", ALTS)).result is Result.APPLIED
    expiry = "2026-12-02T09:00:00Z"
    # editing a pending offer
    err = refused(app, offer("o-1", [ALTS[0], ALTS[2]], version=2), "data", "offer_locked")
    assert expiry in err
    # withdrawing it early
    err = refused(app, offer("o-1", ALTS, version=2, state="expired"), "data.state", "offer_locked")
    assert expiry in err
    # a late acceptance
    late = (T0 + timedelta(hours=25)).isoformat()
    refused(
        app,
        offer("o-1", ALTS, version=2, state="accepted", accepted_alternative=0, responded_at=late),
        "data.responded_at",
        "late_response",
    )
    # a second pending offer for the same session
    refused(
        app,
        offer("o-2", [datetime(2026, 12, 5, 9, tzinfo=UTC)]),
        "data.session_id",
        "one_pending_offer",
    )
    ing.ingest(f.session("s-3", datetime(2026, 12, 7, 9, tzinfo=UTC)))
    # overlapping alternatives
    a = datetime(2026, 12, 8, 9, tzinfo=UTC)
    refused(
        app,
        offer("o-3", [a, a + timedelta(minutes=30)], session_id="s-3"),
        "data.alternatives.1",
        "alternatives_overlap",
    )
    # an alternative on top of another session, or on a hold of the pending offer
    refused(
        app,
        offer("o-3", [datetime(2026, 12, 4, 16, 20, tzinfo=UTC)], session_id="s-3"),
        "data.alternatives.0",
        "slot_taken",
    )
    refused(app, offer("o-3", [ALTS[2]], session_id="s-3"), "data.alternatives.0", "slot_taken")
    # an alternative not in the future at sent_at
    refused(
        app,
        offer("o-3", [T0 - timedelta(hours=1)], session_id="s-3"),
        "data.alternatives.0.start",
        "alternative_in_past",
    )
    # an acceptance naming no alternative
    refused(
        app,
        offer(
            "o-1",
            ALTS,
            version=3,
            state="accepted",
            accepted_alternative=7,
            responded_at=T0.isoformat(),
        ),
        "data.accepted_alternative",
        "alternative_index",
    )
    # a single proposed new time is simply an offer with one alternative
    assert ing.ingest(offer("o-4", [a], session_id="s-3")).result is Result.APPLIED


def test_a_timely_acceptance_arriving_after_expiry_is_honoured(
    offline: App, clock: FakeClock
) -> None:
    from syncd import expiry

    app = offline
    app.ingestor().ingest(offer("o-1", ALTS))
    clock.advance(timedelta(hours=25))
    assert expiry.expire_due(app.sessions, clock.now) == ["o-1"]
    assert expiry.expire_due(app.sessions, clock.now) == []  # exactly once
    in_time = offer(
        "o-1",
        ALTS,
        version=2,
        state="accepted",
        accepted_alternative=2,
        responded_at=(T0 + timedelta(hours=23)).isoformat(),
    )
    assert app.ingestor().ingest(in_time).result is Result.APPLIED
    with app.sessions() as s:
        row = s.get(SessionRow, "s-1")
        assert row is not None and row.start_at == ALTS[2]


def test_an_alternative_on_a_reserved_occurrence_is_refused(offline: App) -> None:
    ing = offline.ingestor()
    slot = f.event(
        "reserved_slot.upserted",
        {
            "id": "r-1",
            "version": 1,
            "therapist_id": "t-1",
            "client": {"id": "c-77"},
            "first_start_local": "2026-12-08T10:00:00",
            "timezone": "Europe/London",
            "duration_minutes": 50,
            "rrule": "FREQ=WEEKLY",
            "state": "active",
        },
    )
    assert ing.ingest(slot).result is Result.APPLIED
    err = refused(
        offline,
        offer("o-5", [datetime(2026, 12, 15, 10, 30, tzinfo=UTC)]),
        "data.alternatives.0",
        "slot_taken",
    )
    assert "reserved slot r-1" in err


def test_a_sweep_marks_therapists_due_in_one_order_whatever_the_expiries(
    sqlite_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Racing sweeps (one per replica) touch the queue rows of the same therapists: taken in
    expiry order, two of them locked those rows in opposite orders and PostgreSQL found a
    deadlock (1,000 holds expiring at once under load). One mark per therapist, in therapist
    order, whatever order the offers expire in."""
    from syncd import expiry
    from syncd.store import queue

    app = sqlite_app
    now = datetime.now(UTC)
    ing = app.ingestor()
    for n, tid in enumerate(["t-c", "t-b", "t-a"]):  # the later the therapist, the earlier
        assert ing.ingest(f.therapist(tid)).ok
        for j in range(2):
            sid = f"{tid}-s{j}"
            assert ing.ingest(f.session(sid, f.future(days=2 + j), therapist_id=tid)).ok
            expires = now + timedelta(minutes=n * 10 + j)
            alt = f.future(days=5 + j, hour=8 + n)
            sent = now - timedelta(hours=1)
            o = f.offer(f"o-{sid}", sid, [alt], sent_at=sent, expires_at=expires)
            assert ing.ingest(o).ok
    marked: list[str] = []
    real = queue.mark_due

    def mark_due(s: Any, therapist_id: str, at: datetime, **kw: Any) -> None:
        marked.append(therapist_id)
        real(s, therapist_id, at, **kw)

    monkeypatch.setattr(queue, "mark_due", mark_due)
    assert len(expiry.expire_due(app.sessions, now + timedelta(hours=1))) == 6
    assert marked == ["t-a", "t-b", "t-c"]

"""Step 5 of a pass (DESIGN.md §4): read the therapist's own busy time back, record conflicts
with what is booked, and announce availability changes.

The pure parts (:func:`clashes`) are separate from the bookkeeping, which writes the store and
the outbox in one transaction per therapist, so a notification exists iff its change does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import BusyOptions, BusyReader, Connector
from connectors.errors import BusyIncomplete, ConnectorError
from syncd import availability, outbox
from syncd import domain as d
from syncd.config import AvailabilityConfig
from syncd.occupancy import Occupied, occupied
from syncd.store import repo
from syncd.store.tables import AvailabilityRow, BusyIntervalRow, ConflictRow, ConnectionRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExternalBusy:
    connection_id: int
    calendar_ref: str
    interval: d.Interval
    remote_ref: str | None = None


@dataclass(frozen=True, slots=True)
class Clash:
    what: Occupied
    busy: ExternalBusy
    overlap: d.Interval

    @property
    def key(self) -> tuple[str, str, int, str, datetime, datetime]:
        return (
            self.what.kind,
            self.what.entity_id,
            self.busy.connection_id,
            self.busy.calendar_ref,
            self.busy.interval.start,
            self.busy.interval.end,
        )


def clashes(booked: Iterable[Occupied], external: Iterable[ExternalBusy]) -> list[Clash]:
    """Every (booked thing, external busy interval) pair that overlaps. Pure; sorted sweep, so
    O((n + m) log(n + m) + k) for n booked, m busy intervals and k clashes."""
    busy = sorted(external, key=lambda b: b.interval.start)
    found: dict[tuple[str, str, int, str, datetime, datetime], Clash] = {}
    for item in sorted(booked, key=lambda o: o.interval.start):
        for b in busy:
            if b.interval.start >= item.interval.end:
                break
            if item.interval.overlaps(b.interval):
                overlap = d.Interval(
                    max(item.interval.start, b.interval.start),
                    min(item.interval.end, b.interval.end),
                )
                clash = Clash(item, b, overlap)
                found[clash.key] = clash
    return list(found.values())


def busy_options(cfg: AvailabilityConfig) -> BusyOptions:
    return BusyOptions(tentative_busy=cfg.tentative_busy, all_day=cfg.all_day)


# -- reading busy time ----------------------------------------------------------------------------


def busy_due(conn: ConnectionRow, now: datetime, cfg: AvailabilityConfig) -> bool:
    return conn.busy_fetched_at is None or (now - conn.busy_fetched_at).total_seconds() >= (
        cfg.busy_refresh
    )


def selected_calendars(connector: BusyReader, conn: ConnectionRow) -> list[str]:
    if conn.busy_calendars is not None:
        return [str(c) for c in conn.busy_calendars]
    return [c.ref for c in connector.calendars() if not c.is_syncd]


def refresh_busy(
    sessions: sessionmaker[Session],
    connector: Connector,
    conn: ConnectionRow,
    now: datetime,
    cfg: AvailabilityConfig,
) -> bool:
    """Replace the stored busy time of one connection; on failure keep the last known one and
    flag it once it is older than ``stale_after``. True when it was refreshed."""
    reader = connector.busy_reader()
    if reader is None:
        return False
    window_end = now + timedelta(weeks=cfg.weeks)
    failed: dict[str, str] = {}
    try:
        refs = selected_calendars(reader, conn)
        intervals = reader.busy(now, window_end, refs, busy_options(cfg)) if refs else []
    except BusyIncomplete as partial:
        # Only the calendars that could not be read keep their last known busy time (and
        # make the connection's busy time stale, with the reason); the others count as read.
        intervals, failed = list(partial.intervals), partial.failed
    except ConnectorError as exc:
        _busy_failed(sessions, conn.id, now, cfg, f"{type(exc).__name__}: {exc}")
        return False
    with sessions.begin() as s:
        stale = delete(BusyIntervalRow).where(BusyIntervalRow.connection_id == conn.id)
        if failed:
            stale = stale.where(BusyIntervalRow.calendar_ref.not_in(list(failed)))
        s.execute(stale)
        s.add_all(
            BusyIntervalRow(
                connection_id=conn.id,
                calendar_ref=b.calendar,
                start_at=b.start,
                end_at=b.end,
                tentative=b.tentative,
                remote_ref=b.ref,
            )
            for b in intervals
        )
        row = s.get(ConnectionRow, conn.id)
        if row is not None:
            row.busy_fetched_at, row.busy_flagged_at = now, None
            row.busy_error = _calendar_errors(failed) if failed else None
    if failed:
        log.warning("connection %d: %s", conn.id, _calendar_errors(failed))
    return True


def _calendar_errors(failed: dict[str, str]) -> str:
    listed = "; ".join(f"calendar {ref}: {reason}" for ref, reason in sorted(failed.items()))
    return f"{listed} (its last known busy time is used; the other calendars are current)"[:2000]


def _busy_failed(
    sessions: sessionmaker[Session],
    connection_id: int,
    now: datetime,
    cfg: AvailabilityConfig,
    error: str,
) -> None:
    with sessions.begin() as s:
        row = s.get(ConnectionRow, connection_id)
        if row is None:
            return
        row.busy_error = error[:2000]
        since = row.busy_fetched_at or row.created_at
        stale = (now - since).total_seconds() >= cfg.stale_after
        if stale and row.busy_flagged_at is None:
            row.busy_flagged_at = now
            outbox.enqueue(
                s,
                "calendar.disconnected",
                {
                    "therapist_id": row.therapist_id,
                    "connection_id": row.id,
                    "provider": row.provider,
                    "reason": "busy time could not be read; the last known busy time is used",
                    "busy_time_from": since.isoformat(),
                    "at": now.isoformat(),
                },
                now,
            )
            log.warning(
                "busy time of connection %d is stale since %s: %s", row.id, since.isoformat(), error
            )


# -- conflicts and availability -------------------------------------------------------------------


def stored_busy(s: Session, connection_ids: Sequence[int]) -> list[ExternalBusy]:
    if not connection_ids:
        return []
    rows = s.scalars(
        select(BusyIntervalRow).where(BusyIntervalRow.connection_id.in_(connection_ids))
    ).all()
    return [
        ExternalBusy(
            r.connection_id, r.calendar_ref, d.Interval(r.start_at, r.end_at), r.remote_ref
        )
        for r in rows
    ]


@dataclass(slots=True)
class Settled:
    detected: int = 0
    resolved: int = 0
    availability_changed: bool = False


def settle(
    sessions: sessionmaker[Session], therapist_id: str, now: datetime, cfg: AvailabilityConfig
) -> Settled:
    """Conflicts and availability of one therapist, with their notifications, in one
    transaction."""
    out = Settled()
    window = d.Interval(now, now + timedelta(weeks=cfg.weeks))
    with sessions.begin() as s:
        state = repo.platform_state(s, therapist_id)
        if state is None:
            return out
        conns = [c.id for c in repo.connections(s, therapist_id)]
        external = stored_busy(s, conns)
        booked = list(occupied(state, window, now))
        _conflicts(s, therapist_id, clashes(booked, external), now, out)
        busy = [o.interval for o in booked] + [b.interval for b in external]
        slots = availability.available_slots(state.therapist, window, busy)
        _announce_availability(s, therapist_id, slots, now, window, out)
    return out


def _conflicts(
    s: Session, therapist_id: str, found: list[Clash], now: datetime, out: Settled
) -> None:
    open_rows = s.scalars(
        select(ConflictRow).where(
            ConflictRow.therapist_id == therapist_id, ConflictRow.resolved_at.is_(None)
        )
    ).all()
    current = {c.key: c for c in found}
    known: set[tuple[str, str, int, str, datetime, datetime]] = set()
    for row in open_rows:
        key = (
            row.entity_kind,
            row.entity_id,
            row.connection_id,
            row.calendar_ref,
            row.busy_start_at,
            row.busy_end_at,
        )
        if key in current:
            known.add(key)
            continue
        row.resolved_at = now
        out.resolved += 1
        outbox.enqueue(s, "conflict.resolved", _conflict_payload(row), now)
    for key, clash in current.items():
        if key in known:
            continue
        row = ConflictRow(
            therapist_id=therapist_id,
            connection_id=clash.busy.connection_id,
            entity_kind=clash.what.kind,
            entity_id=clash.what.entity_id,
            start_at=clash.overlap.start,
            end_at=clash.overlap.end,
            busy_start_at=clash.busy.interval.start,
            busy_end_at=clash.busy.interval.end,
            calendar_ref=clash.busy.calendar_ref,
            remote_ref=clash.busy.remote_ref,
            detected_at=now,
        )
        s.add(row)
        s.flush()
        out.detected += 1
        outbox.enqueue(s, "conflict.detected", _conflict_payload(row), now)


def _conflict_payload(row: ConflictRow) -> dict[str, object]:
    # Ids and instants only: nothing of the therapist's own event beyond its reference.
    return {
        "conflict_id": row.id,
        "therapist_id": row.therapist_id,
        "entity": {"kind": row.entity_kind, "id": row.entity_id},
        "overlap": {"start": row.start_at.isoformat(), "end": row.end_at.isoformat()},
        "connection_id": row.connection_id,
        "calendar": row.calendar_ref,
        "remote_ref": row.remote_ref,
        "detected_at": row.detected_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
    }


def _announce_availability(
    s: Session,
    therapist_id: str,
    slots: list[availability.Slot],
    now: datetime,
    window: d.Interval,
    out: Settled,
) -> None:
    row = s.get(AvailabilityRow, therapist_id)
    before = [
        availability.Slot(datetime.fromisoformat(a), datetime.fromisoformat(b))
        for a, b in (row.slots if row is not None else [])
    ]
    # Time passing is not a change: slots that started meanwhile left the window at one end,
    # and new ones entered it at the other; compare only the span both computations cover.
    old_end = row.computed_at + (window.end - window.start) if row is not None else window.end
    before = [slot for slot in before if slot.start >= now]
    comparable = [slot for slot in slots if slot.end <= old_end]
    changed = availability.changed_window(before, comparable)
    serialised = [[x.start.isoformat(), x.end.isoformat()] for x in slots]
    if row is None:
        row = AvailabilityRow(therapist_id=therapist_id, slots=serialised, computed_at=now)
        s.add(row)
    else:
        row.slots, row.computed_at = serialised, now
    if changed is None:
        return
    out.availability_changed = True
    outbox.enqueue(
        s,
        "availability.changed",
        {
            "therapist_id": therapist_id,
            "from": changed.start.isoformat(),
            "to": changed.end.isoformat(),
            "computed_at": now.isoformat(),
        },
        now,
    )

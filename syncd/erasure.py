"""Erasure on request (UK GDPR art. 17): ``syncd forget client ID`` and ``syncd forget therapist
ID``, also ``DELETE /v1/admin/clients/{id}`` and ``DELETE /v1/admin/therapists/{id}``.

Everything syncd holds about the person goes: the entities (sessions, offers, reserved slots;
for a therapist also their profile, connections, feed, availability and queue row), their
history (the stored bodies of the inbound events), the inbound event ids, conflicts, drift
records and the notifications in the outbox that name them.

For a therapist, syncd's entries are removed from their calendars *first*, through the same
path as ``syncd disconnect`` (their dedicated calendar deleted whole, else each entry syncd
wrote); if a calendar cannot be reached nothing is erased and the error says so, unless the
caller chooses to keep the entries. For a client, the affected therapists' passes run at once
and remove the client's entries from their calendars; a pass that cannot run now (busy, or the
calendar failing) is queued, and the daemon finishes the job.

What remains is a tombstone per erased entity: a SHA-256 of its type and id and the newest
version seen, so that a delivery still in flight (the platform delivers at least once) is
acknowledged as stale instead of storing the erased data again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, CursorResult, delete, select
from sqlalchemy.orm import Session

from syncd import operations, pending_grants
from syncd.app import App, UnknownProvider
from syncd.contract import MAX_ALTERNATIVES
from syncd.errors import OperationError
from syncd.plan import Op
from syncd.project import uid_for
from syncd.replica import replica_id
from syncd.secrets import SecretError
from syncd.store import queue, tombstones
from syncd.store.tables import (
    AvailabilityRow,
    ConflictRow,
    ConnectionRow,
    ConnectLinkRow,
    DriftRow,
    EntityHistoryRow,
    FeedTokenRow,
    InboundEventRow,
    OAuthRequestRow,
    OfferRow,
    OutboxRow,
    ReservedSlotRow,
    SessionRow,
    SyncQueueRow,
    TherapistRow,
)

log = logging.getLogger(__name__)


class NotErased(OperationError):
    """The erasure could not be done now (a calendar unreachable, a pass still running); nothing
    of the person was erased yet, and trying again later is the remedy."""


@dataclass(slots=True)
class Erased:
    """What one erasure removed (counts only: the report must not repeat what it erased)."""

    sessions: int = 0
    offers: int = 0
    reserved_slots: int = 0
    history: int = 0  # stored inbound event bodies
    inbound_events: int = 0
    notifications: int = 0
    conflicts: int = 0
    therapists: int = 0
    connections: int = 0
    calendar_entries: int = 0  # removed from the calendars now
    pending_calendars: list[str] = field(default_factory=list)  # therapists whose pass is queued
    calendars_left: list[int] = field(default_factory=list)  # connections needing re-auth

    @property
    def found(self) -> bool:
        return any((self.sessions, self.offers, self.reserved_slots, self.history, self.therapists))


def _count(s: Session, statement: Any) -> int:
    return cast("CursorResult[Any]", s.execute(statement)).rowcount


@dataclass(slots=True)
class _Entities:
    """The entities one erasure covers, by type: id → newest version seen."""

    sessions: dict[str, int] = field(default_factory=dict)
    offers: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, entity_id: str, version: int) -> None:
        bucket = {"session": self.sessions, "offer": self.offers, "reserved_slot": self.reserved}
        found = bucket[kind]
        found[entity_id] = max(version, found.get(entity_id, version))


def _note_stored(
    s: Session, found: _Entities, column: Literal["client_id", "therapist_id"], value: str
) -> None:
    """Note the stored sessions and reserved slots whose ``column`` is ``value``."""
    for kind, table in (("session", SessionRow), ("reserved_slot", ReservedSlotRow)):
        where = getattr(table, column) == value
        for eid, version in s.execute(select(table.id, table.version).where(where)).all():
            found.note(kind, eid, version)


def _history_of(s: Session, kind: str, where: ColumnElement[bool]) -> list[tuple[str, int]]:
    return [
        (str(eid), int(version))
        for eid, version in s.execute(
            select(EntityHistoryRow.entity_id, EntityHistoryRow.version).where(
                EntityHistoryRow.entity_type == kind, where
            )
        ).all()
    ]


def _add_offers(s: Session, found: _Entities) -> None:
    """The offers of the sessions found, from the store and from their history."""
    ids = list(found.sessions)
    for oid, version in s.execute(
        select(OfferRow.id, OfferRow.version).where(OfferRow.session_id.in_(ids))
    ).all():
        found.note("offer", oid, version)
    by_session = EntityHistoryRow.payload["session_id"].as_string().in_(ids)
    for oid, version in _history_of(s, "offer", by_session):
        found.note("offer", oid, version)


def _erase(s: Session, found: _Entities, now: datetime, out: Erased) -> None:
    """Delete the entities found and every trace of them; leave their tombstones."""
    sessions, offers, reserved = list(found.sessions), list(found.offers), list(found.reserved)
    for kind, versions in (
        ("session", found.sessions),
        ("offer", found.offers),
        ("reserved_slot", found.reserved),
    ):
        for eid, version in versions.items():
            tombstones.bury(s, kind, eid, version, now)
    out.conflicts += _count(
        s,
        delete(ConflictRow).where(
            ((ConflictRow.entity_kind == "session") & ConflictRow.entity_id.in_(sessions))
            | ((ConflictRow.entity_kind == "hold") & ConflictRow.entity_id.in_(offers))
            | ((ConflictRow.entity_kind == "reserved") & ConflictRow.entity_id.in_(reserved))
        ),
    )
    uids = [uid_for("session", x) for x in sessions] + [uid_for("reserved", x) for x in reserved]
    uids += [uid_for("hold", f"{x}.{i}") for x in offers for i in range(MAX_ALTERNATIVES)]
    s.execute(delete(DriftRow).where(DriftRow.uid.in_(uids)))
    out.offers += _count(s, delete(OfferRow).where(OfferRow.id.in_(offers)))
    out.sessions += _count(s, delete(SessionRow).where(SessionRow.id.in_(sessions)))
    out.reserved_slots += _count(s, delete(ReservedSlotRow).where(ReservedSlotRow.id.in_(reserved)))
    for kind, ids in (("session", sessions), ("offer", offers), ("reserved_slot", reserved)):
        out.history += _count(
            s,
            delete(EntityHistoryRow).where(
                EntityHistoryRow.entity_type == kind, EntityHistoryRow.entity_id.in_(ids)
            ),
        )
        out.inbound_events += _count(
            s,
            delete(InboundEventRow).where(
                InboundEventRow.type == f"{kind}.upserted", InboundEventRow.entity_id.in_(ids)
            ),
        )


def _drop_notifications(s: Session, therapists: list[str], named: set[str] | None) -> int:
    """Delete the outbox rows (delivered or not: a notice about someone erased is no longer
    owed) of these therapists that name one of ``named``, or all of theirs when None. Every
    notification names its therapist, which narrows the rows read."""
    rows = s.execute(
        select(OutboxRow.id, OutboxRow.payload).where(
            OutboxRow.payload["therapist_id"].as_string().in_(therapists)
        )
    ).all()
    doomed = [oid for oid, payload in rows if named is None or _names(payload) & named]
    return _count(s, delete(OutboxRow).where(OutboxRow.id.in_(doomed))) if doomed else 0


def _names(payload: dict[str, Any]) -> set[str]:
    """The entity ids a notification names (offer.expired, conflict.*)."""
    entity = payload.get("entity")
    found = {payload.get("session_id"), payload.get("offer_id")}
    found.add(entity.get("id") if isinstance(entity, dict) else None)
    return {x for x in found if isinstance(x, str)}


# -- a client ------------------------------------------------------------------------------------


def forget_client(app: App, client_id: str) -> Erased:
    """Erase a client from the store, history and outbox, then from the calendars."""
    if not client_id or len(client_id) > 200:
        raise OperationError("a client id is 1 to 200 characters")
    out = Erased()
    now = app.clock()
    with app.sessions.begin() as s:
        found = _Entities()
        _note_stored(s, found, "client_id", client_id)
        mentions = EntityHistoryRow.payload["client"]["id"].as_string() == client_id
        for kind, table in (("session", SessionRow), ("reserved_slot", ReservedSlotRow)):
            mine = found.sessions if kind == "session" else found.reserved
            for eid, version in _history_of(s, kind, mentions):
                # Named the client in an earlier version: erased whole if it is gone from the
                # store; if it is someone else's now, only the bodies naming the client go.
                if eid in mine or s.get(table, eid) is None:
                    found.note(kind, eid, version)
                else:
                    out.history += _strip_bodies(s, kind, eid, mentions, out)
        _add_offers(s, found)
        therapists = _therapists_of(s, found)
        _erase(s, found, now, out)
        out.notifications += _drop_notifications(
            s, therapists, set(found.sessions) | set(found.offers) | set(found.reserved)
        )
        for tid in therapists:
            queue.mark_due(s, tid, now)  # the daemon cleans the calendars if we cannot now
    # Now, rather than at the next periodic pass: the entries may carry the client's initials.
    for result in operations.resync(app, therapists):
        report = result.report
        if result.busy or report is None or report.failed:
            out.pending_calendars.append(result.therapist_id)
            continue
        out.calendar_entries += sum(
            1 for c in report.connections for a in c.actions if a.op is Op.DELETE
        )
    log.info(
        "erased a client: %d sessions, %d offers, %d reserved slots, %d history rows",
        out.sessions,
        out.offers,
        out.reserved_slots,
        out.history,
    )
    return out


def _strip_bodies(
    s: Session, kind: str, entity_id: str, mentions: ColumnElement[bool], out: Erased
) -> int:
    """Delete the stored bodies (and event ids) of one entity's versions that name someone."""
    where = (
        EntityHistoryRow.entity_type == kind,
        EntityHistoryRow.entity_id == entity_id,
        mentions,
    )
    events = list(s.scalars(select(EntityHistoryRow.event_id).where(*where)))
    out.inbound_events += _count(s, delete(InboundEventRow).where(InboundEventRow.id.in_(events)))
    return _count(s, delete(EntityHistoryRow).where(*where))


def _therapists_of(s: Session, found: _Entities) -> list[str]:
    """The therapists whose calendars hold (or held) the entities found."""
    ids = list(found.sessions) + list(found.reserved)
    tids = set(s.scalars(select(SessionRow.therapist_id).where(SessionRow.id.in_(ids))))
    tids |= set(s.scalars(select(ReservedSlotRow.therapist_id).where(ReservedSlotRow.id.in_(ids))))
    named = EntityHistoryRow.payload["therapist_id"].as_string()
    tids |= {
        t
        for t in s.scalars(
            select(named).where(
                EntityHistoryRow.entity_type.in_(("session", "reserved_slot")),
                EntityHistoryRow.entity_id.in_(ids),
            )
        )
        if t
    }
    return sorted(t for t in tids if s.get(TherapistRow, t) is not None)


# -- a therapist ----------------------------------------------------------------------------------


def forget_therapist(app: App, therapist_id: str, *, keep_calendar_entries: bool = False) -> Erased:
    """Remove syncd's entries from the therapist's calendars, then erase the therapist and
    everything of theirs. Holds the therapist's lease throughout, so no pass runs meanwhile."""
    if not therapist_id or len(therapist_id) > 200:
        raise OperationError("a therapist id is 1 to 200 characters")
    out = Erased()
    with app.sessions() as s:
        exists = s.get(TherapistRow, therapist_id) is not None
    if not exists:  # no passes to hold off; clear whatever history may remain
        with app.sessions.begin() as s:
            _erase_therapist(s, therapist_id, app.clock(), out)
        return out
    owner = f"forget:{replica_id()}"
    lease = timedelta(seconds=app.config.daemon.lease_seconds)
    with app.sessions() as s:
        queued = s.get(SyncQueueRow, therapist_id) is not None
    _take_lease(app, therapist_id, owner, lease)
    try:
        with app.sessions() as s:
            connections = s.execute(
                select(ConnectionRow.id, ConnectionRow.state)
                .where(ConnectionRow.therapist_id == therapist_id)
                .order_by(ConnectionRow.id)
            ).all()
        for cid, state in connections:
            if state == "needs_reauth" and not keep_calendar_entries:
                out.calendars_left.append(cid)  # syncd may no longer write there
            try:
                out.calendar_entries += operations.disconnect(
                    app, therapist_id, cid, keep_events=keep_calendar_entries
                )
            except (OperationError, SecretError, UnknownProvider) as exc:
                # SecretError: the provider is no longer configured here (no Google client).
                if keep_calendar_entries:
                    out.calendars_left.append(cid)  # the row goes with the therapist
                    continue
                reason = str(exc).removesuffix(
                    "; nothing was forgotten, try again or use --keep-events"
                )
                raise NotErased(
                    f"connection {cid}: {reason}; the therapist is not erased. Try again, or "
                    "erase anyway and leave syncd's entries in that calendar "
                    "(--keep-calendar-entries)"
                ) from None
            out.connections += 1
        pending_grants.discard_of(app, therapist_id)  # consents never finished: revoked too
        with app.sessions.begin() as s:
            _erase_therapist(s, therapist_id, app.clock(), out)
    except BaseException:
        with app.sessions.begin() as s:  # nothing erased: the queue is left as it was
            queue.give_back(s, therapist_id, owner, existed=queued)
        raise
    log.info("erased therapist %s and %d sessions", therapist_id, out.sessions)
    return out


def _take_lease(app: App, therapist_id: str, owner: str, lease: timedelta) -> None:
    """Wait (up to one lease period) for a running pass to finish, then hold the lease."""
    deadline = time.monotonic() + lease.total_seconds()
    while True:
        with app.sessions() as s:
            if queue.acquire(s, therapist_id, owner, app.clock(), lease):
                return
        if time.monotonic() > deadline:
            raise NotErased(
                f"a pass for therapist {therapist_id!r} is still running; try again shortly"
            )
        time.sleep(0.2)


def _erase_therapist(s: Session, tid: str, now: datetime, out: Erased) -> None:
    found = _Entities()
    _note_stored(s, found, "therapist_id", tid)
    by_therapist = EntityHistoryRow.payload["therapist_id"].as_string() == tid
    for kind in ("session", "reserved_slot"):
        for eid, version in _history_of(s, kind, by_therapist):
            found.note(kind, eid, version)
    _add_offers(s, found)
    for oid, version in s.execute(
        select(OfferRow.id, OfferRow.version).where(OfferRow.therapist_id == tid)
    ).all():
        found.note("offer", oid, version)
    _erase(s, found, now, out)
    versions = [v for _, v in _history_of(s, "therapist", EntityHistoryRow.entity_id == tid)]
    row = s.get(TherapistRow, tid)
    if row is not None or versions:
        tombstones.bury(s, "therapist", tid, max([*versions, row.version if row else 0]), now)
    out.history += _count(
        s,
        delete(EntityHistoryRow).where(
            EntityHistoryRow.entity_type == "therapist", EntityHistoryRow.entity_id == tid
        ),
    )
    out.inbound_events += _count(
        s,
        delete(InboundEventRow).where(
            InboundEventRow.type == "therapist.upserted", InboundEventRow.entity_id == tid
        ),
    )
    out.notifications += _drop_notifications(s, [tid], None)
    out.conflicts += _count(s, delete(ConflictRow).where(ConflictRow.therapist_id == tid))
    # Connections left by --keep-calendar-entries on an unreachable calendar: forgotten too
    # (their mirror, drift and busy rows go with them by ON DELETE CASCADE).
    s.execute(delete(ConnectionRow).where(ConnectionRow.therapist_id == tid))
    s.execute(delete(AvailabilityRow).where(AvailabilityRow.therapist_id == tid))
    s.execute(delete(FeedTokenRow).where(FeedTokenRow.therapist_id == tid))
    s.execute(delete(OAuthRequestRow).where(OAuthRequestRow.therapist_id == tid))
    s.execute(delete(ConnectLinkRow).where(ConnectLinkRow.therapist_id == tid))
    s.execute(delete(SyncQueueRow).where(SyncQueueRow.therapist_id == tid))
    out.therapists += _count(s, delete(TherapistRow).where(TherapistRow.id == tid))

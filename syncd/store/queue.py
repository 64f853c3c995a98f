"""The sync queue: which therapist needs a pass when, claimed through expiring leases.

A claim is one UPDATE of the rows picked by ``SELECT … FOR UPDATE SKIP LOCKED`` and still free
(no lease, or an expired one), so it is correct on SQLite and on PostgreSQL with several
replicas: exactly one replica wins each row, and none waits on another's claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.orm import Session

from syncd.store import wakeups
from syncd.store.tables import SyncQueueRow


@dataclass(frozen=True, slots=True)
class Claim:
    therapist_id: str
    full: bool
    attempts: int


def mark_due(s: Session, therapist_id: str, at: datetime, *, full: bool = False) -> None:
    """Ask for a pass no later than ``at`` (earlier requests win), and wake the replicas when
    the transaction commits."""
    wakeups.announce(s, wakeups.WORK)
    # One conditional UPDATE, judged on the row as it stands when it is written, never on an
    # earlier read: a claim committed in between moves due_at to its lease expiry, and a request
    # judged "already due" on the old value would be lost to it (the pass may have read the
    # platform before this transaction commits; its release would then schedule the next pass
    # a whole interval later).
    earlier = or_(SyncQueueRow.due_at.is_(None), SyncQueueRow.due_at > at)
    values: dict[str, object] = {"due_at": case((earlier, at), else_=SyncQueueRow.due_at)}
    if full:
        values["full"] = True
    found = s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.therapist_id == therapist_id)
        .values(values)
        .returning(SyncQueueRow.therapist_id)
    ).first()
    if found is None:
        s.add(SyncQueueRow(therapist_id=therapist_id, due_at=at, full=full, attempts=0))


def next_due(s: Session) -> datetime | None:
    return s.scalar(select(SyncQueueRow.due_at).order_by(SyncQueueRow.due_at.asc()).limit(1))


def claim_due(
    s: Session, owner: str, now: datetime, lease: timedelta, limit: int, skip: set[str]
) -> list[Claim]:
    """Lease up to ``limit`` due therapists for ``owner``, earliest due first."""
    if limit <= 0:
        return []
    free = or_(SyncQueueRow.lease_until.is_(None), SyncQueueRow.lease_until < now)
    due = select(SyncQueueRow.therapist_id).where(SyncQueueRow.due_at <= now, free)
    if skip:
        due = due.where(SyncQueueRow.therapist_id.not_in(skip))
    # One statement. On PostgreSQL the candidate rows are locked as they are read and rows another
    # replica is claiming this instant are skipped rather than waited for, so replicas never queue
    # behind each other; the outer WHERE is re-checked on the locked rows. SQLite has no row locks
    # (the dialect drops FOR UPDATE) but the statement holds the database's write lock throughout.
    candidates = due.order_by(SyncQueueRow.due_at).limit(limit).with_for_update(skip_locked=True)
    rows = s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.therapist_id.in_(candidates), free)
        # due_at moves to the lease expiry: if this replica dies the pass is retried then,
        # and a request arriving during the pass shows up as an earlier due_at.
        .values(lease_owner=owner, lease_until=now + lease, due_at=now + lease, full=False)
        .returning(SyncQueueRow.therapist_id, SyncQueueRow.full, SyncQueueRow.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    s.commit()
    return [Claim(str(tid), bool(full), int(attempts or 0)) for tid, full, attempts in rows]


def release(
    s: Session,
    therapist_id: str,
    owner: str,
    *,
    started: datetime,
    next_at: datetime | None,
    failed: bool,
) -> None:
    """End a lease. Work requested while the pass ran (due_at pulled before the lease expiry) is
    kept; otherwise the next periodic pass (or retry) is scheduled at ``next_at``."""
    row = s.get(SyncQueueRow, therapist_id, populate_existing=True)
    if row is None or row.lease_owner != owner:
        return
    requested_meanwhile = (
        row.due_at is not None and row.lease_until is not None and row.due_at < row.lease_until
    )
    if not requested_meanwhile:
        row.due_at = next_at
    row.lease_owner = None
    row.lease_until = None
    row.last_pass_at = started
    row.attempts = row.attempts + 1 if failed else 0
    s.commit()


def acquire(s: Session, therapist_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
    """Take the lease of one therapist whether due or not (manual resync); False if busy."""
    if s.get(SyncQueueRow, therapist_id) is None:
        s.add(SyncQueueRow(therapist_id=therapist_id, due_at=None, full=False, attempts=0))
        s.flush()
    won = s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.therapist_id == therapist_id)
        .where(or_(SyncQueueRow.lease_until.is_(None), SyncQueueRow.lease_until < now))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(SyncQueueRow.therapist_id)
    ).first()
    s.commit()
    return won is not None


def give_back(s: Session, therapist_id: str, owner: str, *, existed: bool) -> None:
    """Undo ``acquire`` for work that did not happen: the lease is dropped and the queue left
    as it was (its row removed if ``acquire`` made it), so nothing about the schedule changes."""
    mine = (SyncQueueRow.therapist_id == therapist_id, SyncQueueRow.lease_owner == owner)
    if existed:
        s.execute(update(SyncQueueRow).where(*mine).values(lease_owner=None, lease_until=None))
    else:
        s.execute(delete(SyncQueueRow).where(*mine))


def holder(s: Session, therapist_id: str, now: datetime) -> str | None:
    """Who holds the therapist's unexpired lease, if anyone."""
    row = s.get(SyncQueueRow, therapist_id, populate_existing=True)
    if row is None or row.lease_owner is None or row.lease_until is None:
        return None
    return row.lease_owner if row.lease_until >= now else None


def take_over(
    s: Session, therapist_id: str, dead: str, owner: str, now: datetime, lease: timedelta
) -> bool:
    """Take the lease ``dead`` still holds (its process is known to be gone); False when it
    changed hands meanwhile."""
    won = s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.therapist_id == therapist_id, SyncQueueRow.lease_owner == dead)
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(SyncQueueRow.therapist_id)
    ).first()
    s.commit()
    return won is not None


def renew(s: Session, owner: str, therapist_ids: list[str], until: datetime) -> None:
    """Heartbeat: keep the leases of passes still running (and their retry-if-dead time)."""
    if not therapist_ids:
        return
    s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.lease_owner == owner)
        .where(SyncQueueRow.therapist_id.in_(therapist_ids))
        .where(SyncQueueRow.due_at == SyncQueueRow.lease_until)
        .values(lease_until=until, due_at=until)
    )
    s.execute(
        update(SyncQueueRow)
        .where(SyncQueueRow.lease_owner == owner)
        .where(SyncQueueRow.therapist_id.in_(therapist_ids))
        .values(lease_until=until)
    )
    s.commit()


def reclaim(s: Session, is_dead: Callable[[str], bool], now: datetime) -> list[str]:
    """Free the leases whose owner is known to be dead (a crashed process on this host), so a
    restart does not wait for them to expire; their work becomes due at once."""
    rows = s.scalars(select(SyncQueueRow).where(SyncQueueRow.lease_owner.is_not(None))).all()
    freed = []
    for row in rows:
        if row.lease_owner and is_dead(row.lease_owner):
            row.lease_owner = None
            row.lease_until = None
            row.due_at = now
            freed.append(row.therapist_id)
    s.commit()
    return freed

"""The sync queue: which therapist needs a pass when, claimed through expiring leases.

A claim is a conditional UPDATE (lease free or expired), so it is correct on SQLite and on
PostgreSQL with several replicas: exactly one replica wins each row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from syncd.store.tables import SyncQueueRow


@dataclass(frozen=True, slots=True)
class Claim:
    therapist_id: str
    full: bool
    attempts: int


def mark_due(s: Session, therapist_id: str, at: datetime, *, full: bool = False) -> None:
    """Ask for a pass no later than ``at`` (earlier requests win)."""
    row = s.get(SyncQueueRow, therapist_id)
    if row is None:
        s.add(SyncQueueRow(therapist_id=therapist_id, due_at=at, full=full, attempts=0))
        return
    if row.due_at is None or at < row.due_at:
        row.due_at = at
    row.full = row.full or full


def next_due(s: Session) -> datetime | None:
    return s.scalar(select(SyncQueueRow.due_at).order_by(SyncQueueRow.due_at.asc()).limit(1))


def claim_due(
    s: Session, owner: str, now: datetime, lease: timedelta, limit: int, skip: set[str]
) -> list[Claim]:
    """Lease up to ``limit`` due therapists for ``owner``."""
    candidates = s.scalars(
        select(SyncQueueRow.therapist_id)
        .where(SyncQueueRow.due_at <= now)
        .where(or_(SyncQueueRow.lease_until.is_(None), SyncQueueRow.lease_until < now))
        .order_by(SyncQueueRow.due_at)
        .limit(limit + len(skip))
    ).all()
    claimed: list[Claim] = []
    for tid in candidates:
        if tid in skip or len(claimed) >= limit:
            continue
        won = s.execute(
            update(SyncQueueRow)
            .where(SyncQueueRow.therapist_id == tid)
            .where(or_(SyncQueueRow.lease_until.is_(None), SyncQueueRow.lease_until < now))
            # due_at moves to the lease expiry: if this replica dies the pass is retried then,
            # and a request arriving during the pass shows up as an earlier due_at.
            .values(lease_owner=owner, lease_until=now + lease, due_at=now + lease, full=False)
            .returning(SyncQueueRow.full, SyncQueueRow.attempts)
        ).first()
        if won is not None:
            claimed.append(Claim(tid, bool(won[0]), int(won[1] or 0)))
    s.commit()
    return claimed


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

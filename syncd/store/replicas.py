"""The replica registry: which daemon processes share this database, and what each one holds.

Informational only. Who may run a therapist's pass is decided by the lease rows in
``sync_queue`` alone; this table lets operators see the replicas and their leases.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from syncd import __version__
from syncd.replica import dead_local_owner, heartbeat_stale, process_gone
from syncd.store.tables import ReplicaRow, SyncQueueRow

# ReplicaInfo.state values.
ALIVE, SILENT, GONE = "alive", "silent", "gone"


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    alive: bool
    leases: int
    # alive (heartbeat within one lease), silent (no recent heartbeat: stopped, stuck or cut
    # off), gone (its process no longer exists on this host, whatever its heartbeat says).
    state: str = ALIVE


def register(s: Session, replica_id: str, now: datetime) -> None:
    s.merge(
        ReplicaRow(
            id=replica_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=now,
            seen_at=now,
        )
    )
    s.commit()


def beat(s: Session, replica_id: str, now: datetime) -> None:
    row = s.get(ReplicaRow, replica_id)
    if row is None:  # pruned while this process was stalled: come back
        register(s, replica_id, now)
        return
    row.seen_at = now
    s.commit()


def unregister(s: Session, replica_id: str) -> None:
    s.execute(delete(ReplicaRow).where(ReplicaRow.id == replica_id))
    s.commit()


def prune(s: Session, now: datetime, older_than: timedelta) -> int:
    """Forget replicas not seen for ``older_than`` (killed processes never unregister)."""
    gone = s.execute(delete(ReplicaRow).where(ReplicaRow.seen_at < now - older_than))
    s.commit()
    return int(getattr(gone, "rowcount", 0) or 0)


def leases_by_owner(s: Session, now: datetime) -> dict[str, int]:
    """Unexpired therapist leases per owner (a replica id, or a CLI resync's id)."""
    rows = s.execute(
        select(SyncQueueRow.lease_owner, func.count())
        .where(SyncQueueRow.lease_owner.is_not(None), SyncQueueRow.lease_until > now)
        .group_by(SyncQueueRow.lease_owner)
    ).all()
    return {str(owner): int(n) for owner, n in rows}


def overview(
    s: Session, now: datetime, alive_within: timedelta, leases: dict[str, int] | None = None
) -> list[ReplicaInfo]:
    """Registered replicas, oldest first; ``leases`` when the caller already read them."""
    if leases is None:
        leases = leases_by_owner(s, now)
    found = []
    for r in s.scalars(select(ReplicaRow).order_by(ReplicaRow.started_at)).all():
        if process_gone(r.host, r.pid):
            state = GONE
        elif r.seen_at < now - alive_within:
            state = SILENT
        else:
            state = ALIVE
        found.append(
            ReplicaInfo(
                r.id,
                r.host,
                r.pid,
                r.version,
                r.started_at,
                r.seen_at,
                state == ALIVE,
                leases.get(r.id, 0),
                state,
            )
        )
    return found


def holder_dead(s: Session, holder: str, now: datetime, lease_seconds: float) -> bool:
    """Whether the process holding a lease is known to be gone, so its lease may be taken at
    once: a process of this host that no longer exists, or a registered replica without a
    heartbeat for a whole lease period (shown as "no heartbeat" everywhere). Anything else (a
    CLI resync on another host, a replica that already unregistered while a last pass thread
    ends) keeps its lease until it expires."""
    if dead_local_owner(holder):
        return True
    row = s.get(ReplicaRow, holder, populate_existing=True)
    return row is not None and heartbeat_stale(row.seen_at, now, lease_seconds)

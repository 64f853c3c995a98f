"""Who holds a lease: replica ids, and recognising the ones whose process is gone."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def process_gone(host: str, pid: int) -> bool:
    """True when ``pid`` on ``host`` is this machine's and no such process exists. A process
    on another host, or one we may not signal, counts as present: only its heartbeat tells."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def dead_local_owner(owner: str) -> bool:
    """True for a lease owner id of a process on this host that no longer exists."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    return process_gone(parts[-3], int(parts[-2]))


def heartbeat_interval(lease_seconds: float) -> float:
    """How often a daemon renews its leases and registry row (three times per lease)."""
    return max(1.0, lease_seconds / 3)


def heartbeat_stale(seen_at: datetime, now: datetime, lease_seconds: float) -> bool:
    """No heartbeat for a whole lease period: what status, metrics and the dashboard call
    "no heartbeat" (not alive). Shorter would be unsafe: heartbeats run on the event loop, passes
    on threads, so a loaded replica can miss a few while its passes still run."""
    return now - seen_at > timedelta(seconds=lease_seconds)

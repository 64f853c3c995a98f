"""Who holds a lease: replica ids, and recognising the ones whose process is gone."""

from __future__ import annotations

import os
import socket
import uuid


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def dead_local_owner(owner: str) -> bool:
    """True for a lease owner id of a process on this host that no longer exists."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[-3] != socket.gethostname() or not parts[-2].isdigit():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

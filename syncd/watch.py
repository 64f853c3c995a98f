"""Push notifications from Google: opening and renewing a watch channel per healthy Google
connection, stopping it, and checking a notification against the stored channel.

A notification wakes the therapist's pass at once (its route is in :mod:`syncd.web.google`);
the periodic pass stays the safety net, so a lost notification only delays a change.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update

from connectors.errors import ConnectorError
from syncd.app import App
from syncd.store import queue
from syncd.store.tables import MAX_ROW_ID, ConnectionRow

log = logging.getLogger(__name__)

# A plain path segment, not Starlette's ``:int`` (whose int() fails on 4,300+ digits inside the
# router, a 500); the handler reads it.
PUSH_PATH = "/google/push/{connection_id}"
RENEW_BEFORE = timedelta(days=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def renew_watches(app: App, now: datetime | None = None) -> int:
    """Open a watch channel for every healthy Google connection without one (or whose channel
    ends within a day), then stop the channel it replaces. Returns how many were opened."""
    g = app.config.google
    if not (g.watch and app.config.http.public_url):
        return 0
    now = now or app.clock()
    with app.sessions() as s:
        rows = s.scalars(
            select(ConnectionRow).where(
                ConnectionRow.provider == "google", ConnectionRow.state == "ok"
            )
        ).all()
    due = [
        r for r in rows if r.channel_expires_at is None or r.channel_expires_at < now + RENEW_BEFORE
    ]
    opened = 0
    for row in due:
        connector = app.connector_for(row)
        watcher = connector.change_watcher()
        if watcher is None:
            connector.close()
            continue
        token = secrets.token_urlsafe(32)
        channel_id = uuid.uuid4().hex
        address = app.config.http.base_url + PUSH_PATH.format(connection_id=row.id)
        try:
            channel = watcher.watch(channel_id, address, token, g.watch_ttl)
            seen = (
                ConnectionRow.channel_id.is_(None)
                if row.channel_id is None
                else ConnectionRow.channel_id == row.channel_id
            )
            # Conditional on the channel we saw: when replicas renew the same connection at once,
            # one swap wins and the others stop the channel they opened, so none is left open.
            with app.sessions.begin() as s:
                won = s.execute(
                    update(ConnectionRow)
                    .where(ConnectionRow.id == row.id, seen)
                    .values(
                        channel_id=channel_id,
                        channel_token_hash=_hash(token),
                        channel_resource_id=channel.resource_id,
                        channel_expires_at=channel.expires_at,
                    )
                    .returning(ConnectionRow.id)
                ).first()
            if won is None:
                if channel.resource_id:
                    watcher.stop_channel(channel_id, channel.resource_id)
                continue
            if row.channel_id and row.channel_resource_id:
                watcher.stop_channel(row.channel_id, row.channel_resource_id)
            opened += 1
        except ConnectorError as exc:
            log.warning("could not open a watch channel for connection %d: %s", row.id, exc)
        finally:
            connector.close()
    return opened


def stop_watch(app: App, row: ConnectionRow) -> None:
    if not (row.channel_id and row.channel_resource_id):
        return
    connector = app.connector_for(row)
    watcher = connector.change_watcher()
    try:
        if watcher is not None:
            watcher.stop_channel(row.channel_id, row.channel_resource_id)
    except ConnectorError as exc:
        log.warning("could not stop watch channel of connection %d: %s", row.id, exc)
    finally:
        connector.close()


def accept_push(app: App, connection_id: int, channel_id: str, token: str, state: str) -> bool:
    """Check a notification against the stored channel; on a change, queue a pass now."""
    if not 0 < connection_id <= MAX_ROW_ID:
        return False
    now = app.clock()
    with app.sessions.begin() as s:
        row = s.get(ConnectionRow, connection_id)
        if row is None or row.channel_id != channel_id or row.channel_token_hash is None:
            return False
        if not secrets.compare_digest(row.channel_token_hash, _hash(token)):
            return False
        if state != "sync":  # "sync" only confirms the channel; "exists" means a change
            queue.mark_due(s, row.therapist_id, now)
    return True

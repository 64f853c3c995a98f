"""Google grants left waiting on a connect link (existing-calendar mode: consent given, calendar
not chosen yet; see :mod:`syncd.connect_google`). One whose link has expired is abandoned: its
refresh token is revoked at Google, then dropped. Revoking is best effort (a failure is logged
and the token dropped all the same) and comes first, so a crash in between leaves the token to
the next sweep rather than unrevoked; revoking twice (two replicas) is harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update

from syncd import google_auth
from syncd.app import App
from syncd.secrets import SecretError
from syncd.store.tables import ConnectLinkRow

log = logging.getLogger(__name__)

BATCH = 100  # grants per sweep: each costs one request to Google
SWEEP_INTERVAL = 60.0  # seconds (the daemon): an abandoned grant outlives its link by this at most


def discard(app: App, therapist_id: str, sealed: bytes) -> None:
    """Revoke a grant syncd holds sealed and is about to drop (best effort)."""
    try:
        token = app.box.open(sealed)
    except SecretError as exc:  # a rotated key: there is nothing left to revoke with
        log.warning("an abandoned Google grant cannot be revoked: %s", exc)
        return
    google_auth.discard_grant(app, therapist_id, token)


def discard_of(app: App, therapist_id: str) -> None:
    """Revoke every grant the therapist's links hold (erasure: the links go next)."""
    with app.sessions() as s:
        held = s.scalars(
            select(ConnectLinkRow.pending_secret).where(
                ConnectLinkRow.therapist_id == therapist_id,
                ConnectLinkRow.pending_secret.is_not(None),
            )
        ).all()
    for sealed in held:
        if sealed is not None:
            discard(app, therapist_id, sealed)


def discard_expired(app: App, now: datetime | None = None) -> int:
    """Revoke and drop every grant whose link has expired; returns how many were dropped."""
    now = now or app.clock()
    with app.sessions() as s:
        waiting = s.execute(
            select(ConnectLinkRow.id, ConnectLinkRow.therapist_id, ConnectLinkRow.pending_secret)
            .where(ConnectLinkRow.expires_at <= now, ConnectLinkRow.pending_secret.is_not(None))
            .limit(BATCH)
        ).all()
    dropped = 0
    for link_id, therapist_id, sealed in waiting:
        assert sealed is not None  # selected for having one
        discard(app, therapist_id, sealed)
        with app.sessions.begin() as s:
            # Only the grant revoked above: never one stored since by another replica.
            done = s.execute(
                update(ConnectLinkRow)
                .where(ConnectLinkRow.id == link_id, ConnectLinkRow.pending_secret == sealed)
                .values(pending_secret=None)
                .returning(ConnectLinkRow.id)
            ).first()
        dropped += done is not None
    if dropped:
        log.info("dropped %d abandoned Google grants", dropped)
    return dropped

"""Dashboard sessions, stored server-side (``admin_sessions``).

The browser holds a 256-bit random secret in its cookie; the table holds only its SHA-256, the
token it signed in with, a CSRF token and the expiry. Every request looks the session up, so
deleting the row (sign-out, ``syncd sessions revoke``) ends it at once on every replica, and a
copied cookie stops working with it; revoking the API token ends its sessions the same way.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from syncd.auth import Principal, Scope
from syncd.store.tables import AdminSessionRow, ApiTokenRow

TTL = timedelta(hours=8)  # from sign-in; activity does not extend it
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
MAX_SECRET = 100


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The session a request carries."""

    id: int
    name: str  # the API token's name
    scope: Scope
    csrf: str
    expires_at: datetime

    @property
    def can_act(self) -> bool:
        return Principal(self.name, self.scope).allows(Scope.ADMIN)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as ``syncd sessions list`` shows it (never its secret)."""

    id: int
    token: str
    scope: str
    client: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    s: Session, token_id: int, client: str, now: datetime, ttl: timedelta = TTL
) -> tuple[str, SignedIn]:
    """A new session for the token ``token_id``: ``(cookie secret, session)``. The secret is
    returned only here."""
    token = s.get(ApiTokenRow, token_id)
    if token is None or token.revoked_at is not None:
        raise LookupError(f"no active token {token_id}")
    secret = secrets.token_urlsafe(32)
    row = AdminSessionRow(
        secret_hash=_digest(secret),
        token_id=token_id,
        csrf=secrets.token_urlsafe(32),
        client=client[:64],
        created_at=now,
        expires_at=now + ttl,
        last_seen_at=now,
    )
    s.add(row)
    s.flush()
    return secret, SignedIn(row.id, token.name, Scope(token.scope), row.csrf, row.expires_at)


def load(s: Session, secret: str | None, now: datetime) -> SignedIn | None:
    """The live session whose cookie secret is ``secret``: not signed out, not revoked, not
    expired, its token not revoked. Notes the activity (at most once a minute)."""
    if not secret or len(secret) > MAX_SECRET or not secret.isascii():
        return None
    found = s.execute(
        select(AdminSessionRow, ApiTokenRow)
        .join(ApiTokenRow, ApiTokenRow.id == AdminSessionRow.token_id)
        .where(
            AdminSessionRow.secret_hash == _digest(secret),
            AdminSessionRow.expires_at > now,
            ApiTokenRow.revoked_at.is_(None),
        )
    ).first()
    if found is None:
        return None
    row, token = found
    if now - row.last_seen_at >= TOUCH_EVERY:
        s.execute(
            update(AdminSessionRow).where(AdminSessionRow.id == row.id).values(last_seen_at=now)
        )
    return SignedIn(row.id, token.name, Scope(token.scope), row.csrf, row.expires_at)


def _deleted(s: Session, statement: Any) -> int:
    return cast("CursorResult[Any]", s.execute(statement)).rowcount


def end(s: Session, session_id: int) -> bool:
    """Sign out: the session stops working everywhere at once."""
    return _deleted(s, delete(AdminSessionRow).where(AdminSessionRow.id == session_id)) > 0


def revoke(
    s: Session, ids: list[int] | None = None, *, token: str | None = None, every: bool = False
) -> int:
    """End the sessions ``ids``, or every session of the token named ``token``, or all."""
    statement = delete(AdminSessionRow)
    if every:
        return _deleted(s, statement)
    if token is not None:
        owner = select(ApiTokenRow.id).where(ApiTokenRow.name == token).scalar_subquery()
        return _deleted(s, statement.where(AdminSessionRow.token_id == owner))
    return _deleted(s, statement.where(AdminSessionRow.id.in_(ids or [])))


def listing(s: Session, now: datetime) -> list[SessionInfo]:
    """Live sessions, newest first."""
    rows = s.execute(
        select(AdminSessionRow, ApiTokenRow)
        .join(ApiTokenRow, ApiTokenRow.id == AdminSessionRow.token_id)
        .where(AdminSessionRow.expires_at > now, ApiTokenRow.revoked_at.is_(None))
        .order_by(AdminSessionRow.created_at.desc(), AdminSessionRow.id.desc())
    ).all()
    return [
        SessionInfo(r.id, t.name, t.scope, r.client, r.created_at, r.last_seen_at, r.expires_at)
        for r, t in rows
    ]


def purge_expired(s: Session, now: datetime) -> int:
    """Drop sessions that expired or whose token was revoked (they already let no one in)."""
    revoked = select(ApiTokenRow.id).where(ApiTokenRow.revoked_at.is_not(None))
    return _deleted(
        s,
        delete(AdminSessionRow).where(
            (AdminSessionRow.expires_at <= now) | AdminSessionRow.token_id.in_(revoked)
        ),
    )

"""Bearer tokens for the admin API and the dashboard, with two scopes: ``read`` (look) and
``admin`` (look and act: resync). Tokens are 256-bit random strings shown once; only their
SHA-256 is stored, and a presented token is checked by looking up its hash, so the secret itself
is never compared byte by byte."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from syncd.store.tables import ApiTokenRow

PREFIX = "syncd_"


class Scope(enum.StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return self.scope is Scope.ADMIN or needed is Scope.READ


class TokenError(ValueError):
    pass


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(s: Session, name: str, scope: Scope, now: datetime) -> str:
    """A new token named ``name``; returns it (the only time it is ever visible)."""
    if not name or len(name) > 100:
        raise TokenError("a token name is 1 to 100 characters")
    if s.scalar(select(ApiTokenRow.id).where(ApiTokenRow.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists already (revoke it first)")
    token = PREFIX + secrets.token_urlsafe(32)
    s.add(ApiTokenRow(name=name, token_hash=_digest(token), scope=scope.value, created_at=now))
    return token


def verify(s: Session, token: str | None, now: datetime) -> Principal | None:
    """The principal a presented token stands for, or None (unknown, revoked, malformed)."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = now
    return Principal(row.name, Scope(row.scope))


def token_id(s: Session, name: str) -> int | None:
    return s.scalar(select(ApiTokenRow.id).where(ApiTokenRow.name == name))


def revoke(s: Session, name: str, now: datetime) -> bool:
    row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.name == name))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    return True


def listing(s: Session) -> list[ApiTokenRow]:
    return list(s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.name)).all())

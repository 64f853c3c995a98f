"""Connect links: the single-use, expiring, signed URLs (``<public_url>/connect/<token>``) a
therapist opens to connect their own calendar, or to reconnect one that stopped working.

A token is ``<link id>.<mac>``: a random 128-bit id and an HMAC-SHA256 of it under a key derived
from the secret key. The signature is checked before the database is asked, so a guessed or
tampered token costs one HMAC and learns nothing; the row holds what the signature cannot
(expiry, use). Links are made by the platform (``POST /v1/admin/connect-links``), by an admin
(``syncd connect-link``), and by the engine when a connection needs re-authorisation (sent with
``calendar.disconnected``, in the same transaction). "Used" means a connection was made or
restored through it; after that only the browser that used it may finish the remaining steps
(see :mod:`syncd.web.connect_page`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syncd.config import Config
from syncd.errors import OperationError
from syncd.secrets import SecretBox
from syncd.store.tables import ConnectLinkRow, TherapistRow

if TYPE_CHECKING:
    from syncd.app import App

PATH_PREFIX = "/connect/"
_KEY_PURPOSE = b"syncd connect links v1"
_MAC_CHARS = 32  # base64url characters of the MAC kept in the token: 192 bits
MAX_TOKEN = 100


class LinkError(Exception):
    """A link that cannot be used; ``kind`` is ``invalid``, ``expired`` or ``used``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    therapist_id: str
    token: str
    url: str
    expires_at: datetime
    used_at: datetime | None = None
    connection_id: int | None = None
    for_connection_id: int | None = None
    google_state: str | None = None
    google_mode: str | None = None


class LinkSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_box(cls, box: SecretBox) -> LinkSigner:
        return cls(box.derive(_KEY_PURPOSE))

    def _mac(self, link_id: str) -> str:
        digest = hmac.new(self._key, link_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:_MAC_CHARS]

    def token(self, link_id: str) -> str:
        return f"{link_id}.{self._mac(link_id)}"

    def link_id(self, token: str) -> str | None:
        """The id a token carries when its signature is ours, else None."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            return None
        link_id, _, mac = token.partition(".")
        if not link_id or not hmac.compare_digest(mac.encode(), self._mac(link_id).encode()):
            return None
        return link_id


def url_for(config: Config, signer: LinkSigner, link_id: str) -> str:
    return f"{config.http.base_url}{PATH_PREFIX}{signer.token(link_id)}"


def _link(config: Config, signer: LinkSigner, row: ConnectLinkRow) -> Link:
    token = signer.token(row.id)
    return Link(
        id=row.id,
        therapist_id=row.therapist_id,
        token=token,
        url=f"{config.http.base_url}{PATH_PREFIX}{token}",
        expires_at=row.expires_at,
        used_at=row.used_at,
        connection_id=row.connection_id,
        for_connection_id=row.for_connection_id,
        google_state=row.google_state,
        google_mode=row.google_mode,
    )


def issue(
    s: Session,
    config: Config,
    signer: LinkSigner,
    therapist_id: str,
    now: datetime,
    *,
    days: float | None = None,
    for_connection_id: int | None = None,
) -> Link:
    """A new link inside the caller's transaction (the therapist must exist)."""
    lifetime = timedelta(days=config.connect.link_days if days is None else days)
    # A Google grant left waiting past its link's life is revoked and dropped by the daemon
    # (syncd.pending_grants), not here: revoking is a request to Google, not for this transaction.
    row = ConnectLinkRow(
        id=secrets.token_urlsafe(16),
        therapist_id=therapist_id,
        created_at=now,
        expires_at=now + lifetime,
        for_connection_id=for_connection_id,
    )
    s.add(row)
    s.flush()
    return _link(config, signer, row)


def create(app: App, therapist_id: str, *, days: float | None = None) -> Link:
    """A link for ``therapist_id`` (the admin API and ``syncd connect-link``)."""
    if days is not None and not 0 < days <= 90:
        raise OperationError("days: a link lasts more than 0 and at most 90 days")
    now = app.clock()
    with app.sessions.begin() as s:
        if s.get(TherapistRow, therapist_id) is None:
            raise OperationError(f"unknown therapist {therapist_id!r}")
        return issue(s, app.config, app_signer(app), therapist_id, now, days=days)


def reconnect_issuer(
    config: Config, signer: LinkSigner
) -> Callable[[Session, str, int, datetime], tuple[str, datetime]]:
    """The engine's hook: a fresh link for a connection that needs re-authorisation."""

    def make(
        s: Session, therapist_id: str, connection_id: int, now: datetime
    ) -> tuple[str, datetime]:
        link = issue(s, config, signer, therapist_id, now, for_connection_id=connection_id)
        return link.url, link.expires_at

    return make


def app_signer(app: App) -> LinkSigner:
    return LinkSigner.for_box(app.box)


def check_link(app: App, token: str) -> Link:
    """The link a presented token stands for, whatever its state (used, expired): callers
    decide what a used or expired link may still do. Raises LinkError("invalid") for a token
    that is not ours or names no link. The one place a presented token is checked, so a rate
    limit on link checks belongs here."""
    signer = app_signer(app)
    link_id = signer.link_id(token)
    if link_id is None:
        raise LinkError("invalid", "This link is not valid. Check that it was copied whole.")
    with app.sessions() as s:
        row = s.get(ConnectLinkRow, link_id)
        if row is None:
            raise LinkError("invalid", "This link is not valid. Check that it was copied whole.")
        return _link(app.config, signer, row)


def require_open(link: Link, now: datetime) -> None:
    """Raise LinkError unless ``link`` may still make a connection."""
    if link.used_at is not None:
        raise LinkError(
            "used",
            "This link was already used. If you need to change your calendar connection, ask "
            "for a new link.",
        )
    if link.expires_at <= now:
        raise LinkError("expired", "This link has expired. Ask for a new link.")


def consume(s: Session, link_id: str, connection_id: int, now: datetime) -> bool:
    """Mark the link used by ``connection_id``, exactly once (a conditional UPDATE, so two
    tabs racing to finish with one link cannot both use it). False when it was already used or
    has expired."""
    result = s.execute(
        update(ConnectLinkRow)
        .where(
            ConnectLinkRow.id == link_id,
            ConnectLinkRow.used_at.is_(None),
            ConnectLinkRow.expires_at > now,
        )
        .values(used_at=now, connection_id=connection_id, pending_secret=None)
        .returning(ConnectLinkRow.id)
    ).first()
    return result is not None


def open_reconnect_links(
    s: Session, config: Config, signer: LinkSigner, connection_ids: list[int], now: datetime
) -> dict[int, Link]:
    """The newest unused, unexpired reconnect link of each of ``connection_ids``."""
    if not connection_ids:
        return {}
    rows = s.scalars(
        select(ConnectLinkRow)
        .where(
            ConnectLinkRow.for_connection_id.in_(connection_ids),
            ConnectLinkRow.used_at.is_(None),
            ConnectLinkRow.expires_at > now,
        )
        .order_by(ConnectLinkRow.created_at)
    ).all()
    out: dict[int, Link] = {}
    for row in rows:
        assert row.for_connection_id is not None
        out[row.for_connection_id] = _link(config, signer, row)  # the newest wins
    return out

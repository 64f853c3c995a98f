"""Linking a therapist's Google account: the OAuth authorization-code flow with PKCE, the code
exchange, and storing the grant as a connection.

The authorization link is created by ``syncd connect google`` (or the connect page) and completed
by the daemon when Google redirects the therapist's browser to ``CALLBACK_PATH`` (the route is in
:mod:`syncd.web.google`); both sides meet in the ``oauth_requests`` table, so the link works
whichever process or replica serves it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import httpx
from sqlalchemy import select, update

from connectors.egress_http import httpx_client
from connectors.errors import ConnectorError, DestinationRefused
from connectors.google.scopes import mode_for, scopes_for
from syncd.app import App
from syncd.errors import OperationError
from syncd.store import queue
from syncd.store.tables import ConnectionRow, OAuthRequestRow, TherapistRow

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/google/callback"
LINK_LIFETIME = timedelta(hours=24)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def scopes(calendar_id: str | None) -> list[str]:
    """Exactly the scopes the connection's mode needs (connectors.google.scopes): syncd's own
    calendar without a calendar id, the therapist's chosen calendar with one."""
    return list(scopes_for(mode_for(calendar_id)))


def authorization_url(
    app: App,
    therapist_id: str,
    *,
    calendar_id: str | None = None,
    redirect_base: str | None = None,
    scope: Sequence[str] | None = None,
) -> str:
    """A link the therapist opens to grant access; valid for ``LINK_LIFETIME``. ``scope``
    overrides the scopes implied by ``calendar_id`` (a consent whose calendar is chosen after)."""
    g = app.config.google
    if not g.client_id:
        raise OperationError("[google] client_id is not configured (see docs/google.md)")
    now = app.clock()
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    redirect_uri = (redirect_base or app.config.http.base_url).rstrip("/") + CALLBACK_PATH
    with app.sessions.begin() as s:
        if s.get(TherapistRow, therapist_id) is None:
            raise OperationError(f"unknown therapist {therapist_id!r}")
        s.add(
            OAuthRequestRow(
                state=state,
                therapist_id=therapist_id,
                provider="google",
                code_verifier=app.box.seal(verifier),
                calendar_id=calendar_id,
                redirect_uri=redirect_uri,
                created_at=now,
                expires_at=now + LINK_LIFETIME,
            )
        )
    query = {
        "client_id": g.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scope if scope is not None else scopes(calendar_id)),
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
        # A refresh token every time, even if the therapist granted access before.
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }
    return f"{g.auth_url}?{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorization code was exchanged for."""

    state: str
    therapist_id: str
    calendar_id: str | None
    refresh_token: str


def exchange_code(app: App, state: str, code: str) -> Grant:
    """Claim the authorization request (once: a conditional UPDATE, so a replayed callback
    cannot exchange twice) and exchange the code for a refresh token."""
    now = app.clock()
    with app.sessions.begin() as s:
        request = s.get(OAuthRequestRow, state)
        if request is None:
            raise OperationError("unknown or already used authorization link")
        if request.completed_at is not None:
            raise OperationError("this authorization link was already used")
        if request.expires_at < now:
            raise OperationError("this authorization link has expired; ask for a new one")
        claimed = s.execute(
            update(OAuthRequestRow)
            .where(OAuthRequestRow.state == state, OAuthRequestRow.completed_at.is_(None))
            .values(completed_at=now)
            .returning(OAuthRequestRow.state)
        ).first()
        if claimed is None:
            raise OperationError("this authorization link was already used")
        verifier = app.box.open(request.code_verifier)
        therapist_id, calendar_id = request.therapist_id, request.calendar_id
        redirect_uri = request.redirect_uri
    try:
        refresh_token = _exchange(app, code, verifier, redirect_uri)
    except OperationError as exc:
        # The link is used up: whoever waits on it (``connect google --wait``) must hear now.
        record_refusal(app, state, str(exc))
        raise
    return Grant(state, therapist_id, calendar_id, refresh_token)


def _exchange(app: App, code: str, verifier: str, redirect_uri: str) -> str:
    g = app.config.google
    try:
        with httpx_client(app.egress, timeout=g.timeout) as client:
            response = client.post(
                g.token_url,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": redirect_uri,
                    "client_id": g.client_id,
                    "client_secret": app.google_client_secret(),
                },
            )
    except DestinationRefused as exc:
        raise OperationError(f"Google's token endpoint is not allowed: {exc}") from None
    except httpx.HTTPError as exc:
        raise OperationError(f"Google's token endpoint did not answer: {exc}") from None
    if response.status_code != 200:
        raise OperationError(f"Google refused the authorization code (HTTP {response.status_code})")
    refresh_token = response.json().get("refresh_token")
    if not refresh_token:
        raise OperationError("Google returned no refresh token (was offline access granted?)")
    return str(refresh_token)


def record_refusal(app: App, state: str, reason: str) -> None:
    """Note on the authorization request why it made no connection (the first reason only),
    where ``syncd connect google --wait`` looks; nothing else is stored."""
    with app.sessions.begin() as s:
        s.execute(
            update(OAuthRequestRow)
            .where(
                OAuthRequestRow.state == state,
                OAuthRequestRow.connection_id.is_(None),
                OAuthRequestRow.error.is_(None),
            )
            .values(error=reason[:1000])
        )


def store_connection(app: App, grant: Grant, calendar_id: str | None) -> int:
    """Find or create the calendar (``calendar_id`` None: the dedicated one), then store the
    connection; reconnecting the same calendar updates its connection in place."""
    from connectors.google import GoogleConnector  # the client library, only when used

    now = app.clock()
    g = app.config.google
    therapist_id = grant.therapist_id
    connector = GoogleConnector(app.google_settings(grant.refresh_token, calendar_id))
    try:
        calendar_url = connector.ensure_calendar()
    except ConnectorError as exc:
        raise OperationError(f"cannot use the Google calendar: {exc}") from None
    finally:
        connector.close()
    with app.sessions.begin() as s:
        existing = s.scalars(
            select(ConnectionRow).where(
                ConnectionRow.therapist_id == therapist_id,
                ConnectionRow.provider == "google",
                ConnectionRow.calendar_url == calendar_url,
            )
        ).first()
        row = existing or ConnectionRow(
            therapist_id=therapist_id,
            provider="google",
            url=g.api_url,
            username="google",
            calendar_url=calendar_url,
            calendar_owned=calendar_id is None,
            failures=0,
            created_at=now,
        )
        # Reconnecting (after a revoked grant) keeps the mirror, so nothing is written twice.
        row.secret = app.box.seal(grant.refresh_token)
        row.state, row.failures, row.last_error = "new", 0, None
        if existing is None:
            s.add(row)
        s.flush()
        req = s.get(OAuthRequestRow, grant.state)
        if req is not None:
            req.connection_id = row.id
        queue.mark_due(s, therapist_id, now, full=True)
        log.info("therapist %s connected Google calendar (connection %d)", therapist_id, row.id)
        return row.id


def complete(app: App, state: str, code: str) -> int:
    """Exchange the code for tokens, find or create the calendar, store the connection."""
    grant = exchange_code(app, state, code)
    try:
        return store_connection(app, grant, grant.calendar_id)
    except OperationError as exc:
        record_refusal(app, state, str(exc))
        discard_grant(app, grant.therapist_id, grant.refresh_token)
        raise


def discard_grant(app: App, therapist_id: str, refresh_token: str) -> None:
    """Revoke a grant syncd drops without storing (refused, abandoned, expired), best effort.
    Not while the therapist has a Google connection: Google may treat a revocation as the
    end of the whole account's grant to syncd, which would cut that connection off too."""
    with app.sessions() as s:
        live = s.scalars(
            select(ConnectionRow.id).where(
                ConnectionRow.therapist_id == therapist_id, ConnectionRow.provider == "google"
            )
        ).first()
    if live is not None:
        log.info("dropped a Google grant unrevoked: connection %d may share it", live)
        return
    revoke(app, refresh_token)


def revoke(app: App, refresh_token: str) -> None:
    """Ask Google to forget the grant; failures are logged, never fatal (the token is dropped)."""
    from connectors.google.push import revoke_grant  # the client library, only when used

    g = app.config.google
    try:
        revoke_grant(refresh_token, g.revoke_url, app.egress, g.timeout)
    except ConnectorError as exc:
        log.warning("could not revoke a Google token: %s", exc)

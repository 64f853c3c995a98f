"""Linking therapists' Google accounts: the OAuth authorization-code flow with PKCE, push
notification channels, and the HTTP routes that serve both on the daemon's port.

The authorization link is created by ``syncd connect google`` (or the admin API) and completed by
the daemon when Google redirects the therapist's browser to ``/oauth/google/callback``; both sides
meet in the ``oauth_requests`` table, so the link works whichever process or replica serves it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.egress_http import httpx_client
from connectors.errors import ConnectorError, DestinationRefused
from connectors.google import GoogleConnector
from connectors.google_scopes import mode_for, scopes_for
from syncd.app import App
from syncd.operations import OperationError
from syncd.store import queue
from syncd.store.tables import MAX_ROW_ID, ConnectionRow, OAuthRequestRow, TherapistRow
from syncd.web.app import register_routes

if TYPE_CHECKING:
    from syncd.daemon import Daemon

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/google/callback"
# A plain path segment, not Starlette's ``:int`` (whose int() fails on 4,300+ digits inside the
# router, a 500); the handler reads it.
PUSH_PATH = "/google/push/{connection_id}"
LINK_LIFETIME = timedelta(hours=24)
RENEW_BEFORE = timedelta(days=1)


def base_url(app: App) -> str:
    http = app.config.http
    return (http.public_url or f"http://{http.host}:{http.port}").rstrip("/")


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scopes(calendar_id: str | None) -> list[str]:
    """Exactly the scopes the connection's mode needs (connectors.google_scopes): syncd's own
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
    redirect_uri = (redirect_base or base_url(app)).rstrip("/") + CALLBACK_PATH
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
    return Grant(state, therapist_id, calendar_id, refresh_token)


def store_connection(app: App, grant: Grant, calendar_id: str | None) -> int:
    """Find or create the calendar (``calendar_id`` None: the dedicated one), then store the
    connection; reconnecting the same calendar updates its connection in place."""
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
    return store_connection(app, grant, grant.calendar_id)


def revoke(app: App, refresh_token: str) -> None:
    """Ask Google to forget the grant; failures are logged, never fatal (the token is dropped)."""
    try:
        with httpx_client(app.egress, timeout=app.config.google.timeout) as client:
            client.post(app.config.google.revoke_url, data={"token": refresh_token})
    except (httpx.HTTPError, DestinationRefused) as exc:
        log.warning("could not revoke a Google token: %s", exc)


# -- push notifications ------------------------------------------------------------------------


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
        assert isinstance(connector, GoogleConnector)
        token = secrets.token_urlsafe(32)
        channel_id = uuid.uuid4().hex
        address = f"{base_url(app)}/google/push/{row.id}"
        try:
            channel = connector.watch(channel_id, address, token, g.watch_ttl)
            expires = datetime.fromtimestamp(int(channel.get("expiration", 0)) / 1000, UTC)
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
                        channel_resource_id=channel.get("resourceId"),
                        channel_expires_at=expires,
                    )
                    .returning(ConnectionRow.id)
                ).first()
            if won is None:
                if channel.get("resourceId"):
                    connector.stop_channel(channel_id, channel["resourceId"])
                continue
            if row.channel_id and row.channel_resource_id:
                connector.stop_channel(row.channel_id, row.channel_resource_id)
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
    assert isinstance(connector, GoogleConnector)
    try:
        connector.stop_channel(row.channel_id, row.channel_resource_id)
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


# -- routes ------------------------------------------------------------------------------------

# Flows that start a consent themselves (the connect page) finish it their own way: a handler
# gets (app, state, code, Google's error or None) and returns its response for a ``state`` it
# owns, None for any other.
CallbackHandler = Callable[[App, str, str, str | None], Response | None]
_callback_handlers: list[CallbackHandler] = []


def register_callback_handler(handler: CallbackHandler) -> CallbackHandler:
    if handler not in _callback_handlers:
        _callback_handlers.append(handler)
    return handler


def _page(title: str, message: str, status: int = 200) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:system-ui;max-width:32rem;margin:3rem auto;padding:0 1rem'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


@register_routes
def _routes(app: App, daemon: Daemon) -> list[BaseRoute]:
    async def callback(request: Request) -> Response:
        params = request.query_params
        state, code, error = params.get("state", ""), params.get("code", ""), params.get("error")
        loop = asyncio.get_running_loop()
        for handler in _callback_handlers:
            # Also given Google's error, so the flow that began the consent can say it its way.
            handled = await loop.run_in_executor(None, handler, app, state, code, error)
            if handled is not None:
                daemon.wake()
                return handled
        if error is not None:
            return _page("Not connected", f"Google said: {error}.", 400)
        if not state or not code:
            return _page("Not connected", "The link is incomplete.", 400)
        try:
            await loop.run_in_executor(None, complete, app, state, code)
        except OperationError as exc:
            return _page("Not connected", str(exc), 400)
        daemon.wake()
        return _page(
            "Calendar connected",
            "Your sessions will appear in your Google calendar within a minute. "
            "You can close this window.",
        )

    async def push(request: Request) -> Response:
        h = request.headers
        raw = request.path_params["connection_id"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
            return JSONResponse({"status": 403, "error": "unknown channel"}, status_code=403)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            None,
            accept_push,
            app,
            int(raw),
            h.get("x-goog-channel-id", ""),
            h.get("x-goog-channel-token", ""),
            h.get("x-goog-resource-state", ""),
        )
        if not ok:
            return JSONResponse({"status": 403, "error": "unknown channel"}, status_code=403)
        daemon.wake()
        return Response(status_code=204)

    return [
        Route(CALLBACK_PATH, callback, methods=["GET"]),
        Route(PUSH_PATH, push, methods=["POST"]),
    ]

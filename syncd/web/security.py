"""Credential checks shared by every protected route: who the client is (its address, behind
trusted proxies only), rate limits on failed checks, bearer tokens (``Authorization: Bearer
syncd_...`` looked up with :func:`syncd.auth.verify`, then the scope compared), and the
dashboard's server-side sessions and sign-in CSRF token."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from syncd import auth, ratelimit
from syncd.app import App
from syncd.auth import Principal, Scope
from syncd.ratelimit import Kind, Limiter
from syncd.secrets import load_or_create_key
from syncd.store import admin_sessions
from syncd.web.responses import error_response

T = TypeVar("T")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="syncd"'}


async def off_loop(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run blocking (database) work on a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kw)
    )


# -- who is asking, and how often they failed ----------------------------------------------------


def client_address(request: Request) -> str:
    """The client's rate-limit key. ``request.client`` is the connecting address, or the one a
    trusted proxy named in X-Forwarded-For (see ``[http] trusted_proxies``)."""
    return ratelimit.client_key(request.client.host if request.client else None)


def limiter(app: App) -> Limiter:
    return Limiter(app.sessions, app.config.limits, app.clock)


def too_many(kind: Kind, retry_after: int) -> Response:
    return error_response(
        429,
        f"too many failed {ratelimit.WHAT[kind]} from this address; try again in {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


async def refused_for(request: Request, app: App, kind: Kind) -> int | None:
    """Seconds this client must wait before trying ``kind`` again, or None."""
    return await off_loop(limiter(app).retry_after, kind, client_address(request))


async def count_failure(request: Request, app: App, kind: Kind) -> None:
    await off_loop(limiter(app).failed, kind, client_address(request))


# -- bearer tokens --------------------------------------------------------------------------------


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _verify(app: App, token: str) -> Principal | None:
    with app.sessions.begin() as s:
        return auth.verify(s, token, app.clock())


async def require(request: Request, app: App, scope: Scope) -> Principal | Response:
    """The caller's principal when its token allows ``scope``; else the 401/403/429 to answer."""
    wait = await refused_for(request, app, Kind.BEARER)
    if wait is not None:
        return too_many(Kind.BEARER, wait)
    token = bearer_token(request)
    if token is None:
        return error_response(401, "a bearer token is required", _CHALLENGE)
    principal = await off_loop(_verify, app, token)
    if principal is None:
        await count_failure(request, app, Kind.BEARER)
        return error_response(401, "unknown or revoked token", _CHALLENGE)
    if not principal.allows(scope):
        return error_response(
            403, f"token {principal.name!r} has scope {principal.scope}; this needs {scope}"
        )
    return principal


# -- dashboard sessions ---------------------------------------------------------------------------

SESSION_COOKIE = "syncd_admin"
LOGIN_COOKIE = "syncd_login"  # the sign-in form's CSRF nonce, until signed in


def session_key(app: App) -> bytes:
    """A key for the sign-in form's CSRF tokens, derived from (never equal to) the secret key,
    so every replica and restart agrees on it."""
    material = load_or_create_key(app.config.key_file)
    return hmac.new(material, b"syncd dashboard sign-in v1", hashlib.sha256).digest()


class LoginCsrf:
    """Double-submit CSRF for the sign-in form, which has no session yet: the form's hidden
    field is an HMAC of a random nonce kept in a ``SameSite=Strict`` cookie. A forged
    cross-site sign-in carries no cookie, and no one without the key can pair a nonce with a
    field of their own."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, str]:
        """``(cookie nonce, form field)``."""
        nonce = secrets.token_urlsafe(32)
        return nonce, self._mac(nonce)

    def check(self, nonce: str | None, field: object) -> bool:
        if not nonce or not isinstance(field, str) or len(nonce) > 100 or not nonce.isascii():
            return False
        return hmac.compare_digest(self._mac(nonce).encode(), field.encode("utf-8", "replace"))


def session_cookie_flags(app: App) -> dict[str, Any]:
    """How the dashboard's cookies are set: ``HttpOnly``, ``SameSite=Strict``, ``Path=/admin``,
    ``Secure`` when the public URL is https."""
    return {
        "path": "/admin",
        "secure": app.config.http.public_url.startswith("https://"),
        "httponly": True,
        "samesite": "strict",
    }


def csrf_matches(session: admin_sessions.SignedIn, sent: object) -> bool:
    """The CSRF field of a state-changing form is the session's, compared in constant time."""
    return isinstance(sent, str) and hmac.compare_digest(
        sent.encode("utf-8", "replace"), session.csrf.encode()
    )


def load_session(app: App, secret: str | None) -> admin_sessions.SignedIn | None:
    with app.sessions.begin() as s:
        return admin_sessions.load(s, secret, app.clock())


def start_session(app: App, token: str, client: str) -> tuple[str, admin_sessions.SignedIn] | None:
    """Check a pasted API token and open a session for it: ``(cookie secret, session)``."""
    now = app.clock()
    with app.sessions.begin() as s:
        principal = auth.verify(s, token, now)
        if principal is None:
            return None
        token_id = auth.token_id(s, principal.name)
        if token_id is None:
            return None
        return admin_sessions.create(s, token_id, client, now)


def end_session(app: App, session_id: int) -> None:
    with app.sessions.begin() as s:
        admin_sessions.end(s, session_id)

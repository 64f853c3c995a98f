"""Bearer-token checks shared by every protected route: ``Authorization: Bearer syncd_...``
looked up with :func:`syncd.auth.verify` (off the event loop), then the scope compared."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from syncd import auth
from syncd.app import App
from syncd.auth import Principal, Scope
from syncd.web.app import error_response

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="syncd"'}


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
    """The caller's principal when its token allows ``scope``; else the 401/403 to answer."""
    token = bearer_token(request)
    if token is None:
        return error_response(401, "a bearer token is required", _CHALLENGE)
    loop = asyncio.get_running_loop()
    principal = await loop.run_in_executor(None, _verify, app, token)
    if principal is None:
        return error_response(401, "unknown or revoked token", _CHALLENGE)
    if not principal.allows(scope):
        return error_response(
            403, f"token {principal.name!r} has scope {principal.scope}; this needs {scope}"
        )
    return principal

"""Google's two ways into the daemon: the OAuth redirect that ends a consent
(``google_auth.CALLBACK_PATH``) and the push notifications of watch channels
(``watch.PUSH_PATH``). The work is done by :mod:`syncd.google_auth` and :mod:`syncd.watch`.

A flow that starts a consent itself (the connect page) finishes it its own way: it is given to
:func:`routes` as a callback handler, which gets (app, state, code, Google's error or None) and
returns its response for a ``state`` it owns, None for any other.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import google_auth, watch
from syncd.app import App
from syncd.errors import OperationError
from syncd.web.host import Host

CallbackHandler = Callable[[App, str, str, str | None], Response | None]


def _page(title: str, message: str, status: int = 200) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:system-ui;max-width:32rem;margin:3rem auto;padding:0 1rem'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def routes(
    app: App, daemon: Host, callback_handlers: Sequence[CallbackHandler] = ()
) -> list[BaseRoute]:
    async def callback(request: Request) -> Response:
        params = request.query_params
        state, code, error = params.get("state", ""), params.get("code", ""), params.get("error")
        loop = asyncio.get_running_loop()
        for handler in callback_handlers:
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
            await loop.run_in_executor(None, google_auth.complete, app, state, code)
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
            watch.accept_push,
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
        Route(google_auth.CALLBACK_PATH, callback, methods=["GET"]),
        Route(watch.PUSH_PATH, push, methods=["POST"]),
    ]

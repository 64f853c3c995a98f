"""The daemon's Starlette application: health checks, JSON errors, a request-body limit, and
every feature's routes, listed in one place (``FEATURES``).

A feature module exposes ``routes(app, host)``, which builds its routes for one daemon (seen
through :class:`syncd.web.host.Host`); nothing registers itself by being imported. An embedding
(or a test) may serve routes of its own with ``register_routes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine as DbEngine
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from syncd.app import App
from syncd.store.database import alembic_config
from syncd.web import (
    admin_api,
    connect_links_api,
    connect_page,
    dashboard,
    feeds_api,
    google,
    ingest_api,
    metrics_api,
    openapi,
    read_api,
)
from syncd.web.host import Host, RouteFactory
from syncd.web.responses import error_response

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: far above any platform event or Google notification
READY_TIMEOUT = 2.0  # seconds the database has to answer /readyz


def google_routes(app: App, daemon: Host) -> list[BaseRoute]:
    """Google's OAuth callback and push receiver; a consent begun on the connect page is
    finished by the connect page."""
    return google.routes(app, daemon, callback_handlers=(connect_page.google_callback,))


# Every feature's routes, in the order they are matched.
FEATURES: tuple[RouteFactory, ...] = (
    google_routes,
    admin_api.routes,
    connect_links_api.routes,
    connect_page.routes,
    dashboard.routes,
    feeds_api.routes,
    ingest_api.routes,
    metrics_api.routes,
    openapi.routes,
    read_api.routes,
)

_factories: list[RouteFactory] = list(FEATURES)


def register_routes(factory: RouteFactory) -> RouteFactory:
    """Serve also the routes ``factory(app, daemon)`` returns, in every daemon started from now
    on (an embedding's or a test's own). Registering the same factory again is a no-op."""
    if factory not in _factories:
        _factories.append(factory)
    return factory


def extra_routes(app: App, daemon: Host) -> list[BaseRoute]:
    """The routes of every feature and registered factory, in order."""
    return [route for factory in _factories for route in factory(app, daemon)]


def build_app(
    app: App,
    daemon: Host,
    routes: Sequence[BaseRoute] | None = None,
    *,
    max_body: int = MAX_BODY,
) -> Starlette:
    """The HTTP application of one daemon: ``/healthz``, ``/readyz`` and ``routes`` (default:
    every feature's, and any added with ``register_routes``)."""
    probe = _DatabaseProbe(app.db, READY_TIMEOUT)
    heads = frozenset(ScriptDirectory.from_config(alembic_config(app.db)).get_heads())

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        # Every failing reason is named: the database, its schema, the scheduler, shutdown.
        reasons: list[str] = []
        db_reason = await probe.check()
        if db_reason is not None:
            reasons.append(db_reason)
        elif probe.revisions is not None and frozenset(probe.revisions) != heads:
            current = ", ".join(sorted(probe.revisions)) or "none"
            reasons.append(
                f"the database schema is at {current}, not {', '.join(sorted(heads))}"
                " (run syncd db upgrade)"
            )
        if not daemon.scheduler_running:
            reasons.append("the scheduler is not running")
        if daemon.stopping:
            reasons.append("the daemon is shutting down")
        if reasons:
            return JSONResponse(
                {"status": "unavailable", "reason": "; ".join(reasons), "reasons": reasons},
                status_code=503,
            )
        return JSONResponse({"status": "ready"})

    all_routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *(extra_routes(app, daemon) if routes is None else routes),
    ]
    _check_unique(all_routes)
    middleware = [Middleware(RefusalLog), Middleware(BodyLimit, max_bytes=max_body)]
    proxies = app.config.http.trusted_proxies
    if proxies:
        # Outermost, so everything inside sees the client the trusted proxy named.
        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=list(proxies)))
    web = Starlette(
        routes=all_routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    web.state.app = app
    web.state.daemon = daemon
    return web


def _check_unique(routes: Sequence[BaseRoute]) -> None:
    seen: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            # Sorted, so the error names the same method every run (GET before HEAD).
            for method in sorted(route.methods or {"*"}):
                if (route.path, method) in seen:
                    raise ValueError(f"HTTP route {method} {route.path} is registered twice")
                seen.add((route.path, method))


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _server_error(_request: Request, _exc: Exception) -> Response:
    # Starlette re-raises after this response, so uvicorn logs the traceback; the client only
    # learns that it failed.
    return error_response(500, "Internal Server Error")


class _DatabaseProbe:
    """``SELECT 1`` on a worker thread with a deadline. A probe stuck on a hung database is
    shared by the next checks rather than piling up one blocked thread per request."""

    def __init__(self, db: DbEngine, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._running: asyncio.Future[tuple[str, ...] | None] | None = None
        self.revisions: tuple[str, ...] | None = None  # migration revisions at the last check

    async def check(self) -> str | None:
        """None when the database answered in time, else why not."""
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(None, self._select_one)
            self._running.add_done_callback(_retrieve)
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return f"the database did not answer within {self.timeout:g} s"
        except Exception as exc:
            log.warning("readiness check: the database failed: %s", exc)
            return f"the database failed the check ({type(exc).__name__})"
        self.revisions = self._running.result()
        return None

    def _select_one(self) -> tuple[str, ...] | None:
        """``SELECT 1``, then the database's current migration revisions."""
        with self.db.connect() as conn:
            conn.execute(text("SELECT 1"))
            return tuple(MigrationContext.configure(conn).get_current_heads())


def _retrieve(future: asyncio.Future[tuple[str, ...] | None]) -> None:
    if not future.cancelled():
        future.exception()  # consumed here when no request awaits it any more


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with a JSON 413: at once when Content-Length
    says so, else as soon as the streamed body crosses the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, too_large)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            # Normally rendered by Starlette's exception middleware inside this one; this
            # catches a body read outside it (another middleware) before any response.
            if exc.status_code != 413 or started:
                raise
            await error_response(413, too_large)(scope, receive, send)


class RefusalLog:
    """One log line per refused request (a 4xx answer): method, route template (never the raw
    path, which may hold a feed token), client address, status and the JSON error. Refusals are
    expected and come from outside, so never a traceback; 429s are left to the rate limiter,
    which logs once when a client reaches its limit rather than once per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        error = ""

        async def watching_send(message: Message) -> None:
            nonlocal status, error
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and 400 <= status < 500:
                error += _error_text(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, watching_send)
        if 400 <= status < 500 and status != 429:
            route = scope.get("route")
            client = scope.get("client")
            log.info(
                "refused %s %s from %s: %d%s",
                scope.get("method", "?"),
                route.path if isinstance(route, Route | Mount) else "(no route)",
                client[0] if client else "?",
                status,
                f" {error}" if error else "",
            )


def _error_text(body: bytes) -> str:
    """The ``error`` of a JSON error body, on one line and short; "" for anything else."""
    if not body.startswith(b'{"status"') or len(body) > 4096:
        return ""
    try:
        message = json.loads(body).get("error", "")
    except ValueError:
        return ""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(message))
    return text[:200]

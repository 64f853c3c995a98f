"""Runs the daemon's HTTP application with uvicorn on the daemon's own asyncio event loop.

The daemon owns SIGTERM and SIGINT (they stop it, and it stops this server in turn), so uvicorn
must not touch signal handlers. Since uvicorn 0.29 ``Server.serve()`` wraps itself in
``Server.capture_signals()``, which replaces both handlers with ``signal.signal`` while it runs
and re-raises the captured signals afterwards; ``_EmbeddedServer`` makes that a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from syncd.config import ConfigError, HttpConfig

log = logging.getLogger(__name__)


class WebServerError(ConfigError):
    """The HTTP server could not start (the configured port is taken, the host does not
    resolve…): a configuration problem, reported by the CLI as one line."""


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process keeps its own SIGTERM/SIGINT handling


class _ErrorCapture(logging.Handler):
    """Keeps uvicorn's start-up error (it logs the OSError, then exits) for our own message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class WebServer:
    """One uvicorn server in a task of the running loop: ``await start()`` returns once it is
    listening (so ``bound_port`` is known even for port 0); ``await stop()`` closes it."""

    def __init__(self, app: ASGIApp, config: HttpConfig, *, shutdown_timeout: int = 5) -> None:
        self.config = config
        self._uvicorn = uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            log_config=None,  # keep syncd's logging setup; uvicorn's loggers propagate to it
            access_log=False,
            lifespan="off",
            ws="none",
            server_header=False,
            # X-Forwarded-For is believed only from [http] trusted_proxies, and build_app does
            # that; uvicorn's own default would believe any local caller.
            proxy_headers=False,
            timeout_graceful_shutdown=shutdown_timeout,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.started and not self._stopping

    @property
    def bound_port(self) -> int:
        """The port actually listened on (the configured one, or the one picked for port 0)."""
        if self._server is None or not self._server.started:
            raise RuntimeError("the HTTP server is not running")
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def listen_url(self) -> str:
        return _url(self.config.host, self.bound_port)

    @property
    def base_url(self) -> str:
        """The externally reachable base URL: ``[http] public_url``, else the listening one."""
        return self.config.public_url or self.listen_url

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the HTTP server is already started")
        self._stopping = False
        server = self._server = _EmbeddedServer(self._uvicorn)
        errors = _ErrorCapture()
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addHandler(errors)
        task = self._task = asyncio.create_task(self._serve(server, errors), name="syncd-http")
        try:
            while not server.started:
                await asyncio.wait({task}, timeout=0.01)
                if task.done():
                    self._task = None
                    task.result()  # raises the start-up error
                    raise WebServerError(self._failure(errors))
        except asyncio.CancelledError:
            server.should_exit = True
            raise
        finally:
            uvicorn_log.removeHandler(errors)
        task.add_done_callback(self._ended)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None or self._server is None:
            return
        self._stopping = True
        self._server.should_exit = True
        with contextlib.suppress(WebServerError):
            await task

    async def _serve(self, server: _EmbeddedServer, errors: _ErrorCapture) -> None:
        try:
            await server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot listen; here it is not the process.
            raise WebServerError(self._failure(errors)) from None

    def _failure(self, errors: _ErrorCapture) -> str:
        where = f"{self.config.host}:{self.config.port}"
        reason = f": {errors.messages[-1]}" if errors.messages else ""
        return f"the HTTP server cannot listen on {where}{reason} (see [http] in the config)"

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        log.error("the HTTP server stopped unexpectedly%s", f": {exc}" if exc else "")

"""An in-process daemon serving HTTP while blocking client code runs on a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

from syncd.app import App
from syncd.daemon import Daemon
from syncd.metrics import Metrics
from syncd.web.app import build_app
from syncd.web.server import WebServer

T = TypeVar("T")


def with_http_daemon(app: App, check: Callable[[Daemon, str], T], timeout: float = 120) -> T:
    """Start a daemon, run ``check(daemon, base_url)`` on a thread, stop the daemon cleanly."""

    async def main() -> T:
        daemon = Daemon(app)
        task = asyncio.create_task(daemon.serve())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while daemon.web is None or not daemon.web.running:
            if task.done():
                await task
                raise AssertionError("the daemon stopped before its HTTP service started")
            assert loop.time() < deadline, "HTTP service did not start"
            await asyncio.sleep(0.01)
        try:
            return await asyncio.to_thread(check, daemon, daemon.web.listen_url)
        finally:
            daemon.stop()
            await task

    return asyncio.run(main())


class NoDaemon:
    """What the routes need of a daemon, without one: no passes run, so the database changes
    only by what the requests do."""

    scheduler_running = True
    stopping = False

    def __init__(self, app: App | None = None) -> None:
        if app is not None:
            self.metrics = Metrics(
                app.sessions, app.clock, replica="test", alive_within=timedelta(seconds=60)
            )

    def wake(self) -> None:
        pass


@contextmanager
def serving(app: App) -> Iterator[str]:
    """The daemon's HTTP application on the real server (uvicorn, as ``syncd run`` serves it) on
    a loopback port, without the daemon; yields its base URL."""
    web = build_app(app, NoDaemon(app))
    server = WebServer(web, app.config.http)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-http", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=60)
        yield server.listen_url
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=60)
        loop.close()

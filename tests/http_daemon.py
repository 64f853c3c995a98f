"""An in-process daemon serving HTTP while blocking client code runs on a worker thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from syncd.app import App
from syncd.daemon import Daemon

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

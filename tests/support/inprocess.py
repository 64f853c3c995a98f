"""Running the real Daemon in-process (on an injected clock when the App has one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from syncd.app import App
from syncd.daemon import Daemon


def run_daemon_until(app: App, done: Callable[[Daemon], bool], timeout: float = 120) -> Daemon:
    """Run an in-process daemon until ``done(daemon)``, then stop it cleanly."""
    daemon = Daemon(app)

    async def main() -> None:
        task = asyncio.create_task(daemon.serve())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(daemon):
            if loop.time() > deadline or task.done():
                daemon.stop()
                await task
                raise AssertionError("daemon did not reach the expected state")
            await asyncio.sleep(0.02)
        daemon.stop()
        await task

    asyncio.run(main())
    return daemon

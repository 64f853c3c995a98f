"""The daemon's scheduler jobs in flight: a stop lets them end instead of cancelling them."""

from __future__ import annotations

import asyncio
import logging

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


class JobsInFlight:
    """Counts scheduler jobs between submission and completion. APScheduler's asyncio executor
    stops by cancelling the jobs still in flight and logs each as an error with a traceback
    ending in CancelledError; a stop instead pauses the scheduler and lets them end (they are
    short: a wake-up, a heartbeat, a sweep), and only cancels what is left after a bound."""

    SETTLE_TIMEOUT = 10.0

    def __init__(self, scheduler: AsyncIOScheduler) -> None:
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()
        scheduler.add_listener(
            self._event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        )

    def _event(self, event: JobEvent) -> None:  # on the event loop's thread
        if event.code == EVENT_JOB_SUBMITTED:
            self.running += 1
            self.idle.clear()
        else:
            self.running = max(0, self.running - 1)
            if not self.running:
                self.idle.set()

    async def settle(self, scheduler: AsyncIOScheduler) -> None:
        scheduler.pause()
        try:
            await asyncio.wait_for(self.idle.wait(), self.SETTLE_TIMEOUT)
        except TimeoutError:
            log.warning("%d scheduler jobs still running at shutdown; cancelling", self.running)
        scheduler.shutdown(wait=False)

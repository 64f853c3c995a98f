"""The long-running service: wakes up, claims due therapists from the database, runs their passes
on a bounded thread pool, and reschedules them.

APScheduler only decides *when to look*; what is due lives in the ``sync_queue`` table, so a
restart (or another replica) finds overdue work at once and nothing durable is lost with the
process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd import expiry, logs, pending_grants, retention, watch
from syncd.app import App
from syncd.config import ConfigError, google_push_problem
from syncd.engine import Engine, PassReport
from syncd.jobs import JobsInFlight
from syncd.lifecycle import Lifecycle
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.replica import dead_local_owner, heartbeat_interval, replica_id
from syncd.store import queue, replicas, wakeups
from syncd.web.app import build_app
from syncd.web.server import WebServer

log = logging.getLogger(__name__)

# A replica killed without shutting down keeps its registry row (shown as not alive) this long.
REPLICA_FORGET_AFTER = timedelta(hours=1)


class Daemon:
    def __init__(
        self,
        app: App,
        *,
        owner: str | None = None,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.app = app
        self.owner = owner or replica_id()
        self._engine = app.engine()
        cfg = app.config.daemon
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="pass")
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._sweeping: asyncio.Future[None] | None = None
        self._sweep_again = False
        self.passes = 0
        # Notifications to the platform (the outbox), sent only when a webhook is configured.
        self._deliverer = app.deliverer() if app.config.platform.webhook_url else None
        self._delivering: asyncio.Future[int] | None = None
        self.web: WebServer | None = None  # the HTTP service, while serve() runs with [http] on
        self.metrics = Metrics(  # this daemon's own registry
            app.sessions,
            app.clock,
            replica=self.owner,
            alive_within=timedelta(seconds=cfg.lease_seconds),
        )
        # PostgreSQL: other replicas' writes wake this one at once (see syncd.store.wakeups).
        self.listener: wakeups.Listener | None = None
        # sd_notify (READY/WATCHDOG/RELOADING/STOPPING) and SIGHUP reload of ``config_path``.
        self.lifecycle = Lifecycle(self, config_path, notifier or Notifier.from_env())

    @property
    def stopping(self) -> bool:
        """stop() was called: the daemon is shutting down (or has stopped)."""
        return self._stop.is_set()

    @property
    def scheduler(self) -> AsyncIOScheduler | None:
        """The running scheduler (None before serve() starts it)."""
        return self._scheduler

    @property
    def engine(self) -> Engine:
        """The engine that runs this daemon's passes."""
        return self._engine

    @property
    def scheduler_running(self) -> bool:
        return self._scheduler is not None and bool(self._scheduler.running)

    def stop(self) -> None:
        self.lifecycle.stopping()
        self._stop.set()
        self._wake.set()

    def reload(self) -> None:
        """Re-read the configuration file and apply what can change at runtime (SIGHUP)."""
        self.lifecycle.request_reload()

    def wake(self) -> None:
        """Look for due work now (called after an in-process change)."""
        self._wake.set()

    async def _poll(self) -> None:
        """The periodic look for due work. A coroutine, so the scheduler runs it on the loop:
        ``asyncio.Event`` is not thread-safe, and a plain function would run on a worker thread
        (where a stop also caught it in flight and the scheduler logged that as an error)."""
        self.wake()

    async def serve(self) -> None:
        if problem := google_push_problem(self.app.config):
            raise ConfigError(problem)
        cfg = self.app.config.daemon
        loop = asyncio.get_running_loop()
        scheduler = AsyncIOScheduler(event_loop=loop)
        every = functools.partial(self._every, scheduler)
        every(self._poll, cfg.poll_interval, "poll")
        every(self._heartbeat, heartbeat_interval(cfg.lease_seconds), "heartbeat")
        if self._deliverer is not None:
            every(self._deliver, self.app.config.platform.poll_interval, "outbox")
        every(self._sweep, self.app.config.offers.sweep_interval, "expiry-sweep")
        # Once at start too (a daemon restarted daily would otherwise never purge).
        every(
            self._retention,
            self.app.config.retention.sweep_interval,
            "retention",
            next_run_time=datetime.now(UTC),
        )
        if self.app.config.google.client_id and self.app.config.http.public_url:
            every(self._renew_watches, 5, "google-watch")
        if self.app.config.google.client_id:
            every(self._abandoned_grants, pending_grants.SWEEP_INTERVAL, "abandoned-grants")
        await loop.run_in_executor(None, self._register)
        # Before anything else: offers that expired while we were down release their holds
        # now, so the first passes already write the calendars without them.
        await self._sweep(scheduler)
        await loop.run_in_executor(None, self._reclaim)
        if self.app.db.url.get_backend_name() == "postgresql":

            def notified(channel: str) -> None:  # on the listener's thread
                loop.call_soon_threadsafe(self._notified, channel)

            self.listener = wakeups.Listener(self.app.db.url, notified)
            self.listener.start()
        self._scheduler = scheduler
        jobs = JobsInFlight(scheduler)
        scheduler.start()
        log.info(
            "syncd running as %s (database %s)", self.owner, self.app.db.url.render_as_string()
        )
        try:
            if self.app.config.http.enabled:
                await self._start_web()
            self.lifecycle.ready()
            while not self._stop.is_set():
                await self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    break
                await self._dispatch()
        finally:
            await jobs.settle(scheduler)
            if self._sweeping is not None and not self._sweeping.done():
                # A sweep requested by NOTIFY: it ends at its next check of stopping.
                await asyncio.wait([self._sweeping], timeout=JobsInFlight.SETTLE_TIMEOUT)
            if self.listener is not None:
                await loop.run_in_executor(None, self.listener.stop)
            if self.web is not None:
                await self.web.stop()
            await self._drain(self.app.config.daemon.shutdown_timeout)  # reloadable
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._engine.close()
            await loop.run_in_executor(None, self._unregister)
            if self._deliverer is not None:
                await loop.run_in_executor(None, self._deliverer.close)  # after the send in flight
            log.info("syncd stopped after %d passes", self.passes)
            await self.lifecycle.close()

    async def _start_web(self) -> None:
        self.web = WebServer(build_app(self.app, self), self.app.config.http)
        await self.web.start()
        public = self.app.config.http.public_url
        extra = f" (public URL {public})" if public else ""
        log.info("HTTP service listening on %s%s", self.web.listen_url, extra)

    async def _dispatch(self) -> None:
        cfg = self.app.config.daemon
        free = cfg.workers - len(self._in_flight)
        if free <= 0:
            return
        loop = asyncio.get_running_loop()
        claims = await loop.run_in_executor(None, self._claim, free)
        for claim in claims:
            fut = loop.run_in_executor(self._pool, self._run, claim)
            self._in_flight[claim.therapist_id] = fut
            fut.add_done_callback(functools.partial(self._done, claim.therapist_id))

    def _done(self, therapist_id: str, _future: asyncio.Future[None]) -> None:
        self._in_flight.pop(therapist_id, None)
        self.passes += 1
        self._wake.set()  # a slot freed up: more work may be waiting

    async def _sweep(self, scheduler: AsyncIOScheduler | None = None) -> None:
        """Expire what is due, then set an exact wake-up for the next expiry."""
        loop = asyncio.get_running_loop()
        sessions = self.app.sessions
        expired = await loop.run_in_executor(None, expiry.expire_due, sessions, self.app.clock())
        if expired:
            self.wake()
        nxt = await loop.run_in_executor(None, expiry.next_expiry, sessions)
        scheduler = scheduler or self._scheduler
        if nxt is not None and scheduler is not None:
            # APScheduler runs on the wall clock; the injected clock only matters in tests,
            # where the periodic sweep covers any difference.
            scheduler.add_job(
                self._job(self._sweep),
                "date",
                run_date=nxt,
                id="expiry-next",
                replace_existing=True,
                misfire_grace_time=None,
            )

    async def _abandoned_grants(self) -> None:
        """Revoke and drop Google grants left waiting past their link (syncd.pending_grants)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, pending_grants.discard_expired, self.app)

    async def _retention(self) -> None:
        """Purge history past ``[retention] days`` on a worker thread (syncd.retention)."""
        loop = asyncio.get_running_loop()
        # First, so no link whose grant is still held is purged with it unrevoked.
        await loop.run_in_executor(None, pending_grants.discard_expired, self.app)
        purged = await loop.run_in_executor(
            None, retention.sweep, self.app.sessions, self.app.config, self.app.clock()
        )
        if purged.therapists:
            self.wake()

    async def _deliver(self) -> None:
        """Send due outbox notifications on a worker thread. The job returns at once; a round
        still running (a slow platform) is not doubled, and the scheduler never warns about it."""
        if self._deliverer is not None and (self._delivering is None or self._delivering.done()):
            loop = asyncio.get_running_loop()
            self._delivering = loop.run_in_executor(None, self._deliverer.deliver_due)

    async def _renew_watches(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, watch.renew_watches, self.app)

    def _every(
        self,
        scheduler: AsyncIOScheduler,
        job: Callable[[], Awaitable[None]],
        seconds: float,
        job_id: str,
        **options: Any,
    ) -> None:
        """A periodic scheduler job: one run at a time, and after a stall one run, not a burst
        of the missed ones."""
        scheduler.add_job(
            self._job(job),
            "interval",
            seconds=seconds,
            id=job_id,
            coalesce=True,
            max_instances=1,
            **options,
        )

    def _job(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """A scheduler job. Stopping the daemon cancels a job caught mid-await; that is the
        shutdown, not an error for the scheduler to log with a traceback."""

        @functools.wraps(job)
        async def run() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                if not self.stopping:
                    raise

        return run

    def _notified(self, channel: str) -> None:
        if channel == wakeups.OFFERS:
            # A new pending offer somewhere: re-read the next expiry so this replica's timer is
            # exact too (whichever replica fires first releases the hold; the rest find nothing).
            self._request_sweep()
        else:
            self.wake()

    def _request_sweep(self) -> None:
        """Sweep soon, coalescing a burst of requests (one per offer ingested anywhere) into
        the sweep running now plus at most one more."""
        if self._sweeping is not None and not self._sweeping.done():
            self._sweep_again = True
            return
        self._sweeping = asyncio.ensure_future(self._sweep_until_quiet())

    async def _sweep_until_quiet(self) -> None:
        while True:
            self._sweep_again = False
            try:
                await self._sweep()
            except Exception:
                log.exception("expiry sweep failed; the periodic sweep will retry")
            if not self._sweep_again or self.stopping:
                return

    def _register(self) -> None:
        now = self.app.clock()
        with self.app.sessions() as s:
            replicas.register(s, self.owner, now)
            pruned = replicas.prune(s, now, REPLICA_FORGET_AFTER)
        if pruned:
            log.info("forgot %d replicas not seen for %s", pruned, REPLICA_FORGET_AFTER)

    def _unregister(self) -> None:
        try:
            with self.app.sessions() as s:
                replicas.unregister(s, self.owner)
        except Exception as exc:  # the database may be what is failing; the row just ages out
            log.warning("could not remove this replica's registry row: %s", type(exc).__name__)

    def _reclaim(self) -> None:
        # Only processes of this host known to be gone: another replica's silence may be a
        # start-up or a stalled event loop while its passes still run (their leases expire).
        with self.app.sessions() as s:
            freed = queue.reclaim(s, dead_local_owner, self.app.clock())
        if freed:
            log.info("took over %d therapists from a stopped process", len(freed))

    async def _heartbeat(self) -> None:
        running = list(self._in_flight)
        now = self.app.clock()
        until = now + timedelta(seconds=self.app.config.daemon.lease_seconds)

        def renew() -> None:
            with self.app.sessions() as s:
                if running:
                    queue.renew(s, self.owner, running, until)
                replicas.beat(s, self.owner, now)

        await asyncio.get_running_loop().run_in_executor(None, renew)

    def _claim(self, limit: int) -> list[queue.Claim]:
        lease = timedelta(seconds=self.app.config.daemon.lease_seconds)
        with self.app.sessions() as s:
            return queue.claim_due(
                s, self.owner, self.app.clock(), lease, limit, skip=set(self._in_flight)
            )

    def _run(self, claim: queue.Claim) -> None:
        started = self.app.clock()
        sync = self.app.config.sync
        report: PassReport | None = None
        crash: Exception | None = None
        began = time.monotonic()
        with logs.pass_context(claim.therapist_id):
            try:
                report = self._engine.run_pass(claim.therapist_id, full=claim.full)
            except Exception as exc:
                # A bug must not take the daemon down; the pass is retried with backoff.
                crash = exc
                log.exception("pass for therapist %s crashed", claim.therapist_id)
        self.metrics.observe_pass(report, time.monotonic() - began, crash)
        failed = report is None or report.failed
        if failed:
            delay = min(sync.failure_backoff_cap, 5.0 * 2**claim.attempts)
            if report is not None and report.retry_after is not None:
                delay = max(delay, report.retry_after)
        else:
            delay = sync.interval
        next_at = (
            None if report is not None and report.missing else started + timedelta(seconds=delay)
        )
        with self.app.sessions() as s:
            queue.release(
                s, claim.therapist_id, self.owner, started=started, next_at=next_at, failed=failed
            )

    async def _drain(self, timeout: float) -> None:
        pending = list(self._in_flight.values())
        if not pending:
            return
        log.info("waiting up to %.0fs for %d running passes", timeout, len(pending))
        _done, still = await asyncio.wait(pending, timeout=timeout)
        if still:
            log.warning("%d passes still running at shutdown; their leases will expire", len(still))

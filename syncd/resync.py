"""Manual passes (``syncd resync``, the dashboard's and the admin API's resync): each run under
the therapist's lease, as the daemon's own passes are, so a running daemon or replica never
overlaps them; a lease held by a process known to be gone is taken over at once."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from syncd import logs
from syncd.app import App
from syncd.engine import Engine, PassReport
from syncd.errors import OperationError
from syncd.replica import replica_id
from syncd.store import queue, replicas, repo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResyncResult:
    therapist_id: str
    report: PassReport | None
    busy: bool = False  # a live pass held the therapist throughout: nothing was done
    held_by: str | None = None  # who held it (busy), or whose dead lease was taken over
    took_over: bool = False  # the lease of a process known to be gone was taken at once

    @property
    def synced(self) -> bool:
        """A pass ran and every connection of the therapist succeeded."""
        return self.report is not None and not any(c.error for c in self.report.connections)


# Called while a live pass holds a therapist: (therapist, holder, seconds left to wait).
Waiting = Callable[[str, str, float], None]


def resync(
    app: App,
    therapist_ids: Iterable[str],
    *,
    full: bool = False,
    dry_run: bool = False,
    progress: Callable[[ResyncResult], None] | None = None,
    wait: float = 0.0,
    waiting: Waiting | None = None,
) -> list[ResyncResult]:
    """Run passes now, each under the therapist's lease so a running daemon never overlaps.

    A lease held by a process known to be gone is taken over at once; one held by a live pass
    is waited for up to ``wait`` seconds (``waiting`` is told), then reported ``busy``."""
    ids = list(therapist_ids)
    with app.sessions() as s:
        known = set(repo.therapist_ids(s))
    if unknown := [t for t in ids if t not in known]:
        raise OperationError(f"unknown therapist {unknown[0]!r}")
    engine = app.engine()
    owner = f"resync:{replica_id()}"
    results: list[ResyncResult] = []
    try:
        for tid in ids:
            result = _resync_one(app, engine, owner, tid, full, dry_run, wait, waiting)
            results.append(result)
            if progress:
                progress(result)
    finally:
        engine.close()
    return results


def _claim(
    app: App, owner: str, tid: str, wait: float, waiting: Waiting | None
) -> tuple[bool, str | None, bool]:
    """(got the lease, the holder that kept or lost it, whether it was a dead one's)."""
    lease_seconds = app.config.daemon.lease_seconds
    lease = timedelta(seconds=lease_seconds)
    deadline = time.monotonic() + wait
    told = 0.0
    while True:
        now = app.clock()
        with app.sessions() as s:
            if queue.acquire(s, tid, owner, now, lease):
                return True, None, False
            holder = queue.holder(s, tid, now)
            if holder is None:
                continue  # released between the two statements: try again at once
            if replicas.holder_dead(s, holder, now, lease_seconds):
                if queue.take_over(s, tid, holder, owner, now, lease):
                    log.info("resync took over therapist %s from stopped process %s", tid, holder)
                    return True, holder, True
                continue
        left = deadline - time.monotonic()
        if left <= 0:
            return False, holder, False
        if waiting is not None and time.monotonic() >= told:
            waiting(tid, holder, left)
            told = time.monotonic() + 5
        time.sleep(min(0.25, left))


def _resync_one(
    app: App,
    engine: Engine,
    owner: str,
    tid: str,
    full: bool,
    dry_run: bool,
    wait: float,
    waiting: Waiting | None,
) -> ResyncResult:
    got, holder, dead = _claim(app, owner, tid, wait, waiting)
    if not got:
        return ResyncResult(tid, None, busy=True, held_by=holder)
    lease = timedelta(seconds=app.config.daemon.lease_seconds)
    started = app.clock()
    try:
        with _lease_kept(app, tid, owner, lease), logs.pass_context(tid):
            report = engine.run_pass(tid, full=full, dry_run=dry_run)
    finally:
        with app.sessions() as s:
            queue.release(
                s,
                tid,
                owner,
                started=started,
                next_at=started + timedelta(seconds=app.config.sync.interval),
                failed=False,
            )
    return ResyncResult(tid, report, held_by=holder, took_over=dead)


@contextlib.contextmanager
def _lease_kept(app: App, therapist_id: str, owner: str, lease: timedelta) -> Iterator[None]:
    """Renew a resync's lease while its pass runs, as the daemon's heartbeat does for its own,
    so a pass longer than one lease is never joined by a replica's."""
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                with app.sessions() as s:
                    queue.renew(s, owner, [therapist_id], app.clock() + lease)
            except Exception as exc:  # the pass itself will meet the database error
                log.warning("renewing the resync lease failed: %s", type(exc).__name__)

    keeper = threading.Thread(target=keep, name="resync-lease", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def all_therapist_ids(app: App) -> list[str]:
    with app.sessions() as s:
        return repo.therapist_ids(s)

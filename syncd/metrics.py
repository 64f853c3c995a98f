"""Prometheus metrics of one daemon, in a registry of its own (several daemons in one process,
as in tests, never collide).

Counters and the pass histogram are fed by the daemon from each ``PassReport``; the gauges
(backlog, holds, conflicts, outbox, connections) are read from the database at scrape time, off
the event loop and under a deadline (``Metrics.refresh``), then rendered by a custom collector.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from syncd import domain as d
from syncd.clock import Clock
from syncd.engine import ConnectionReport, PassReport
from syncd.plan import Op
from syncd.store import replicas
from syncd.store.tables import ConflictRow, ConnectionRow, OfferRow, OutboxRow, SyncQueueRow

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0  # seconds the database has to answer the gauges' queries
CONNECTION_STATES = ("new", "ok", "error", "auth_failed", "needs_reauth")
ACTION_KINDS = tuple(op.value for op in Op)
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(slots=True)
class Snapshot:
    """The database-derived gauges at one moment."""

    due: int = 0
    oldest_due_age: float = 0.0
    pending_holds: int = 0
    open_conflicts: int = 0
    outbox_pending: int = 0
    connections: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)  # unexpired leases per owner
    replicas: dict[str, int] = field(default_factory=dict)  # registered replicas: alive/stale


def snapshot(s: Session, now: datetime, alive_within: timedelta = timedelta(minutes=1)) -> Snapshot:
    """A few aggregate queries (indexed columns); pending offers are read to count their
    alternatives, one small JSON list each."""
    snap = Snapshot()
    due_filter = SyncQueueRow.due_at.is_not(None) & (SyncQueueRow.due_at <= now)
    count, oldest = s.execute(
        select(func.count(), func.min(SyncQueueRow.due_at)).where(due_filter)
    ).one()
    snap.due = int(count or 0)
    oldest = cast(Any, oldest)
    if oldest is not None:
        if isinstance(oldest, str):  # SQLite aggregates lose the column type
            oldest = datetime.fromisoformat(oldest)
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        snap.oldest_due_age = max(0.0, (now - oldest).total_seconds())
    alternatives = s.scalars(
        select(OfferRow.alternatives).where(
            OfferRow.state == d.OfferState.PENDING.value, OfferRow.expires_at > now
        )
    )
    snap.pending_holds = sum(len(a or []) for a in alternatives)
    snap.open_conflicts = int(
        s.scalar(
            select(func.count()).select_from(ConflictRow).where(ConflictRow.resolved_at.is_(None))
        )
        or 0
    )
    snap.outbox_pending = int(
        s.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.delivered_at.is_(None))
        )
        or 0
    )
    snap.connections = {state: 0 for state in CONNECTION_STATES}
    for state, n in s.execute(
        select(ConnectionRow.state, func.count()).group_by(ConnectionRow.state)
    ):
        snap.connections[state] = int(n)
    snap.leases = replicas.leases_by_owner(s, now)
    # "stale": no recent heartbeat; "gone": its process no longer exists on this host.
    snap.replicas = {"alive": 0, "stale": 0, "gone": 0}
    for r in replicas.overview(s, now, alive_within, snap.leases):
        snap.replicas[{replicas.SILENT: "stale"}.get(r.state, r.state)] += 1
    return snap


class _DatabaseCollector(Collector):
    """Renders the last snapshot taken by ``Metrics.refresh`` (never queries by itself, so
    rendering cannot block)."""

    def __init__(self, replica: str) -> None:
        self.snapshot: Snapshot | None = None
        self.up = False
        self.replica = replica

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "syncd_replica_info", "This process's replica id (constant 1)", labels=["replica"]
        )
        info.add_metric([self.replica], 1)
        yield info
        yield GaugeMetricFamily(
            "syncd_metrics_database_up",
            "1 if the database answered the gauges' queries of this scrape in time",
            value=1.0 if self.up else 0.0,
        )
        snap = self.snapshot
        if snap is None or not self.up:
            return
        yield GaugeMetricFamily(
            "syncd_due_backlog", "Therapists whose next pass is due now", value=snap.due
        )
        yield GaugeMetricFamily(
            "syncd_due_oldest_age_seconds",
            "How long the oldest due pass has been waiting (0 when none is due)",
            value=snap.oldest_due_age,
        )
        yield GaugeMetricFamily(
            "syncd_pending_holds",
            "Alternatives held for pending, unexpired offers",
            value=snap.pending_holds,
        )
        yield GaugeMetricFamily(
            "syncd_open_conflicts", "Unresolved calendar conflicts", value=snap.open_conflicts
        )
        yield GaugeMetricFamily(
            "syncd_outbox_pending",
            "Notifications to the platform not delivered yet",
            value=snap.outbox_pending,
        )
        by_state = GaugeMetricFamily(
            "syncd_connections", "Calendar connections by state", labels=["state"]
        )
        for state, n in sorted(snap.connections.items()):
            by_state.add_metric([state], n)
        yield by_state
        leases = GaugeMetricFamily(
            "syncd_leases",
            "Therapists whose pass is running, by the replica (or CLI resync) holding the lease",
            labels=["replica"],
        )
        for owner, n in sorted(snap.leases.items()):
            leases.add_metric([owner], n)
        yield leases
        registered = GaugeMetricFamily(
            "syncd_replicas",
            "Registered daemon processes on this database: alive (recent heartbeat), stale "
            "(none), or gone (its process no longer exists on the scraped host)",
            labels=["state"],
        )
        for state, n in sorted(snap.replicas.items()):
            registered.add_metric([state], n)
        yield registered


class Metrics:
    """One daemon's metrics and registry."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        timeout: float = SCRAPE_TIMEOUT,
        *,
        replica: str = "",
        alive_within: timedelta = timedelta(minutes=1),
    ) -> None:
        self.sessions = sessions
        self.alive_within = alive_within
        self.clock = clock
        self.timeout = timeout
        self.registry = CollectorRegistry(auto_describe=True)
        self.pass_duration = Histogram(
            "syncd_pass_duration_seconds",
            "Duration of sync passes by outcome (ok, error, crashed, missing)",
            ["outcome"],
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "syncd_actions",
            "Calendar actions by kind (create, update, delete, forget, rehash) and result",
            ["kind", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "syncd_errors",
            "Failed connection syncs by error class",
            ["error_class"],
            registry=self.registry,
        )
        self._db = _DatabaseCollector(replica)
        self.registry.register(self._db)
        self._refreshing: asyncio.Future[Snapshot] | None = None
        self._lock = threading.Lock()

    # -- fed by the daemon --------------------------------------------------------------------

    def observe_pass(
        self, report: PassReport | None, seconds: float, crash: BaseException | None = None
    ) -> None:
        """Record one pass: its duration, its actions, its errors. ``report`` is None when the
        pass crashed (``crash`` says with what)."""
        if report is None:
            outcome = "crashed"
            self.errors.labels(type(crash).__name__ if crash else "Exception").inc()
        elif report.missing:
            outcome = "missing"
        else:
            outcome = "error" if report.failed else "ok"
            for conn in report.connections:
                self._observe_connection(conn)
        self.pass_duration.labels(outcome).observe(max(0.0, seconds))

    def _observe_connection(self, conn: ConnectionReport) -> None:
        done = Tally(conn.applied_ops)
        for kind, n in done.items():
            self.actions.labels(kind, "ok").inc(n)
        if conn.error is None:
            return
        self.errors.labels(conn.error_class or "Unknown").inc()
        # The action that failed: the first planned one not applied (exact when writes go one
        # by one; for batched writes, one of those not applied).
        left = Tally(a.op.value for a in conn.actions) - done
        for action in conn.actions:
            if left[action.op.value] > 0:
                self.actions.labels(action.op.value, "error").inc()
                break

    # -- scraping -----------------------------------------------------------------------------

    def _query(self) -> Snapshot:
        with self.sessions() as s:
            return snapshot(s, self.clock(), self.alive_within)

    async def refresh(self) -> None:
        """Read the gauges from the database on a worker thread, within ``timeout``. A query
        stuck on a hung database is shared by the next scrapes, not repeated."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().run_in_executor(None, self._query)
            self._refreshing.add_done_callback(_retrieve)
        try:
            snap = await asyncio.wait_for(asyncio.shield(self._refreshing), self.timeout)
        except TimeoutError:
            log.warning("metrics: the database did not answer within %g s", self.timeout)
            self._db.up = False
            return
        except Exception as exc:
            log.warning("metrics: the database queries failed: %s", type(exc).__name__)
            self._db.up = False
            return
        self._db.snapshot, self._db.up = snap, True

    def render(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        await self.refresh()
        return self.render()


def _retrieve(future: asyncio.Future[Snapshot]) -> None:
    if not future.cancelled():
        future.exception()


def iter_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a text exposition (for tests and tools)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, dict(sample.labels), sample.value

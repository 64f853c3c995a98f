"""What the admin dashboard shows, as plain objects: each therapist's sync health, holds,
drift and connections, the resync preview, and the filters that format them in the templates.
Filled by :func:`syncd.web.queries.gather`, served by :mod:`syncd.web.dashboard`.

Only ids are shown: never a client's name, and planned changes are described by kind, entity id
and time, not by their calendar title (which may carry a client's initials when the therapist
opted in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from starlette.templating import Jinja2Templates

from syncd import connect_links, outbox
from syncd.app import App
from syncd.engine import PassReport
from syncd.plan import Action
from syncd.resync import ResyncResult
from syncd.store import replicas
from syncd.store.tables import ConnectionRow, SyncQueueRow

HERE = Path(__file__).parent
ALL = "*"  # the resync target that means every therapist


@dataclass(slots=True)
class ConnectionView:
    id: int
    provider: str
    state: str  # ok | syncing | lagging | error | reauth | new
    stored_state: str
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    entries: int
    busy_state: str  # fresh | stale | flagged | -
    busy_as_of: datetime | None
    busy_error: str | None = None
    # Needs re-auth: the open reconnect link sent to the therapist (shown to admin scope only).
    reconnect: connect_links.Link | None = None


@dataclass(slots=True)
class HoldView:
    offer_id: str
    session_id: str
    alternatives: int
    expires_at: datetime
    left: timedelta


@dataclass(slots=True)
class DriftView:
    connection_id: int
    uid: str
    kind: str
    detected_at: datetime


@dataclass(slots=True)
class TherapistView:
    id: str
    display_name: str
    timezone: str
    active: bool
    due_at: datetime | None
    connections: list[ConnectionView] = field(default_factory=list)
    holds: list[HoldView] = field(default_factory=list)
    open_conflicts: int = 0
    drift: list[DriftView] = field(default_factory=list)
    held_by: str | None = None  # the replica running this therapist's pass right now

    @property
    def state(self) -> str:
        """The worst state among the connections (``none`` without any)."""
        if not self.connections:
            return "none"
        order = ["reauth", "error", "lagging", "syncing", "new", "ok"]
        return min((c.state for c in self.connections), key=order.index)


@dataclass(slots=True)
class Overview:
    now: datetime
    therapists: list[TherapistView]
    total: int
    backlog: outbox.OutboxSummary
    replicas: list[replicas.ReplicaInfo] = field(default_factory=list)

    @property
    def replicas_alive(self) -> int:
        return sum(1 for r in self.replicas if r.alive)

    @property
    def attention(self) -> int:
        return sum(1 for t in self.therapists if t.state in ("reauth", "error", "lagging"))

    @property
    def holds(self) -> int:
        return sum(len(t.holds) for t in self.therapists)

    @property
    def conflicts(self) -> int:
        return sum(t.open_conflicts for t in self.therapists)


KIND_LABELS = {
    "session": "Session",
    "hold": "Held time (pending offer)",
    "blocked": "Original slot, blocked (pending offer)",
    "reserved": "Reserved recurring slot",
    "orphan": "Entry syncd no longer needs",
}

STATE_LABELS = {
    "ok": "OK",
    "syncing": "Syncing",
    "lagging": "Lagging",
    "error": "Error",
    "reauth": "Needs re-auth",
    "new": "Waiting for first pass",
    "none": "Not connected",
}


def connection_state(c: ConnectionRow, q: SyncQueueRow | None, now: datetime, app: App) -> str:
    if c.state in ("needs_reauth", "auth_failed"):
        return "reauth"
    if c.state == "error":
        return "error"
    if q is not None and q.lease_owner and q.lease_until is not None and q.lease_until > now:
        return "syncing"
    overdue = timedelta(seconds=max(2 * app.config.daemon.lease_seconds, 60))
    if q is not None and q.due_at is not None and now - q.due_at > overdue:
        return "lagging"
    if c.last_success_at is None:
        return "new"
    old = timedelta(seconds=max(3 * app.config.sync.interval, 300))
    if now - c.last_success_at > old:
        return "lagging"
    return "ok"


@dataclass(slots=True)
class PlannedChange:
    op: str
    kind: str
    uid: str
    start: datetime | None
    end: datetime | None
    zone: str | None
    drift: str | None


def planned(action: Action) -> PlannedChange:
    """An action described without its calendar title (which may name a client)."""
    e = action.entry
    return PlannedChange(
        action.op.value,
        e.kind if e else "orphan",
        action.uid or action.href or "?",
        e.start if e else None,
        e.end if e else None,
        e.timezone if e else None,
        action.drift.value if action.drift else None,
    )


@dataclass(slots=True)
class ResyncView:
    therapist_id: str
    busy: bool
    connections: list[tuple[int, list[PlannedChange], int, str | None]]  # id, plan, applied, error

    @property
    def planned(self) -> int:
        return sum(len(actions) for _, actions, _, _ in self.connections)

    @property
    def applied(self) -> int:
        return sum(n for _, _, n, _ in self.connections)

    @property
    def errors(self) -> int:
        return sum(1 for *_, err in self.connections if err)


def resync_view(result: ResyncResult) -> ResyncView:
    report: PassReport | None = result.report
    conns = [
        (
            c.connection_id,
            [planned(a) for a in c.actions],
            c.applied,
            c.error,
        )
        for c in (report.connections if report else [])
    ]
    return ResyncView(result.therapist_id, result.busy, conns)


# -- formatting ------------------------------------------------------------------------------


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def make_templates(clock: Callable[[], datetime]) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )

    def ago(when: datetime | None) -> str:
        if when is None:
            return "never"
        delta = clock() - when
        if abs(delta.total_seconds()) < 10:
            return "just now"
        return f"in {_span(delta)}" if delta.total_seconds() < 0 else f"{_span(delta)} ago"

    def utc(when: datetime | None) -> str:
        return "—" if when is None else when.strftime("%Y-%m-%d %H:%M UTC")

    def local(when: datetime | None, zone: str | None) -> str:
        if when is None:
            return "—"
        if not zone:
            return utc(when)
        return when.astimezone(ZoneInfo(zone)).strftime("%a %d %b %H:%M ") + zone

    env.filters.update(ago=ago, utc=utc, local=local, span=_span)
    env.globals.update(labels=STATE_LABELS, kinds=KIND_LABELS, ALL=ALL)
    return Jinja2Templates(env=env)

"""One sync pass for one therapist: project → observe → plan → apply (DESIGN.md §4), then
step 5, reconcile.

Here: the connectors kept across passes, the observe/plan rounds, and what an error does to a
connection (backoff, re-authorisation with one notification). The writes themselves, each
recorded as soon as the server accepted it, are :mod:`syncd.apply`'s.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Changes, Connector
from connectors.errors import AuthFailed, AuthRevoked, ConnectorError, Transient
from syncd import logs, outbox, reconcile, retry
from syncd.apply import Applier
from syncd.clock import Clock, utc_now
from syncd.config import AvailabilityConfig
from syncd.plan import Action, plan
from syncd.project import Entry, project
from syncd.store import repo
from syncd.store.tables import ConnectionRow

log = logging.getLogger(__name__)
T = TypeVar("T")

ConnectorFactory = Callable[[ConnectionRow], Connector]
# Issues a fresh reconnect link inside the caller's transaction: (session, therapist id,
# connection id, now) -> (URL, expiry), or None when links cannot be made.
ReconnectLink = Callable[[Session, str, int, datetime], tuple[str, datetime] | None]


class ConnectionState:
    OK = "ok"
    ERROR = "error"
    # Written by syncd 0.1 for a refused password; such a connection moves to NEEDS_REAUTH (and
    # announces it) on its next pass.
    AUTH_FAILED = "auth_failed"
    # The credentials are refused (CalDAV 401/403) or the grant is gone (Google invalid_grant):
    # nothing is sent until the therapist reconnects.
    NEEDS_REAUTH = "needs_reauth"


@dataclass(slots=True)
class ConnectionReport:
    connection_id: int
    actions: list[Action] = field(default_factory=list)
    applied: int = 0
    drift: int = 0
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None
    applied_ops: list[str] = field(default_factory=list)  # the kind of each applied action
    error_class: str | None = None  # the connector error's type name (for metrics)


@dataclass(slots=True)
class PassReport:
    therapist_id: str
    connections: list[ConnectionReport] = field(default_factory=list)
    missing: bool = False  # no such therapist

    @property
    def failed(self) -> bool:
        return any(c.error for c in self.connections)

    @property
    def retryable(self) -> bool:
        return any(c.transient for c in self.connections)

    @property
    def retry_after(self) -> float | None:
        hints = [c.retry_after for c in self.connections if c.retry_after is not None]
        return max(hints) if hints else None


class Engine:
    MAX_ROUNDS = 3

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connector_for: ConnectorFactory,
        *,
        clock: Clock = utc_now,
        policy: retry.RetryPolicy | None = None,
        availability: AvailabilityConfig | None = None,
        session_url: str | None = None,
        reconnect_link: ReconnectLink | None = None,
    ) -> None:
        self._sessions = sessions
        self._session_url = session_url or None
        self._reconnect_link = reconnect_link
        self._connector_for = connector_for
        self._clock = clock
        # Read at every external call: a reloaded policy applies to the next retry.
        self.policy = policy or retry.RetryPolicy()
        self.applier = Applier(sessions, clock, lambda: self.policy)
        self._availability = availability or AvailabilityConfig()
        # Connectors live across passes: their HTTP connections, OAuth access tokens and server
        # capability probes are reused. Keyed by connection id, replaced when the row changes.
        self._connectors: dict[int, tuple[tuple[object, ...], Connector]] = {}
        self._connectors_lock = threading.Lock()

    def _connector(self, conn: ConnectionRow) -> Connector:
        key = (conn.provider, conn.url, conn.username, conn.secret, conn.calendar_url)
        with self._connectors_lock:
            cached = self._connectors.get(conn.id)
            if cached is not None and cached[0] == key:
                return cached[1]
        connector = self._connector_for(conn)
        with self._connectors_lock:
            old = self._connectors.get(conn.id)
            self._connectors[conn.id] = (key, connector)
        if old is not None:
            old[1].close()
        return connector

    def _drop_connector(self, connection_id: int) -> None:
        with self._connectors_lock:
            old = self._connectors.pop(connection_id, None)
        if old is not None:
            old[1].close()

    def close(self) -> None:
        with self._connectors_lock:
            cached, self._connectors = list(self._connectors.values()), {}
        for _key, connector in cached:
            connector.close()

    def desired(self, therapist_id: str) -> dict[str, Entry] | None:
        with self._sessions() as s:
            state = repo.platform_state(s, therapist_id)
        if state is None:
            return None
        return project(state, self._clock(), session_url=self._session_url)

    def run_pass(
        self, therapist_id: str, *, full: bool = False, dry_run: bool = False
    ) -> PassReport:
        report = PassReport(therapist_id)
        desired = self.desired(therapist_id)
        if desired is None:
            report.missing = True
            return report
        with self._sessions() as s:
            conns = repo.connections(s, therapist_id)
        for conn in conns:
            with logs.log_context(therapist=therapist_id, connection=conn.id):
                report.connections.append(self._sync(conn, desired, full=full, dry_run=dry_run))
        if not dry_run:
            self._reconcile(therapist_id, conns)
        return report

    def _reconcile(self, therapist_id: str, conns: list[ConnectionRow]) -> None:
        """Step 5: the therapist's own busy time back in, conflicts and availability out."""
        now = self._clock()
        cfg = self._availability
        for conn in conns:
            if conn.state == ConnectionState.NEEDS_REAUTH or not reconcile.busy_due(conn, now, cfg):
                continue
            try:
                connector = self._connector(conn)
            except Exception as exc:
                log.warning("connection %d: no busy time read: %s", conn.id, exc)
                continue
            reconcile.refresh_busy(self._sessions, connector, conn, now, cfg)
        reconcile.settle(self._sessions, therapist_id, now, cfg)

    # -- one connection -----------------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        return retry.call(fn, self.policy)

    def _sync(
        self, conn: ConnectionRow, desired: dict[str, Entry], *, full: bool, dry_run: bool
    ) -> ConnectionReport:
        out = ConnectionReport(conn.id)
        if conn.state == ConnectionState.NEEDS_REAUTH:
            out.error = "needs re-authorisation: reconnect the calendar (syncd connect)"
            out.error_class = "NeedsReauth"
            return out
        now = self._clock()
        if conn.backoff_until is not None and now < conn.backoff_until and not dry_run:
            # The provider asked for a long pause (usage limits of this calendar): nothing is
            # sent until then. Not a failure of the pass: the therapist's other connections
            # and the periodic schedule go on; this one is tried again once the pause is over.
            return out
        try:
            connector = self._connector(conn)
            # Known calendars are not re-verified: a pass with nothing changed costs one request,
            # and a calendar deleted under us still surfaces as NotFound from the listing.
            calendar_url = conn.calendar_url or self._retry(connector.ensure_calendar)
            token = None if full else conn.sync_token
            observed = self._retry(lambda: connector.changes(token))
            for _round in range(self.MAX_ROUNDS):
                with self._sessions() as s:
                    status = repo.mirror(s, conn.id)
                actions = plan(desired, status, observed)
                if dry_run:
                    out.actions = actions
                    return out
                if not actions:
                    break
                if not out.actions and conn.sync_token is not None:
                    # Until this pass completes, the stored token predates writes it cannot
                    # vouch for; if we crash mid-way the next pass must list everything.
                    self._commit(lambda s: self._forget_token(s, conn.id))
                out.actions += actions
                self._apply_all(connector, conn.id, actions, out)
                if observed.token is None or connector.reports_all_deletions:
                    # No sync support (every pass lists everything anyway), or a server whose
                    # diffs report every deletion: the token from before our writes is safe.
                    break
                # The stored token must postdate our own writes: a server may omit from a diff a
                # resource created and deleted after the token (Xandikos does), so a token from
                # before our writes could hide a later deletion of one of them. This listing
                # shows our writes (known ETags, so no action) and anything done meanwhile.
                observed = self._retry(functools.partial(connector.changes, observed.token))
            else:
                observed = Changes(full=True)  # still busy after MAX_ROUNDS: re-list next time
            self._succeeded(conn.id, calendar_url, observed.token)
        except AuthFailed as exc:
            # A refused password and a revoked grant alike: retrying cannot help, only the
            # therapist can. One notification with a reconnect link, then no request for this
            # connection until they reconnect (no retry storm against a locked account).
            out.error_class = type(exc).__name__
            out.error = f"needs re-authorisation: {exc}"
            self._drop_connector(conn.id)
            self._revoked(conn, out.error, revoked=isinstance(exc, AuthRevoked))
        except Transient as exc:
            out.error_class = type(exc).__name__
            out.error, out.transient = f"temporarily unavailable: {exc}", True
            out.retry_after = exc.retry_after
            if exc.retry_after is not None and exc.retry_after > self.policy.cap:
                # A long pause asked for (Google's usage limits last hours): this connection
                # alone waits that long, visibly; retrying the therapist sooner would only
                # spend requests (the skip above keeps push notifications from doing so).
                until = self._clock() + timedelta(seconds=exc.retry_after)
                out.error = (
                    f"paused until {until:%Y-%m-%d %H:%M} UTC at the provider's request: {exc}"
                )
                out.retry_after = None
                self._failed(conn.id, ConnectionState.ERROR, out.error, backoff_until=until)
            else:
                self._failed(conn.id, ConnectionState.ERROR, out.error)
        except ConnectorError as exc:
            out.error_class = type(exc).__name__
            out.error = f"{type(exc).__name__}: {exc}"
            self._failed(conn.id, ConnectionState.ERROR, out.error)
        if out.applied or out.error:
            log.info(
                "therapist %s connection %s: %d/%d actions applied, %d drift repaired%s",
                conn.therapist_id,
                conn.id,
                out.applied,
                len(out.actions),
                out.drift,
                f", error: {out.error}" if out.error else "",
            )
        return out

    def _apply_all(
        self, connector: Connector, connection_id: int, actions: list[Action], out: ConnectionReport
    ) -> None:
        def done(action: Action) -> None:
            out.applied += 1
            out.drift += action.drift is not None
            out.applied_ops.append(action.op.value)

        self.applier.apply_all(connector, connection_id, actions, done)

    # -- bookkeeping --------------------------------------------------------------------------

    def _commit(self, fn: Callable[[Session], None]) -> None:
        with self._sessions.begin() as s:
            fn(s)

    @staticmethod
    def _forget_token(s: Session, connection_id: int) -> None:
        row = s.get(ConnectionRow, connection_id)
        if row is not None:
            row.sync_token = None

    def _succeeded(self, connection_id: int, calendar_url: str, token: str | None) -> None:
        now = self._clock()

        def update(s: Session) -> None:
            row = s.get(ConnectionRow, connection_id)
            if row is None:
                return
            row.calendar_url = calendar_url
            row.sync_token = token
            row.state = ConnectionState.OK
            row.last_pass_at = now
            row.last_success_at = now
            row.last_error = None
            row.failures = 0
            row.backoff_until = None

        self._commit(update)

    def _revoked(self, conn: ConnectionRow, error: str, *, revoked: bool) -> None:
        now = self._clock()

        def update(s: Session) -> None:
            row = s.get(ConnectionRow, conn.id)
            if row is None or row.state == ConnectionState.NEEDS_REAUTH:
                return  # already announced: one notification per disconnection
            row.state = ConnectionState.NEEDS_REAUTH
            row.last_pass_at = now
            row.last_error = error[:2000]
            row.failures += 1
            reason = (
                "authorisation revoked or expired; the therapist must reconnect"
                if revoked
                else "the calendar refused the stored credentials (a changed password?); "
                "the therapist must reconnect"
            )
            data: dict[str, object] = {
                "therapist_id": row.therapist_id,
                "connection_id": row.id,
                "provider": row.provider,
                "reason": reason,
                "at": now.isoformat(),
            }
            link = (
                self._reconnect_link(s, row.therapist_id, row.id, now)
                if self._reconnect_link is not None
                else None
            )
            if link is not None:
                data["reconnect_url"], expires = link
                data["reconnect_expires_at"] = expires.isoformat()
            outbox.enqueue(s, "calendar.disconnected", data, now)

        self._commit(update)

    def _failed(
        self, connection_id: int, state: str, error: str, *, backoff_until: datetime | None = None
    ) -> None:
        now = self._clock()

        def update(s: Session) -> None:
            row = s.get(ConnectionRow, connection_id)
            if row is None:
                return
            row.state = state
            row.last_pass_at = now
            row.last_error = error[:2000]
            row.failures += 1
            row.backoff_until = backoff_until

        self._commit(update)

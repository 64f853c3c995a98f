"""One sync pass for one therapist: project → observe → plan → apply (DESIGN.md §4).

Each applied action is committed to the mirror status table right after the server accepted it,
so a crash anywhere leaves at worst one write the table does not know about; the planner adopts
it on the next pass (the resource name is derived from the UID, so it is never duplicated).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Changes, Connector, RemoteItem
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    ConnectorError,
    NotFound,
    PreconditionFailed,
    Transient,
)
from syncd import ical, retry
from syncd.clock import Clock, utc_now
from syncd.plan import Action, Op, plan
from syncd.project import Entry, project
from syncd.store import repo
from syncd.store.tables import ConnectionRow

log = logging.getLogger(__name__)
T = TypeVar("T")

ConnectorFactory = Callable[[ConnectionRow], Connector]


class ConnectionState:
    OK = "ok"
    ERROR = "error"
    AUTH_FAILED = "auth_failed"


@dataclass(slots=True)
class ConnectionReport:
    connection_id: int
    actions: list[Action] = field(default_factory=list)
    applied: int = 0
    drift: int = 0
    error: str | None = None
    transient: bool = False


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


class Engine:
    MAX_ROUNDS = 3

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connector_for: ConnectorFactory,
        *,
        clock: Clock = utc_now,
        policy: retry.RetryPolicy | None = None,
    ) -> None:
        self._sessions = sessions
        self._connector_for = connector_for
        self._clock = clock
        self._policy = policy or retry.RetryPolicy()

    def desired(self, therapist_id: str) -> dict[str, Entry] | None:
        with self._sessions() as s:
            state = repo.platform_state(s, therapist_id)
        return None if state is None else project(state, self._clock())

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
            report.connections.append(self._sync(conn, desired, full=full, dry_run=dry_run))
        return report

    # -- one connection -----------------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        return retry.call(fn, self._policy)

    def _sync(
        self, conn: ConnectionRow, desired: dict[str, Entry], *, full: bool, dry_run: bool
    ) -> ConnectionReport:
        out = ConnectionReport(conn.id)
        connector = self._connector_for(conn)
        try:
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
                for action in actions:
                    self._apply(connector, conn.id, action)
                    out.applied += 1
                    out.drift += action.drift is not None
                if observed.token is None:
                    break  # no sync support: every pass lists everything anyway
                # The stored token must postdate our own writes: a server may omit from a diff a
                # resource created and deleted after the token (Xandikos does), so a token from
                # before our writes could hide a later deletion of one of them. This listing
                # shows our writes (known ETags, so no action) and anything done meanwhile.
                observed = self._retry(functools.partial(connector.changes, observed.token))
            else:
                observed = Changes(full=True)  # still busy after MAX_ROUNDS: re-list next time
            self._succeeded(conn.id, calendar_url, observed.token)
        except AuthFailed as exc:
            out.error = f"authentication failed: {exc}"
            self._failed(conn.id, ConnectionState.AUTH_FAILED, out.error)
        except Transient as exc:
            out.error, out.transient = f"temporarily unavailable: {exc}", True
            self._failed(conn.id, ConnectionState.ERROR, out.error)
        except ConnectorError as exc:
            out.error = f"{type(exc).__name__}: {exc}"
            self._failed(conn.id, ConnectionState.ERROR, out.error)
        finally:
            connector.close()
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

    def _apply(self, connector: Connector, connection_id: int, a: Action) -> None:
        now = self._clock()
        if a.op is Op.FORGET:
            self._commit(lambda s: repo.drop_mirror(s, connection_id, a.uid or ""))
            return
        if a.op is Op.DELETE:
            assert a.href is not None
            self._delete(connector, a.href, a.etag)
            if a.uid is not None:
                self._commit(lambda s: repo.drop_mirror(s, connection_id, a.uid or ""))
            return
        entry = a.entry
        assert entry is not None
        body = ical.render(entry, now)
        if a.op is Op.CREATE:
            item = self._create(connector, entry.name, body)
        else:
            assert a.href is not None and a.etag is not None
            item = self._update(connector, a.href, body, a.etag, entry.name)

        def record(s: Session) -> None:
            repo.put_mirror(
                s, connection_id, entry.uid, item.href, item.etag, entry.content_hash, now
            )
            if a.drift is not None:
                repo.record_drift(s, connection_id, entry.uid, a.drift.value, now)

        self._commit(record)

    def _create(self, connector: Connector, name: str, body: str) -> RemoteItem:
        try:
            return self._retry(lambda: connector.create(name, body))
        except AlreadyExists:
            # Ours from an interrupted pass (the name is derived from the UID): take it over.
            href = connector.href_for(name)
            current = self._retry(lambda: connector.get(href))
            return self._retry(lambda: connector.update(href, body, current.etag))

    def _update(
        self, connector: Connector, href: str, body: str, etag: str, name: str
    ) -> RemoteItem:
        try:
            return self._retry(lambda: connector.update(href, body, etag))
        except PreconditionFailed:
            # Changed on the server since we looked: the platform wins, overwrite what is there.
            current = self._retry(lambda: connector.get(href))
            return self._retry(lambda: connector.update(href, body, current.etag))
        except NotFound:
            return self._create(connector, name, body)

    def _delete(self, connector: Connector, href: str, etag: str | None) -> None:
        try:
            self._retry(lambda: connector.delete(href, etag))
        except NotFound:
            pass
        except PreconditionFailed:
            try:
                current = self._retry(lambda: connector.get(href))
                self._retry(lambda: connector.delete(href, current.etag))
            except NotFound:
                pass

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

        self._commit(update)

    def _failed(self, connection_id: int, state: str, error: str) -> None:
        now = self._clock()

        def update(s: Session) -> None:
            row = s.get(ConnectionRow, connection_id)
            if row is None:
                return
            row.state = state
            row.last_pass_at = now
            row.last_error = error[:2000]
            row.failures += 1

        self._commit(update)

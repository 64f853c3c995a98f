"""Admin operations shared by the CLI, the admin API and the dashboard: connect and disconnect,
resync (:mod:`syncd.resync`), status (:mod:`syncd.status`), availability and busy calendars."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urljoin

from sqlalchemy import delete, select

from connectors.base import CalendarInfo
from connectors.errors import ConnectorError, DestinationRefused, NotFound
from syncd import availability, occupancy, outbox, reconcile
from syncd import domain as d
from syncd.app import App, UnknownProvider
from syncd.errors import ConnectFailed, OperationError, UrlRefused
from syncd.resync import ResyncResult, Waiting, all_therapist_ids, resync
from syncd.secrets import SecretError
from syncd.status import StatusRow, conflicts, replica_overview, status
from syncd.store import queue, repo
from syncd.store.tables import ConnectionRow, DriftRow, MirrorRow, TherapistRow

# Defined elsewhere, re-exported: callers reach every admin operation and its errors here.
__all__ = [
    "ConnectFailed",
    "OperationError",
    "ResyncResult",
    "StatusRow",
    "UrlRefused",
    "Waiting",
    "all_therapist_ids",
    "conflicts",
    "replica_overview",
    "resync",
    "status",
]

log = logging.getLogger(__name__)


def connect_caldav(
    app: App,
    therapist_id: str,
    *,
    url: str,
    username: str,
    password: str,
    calendar_url: str | None = None,
    verify: bool = True,
) -> int:
    """Store a CalDAV connection (password encrypted) after checking that it works.

    The URL and the calendar URL are checked against the outbound policy first, so a refused
    address is named to the admin at once; every request made later (discovery, redirects,
    each pass) is checked again when its connection opens."""
    for given in (url, urljoin(url, calendar_url) if calendar_url else None):
        if given is None:
            continue
        try:
            app.egress.check_url(given)
        except DestinationRefused as exc:
            raise UrlRefused(f"refused CalDAV URL {given}: {exc}") from None
    now = app.clock()
    with app.sessions() as s:
        if s.get(TherapistRow, therapist_id) is None:
            raise OperationError(f"unknown therapist {therapist_id!r}")
    row = ConnectionRow(
        therapist_id=therapist_id,
        provider="caldav",
        url=url,
        username=username,
        secret=app.box.seal(password),
        calendar_url=calendar_url,
        calendar_owned=calendar_url is None,
        state="new",
        failures=0,
        created_at=now,
    )
    if verify:
        connector = app.connector_for(row)
        try:
            row.calendar_url = connector.ensure_calendar()
        except ConnectorError as exc:
            raise ConnectFailed(f"cannot use the CalDAV account at {url}: {exc}", exc) from None
        finally:
            connector.close()
    with app.sessions.begin() as s:
        # Connecting the same account again (a new app password, say) updates it in place, so
        # its mirror status table, and with it every entry already written, carries over.
        existing = s.scalars(
            select(ConnectionRow).where(
                ConnectionRow.therapist_id == therapist_id,
                ConnectionRow.provider == "caldav",
                ConnectionRow.url == url,
                ConnectionRow.username == username,
            )
        ).first()
        if existing is not None:
            existing.secret = row.secret
            existing.calendar_url = row.calendar_url
            existing.state, existing.failures, existing.last_error = "new", 0, None
            row = existing
        else:
            s.add(row)
        s.flush()
        queue.mark_due(s, therapist_id, now, full=True)
        return row.id


def disconnect(
    app: App,
    therapist_id: str,
    connection_id: int,
    *,
    keep_events: bool = False,
    reason: str = "disconnected by an admin",
) -> int:
    """Remove what syncd wrote (its dedicated calendar whole, or each entry it made), stop push
    notifications, revoke the grant, forget the connection. Returns the entries removed."""
    from syncd import watch  # push channels, which only some providers have

    with app.sessions() as s:
        row = s.get(ConnectionRow, connection_id)
        if row is None or row.therapist_id != therapist_id:
            raise OperationError(f"therapist {therapist_id!r} has no connection {connection_id}")
        entries = repo.mirror(s, connection_id)
    removed = 0
    reachable = row.state != "needs_reauth"
    if reachable:
        connector = app.connector_for(row)
        try:
            if not keep_events:
                owner = connector.calendar_owner()
                if not (row.calendar_owned and owner is not None and owner.delete_calendar()):
                    for entry in entries.values():
                        with contextlib.suppress(NotFound):
                            connector.delete(entry.href, None)
                removed = len(entries)
            watch.stop_watch(app, row)
        except ConnectorError as exc:
            raise OperationError(
                f"could not remove syncd's entries ({exc}); nothing was forgotten, try again "
                "or use --keep-events"
            ) from None
        finally:
            connector.close()
    elif not keep_events:
        log.warning("connection %d needs re-authorisation: its entries cannot be removed", row.id)
    _revoke(app, row)
    now = app.clock()
    with app.sessions.begin() as s:
        s.execute(delete(MirrorRow).where(MirrorRow.connection_id == connection_id))
        s.execute(delete(DriftRow).where(DriftRow.connection_id == connection_id))
        s.execute(delete(ConnectionRow).where(ConnectionRow.id == connection_id))
        outbox.enqueue(
            s,
            "calendar.disconnected",
            {
                "therapist_id": therapist_id,
                "connection_id": connection_id,
                "provider": row.provider,
                "reason": reason,
                "entries_removed": removed,
                "at": now.isoformat(),
            },
            now,
        )
    return removed


def _revoke(app: App, row: ConnectionRow) -> None:
    """Ask the provider to forget the connection's grant, where it holds one (OAuth). Best
    effort: a failure is logged, and the connection is forgotten all the same."""
    try:
        connector = app.connector_for(row)
    except (SecretError, UnknownProvider, ValueError) as exc:
        log.warning("connection %d: its grant cannot be revoked from here: %s", row.id, exc)
        return
    try:
        revoker = connector.access_revoker()
        if revoker is not None:
            revoker.revoke_access()
    except ConnectorError as exc:
        log.warning("could not revoke the grant of connection %d: %s", row.id, exc)
    finally:
        connector.close()


# -- availability, conflicts, busy calendars ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Freshness:
    source: str  # "platform" or "connection <id> (<provider>)"
    as_of: datetime | None
    stale: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AvailabilityView:
    therapist_id: str
    timezone: str
    start: datetime
    end: datetime
    slots: list[availability.Slot]
    sources: list[Freshness]


def availability_for(
    app: App, therapist_id: str, start: datetime, end: datetime
) -> AvailabilityView:
    """Bookable slots computed now from the stored platform state and the last known busy time
    of every connection, with how fresh each source is."""
    if end <= start:
        raise OperationError("the end of the range must be after its start")
    if end - start > timedelta(days=366):
        raise OperationError("ask for at most a year at once")
    now = app.clock()
    window = d.Interval(start, end)
    with app.sessions() as s:
        state = repo.platform_state(s, therapist_id)
        if state is None:
            raise OperationError(f"unknown therapist {therapist_id!r}")
        conns = repo.connections(s, therapist_id)
        external = reconcile.stored_busy(s, [c.id for c in conns])
    busy = [o.interval for o in occupancy.occupied(state, window, now)]
    busy += [b.interval for b in external]
    slots = availability.available_slots(state.therapist, window, busy)
    limit = timedelta(seconds=app.config.availability.stale_after)
    sources = [Freshness("platform", now, False)]
    for c in conns:
        stale = c.busy_fetched_at is None or bool(c.busy_error) or (now - c.busy_fetched_at) > limit
        sources.append(
            Freshness(f"connection {c.id} ({c.provider})", c.busy_fetched_at, stale, c.busy_error)
        )
    return AvailabilityView(therapist_id, state.therapist.timezone, start, end, slots, sources)


@dataclass(frozen=True, slots=True)
class CalendarChoice:
    connection_id: int
    calendar: CalendarInfo
    counts: bool  # its busy time is read


def calendars(app: App, therapist_id: str) -> list[CalendarChoice]:
    """Every calendar of every connection of the therapist, and whether it counts as busy."""
    with app.sessions() as s:
        if s.get(TherapistRow, therapist_id) is None:
            raise OperationError(f"unknown therapist {therapist_id!r}")
        conns = repo.connections(s, therapist_id)
    out: list[CalendarChoice] = []
    for conn in conns:
        connector = app.connector_for(conn)
        try:
            reader = connector.busy_reader()
            if reader is None:
                continue
            for info in reader.calendars():
                chosen = conn.busy_calendars
                counts = (info.ref in chosen) if chosen is not None else not info.is_syncd
                out.append(CalendarChoice(conn.id, info, counts))
        finally:
            connector.close()
    return out


def select_calendars(
    app: App, therapist_id: str, connection_id: int, refs: list[str] | None
) -> None:
    """Choose which calendars count as busy (None: the default, all but syncd's own)."""
    with app.sessions.begin() as s:
        row = s.get(ConnectionRow, connection_id)
        if row is None or row.therapist_id != therapist_id:
            raise OperationError(f"therapist {therapist_id!r} has no connection {connection_id}")
        row.busy_calendars = refs
        row.busy_fetched_at = None  # read again on the next pass
        queue.mark_due(s, therapist_id, app.clock())

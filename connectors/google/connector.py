"""The Google Calendar connector (google-api-python-client + google-auth), composed of the parts
of this package:

- :mod:`~connectors.google.transport`: the API client, outbound policy, pass header, pacing;
- :mod:`~connectors.google.calendar`: the dedicated or chosen calendar, hrefs, calendar list;
- :mod:`~connectors.google.ids`: event ids from resource names, generations;
- :mod:`~connectors.google.events`, :mod:`~connectors.google.ical`: event resources and their
  iCalendar form;
- :mod:`~connectors.google.sync`: change detection with sync tokens;
- :mod:`~connectors.google.writes`, :mod:`~connectors.google.series`: single writes, series
  repair;
- :mod:`~connectors.google.batch`: batch writes;
- :mod:`~connectors.google.busy`, :mod:`~connectors.google.freebusy`: busy time;
- :mod:`~connectors.google.push`: watch channels, grant revocation;
- :mod:`~connectors.google.errors`: the one translation into :mod:`connectors.errors`;
- :mod:`~connectors.google.scopes`: the OAuth scopes each connection mode asks for.

Capabilities: busy time, batch writes, owning a calendar, push channels, revoking the grant.
Every public method raises only :mod:`connectors.errors` types.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime

from connectors import base
from connectors.common import read_busy
from connectors.errors import ConnectorError, NotFound
from connectors.google.batch import BatchWrites
from connectors.google.busy import BusyTime
from connectors.google.calendar import TargetCalendar
from connectors.google.events import Events
from connectors.google.push import Channels, revoke_grant
from connectors.google.settings import GoogleSettings
from connectors.google.sync import ChangeListing
from connectors.google.transport import Api
from connectors.google.writes import EventWriter


class GoogleConnector:
    """One Google calendar of one account. Not thread-safe (one therapist, one worker)."""

    # Google reports every deletion in an incremental listing, whenever the event was created.
    reports_all_deletions = True

    def __init__(self, settings: GoogleSettings) -> None:
        """No network I/O happens here."""
        self.settings = settings
        self.max_batch = max(1, min(settings.max_batch, 1000))
        self._api = Api(settings)
        self._calendar = TargetCalendar(self._api, settings)
        events = Events(self._api, settings)
        self._listing = ChangeListing(self._api, self._calendar, events)
        self._writes = EventWriter(self._api, self._calendar, events)
        self._batch = BatchWrites(self._api, self._calendar, events, self.max_batch)
        self._busy = BusyTime(self._api, self._calendar)
        self._channels = Channels(self._api, self._calendar)

    # -- Connector protocol --------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        return self._calendar.ensure()

    def changes(self, token: str | None) -> base.Changes:
        return self._listing.changes(token)

    def href_for(self, name: str) -> str:
        return self._calendar.href_for(name)

    def get(self, href: str) -> base.FetchedItem:
        return self._writes.get(href)

    def create(self, name: str, body: str) -> base.RemoteItem:
        return self._writes.create(name, body)

    def update(self, href: str, body: str, etag: str) -> base.RemoteItem:
        return self._writes.update(href, body, etag)

    def delete(self, href: str, etag: str | None) -> None:
        self._writes.delete(href, etag)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> GoogleConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- capabilities --------------------------------------------------------------------------

    def busy_reader(self) -> base.BusyReader:
        return self

    def batch_writer(self) -> base.BatchWriter:
        return self

    def calendar_owner(self) -> base.CalendarOwner:
        return self

    def change_watcher(self) -> base.ChangeWatcher:
        return self

    def access_revoker(self) -> base.AccessRevoker:
        return self

    # -- BatchWriter ---------------------------------------------------------------------------

    def write_many(
        self, writes: Sequence[base.Write]
    ) -> list[base.RemoteItem | ConnectorError | None]:
        """Up to ``max_batch`` writes in one HTTP request; each part's outcome separately."""
        return self._batch.write_many(writes)

    # -- BusyReader ----------------------------------------------------------------------------

    def calendars(self) -> list[base.CalendarInfo]:
        """The account's calendars (calendarList.list); ``is_syncd`` marks the dedicated one."""
        return self._busy.calendars()

    def writable_calendars(self) -> list[base.CalendarInfo]:
        """The part of :meth:`calendars` syncd may write events into: those the account owns
        (accessRole ``owner``; see ``calendar.WRITABLE_ROLES`` for why not ``writer``)."""
        return self._busy.writable_calendars()

    def busy(
        self, start: datetime, end: datetime, calendars: Sequence[str], options: base.BusyOptions
    ) -> list[base.BusyInterval]:
        """Busy intervals overlapping ``[start, end)``, clipped to it, in aware UTC, sorted.
        See :mod:`connectors.google.busy` for which calendar is read how."""
        return read_busy(start, end, calendars, options, self._busy.read)

    # -- CalendarOwner -------------------------------------------------------------------------

    def delete_calendar(self) -> bool:
        calendar = self._calendar.require()
        with contextlib.suppress(NotFound):
            self._api.execute(
                self._api.service.calendars().delete(calendarId=calendar), "calendars.delete"
            )
        return True

    # -- ChangeWatcher -------------------------------------------------------------------------

    def watch(self, channel_id: str, address: str, token: str, ttl: int) -> base.WatchChannel:
        return self._channels.watch(channel_id, address, token, ttl)

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        self._channels.stop(channel_id, resource_id)

    # -- AccessRevoker -------------------------------------------------------------------------

    def revoke_access(self) -> None:
        s = self.settings
        revoke_grant(s.refresh_token, s.revoke_uri, s.egress, s.timeout)

"""The CalDAV connector: one calendar on any CalDAV server (Radicale, Xandikos, iCloud,
Fastmail, ...), composed of the parts of this package:

- :mod:`~connectors.caldav.transport`: HTTP session, auth, outbound policy, pass header;
- :mod:`~connectors.caldav.discovery`: the calendar home, the dedicated calendar, the list of
  calendars;
- :mod:`~connectors.caldav.sync`: change detection (sync-collection, or ETag listing);
- :mod:`~connectors.caldav.resources`: single resources, conditional writes;
- :mod:`~connectors.caldav.busy`: busy time by free-busy-query, calendar-query, or item by item
  (:mod:`~connectors.caldav.items`, :mod:`~connectors.caldav.expand`);
- :mod:`~connectors.caldav.errors`: the one translation into :mod:`connectors.errors`;
- :mod:`~connectors.caldav.webdav`, :mod:`~connectors.caldav.hrefs`: wire format and hrefs;
- :mod:`~connectors.caldav.memory`: what connectors of one process learn about servers.

Capabilities: busy time, and owning a calendar (syncd's dedicated one can be deleted whole).
Every public method raises only :mod:`connectors.errors` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

from connectors.base import (
    AccessRevoker,
    BatchWriter,
    BusyInterval,
    BusyOptions,
    BusyReader,
    CalendarInfo,
    CalendarOwner,
    Changes,
    ChangeWatcher,
    FetchedItem,
    RemoteItem,
)
from connectors.caldav.busy import BusyTime
from connectors.caldav.discovery import Calendars
from connectors.caldav.errors import surfaced
from connectors.caldav.memory import ServerMemory
from connectors.caldav.resources import Resources
from connectors.caldav.settings import CalDAVSettings
from connectors.caldav.sync import ChangeListing
from connectors.caldav.transport import Transport


class CalDAVConnector:
    """One calendar on a CalDAV server, behind the :class:`connectors.base.Connector` protocol.

    ``memory`` is shared by the connectors one process makes (see
    :mod:`connectors.caldav.memory`); without it the connector keeps its own.
    Not thread-safe: the engine serialises the work of one therapist, which is all one
    connector instance serves.
    """

    # Some servers (Xandikos) leave out of a sync-collection diff a resource created and deleted
    # after the token; the engine then re-reads the token after its own writes.
    reports_all_deletions = False

    def __init__(self, settings: CalDAVSettings, memory: ServerMemory | None = None) -> None:
        """No network I/O happens here; unusable settings raise ValueError."""
        dedicated = not settings.calendar_url
        if dedicated and (not settings.calendar_id or "/" in settings.calendar_id):
            raise ValueError("calendar_id must be a non-empty name without '/'")
        self.settings = settings
        memory = memory if memory is not None else ServerMemory()
        self._transport = Transport(settings, memory)
        self._calendars = Calendars(self._transport, settings)
        self._listing = ChangeListing(self._transport, self._calendars)
        self._resources = Resources(self._transport, self._calendars)
        self._busy = BusyTime(self._transport, self._calendars, settings, memory)

    # -- Connector protocol ---------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        return self._calendars.ensure()

    def changes(self, token: str | None) -> Changes:
        with surfaced():
            return self._listing.changes(token)

    def href_for(self, name: str) -> str:
        return self._resources.href_for(name)

    def get(self, href: str) -> FetchedItem:
        return self._resources.get(href)

    def create(self, name: str, body: str) -> RemoteItem:
        return self._resources.create(name, body)

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        return self._resources.update(href, body, etag)

    def delete(self, href: str, etag: str | None) -> None:
        self._resources.delete(href, etag)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- capabilities ---------------------------------------------------------------------------

    def busy_reader(self) -> BusyReader:
        return self

    def batch_writer(self) -> BatchWriter | None:
        return None  # one request per write; several can be in flight instead

    def calendar_owner(self) -> CalendarOwner:
        return self

    def change_watcher(self) -> ChangeWatcher | None:
        return None  # CalDAV has no push; the periodic pass finds changes

    def access_revoker(self) -> AccessRevoker | None:
        return None  # a password is changed by the therapist, not revoked by syncd

    # -- CalendarOwner --------------------------------------------------------------------------

    def delete_calendar(self) -> bool:
        """Delete the whole calendar collection (used when disconnecting syncd's own). Checked
        afterwards: False when the server acknowledged the DELETE but still has the calendar,
        so the caller can remove syncd's entries one by one instead."""
        return self._resources.delete_calendar()

    # -- BusyReader -----------------------------------------------------------------------------

    def calendars(self) -> list[CalendarInfo]:
        """The VEVENT-capable calendars in the principal's calendar home; ``ref`` is the
        calendar's absolute URL, ``is_syncd`` marks syncd's dedicated calendar."""
        return self._calendars.listing()

    def busy(
        self,
        start: datetime,
        end: datetime,
        calendars: Sequence[str],
        options: BusyOptions,
    ) -> list[BusyInterval]:
        """Busy intervals overlapping ``[start, end)``, clipped to it, in aware UTC, sorted.

        Per calendar: nothing for syncd's dedicated calendar; free-busy-query where it is known
        to give the right answer (not the calendar syncd writes into, ``all_day`` following
        transparency, the server not having refused it before); calendar-query otherwise; item
        by item where the server cannot evaluate the calendar (:mod:`connectors.caldav.busy`).
        A calendar that does not exist raises NotFound.
        """
        with surfaced():
            return self._busy.read(start, end, calendars, options)

    @property
    def busy_skipped(self) -> dict[str, str]:
        """The items the last busy() call left out: href -> why (never any of the item's
        text)."""
        return self._busy.items.skipped

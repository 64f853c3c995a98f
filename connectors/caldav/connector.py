"""The CalDAV connector: one calendar on any CalDAV server (Radicale, Xandikos, iCloud,
Fastmail, ...), composed of the parts of this package:

- :mod:`~connectors.caldav.transport`: HTTP session, auth, outbound policy, pass header;
- :mod:`~connectors.caldav.discovery`: the calendar home, the dedicated calendar, the list of
  calendars;
- :mod:`~connectors.caldav.sync`: change detection (sync-collection, or ETag listing);
- :mod:`~connectors.caldav.busy`: busy time by free-busy-query, calendar-query, or item by item
  (:mod:`~connectors.caldav.items`, :mod:`~connectors.caldav.expand`);
- :mod:`~connectors.caldav.errors`: the one translation into :mod:`connectors.errors`;
- :mod:`~connectors.caldav.webdav`, :mod:`~connectors.caldav.hrefs`: wire format and hrefs;
- :mod:`~connectors.caldav.memory`: what connectors of one process learn about servers.

The connector itself reads and writes single resources. ETags are kept exactly as the server
sent them, quotes and ``W/`` included, from the ``ETag`` header or the ``getetag`` property
(which agree on every server tested), so they can be sent back verbatim in ``If-Match``. Bodies
are sent byte for byte as given (no CRLF rewriting, no SEQUENCE bump). Servers may re-serialise
what they store: Radicale and Xandikos both reorder properties, so a body read back equals the
one written line for line, and byte for byte only once it is in the server's own form.

Capabilities: busy time, and owning a calendar (syncd's dedicated one can be deleted whole).
Every public method raises only :mod:`connectors.errors` types.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from caldav.lib.python_utilities import WireBytes

from connectors import base
from connectors.caldav.busy import BusyTime
from connectors.caldav.discovery import Calendars
from connectors.caldav.errors import Op, surfaced, translated
from connectors.caldav.hrefs import check_name, member_url
from connectors.caldav.memory import ServerMemory
from connectors.caldav.settings import CalDAVSettings
from connectors.caldav.sync import ChangeListing
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import (
    ICS_CONTENT_TYPE,
    PROPFIND_BODY,
    body_text,
    parse_multistatus,
)
from connectors.common import read_busy
from connectors.errors import ConnectorError, NotFound, PreconditionFailed, ProtocolError

_WRITTEN = (200, 201, 204)


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
        self._busy = BusyTime(self._transport, self._calendars, settings, memory)

    # -- Connector protocol ---------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        return self._calendars.ensure()

    def changes(self, token: str | None) -> base.Changes:
        with surfaced():
            return self._listing.changes(token)

    def href_for(self, name: str) -> str:
        check_name(name)
        self._calendars.url()
        return self._calendars.path + name

    def get(self, href: str) -> base.FetchedItem:
        response = self._transport.request("GET", self._url(href), Op.READ, ok=(200,))
        etag = response.headers.get("ETag")
        if etag is None:
            etag = self._etag_of(href)
        return base.FetchedItem(href=href, etag=etag, body=body_text(response))

    def create(self, name: str, body: str) -> base.RemoteItem:
        href = self.href_for(name)
        response = self._transport.request(
            "PUT",
            self._calendars.url() + quote(name, safe=""),
            Op.CREATE,
            body=WireBytes(body.encode("utf-8")),
            headers={"If-None-Match": "*", "Content-Type": ICS_CONTENT_TYPE},
            ok=_WRITTEN,
        )
        return base.RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def update(self, href: str, body: str, etag: str) -> base.RemoteItem:
        url = self._url(href)
        headers = {"If-Match": etag, "Content-Type": ICS_CONTENT_TYPE}
        data = WireBytes(body.encode("utf-8"))
        try:
            response = self._transport.request(
                "PUT", url, Op.WRITE, body=data, headers=headers, ok=_WRITTEN
            )
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise
        return base.RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def delete(self, href: str, etag: str | None) -> None:
        url = self._url(href)
        headers = {"If-Match": etag} if etag is not None else {}
        try:
            self._transport.request("DELETE", url, Op.WRITE, headers=headers, ok=(200, 202, 204))
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise

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

    # -- single resources -----------------------------------------------------------------------

    def _url(self, href: str) -> str:
        calendar = self._calendars.url()
        return member_url(calendar, self._calendars.path, href)

    def _etag_after_write(self, href: str, response: Any) -> str:
        etag = response.headers.get("ETag")
        if etag:
            return str(etag)
        # RFC 4791 5.3.4: a server that altered the body on storage sends no ETag; the
        # stored resource's ETag is one PROPFIND away, without downloading the body.
        return self._etag_of(href)

    def _etag_of(self, href: str) -> str:
        url = self._url(href)
        response = self._transport.propfind(url, PROPFIND_BODY, depth="0")
        for member in parse_multistatus(response.tree, f"PROPFIND {url}").members:
            if member.status in (404, 410):
                raise NotFound(f"PROPFIND {url}: HTTP {member.status}")
            if member.etag:
                return member.etag
        raise ProtocolError(f"PROPFIND {url}: server reports no getetag")

    def _raise_if_absent(self, href: str) -> None:
        """Tell "gone" from "changed" after a 412: servers answer If-Match on a missing
        resource with 412 (RFC 9110 13.1.1), but the engine must recreate, not merge."""
        try:
            kind = self._calendars.kind_of(self._url(href))
        except ConnectorError:
            return
        if kind is None:
            raise NotFound(f"{href} does not exist")

    # -- capabilities ---------------------------------------------------------------------------

    def busy_reader(self) -> base.BusyReader:
        return self

    def batch_writer(self) -> base.BatchWriter | None:
        return None  # one request per write; several can be in flight instead

    def calendar_owner(self) -> base.CalendarOwner:
        return self

    def change_watcher(self) -> base.ChangeWatcher | None:
        return None  # CalDAV has no push; the periodic pass finds changes

    def access_revoker(self) -> base.AccessRevoker | None:
        return None  # a password is changed by the therapist, not revoked by syncd

    def delete_calendar(self) -> bool:
        """Delete the whole calendar collection (used when disconnecting syncd's own). Checked
        afterwards: False when the server acknowledged the DELETE but still has the calendar,
        so the caller can remove syncd's entries one by one instead."""
        url = self._calendars.ensure()
        with contextlib.suppress(NotFound):
            self._transport.request("DELETE", url, Op.WRITE, ok=(200, 202, 204))
        with translated(Op.READ, "delete_calendar"):
            gone = self._calendars.kind_of(url) is None
        if gone:
            self._calendars.forget()
        return gone

    def calendars(self) -> list[base.CalendarInfo]:
        """The VEVENT-capable calendars in the principal's calendar home; ``ref`` is the
        calendar's absolute URL, ``is_syncd`` marks syncd's dedicated calendar."""
        return self._calendars.listing()

    def busy(
        self, start: datetime, end: datetime, calendars: Sequence[str], options: base.BusyOptions
    ) -> list[base.BusyInterval]:
        """Busy intervals overlapping ``[start, end)``, clipped to it, in aware UTC, sorted.

        Per calendar: nothing for syncd's dedicated calendar; free-busy-query where it is known
        to give the right answer (not the calendar syncd writes into, ``all_day`` following
        transparency, the server not having refused it before); calendar-query otherwise; item
        by item where the server cannot evaluate the calendar (:mod:`connectors.caldav.busy`).
        A calendar that does not exist raises NotFound.
        """
        with surfaced():
            return read_busy(start, end, calendars, options, self._busy.read)

    @property
    def busy_skipped(self) -> dict[str, str]:
        """The items the last busy() call left out: href -> why (never any of the item's
        text)."""
        return self._busy.items.skipped

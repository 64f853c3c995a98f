"""CalDAV busy time from calendar items read here, one by one.

:class:`ItemReader` turns the items a busy-time query returned into busy intervals, each item
on its own, so that one broken item is skipped (recorded in ``skipped``, logged by href with a
reason of our own wording) instead of failing its calendar. :meth:`ItemReader.itemwise` is the
last of the three busy-time methods, for a calendar the server cannot evaluate: a PROPFIND
(Depth 1) lists the items and calendar-multiget fetches them ``MULTIGET_CHUNK`` at a time (a
chunk the server fails on is halved until the failing item is alone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from time import monotonic
from typing import Any, Final
from xml.sax.saxutils import escape

import icalendar

from connectors.base import BusyInterval, BusyOptions
from connectors.caldav.errors import Op, QueryFailed
from connectors.caldav.expand import Unreadable, busy_lines, item_busy
from connectors.caldav.hrefs import href_path, quote_path, with_slash
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import (
    MULTIGET_BODY,
    PROPFIND_BODY,
    calendar_data,
    parse_multistatus,
)
from connectors.errors import ConnectorError, Transient

log = logging.getLogger(__name__)

MULTIGET_CHUNK: Final = 50


class ItemReader:
    """Busy intervals from items, for one connector; ``skipped`` holds the items the last
    busy() left out: href -> why (never any of the item's text)."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout
        self.skipped: dict[str, str] = {}

    def parse(self, ref: str, href: str, text: str) -> Any:
        """The item as an icalendar Calendar, or None (recorded) when it cannot be parsed."""
        try:
            return icalendar.Calendar.from_ical(busy_lines(text))
        except Exception as exc:  # a hostile item may make the parser raise anything
            self.skip(ref, href, f"unreadable ({type(exc).__name__})")
            return None

    def intervals(
        self,
        ref: str,
        href: str,
        calendar: Any,
        window: tuple[datetime, datetime],
        options: BusyOptions,
        deadline: float,
    ) -> list[BusyInterval]:
        """The busy intervals of one parsed item; none (recorded) when it cannot be used.
        Transient once ``deadline`` has passed."""
        if monotonic() > deadline:
            raise Transient(f"busy: {ref} not read within {self._timeout:g} s")
        try:
            spans = item_busy(calendar, *window, options, deadline)
        except ConnectorError:
            raise
        except Unreadable as exc:
            self.skip(ref, href, str(exc))
            return []
        except Exception as exc:  # so may its expansion
            self.skip(ref, href, f"cannot expand ({type(exc).__name__})")
            return []
        return [
            BusyInterval(s, e, calendar=ref, tentative=tentative, ref=href)
            for s, e, tentative in spans
        ]

    def skip(self, ref: str, href: str, reason: str) -> None:
        # Only the href and a reason of our own wording: an exception's message can quote the
        # item's text (a title, an attendee), so only its type is ever named.
        self.skipped[href] = reason
        log.warning("busy: skipped %s in %s: %s", href, ref, reason)

    def itemwise(
        self,
        ref: str,
        url: str,
        window: tuple[datetime, datetime],
        options: BusyOptions,
        deadline: float,
    ) -> list[BusyInterval]:
        """Busy time of a calendar the server cannot evaluate, read item by item. Raises
        Transient when ``deadline`` passes first: a partial answer would show busy time as
        free."""
        pending = self._chunks(url, deadline)
        found: list[BusyInterval] = []
        while pending:
            chunk = pending.pop(0)
            try:
                with self._transport.time_left(deadline, f"REPORT {url}"):
                    items = self._multiget(url, chunk)
            except QueryFailed as exc:
                if len(chunk) == 1:
                    self.skip(ref, chunk[0], f"the server fails to send it ({exc})")
                else:
                    half = len(chunk) // 2
                    pending[:0] = [chunk[:half], chunk[half:]]
                continue
            for href in sorted(set(chunk) - {href for href, _ in items}):
                self.skip(ref, href, "the server sent no calendar data for it")
            for href, text in items:
                calendar = self.parse(ref, href, text)
                if calendar is not None:
                    found.extend(self.intervals(ref, href, calendar, window, options, deadline))
        return found

    def _chunks(self, url: str, deadline: float) -> list[list[str]]:
        """The calendar's item hrefs (PROPFIND, Depth 1), in multiget-sized chunks."""
        with self._transport.time_left(deadline, f"PROPFIND {url}"):
            response = self._transport.propfind(url, PROPFIND_BODY, depth="1")
        own = with_slash(href_path(url))
        hrefs = sorted(
            member.href
            for member in parse_multistatus(response.tree, f"PROPFIND {url}").members
            if member.status in (None, 200)
            and not member.is_collection
            and with_slash(member.href) != own
        )
        return [hrefs[i : i + MULTIGET_CHUNK] for i in range(0, len(hrefs), MULTIGET_CHUNK)]

    def _multiget(self, url: str, hrefs: Sequence[str]) -> list[tuple[str, str]]:
        body = MULTIGET_BODY.format(
            hrefs="".join(f"<D:href>{escape(quote_path(href))}</D:href>" for href in hrefs)
        )
        response = self._transport.report(url, Op.BUSY_QUERY, body)
        return calendar_data(response.tree, f"REPORT {url}")

"""CalDAV busy time (:class:`connectors.base.BusyReader`): three methods, chosen per calendar.

1. The RFC 4791 ``free-busy-query`` REPORT, for calendars that hold no syncd entries when the
   options can be honoured from FBTYPEs (``all_day="transparency"``: free-busy leaves out
   transparent events but cannot tell all-day ones apart). Periods are merged by the server and
   carry no ``ref``.
2. Otherwise, and after a server has refused free-busy-query once, a ``calendar-query`` with a
   time-range filter and ``<C:expand>``. A server that answers it with RRULEs still in place
   has not expanded, so from then on the query goes without it and the items are expanded here
   (:mod:`connectors.caldav.expand`), which happens for any unexpanded reply anyway, so the
   answer is right from the first call. One interval per occurrence, the item's href as ``ref``.
3. Item by item (:meth:`connectors.caldav.items.ItemReader.itemwise`), for a calendar the
   server cannot evaluate: one broken item can make a server fail busy time for its whole
   calendar (Xandikos 0.4 answers 500 when it meets an item it cannot parse; Radicale 3.9 and
   Xandikos keep expanding an endless ``FREQ=SECONDLY`` rule past any timeout).

What works is learnt from the server's answers (never from its name) by the first request that
needs it, then fixed for the connector. Each calendar's read has the budget of one request
(``timeout``); the server-side query gets ``SERVER_SHARE`` of it. When that fails with a 5xx
(not 503, nor with Retry-After: those ask for less load) or gets no answer in time, the calendar
is read item by item within the rest, and so for ``ITEMWISE_FOR`` without asking the server
first (:mod:`connectors.caldav.memory`). Running out of budget is Transient: a partial answer
would show busy time as free. With the default 15 s the server-side query has 5 s and the
item-wise read 10 s: one PROPFIND, one multiget per 50 items and the local expansion (measured
3-9 ms per single event, 15-20 ms per recurring one on a loaded 2-core machine) fit in that for
calendars of several hundred items.

Intervals are clipped to ``[start, end)`` and sorted. Nothing of an event but its times,
status, transparency and UID is looked at, and only hrefs ever reach a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from time import monotonic
from typing import Any, Final
from urllib.parse import urljoin

import icalendar

from connectors.base import BusyInterval, BusyOptions
from connectors.caldav.discovery import Calendars
from connectors.caldav.errors import Op, QueryFailed, ReportUnsupported, translated
from connectors.caldav.expand import as_utc, ical_utc
from connectors.caldav.hrefs import with_slash
from connectors.caldav.items import ItemReader
from connectors.caldav.memory import ServerMemory
from connectors.caldav.settings import CalDAVSettings
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import EXPAND, FREEBUSY_BODY, QUERY_BODY, body_text
from connectors.caldav.webdav import calendar_data as read_calendar_data
from connectors.common import Window, clip

log = logging.getLogger(__name__)

SERVER_SHARE: Final = 1 / 3
ITEMWISE_FOR: Final = 3600.0


def freebusy_periods(text: str, what: str) -> list[tuple[datetime, datetime, str]]:
    """The FREEBUSY periods of a free-busy-query answer as (start, end, FBTYPE), FREE left
    out. Anything but a VCALENDAR with a VFREEBUSY means the server does not do the report."""
    try:
        components = icalendar.Calendar.from_ical(text).walk("VFREEBUSY")
        if not components:
            raise ReportUnsupported(f"{what}: no VFREEBUSY in the answer")
        periods: list[tuple[datetime, datetime, str]] = []
        for component in components:
            values = component.get("FREEBUSY")
            if values is None:
                continue
            for period in values if isinstance(values, list) else [values]:
                # RFC 5545 3.2.9: an FBTYPE the client does not know counts as BUSY.
                fbtype = str(period.params.get("FBTYPE", "BUSY")).upper()
                if fbtype != "FREE":
                    periods.append((as_utc(period.start), as_utc(period.end), fbtype))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReportUnsupported(f"{what}: unreadable free-busy answer ({exc})") from exc
    return periods


class BusyTime:
    """``busy()`` of one connector."""

    def __init__(
        self,
        transport: Transport,
        calendars: Calendars,
        settings: CalDAVSettings,
        memory: ServerMemory,
    ) -> None:
        self._transport = transport
        self._calendars = calendars
        self._settings = settings
        self._memory = memory
        self.items = ItemReader(transport, settings.timeout)
        # None until a server's answer has shown whether the method works; then fixed.
        self.freebusy_supported: bool | None = None
        self.expand_supported: bool | None = None

    def read(
        self, window: Window, calendars: Sequence[str], options: BusyOptions
    ) -> list[BusyInterval]:
        """Busy time of ``calendars`` in ``window`` (see :func:`connectors.common.read_busy`)."""
        self.items.skipped = {}
        found: list[BusyInterval] = []
        for ref in calendars:
            url = with_slash(urljoin(self._settings.url, ref))
            with translated(Op.READ, "busy"):
                role = self._calendars.role(url)
            if role != "syncd":
                found.extend(self._calendar(ref, url, role, window, options))
        return found

    def _calendar(
        self, ref: str, url: str, role: str, window: Window, options: BusyOptions
    ) -> list[BusyInterval]:
        # Each calendar has the budget of one request; the server-side query a share of it.
        now = monotonic()
        deadline = now + self._settings.timeout
        key = (self._settings.username, url)
        if not self._memory.reads_itemwise(key):
            server_deadline = now + self._settings.timeout * SERVER_SHARE
            try:
                return self._server(ref, url, role, window, options, server_deadline, deadline)
            except QueryFailed as exc:
                log.warning("busy: query failed on %s (%s); reading item by item", url, exc)
                self._memory.read_itemwise_for(key, ITEMWISE_FOR)
        return self.items.itemwise(ref, url, window, options, deadline)

    def _server(
        self,
        ref: str,
        url: str,
        role: str,
        window: Window,
        options: BusyOptions,
        server_deadline: float,
        deadline: float,
    ) -> list[BusyInterval]:
        """Busy time as the server evaluates it: free-busy-query where it gives the right answer,
        calendar-query otherwise. Raises QueryFailed when the server breaks on the calendar or
        has not answered by ``server_deadline``."""
        if (
            role == "other"
            and options.all_day == "transparency"
            and self.freebusy_supported is not False
        ):
            intervals = self._free_busy(ref, url, window, options, server_deadline)
            if intervals is not None:
                return intervals
        return self._query(ref, url, window, options, server_deadline, deadline)

    def _free_busy(
        self, ref: str, url: str, window: Window, options: BusyOptions, server_deadline: float
    ) -> list[BusyInterval] | None:
        """The free-busy-query answer, or None when the server turned out not to do it."""
        start, end = window
        body = FREEBUSY_BODY.format(start=ical_utc(start), end=ical_utc(end, up=True))
        try:
            with self._transport.time_left(server_deadline, f"REPORT {url}", server=True):
                response = self._transport.report(url, Op.FREEBUSY, body, ok=200)
            periods = freebusy_periods(body_text(response), f"REPORT {url}")
        except ReportUnsupported as exc:
            log.info("free-busy-query unusable on %s (%s); using calendar-query", url, exc)
            self.freebusy_supported = False
            return None
        self.freebusy_supported = True
        found: list[BusyInterval] = []
        for period_start, period_end, fbtype in periods:
            tentative = fbtype == "BUSY-TENTATIVE"
            if tentative and not options.tentative_busy:
                continue
            clipped = clip(period_start, period_end, start, end)
            if clipped is not None:
                found.append(BusyInterval(*clipped, calendar=ref, tentative=tentative))
        return found

    def _query(
        self,
        ref: str,
        url: str,
        window: Window,
        options: BusyOptions,
        server_deadline: float,
        deadline: float,
    ) -> list[BusyInterval]:
        """calendar-query, with <C:expand> until the server has shown it does not expand."""
        bounds = {"start": ical_utc(window[0]), "end": ical_utc(window[1], up=True)}
        expand = self.expand_supported is not False
        what = f"REPORT {url}"

        def query(op: Op, expansion: str) -> Any:
            with self._transport.time_left(server_deadline, what, server=True):
                body = QUERY_BODY.format(expand=expansion, **bounds)
                return self._transport.report(url, op, body)

        try:
            if expand:
                response = query(Op.EXPAND_QUERY, EXPAND.format(**bounds))
            else:
                response = query(Op.BUSY_QUERY, "")
        except ReportUnsupported as exc:
            log.info("calendar-query with expand refused by %s (%s); expanding here", url, exc)
            self.expand_supported = expand = False
            response = query(Op.BUSY_QUERY, "")
        found: list[BusyInterval] = []
        unexpanded = instances = False
        for href, text in read_calendar_data(response.tree, what):
            calendar = self.items.parse(ref, href, text)
            if calendar is None:
                continue
            events = calendar.walk("VEVENT")
            unexpanded = unexpanded or any("RRULE" in e or "RDATE" in e for e in events)
            instances = instances or any("RECURRENCE-ID" in e for e in events)
            found.extend(self.items.intervals(ref, href, calendar, window, options, deadline))
        if expand and unexpanded:
            log.info("%s does not expand recurrences; expanding them here from now on", url)
            self.expand_supported = False
        elif expand and instances:
            self.expand_supported = True
        return found

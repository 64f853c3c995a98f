"""Google busy time (:class:`connectors.base.BusyReader`).

``calendars()`` is calendarList.list: ``ref`` is the calendar id, and ``is_syncd`` marks syncd's
dedicated calendar (the one whose description carries ``MARKER``) and nothing else; every
calendar the account can see counts, freeBusy reads any of them. ``writable_calendars()`` is the
part of that list syncd may write events into (``calendar.WRITABLE_ROLES``). ``busy()``
reads the account's calendar list once per connector (to recognise the dedicated calendar, which
never counts, and to know the calendars' zones), then:

- the calendar syncd writes into when it is an existing calendar (``calendar_url`` given and not
  the dedicated one) with events.list (timeMin/timeMax, singleEvents=true, only the time, status
  and transparency fields requested), skipping syncd's own events (private extended property
  ``syncd=1``, or a ``syncd-`` iCalUID), cancelled and transparent ones, and applying
  ``BusyOptions`` fully; ``ref`` is the event (instance) id, all-day dates are read in the
  calendar's zone;
- every other calendar with freebusy.query (:mod:`connectors.google.freebusy`).

Intervals are clipped to ``[start, end)`` and sorted. Titles, descriptions and attendees are
never requested for busy time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from connectors.base import BusyInterval, BusyOptions, CalendarInfo
from connectors.common import Window, clip, sort_intervals
from connectors.errors import BusyIncomplete
from connectors.google import ical
from connectors.google.calendar import TargetCalendar, writable
from connectors.google.errors import translated
from connectors.google.freebusy import freebusy
from connectors.google.ids import calendar_id_from
from connectors.google.times import rfc3339, zone
from connectors.google.transport import Api

# Only what busy time needs: never titles, descriptions or attendees.
BUSY_EVENT_FIELDS = (
    "items(id,iCalUID,status,transparency,start,end,extendedProperties/private/"
    f"{ical.PROP_OWNED}),nextPageToken,timeZone"
)


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """What busy time needs from one calendarList entry."""

    id: str
    name: str
    is_syncd: bool
    time_zone: str | None
    writable: bool  # its accessRole lets the account write events


def _instant(when: dict[str, Any], calendar_zone: str | None) -> tuple[datetime, bool]:
    """(aware UTC instant, all-day) of an event's ``start`` or ``end``; an all-day date is its
    midnight in the calendar's zone, as Google's own freebusy reads it."""
    if "dateTime" in when:
        value = datetime.fromisoformat(str(when["dateTime"]))
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone(when.get("timeZone") or calendar_zone))
        return value.astimezone(UTC), False
    day = date.fromisoformat(str(when["date"]))
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone(calendar_zone))
    return midnight.astimezone(UTC), True


def event_busy(
    event: dict[str, Any], calendar_zone: str | None, window: Window, options: BusyOptions
) -> tuple[datetime, datetime, bool] | None:
    """(start, end, tentative) of one listed event (instance) that makes the therapist busy,
    clipped to the window; None for syncd's own, cancelled, transparent (per ``options`` for
    all-day events) and, unless ``options.tentative_busy``, tentative events."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    if private.get(ical.PROP_OWNED) == "1":
        return None
    if str(event.get("iCalUID") or "").startswith("syncd-"):
        return None
    status = event.get("status", "confirmed")
    if status == "cancelled":
        return None
    first, all_day = _instant(event["start"], calendar_zone)
    last, _ = _instant(event.get("end") or event["start"], calendar_zone)
    transparent = event.get("transparency") == "transparent"
    tentative = status == "tentative"
    if not options.counts(all_day=all_day, transparent=transparent, tentative=tentative):
        return None
    clipped = clip(first, last, *window)
    return None if clipped is None else (clipped[0], clipped[1], tentative)


class BusyTime:
    """``calendars()`` and ``busy()`` of one connector."""

    def __init__(self, api: Api, calendar: TargetCalendar) -> None:
        self._api = api
        self._calendar = calendar
        # The account's calendar list as busy time needs it, read once per connector.
        self._entries: dict[str, CalendarEntry] | None = None

    def calendars(self) -> list[CalendarInfo]:
        entries = self._list_calendars()
        return [CalendarInfo(ref=e.id, name=e.name, is_syncd=e.is_syncd) for e in entries.values()]

    def writable_calendars(self) -> list[CalendarInfo]:
        entries = self._entries if self._entries is not None else self._list_calendars()
        return [
            CalendarInfo(ref=e.id, name=e.name, is_syncd=e.is_syncd)
            for e in entries.values()
            if e.writable
        ]

    def read(
        self, window: Window, calendars: Sequence[str], options: BusyOptions
    ) -> list[BusyInterval]:
        """Busy time of ``calendars`` in ``window`` (see :func:`connectors.common.read_busy`);
        BusyIncomplete, with what was read, when some calendars could not be read."""
        entries = self._entries if self._entries is not None else self._list_calendars()
        written = self._calendar.configured
        by_freebusy: list[tuple[str, str]] = []
        found: list[BusyInterval] = []
        for ref in calendars:
            calendar_id = calendar_id_from(ref)
            entry = entries.get(calendar_id)
            if entry is not None and entry.is_syncd:
                continue
            if written is None and calendar_id == self._calendar.id:
                continue  # the dedicated calendar, created after the list was read
            if calendar_id == written:
                zone_name = entry.time_zone if entry is not None else None
                found.extend(self._listed(ref, calendar_id, zone_name, window, options))
            else:
                by_freebusy.append((ref, calendar_id))
        try:
            found.extend(freebusy(self._api, by_freebusy, window))
        except BusyIncomplete as partial:
            found.extend(partial.intervals)
            raise BusyIncomplete(sort_intervals(found), partial.failed) from None
        return found

    def _list_calendars(self) -> dict[str, CalendarEntry]:
        entries: dict[str, CalendarEntry] = {}
        for item in self._calendar.calendar_list():
            with translated("calendarList.list"):
                calendar_id = str(item["id"])
                entries[calendar_id] = CalendarEntry(
                    id=calendar_id,
                    name=str(item.get("summaryOverride") or item.get("summary") or calendar_id),
                    is_syncd=self._calendar.marker in (item.get("description") or ""),
                    time_zone=item.get("timeZone"),
                    writable=writable(item),
                )
        self._entries = entries
        return entries

    def _listed(
        self,
        ref: str,
        calendar_id: str,
        zone_name: str | None,
        window: Window,
        options: BusyOptions,
    ) -> list[BusyInterval]:
        found: list[BusyInterval] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "calendarId": calendar_id,
                "timeMin": rfc3339(window[0]),
                "timeMax": rfc3339(window[1]),
                "singleEvents": True,
                "showDeleted": False,
                "maxResults": 2500,
                "fields": BUSY_EVENT_FIELDS,
            }
            if page:
                params["pageToken"] = page
            response = self._api.execute(self._api.events().list(**params), "events.list")
            with translated("events.list"):
                calendar_zone = response.get("timeZone") or zone_name
                for event in response.get("items", []):
                    interval = event_busy(event, calendar_zone, window, options)
                    if interval is not None:
                        found.append(
                            BusyInterval(
                                *interval[:2],
                                calendar=ref,
                                tentative=interval[2],
                                ref=str(event["id"]),
                            )
                        )
            page = response.get("nextPageToken")
            if not page:
                return found

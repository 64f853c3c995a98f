"""Rendering desired entries as iCalendar (RFC 5545) with the icalendar library."""

from __future__ import annotations

import functools
from datetime import date, datetime
from zoneinfo import ZoneInfo

import icalendar

from syncd import __version__
from syncd.project import Entry

PRODID = f"-//syncd//syncd {__version__}//EN"


def to_event(entry: Entry, stamp: datetime) -> icalendar.Event:
    zone = ZoneInfo(entry.timezone)
    ev = icalendar.Event()
    ev.add("uid", entry.uid)
    ev.add("dtstamp", stamp)
    ev.add("dtstart", entry.start.astimezone(zone))
    ev.add("dtend", entry.end.astimezone(zone))
    ev.add("summary", entry.summary)
    ev.add("status", entry.status)
    ev.add("transp", "OPAQUE")
    # Health data: ask every client that honours CLASS to keep it out of shared views.
    ev.add("class", "PRIVATE")
    ev.add("sequence", entry.sequence)
    if entry.location:
        ev.add("location", entry.location)
    ev.add("description", entry.description)
    if entry.url:
        ev.add("url", entry.url)  # RFC 5545 3.8.4.6: where to find the booking itself
    if entry.rrule:
        ev.add("rrule", icalendar.vRecur.from_ical(entry.rrule))
        for ex in entry.exdates:
            ev.add("exdate", ex.astimezone(zone))
    ev.add("x-syncd-kind", entry.kind)
    ev.add("x-syncd-hash", entry.content_hash)
    return ev


def to_calendar(entries: list[Entry], stamp: datetime, name: str | None = None) -> str:
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    if name:
        cal.add("x-wr-calname", name)
    for entry in entries:
        cal.add_component(to_event(entry, stamp))
    if entries:
        # Only the transitions around the entries: a full 1970-2038 VTIMEZONE is 3 KB per event.
        first = min(e.start for e in entries).year - 1
        last = max(e.end.year + (10 if e.rrule else 1) for e in entries) + 1
        for zone in sorted({e.timezone for e in entries}):
            cal.add_component(_vtimezone(zone, first, last))
    return bytes(cal.to_ical()).decode()


@functools.lru_cache(maxsize=512)
def _vtimezone(zone: str, first_year: int, last_year: int) -> icalendar.Timezone:
    # Building one costs up to ~20 ms (zones without DST are the slowest); entries share a few.
    return icalendar.Timezone.from_tzid(
        zone, first_date=date(first_year, 1, 1), last_date=date(last_year, 1, 1)
    )


def render(entry: Entry, stamp: datetime) -> str:
    """One entry as a whole calendar object resource, VTIMEZONE included."""
    return to_calendar([entry], stamp)

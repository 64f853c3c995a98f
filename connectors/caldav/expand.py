"""CalDAV busy time expanded here: the busy occurrences of one calendar item, within caps.

Pure functions over iCalendar text and icalendar components. Only what busy time needs of an
item is parsed (:func:`busy_lines`); a rule whose expansion would step through more than
``MAX_RECURRENCE_STEPS`` instants from its DTSTART to the window's end, or an item with more
than ``MAX_OCCURRENCES`` occurrences in the window, is refused (:class:`Unreadable`) rather
than expanded. All-day dates and floating times are taken as UTC, as Radicale and Xandikos do
for free-busy when a calendar states no ``calendar-timezone``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any, Final

import recurring_ical_events

from connectors.base import BusyOptions
from connectors.common import clip
from connectors.errors import Transient

# More occurrences than this in the window and an item is skipped: no therapist's own event
# recurs more often than hourly over weeks (8 weeks of hourly is 1344).
MAX_OCCURRENCES: Final = 2000
# Upper bound of the recurrence instants the expansion may step through from DTSTART to the end
# of the window (dateutil cannot skip ahead): ~0.5 s and a few MB at most per item.
MAX_RECURRENCE_STEPS: Final = 100_000

# How syncd marks what it writes into a calendar it does not own (see syncd.ical).
SYNCD_UID_PREFIX: Final = "syncd-"
SYNCD_KIND: Final = "X-SYNCD-KIND"

_FREQ_SECONDS: Final = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3600,
    "DAILY": 86400,
    "WEEKLY": 7 * 86400,
    "MONTHLY": 28 * 86400,
    "YEARLY": 365 * 86400,
}
_DAYS_PER_PERIOD: Final = {"WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}
_DAY_PARTS: Final = ("BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH")
_FINER_PARTS: Final = {
    "SECONDLY": (),
    "MINUTELY": ("BYSECOND",),
    "HOURLY": ("BYMINUTE", "BYSECOND"),
}

# What busy time reads of a VEVENT; the rest is dropped before parsing (see busy_lines).
_BUSY_PROPERTIES: Final = frozenset(
    {
        "UID",
        "DTSTART",
        "DTEND",
        "DURATION",
        "RRULE",
        "RDATE",
        "EXDATE",
        "EXRULE",
        "RECURRENCE-ID",
        "STATUS",
        "TRANSP",
        SYNCD_KIND,
    }
)
# A line break that does not start a folded continuation: the end of a content line.
_LOGICAL_LINE_END: Final = re.compile(r"\r?\n(?![ \t])")

Span = tuple[datetime, datetime, bool]  # (start, end, tentative)


class Unreadable(Exception):
    """One calendar item busy() cannot use; the message says why and never quotes the item."""


def ical_utc(value: datetime, *, up: bool = False) -> str:
    """An iCalendar UTC date-time (whole seconds: rounded down, or up with ``up``)."""
    if up and value.microsecond:
        value += timedelta(seconds=1)
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def as_utc(value: date | datetime) -> datetime:
    """Aware UTC; a date is its midnight and a floating time is read as UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=UTC)


def busy_lines(text: str) -> str:
    """The item with only what busy time reads: in each VEVENT the _BUSY_PROPERTIES and no
    nested component (VALARM); outside (VTIMEZONE, the calendar's own properties) everything.
    Titles, descriptions, attendees and inline attachments are never parsed: a 2 MB description
    costs the parser over a second, and what is not parsed cannot leak."""
    kept: list[str] = []
    depth = 0  # 0: outside any VEVENT, 1: in one, more: in a component nested in it
    for line in _LOGICAL_LINE_END.split(text):
        head, _, value = line.partition(":")
        name = head.split(";", 1)[0].strip().upper()
        if name == "BEGIN" and (depth or value.strip().upper() == "VEVENT"):
            depth += 1
            if depth == 1:
                kept.append(line)
        elif name == "END" and depth:
            depth -= 1
            if depth == 0:
                kept.append(line)
        elif depth == 0 or (depth == 1 and name in _BUSY_PROPERTIES):
            kept.append(line)
    return "\r\n".join(kept)


def occurrence_busy(
    event: Any, start: datetime, end: datetime, options: BusyOptions
) -> Span | None:
    """(start, end, tentative) of one occurrence that makes the therapist busy, clipped to the
    window; None for syncd's own entries, cancelled, transparent (per ``options`` for all-day
    events) and, unless ``options.tentative_busy``, tentative ones."""
    uid = str(event.get("UID", ""))
    if uid.startswith(SYNCD_UID_PREFIX) or SYNCD_KIND in event:
        return None
    status = str(event.get("STATUS", "CONFIRMED")).strip().upper()
    if status == "CANCELLED":
        return None
    transparent = str(event.get("TRANSP", "OPAQUE")).strip().upper() == "TRANSPARENT"
    dtstart = event.get("DTSTART")
    if dtstart is None:
        return None
    first = dtstart.dt
    all_day = not isinstance(first, datetime)
    tentative = status == "TENTATIVE"
    if not options.counts(all_day=all_day, transparent=transparent, tentative=tentative):
        return None
    if event.get("DTEND") is not None:
        last = event["DTEND"].dt
    elif event.get("DURATION") is not None:
        last = first + event["DURATION"].dt
    else:
        last = first + timedelta(days=1) if all_day else first
    clipped = clip(as_utc(first), as_utc(last), start, end)
    return None if clipped is None else (clipped[0], clipped[1], tentative)


def _as_list(value: Any) -> list[Any]:
    # icalendar gives a list when a property or rule part is repeated, else the one value.
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _rule_steps(rule: Any, first: datetime, end: datetime) -> int:
    freq = str(next(iter(_as_list(rule.get("FREQ"))), "")).upper()
    unit = _FREQ_SECONDS.get(freq)
    if unit is None:
        raise Unreadable("recurrence rule without a known FREQ")
    interval = int(next(iter(_as_list(rule.get("INTERVAL"))), 1))
    if interval < 1:
        raise Unreadable("recurrence rule with INTERVAL below 1")
    limit = end
    for until in _as_list(rule.get("UNTIL"))[:1]:
        limit = min(limit, as_utc(until))
    span = max(0.0, (limit - first).total_seconds())
    steps = int(span // (unit * interval)) + 1
    if freq in _DAYS_PER_PERIOD and any(rule.get(part) for part in _DAY_PARTS):
        steps *= _DAYS_PER_PERIOD[freq]
    for part in _FINER_PARTS.get(freq, ("BYHOUR", "BYMINUTE", "BYSECOND")):
        steps *= max(1, len(_as_list(rule.get(part))))
    count = _as_list(rule.get("COUNT"))
    if count and not any(str(key).upper().startswith("BY") for key in rule):
        # Every candidate of a rule without BY parts is an instance, so COUNT bounds them.
        steps = min(steps, max(0, int(count[0])))
    return steps


def recurrence_steps(event: Any, end: datetime) -> int:
    """An upper bound of the instants the expansion steps through for ``event``'s rules, from
    its DTSTART to ``end``: dateutil walks every candidate from DTSTART on, so an old or dense
    rule costs time and memory before the window is even reached."""
    rules = [*_as_list(event.get("RRULE")), *_as_list(event.get("EXRULE"))]
    dtstart = event.get("DTSTART")
    if not rules or dtstart is None:
        return 0
    first = as_utc(dtstart.dt)
    return sum(_rule_steps(rule, first, end) for rule in rules)


def _ident(value: Any) -> str | None:
    return None if value is None else repr(getattr(value, "dt", value))


def _occurrences(query: Any, start: datetime, end: datetime, sliced: bool) -> Iterator[Any]:
    """The occurrences of ``query`` overlapping [start, end), possibly more than once each.
    ``sliced`` reads a dense item a few hours at a time, so that the item's occurrence cap stops
    the expansion after a bounded amount of work (the library builds a whole span at once)."""
    if not sliced:
        yield from query.between(start, end)
        return
    low, span = start, timedelta(minutes=15)
    while low < end:
        high = min(low + span, end)
        batch = query.between(low, high)
        yield from batch
        if len(batch) < 64:
            span *= 2
        low = high


def item_busy(
    calendar: Any, start: datetime, end: datetime, options: BusyOptions, deadline: float
) -> list[Span]:
    """(start, end, tentative) of every busy occurrence of one calendar item in the window.
    Raises Unreadable for an item that cannot be used (too many occurrences, too dense a rule)
    and Transient once ``deadline`` (monotonic) has passed."""
    events = calendar.walk("VEVENT")
    if len(events) > MAX_OCCURRENCES:
        raise Unreadable(f"more than {MAX_OCCURRENCES} events")
    instants = 0  # at most this many occurrences in all: few enough is expanded at once
    for event in events:
        steps = recurrence_steps(event, end)
        if steps > MAX_RECURRENCE_STEPS:
            raise Unreadable("recurrence too dense to expand")
        rdates = sum(len(getattr(v, "dts", [v])) for v in _as_list(event.get("RDATE")))
        instants += steps + rdates + 1
    sliced = instants > MAX_OCCURRENCES
    seen: set[tuple[str, str | None, str | None]] = set()
    found: list[Span] = []
    for occurrence in _occurrences(recurring_ical_events.of(calendar), start, end, sliced):
        key = (
            str(occurrence.get("UID", "")),
            _ident(occurrence.get("RECURRENCE-ID")),
            _ident(occurrence.get("DTSTART")),
        )
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > MAX_OCCURRENCES:
            raise Unreadable(f"more than {MAX_OCCURRENCES} occurrences in the window")
        if len(seen) % 64 == 0 and monotonic() > deadline:
            raise Transient("busy: out of time expanding an item")
        interval = occurrence_busy(occurrence, start, end, options)
        if interval is not None:
            found.append(interval)
    return found

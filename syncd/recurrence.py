"""Reserved recurring slots: expanding a reservation's RRULE in the therapist's zone. Pure.

Occurrences are computed on naive wall-clock times and only then placed in the zone, so
"10:00 every Tuesday" stays 10:00 local on both sides of a clock change.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from syncd import domain as d

# Beyond this a reservation is considered open-ended for expansion windows.
MAX_EXPANSION = timedelta(days=3 * 366)


class RRuleError(ValueError):
    pass


def parse_rrule(text: str, dtstart: datetime) -> rrule:
    """Parse an RRULE value (no "RRULE:" prefix, no DTSTART); refuse what syncd cannot honour."""
    upper = text.upper()
    if "UNTIL=" in upper:
        raise RRuleError("put the end in the reservation's until field, not in the RRULE")
    if "DTSTART" in upper or "\n" in text:
        raise RRuleError("a single RRULE value is expected (FREQ=...;BYDAY=...)")
    try:
        rule = rrulestr(text.removeprefix("RRULE:"), dtstart=dtstart)
    except (ValueError, TypeError) as exc:
        raise RRuleError(f"not a valid RRULE: {exc}") from None
    if not isinstance(rule, rrule):
        raise RRuleError("a single RRULE value is expected")
    return rule


def first_start(slot: d.ReservedSlot) -> datetime:
    return slot.first_start_local.replace(tzinfo=ZoneInfo(slot.timezone)).astimezone(UTC)


def occurrences(slot: d.ReservedSlot, start: datetime, end: datetime) -> Iterator[d.Interval]:
    """Occurrences overlapping [start, end), in UTC, honouring the reservation's end."""
    zone = ZoneInfo(slot.timezone)
    rule = parse_rrule(slot.rrule, slot.first_start_local)
    if slot.until is not None:
        end = min(end, slot.until)
    # Widen the local window by a day each side: local and UTC dates differ by < 1 day.
    lo = (start - slot.duration).astimezone(zone).replace(tzinfo=None) - timedelta(days=1)
    hi = end.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
    for local in rule.between(lo, hi, inc=True):
        occ_start = local.replace(tzinfo=zone).astimezone(UTC)
        if slot.until is not None and occ_start >= slot.until:
            break
        interval = d.Interval(occ_start, occ_start + slot.duration)
        if interval.start < end and start < interval.end:
            yield interval

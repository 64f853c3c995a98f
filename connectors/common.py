"""What every provider's connector does the same way: what ``busy()`` does around the
provider's own reading, clipping and ordering busy intervals, reading a Retry-After header, and
one-line failure messages.

A provider package imports these instead of keeping its own copy, so that two providers cannot
drift apart on, say, what a Retry-After of a year means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from connectors.base import BusyInterval, BusyOptions
from connectors.errors import unreachable

__all__ = [
    "MAX_RETRY_AFTER",
    "BusyRead",
    "Window",
    "busy_window",
    "clip",
    "parse_retry_after",
    "plain",
    "read_busy",
    "sort_intervals",
]

# The longest wait a server's Retry-After can impose. Google's usage limits last hours
# ("Avoid Calendar use limits"); a day is past any documented pause, and a larger value (or a
# date years ahead, from a broken clock) would park a connection for good, or overflow the
# arithmetic that turns it into a date.
MAX_RETRY_AFTER: Final = 86_400.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from ``now``, at most :data:`MAX_RETRY_AFTER`; None when absent
    or unreadable.

    RFC 9110 10.2.3: ``delay-seconds`` (``1*DIGIT``: no sign, no fraction) or an HTTP-date,
    which is always UTC (IMF-fixdate, or the obsolete RFC 850 and asctime forms that recipients
    must accept, 5.6.7). A date in the past means "now" (0)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime carries no zone: HTTP-dates are UTC
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def plain(exc: BaseException) -> str:
    """One line an operator can act on ("could not reach host:port: connection refused"),
    rather than an HTTP library's repr of its connection pool."""
    text = unreachable(exc) or f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def busy_window(
    start: datetime, end: datetime, calendars: Sequence[str]
) -> tuple[datetime, datetime] | None:
    """The opening of every ``busy()``: ``[start, end)`` in UTC, or None when it is empty.
    A single ref passed as ``calendars`` (a str is a sequence of one-letter refs) and naive
    times are a caller's bug, refused before any request."""
    if isinstance(calendars, str):
        raise TypeError("busy(): calendars is a sequence of refs, not one ref")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("busy(): start and end must be timezone-aware")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return (start, end) if end > start else None


Window = tuple[datetime, datetime]
# A provider's busy-time reading: the intervals of ``calendars`` in a window (aware UTC, not
# empty), clipped to it, in any order.
BusyRead = Callable[[Window, Sequence[str], BusyOptions], list[BusyInterval]]


def read_busy(
    start: datetime,
    end: datetime,
    calendars: Sequence[str],
    options: BusyOptions,
    read: BusyRead,
) -> list[BusyInterval]:
    """``busy()`` around a provider's ``read``: the caller's bugs refused before any request,
    nothing read for an empty window, the intervals in the one order every provider answers
    in."""
    window = busy_window(start, end, calendars)
    if window is None:
        return []
    return sort_intervals(read(window, calendars, options))


def clip(
    start: datetime, end: datetime, window_start: datetime, window_end: datetime
) -> tuple[datetime, datetime] | None:
    """``[start, end)`` cut to the window, or None when nothing of it is inside."""
    start, end = max(start, window_start), min(end, window_end)
    return (start, end) if end > start else None


def sort_intervals(found: list[BusyInterval]) -> list[BusyInterval]:
    """Busy intervals in the one order every provider answers in (sorted in place)."""
    found.sort(key=lambda i: (i.start, i.end, i.calendar, i.ref or ""))
    return found

"""Google freebusy.query: busy time of calendars syncd does not write into.

At most ``FREEBUSY_MAX_CALENDARS`` calendars and ``FREEBUSY_MAX_SPAN`` per request, Google
refusing longer spans. Google counts opaque, non-cancelled events, tentative ones included,
and does not say which were tentative or all-day: such intervals have ``tentative=False`` and
``ref=None``, ``tentative_busy=False`` cannot drop tentative events and ``all_day`` behaves as
``"transparency"`` whatever it says. Periods are merged per calendar (answers are cut at request
boundaries). A calendar Google answers with an error (deleted since it was chosen, no longer
shared, a backend hiccup) leaves the others' answers good: :class:`BusyIncomplete`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import BusyInterval
from connectors.common import clip
from connectors.errors import BusyIncomplete
from connectors.google.errors import translated
from connectors.google.times import rfc3339
from connectors.google.transport import Api

FREEBUSY_MAX_CALENDARS = 50
FREEBUSY_MAX_SPAN = timedelta(days=60)

Span = tuple[datetime, datetime]


def merged(intervals: list[Span]) -> list[Span]:
    """Overlapping or touching intervals joined."""
    out: list[Span] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _pieces(window: Span) -> list[Span]:
    start, end = window
    pieces: list[Span] = []
    while start < end:
        pieces.append((start, min(end, start + FREEBUSY_MAX_SPAN)))
        start = pieces[-1][1]
    return pieces


def _query(api: Api, ids: list[str], piece: Span) -> dict[str, Any]:
    """One freebusy.query: Google's answer per calendar id."""
    body = {
        "timeMin": rfc3339(piece[0]),
        "timeMax": rfc3339(piece[1]),
        "items": [{"id": calendar_id} for calendar_id in ids],
    }
    response = api.execute(api.service.freebusy().query(body=body), "freebusy.query")
    with translated("freebusy.query"):
        return dict(response.get("calendars") or {})


def _busy_of(answer: dict[str, Any] | None, window: Span) -> list[Span] | str:
    """One calendar's busy periods clipped to the window, or the reason Google gave for not
    answering it (deleted since it was chosen, no longer shared, a backend hiccup)."""
    answer = answer or {"errors": [{"reason": "missing"}]}
    with translated("freebusy.query"):
        errors = answer.get("errors") or []
        if errors:
            return str(errors[0].get("reason") or "unknown")
        periods = [
            clip(
                datetime.fromisoformat(period["start"]).astimezone(UTC),
                datetime.fromisoformat(period["end"]).astimezone(UTC),
                *window,
            )
            for period in answer.get("busy") or []
        ]
    return [p for p in periods if p is not None]


def freebusy(api: Api, calendars: list[tuple[str, str]], window: Span) -> list[BusyInterval]:
    """Busy intervals of ``calendars`` ((ref, calendar id) pairs) in ``window``."""
    if not calendars:
        return []
    spans: dict[str, list[Span]] = {}
    failed: dict[str, str] = {}
    for first in range(0, len(calendars), FREEBUSY_MAX_CALENDARS):
        group = calendars[first : first + FREEBUSY_MAX_CALENDARS]
        ids = list(dict.fromkeys(calendar_id for _, calendar_id in group))
        for piece in _pieces(window):
            answers = _query(api, ids, piece)
            for calendar_id in ids:
                busy = _busy_of(answers.get(calendar_id), window)
                if isinstance(busy, str):
                    # One calendar's error leaves the others' answers good.
                    failed[calendar_id] = busy
                else:
                    spans.setdefault(calendar_id, []).extend(busy)
    found = [
        BusyInterval(s, e, calendar=ref)
        for ref, calendar_id in dict.fromkeys(calendars)
        if calendar_id not in failed
        for s, e in merged(spans.get(calendar_id, []))
    ]
    if failed:
        refs = {calendar_id: ref for ref, calendar_id in calendars}
        raise BusyIncomplete(found, {refs[c]: reason for c, reason in failed.items()})
    return found

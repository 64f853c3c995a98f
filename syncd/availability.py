"""Public availability: working hours cut into bookable slots, minus busy time and buffers.

Pure functions: no I/O, no clock reads. Every instant going in must be timezone-aware; every
instant coming out is aware UTC. Intervals are half-open ``[start, end)``: touching is not
overlapping.

Working hours and clock changes
-------------------------------
Working hours are wall-clock times in the therapist's IANA zone, evaluated per local calendar
day. A stretch "Tuesday 09:00-17:00" covers exactly the instants whose local clock reading on
that Tuesday lies in ``[09:00, 17:00)``. So 09:00-17:00 local stays 09:00-17:00 local across
clock changes, and a stretch's real (UTC) length is whatever the wall clock gives. This does not
depend on any ``fold`` convention; what it means around a clock change (Europe/London):

* Spring gap (last Sunday of March, 01:00 GMT -> 02:00 BST): local 01:00-02:00 never happens.
  00:00-04:00 lasts 3 real hours. A stretch that starts or ends inside the gap starts or ends at
  the jump: 01:30-03:00 is 02:00-03:00 BST (01:00Z-02:00Z). A stretch entirely inside the gap
  (01:15-01:45) is empty.
* Autumn fold (last Sunday of October, 02:00 BST -> 01:00 GMT): local 01:00-02:00 happens twice.
  00:00-04:00 lasts 5 real hours. 01:15-01:45 happens twice, so it gives two pieces
  (00:15Z-00:45Z and 01:15Z-01:45Z), and each piece is cut into slots separately.

In other words, a slot is offered only if every instant in it falls in working hours on the
therapist's own clock. This assumes a zone changes its UTC offset at most once within one local
day, which is true of every zone in current use in the tz database.

Several stretches on one weekday are allowed. Stretches that overlap are merged. Stretches that
only touch (09:00-12:00 and 12:00-17:00) stay separate, so slots restart at 12:00. A stretch with
``end <= start`` is empty (overnight hours must be given as two stretches on two weekdays).

Slots and window edges
----------------------
Each stretch is cut into slots of ``slot_minutes`` of real time. The first slot starts at the
stretch start, and each following slot starts ``slot_minutes + buffer_minutes`` later. Only
slots that fit entirely in the stretch are kept. The grid is anchored at the stretch's own start,
never at the window's, so the same slots come out whatever window is asked for. A slot that lies
partly outside the window is dropped; a slot that only touches a window edge is inside it.
``working_stretches`` returns the stretches clipped to the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.domain import Interval, Therapist, WorkingHours

__all__ = [
    "Slot",
    "available_slots",
    "candidate_slots",
    "changed_window",
    "working_stretches",
]

_DAY = timedelta(days=1)

_Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Slot:
    """One bookable slot, as aware UTC instants."""

    start: datetime
    end: datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


def working_stretches(therapist: Therapist, window: Interval) -> list[Interval]:
    """The therapist's working time inside ``window``, in UTC, sorted and non-overlapping.

    Stretches are clipped to the window. Stretches that only touch are returned separately.
    """
    ws, we = _utc_window(window)
    return [Interval(max(a, ws), min(b, we)) for a, b in _stretches(therapist, ws, we)]


def candidate_slots(therapist: Therapist, window: Interval) -> list[Slot]:
    """Every slot of the working-hours grid that lies entirely inside ``window``, sorted.

    Busy time is not considered here, and neither is the ``active`` flag.
    """
    ws, we = _utc_window(window)
    length, step = _lengths(therapist)
    out: list[Slot] = []
    for start, last in _runs(therapist, ws, we):
        while start <= last:
            out.append(Slot(start, start + length))
            start += step
    return out


def available_slots(therapist: Therapist, window: Interval, busy: Iterable[Interval]) -> list[Slot]:
    """The candidate slots that keep ``buffer_minutes`` clear of every busy interval.

    A slot is offered iff, for every busy interval ``b``, ``slot.end + buffer <= b.start`` or
    ``slot.start >= b.end + buffer``. Busy intervals may be unsorted, overlapping, duplicated
    or reach outside the window. Empty ones (``end <= start``) take no time and are ignored. A
    paused therapist (``active=False``) offers nothing. The result is sorted by start and has no
    duplicates.

    Cost: O(B log B + D*H + S) for B busy intervals, D local days in the window, H stretches a
    day and S candidate slots. On the rare day with a clock change inside a stretch, about 20
    extra offset look-ups find the change. The busy intervals are sorted and merged once, and
    then one pass goes over slots and blocks together. Each slot is compared only with the first
    block that ends after it starts, and a stretch clear of every block is taken whole. Measured
    at about 0.5 ms for 8 weeks of Mon-Fri hours with 50 busy intervals, most of it spent building
    the Slot objects.
    """
    ws, we = _utc_window(window)
    if not therapist.active:
        return []
    length, step = _lengths(therapist)
    blocks = _merged_blocks(busy, timedelta(minutes=therapist.buffer_minutes), ws, we)
    offered: list[Slot] = []
    i, n = 0, len(blocks)
    # Slot starts and ends only ever increase, so the index into the blocks only moves forward:
    # blocks[i] is always the first block that ends after the current slot starts.
    for start, last in _runs(therapist, ws, we):
        while i < n and blocks[i][1] <= start:
            i += 1
        if i == n or last + length <= blocks[i][0]:  # the whole run is clear
            while start <= last:
                offered.append(Slot(start, start + length))
                start += step
            continue
        while start <= last:
            end = start + length
            while i < n and blocks[i][1] <= start:
                i += 1
            if i == n or end <= blocks[i][0]:
                offered.append(Slot(start, end))
            start += step
    return offered


def changed_window(before: Sequence[Slot], after: Sequence[Slot]) -> Interval | None:
    """The smallest interval that covers every slot found in only one of the two lists.

    The lists are compared as sets, so order and repeats do not matter. Returns ``None`` when
    both hold the same slots.
    """
    differing = set(before).symmetric_difference(after)
    if not differing:
        return None
    return Interval(min(s.start for s in differing), max(s.end for s in differing))


# --- internals ---------------------------------------------------------------------------------


def _utc_window(window: Interval) -> _Span:
    if window.start.utcoffset() is None or window.end.utcoffset() is None:
        raise ValueError("availability window must be timezone-aware")
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _offset(dt: datetime) -> timedelta:
    off = dt.utcoffset()
    if off is None:  # pragma: no cover - ZoneInfo always gives one
        raise ValueError(f"no UTC offset for {dt!r}")
    return off


def _daily_hours(hours: Iterable[WorkingHours]) -> dict[int, list[tuple[time, time]]]:
    """Per weekday: the non-empty stretches, sorted, with overlapping ones merged."""
    by_day: dict[int, list[tuple[time, time]]] = {}
    for wh in hours:
        if not 0 <= wh.weekday <= 6:
            raise ValueError(f"weekday must be 0..6 (0 = Monday), got {wh.weekday}")
        if wh.start.tzinfo is not None or wh.end.tzinfo is not None:
            raise ValueError("working hours are wall-clock times: they take no tzinfo")
        start, end = wh.start.replace(fold=0), wh.end.replace(fold=0)
        if start < end:
            by_day.setdefault(wh.weekday, []).append((start, end))
    merged: dict[int, list[tuple[time, time]]] = {}
    for weekday, spans in by_day.items():
        spans.sort()
        out: list[tuple[time, time]] = []
        for start, end in spans:
            if out and start < out[-1][1]:  # overlapping; touching stretches stay apart
                if end > out[-1][1]:
                    out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        merged[weekday] = out
    return merged


def _transition(zone: ZoneInfo, before: timedelta, x: datetime, y: datetime) -> datetime:
    """The first instant in ``(x, y]`` whose offset is not ``before``. The offset must be
    ``before`` at ``x`` and something else at ``y``. tz transitions fall on whole seconds."""
    lo, hi = math.floor(x.timestamp()), math.ceil(y.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, zone)) == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall_to_utc(zone: ZoneInfo, lo: datetime, hi: datetime) -> list[_Span]:
    """UTC pieces holding exactly the instants whose naive wall-clock reading in ``zone`` is
    in ``[lo, hi)``. There is one piece, or two when an autumn fold repeats part of the span."""
    before = _offset(lo.replace(tzinfo=zone, fold=0))  # offset at or before the span start
    after = _offset(hi.replace(tzinfo=zone, fold=1))  # offset at or after the span end
    if before == after:  # the common case: no clock change inside the span
        return [((lo - before).replace(tzinfo=UTC), (hi - before).replace(tzinfo=UTC))]
    # One clock change at instant T. Instants before T read (t + before) on the clock, and
    # instants from T on read (t + after). Take the part of [lo, hi) that each side covers.
    x = (lo - max(before, after)).replace(tzinfo=UTC)  # earlier than T
    y = (hi - min(before, after)).replace(tzinfo=UTC)  # at or after T
    t = _transition(zone, before, x, y)
    pieces: list[_Span] = []
    a, b = (lo - before).replace(tzinfo=UTC), min((hi - before).replace(tzinfo=UTC), t)
    if a < b:
        pieces.append((a, b))
    a, b = max((lo - after).replace(tzinfo=UTC), t), (hi - after).replace(tzinfo=UTC)
    if a < b:
        if pieces and pieces[-1][1] == a:  # spring forward: the same stretch goes on
            pieces[-1] = (pieces[-1][0], b)
        else:
            pieces.append((a, b))
    return pieces


def _stretches(therapist: Therapist, ws: datetime, we: datetime) -> list[_Span]:
    """Working stretches (not clipped) that overlap ``[ws, we)``, in UTC, sorted, disjoint."""
    hours = _daily_hours(therapist.working_hours)
    if not hours or we <= ws:
        return []
    zone = ZoneInfo(therapist.timezone)
    # Stretches lie inside their local day. One extra day on each side covers zones whose local
    # date goes backwards at a fold around midnight.
    day = ws.astimezone(zone).date() - _DAY
    last = we.astimezone(zone).date() + _DAY
    # Per weekday: the latest end, taken after any fold (fold=1), for the fast path below.
    last_end = {weekday: spans[-1][1].replace(fold=1) for weekday, spans in hours.items()}
    out: list[_Span] = []
    while day <= last:
        spans = hours.get(day.weekday())
        if spans:
            # Fast path: if the offset at the day's first start (fold=0) equals the offset at its
            # last end (fold=1), there is no clock change between them, given at most one change
            # in a day (see _wall_to_utc). Every stretch is then wall time minus that offset.
            off = _offset(datetime.combine(day, spans[0][0], zone))
            if off == _offset(datetime.combine(day, last_end[day.weekday()], zone)):
                for start, end in spans:
                    a = datetime.combine(day, start, UTC) - off
                    b = datetime.combine(day, end, UTC) - off
                    if a < we and ws < b:
                        out.append((a, b))
            else:
                for start, end in spans:
                    lo, hi = datetime.combine(day, start), datetime.combine(day, end)
                    for a, b in _wall_to_utc(zone, lo, hi):
                        if a < we and ws < b:
                            out.append((a, b))
        day += _DAY
    # Each instant has exactly one local date and wall-clock reading, and each day's stretches
    # are disjoint after merging, so the pieces are disjoint too. Sorting puts them in order.
    out.sort()
    return out


def _lengths(therapist: Therapist) -> tuple[timedelta, timedelta]:
    """A slot's length, and the step from one slot start to the next."""
    if therapist.slot_minutes <= 0:
        raise ValueError(f"slot_minutes must be positive, got {therapist.slot_minutes}")
    if therapist.buffer_minutes < 0:
        raise ValueError(f"buffer_minutes must be >= 0, got {therapist.buffer_minutes}")
    length = timedelta(minutes=therapist.slot_minutes)
    return length, length + timedelta(minutes=therapist.buffer_minutes)


def _runs(therapist: Therapist, ws: datetime, we: datetime) -> list[_Span]:
    """Per stretch, the first and last start of its grid slots that lie inside ``[ws, we)``,
    in order. The slots of a run start at ``first, first + step, ...`` up to ``last``."""
    length, step = _lengths(therapist)
    runs: list[_Span] = []
    for a, b in _stretches(therapist, ws, we):
        first = a
        if first < ws:  # the first grid point at or after the window start
            first = a + step * -((a - ws) // step)
        end = min(b, we)
        if first + length <= end:
            runs.append((first, first + step * ((end - length - first) // step)))
    return runs


def _merged_blocks(
    busy: Iterable[Interval], buffer: timedelta, ws: datetime, we: datetime
) -> list[_Span]:
    """Busy intervals grown by ``buffer`` on each side, cut down to the ones that can touch a
    slot in ``[ws, we)``, then sorted and merged into disjoint blocks."""
    grown: list[_Span] = []
    for b in busy:
        if b.start.utcoffset() is None or b.end.utcoffset() is None:
            raise ValueError(f"busy interval must be timezone-aware: {b!r}")
        if b.start < b.end:
            start, end = b.start - buffer, b.end + buffer
            if start < we and ws < end:
                grown.append((start.astimezone(UTC), end.astimezone(UTC)))
    grown.sort()
    blocks: list[_Span] = []
    for start, end in grown:
        if blocks and start <= blocks[-1][1]:
            if end > blocks[-1][1]:
                blocks[-1] = (blocks[-1][0], end)
        else:
            blocks.append((start, end))
    return blocks

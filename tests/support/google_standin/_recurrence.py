"""Event times, recurrence expansion (python-dateutil) and busy intervals.

A recurring event's RRULE is evaluated in the zone of ``start.timeZone`` (Google requires one
for recurring timed events), so "10:00 every Tuesday" stays 10:00 local across DST changes.
All-day events (``date``) are placed in the calendar's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

from ._errors import ApiError, bad_request, required
from ._util import JSON, parse_rfc3339

# Stop expanding an endless rule after this many occurrences (a window is always given in
# practice; this only bounds a runaway loop).
MAX_ITERATIONS = 20_000
# singleEvents listing without timeMax: expand this far ahead of now.
DEFAULT_HORIZON = timedelta(days=366)


@dataclass(frozen=True)
class Occurrence:
    start: datetime  # aware
    end: datetime  # aware
    all_day: bool
    local_start: datetime | date  # in the event's zone (timed) or the date (all-day)
    local_end: datetime | date


def zone(name: str, *, which: str = "start") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad_request(f"Invalid time zone definition for {which} time.") from None


def parse_when(part: Any, which: str, cal_tz: str) -> tuple[datetime, bool]:
    """(aware instant, is_all_day) of an event's ``start``/``end`` object; ApiError if invalid."""
    if not isinstance(part, dict):
        raise required(f"Missing {which} time.")
    if "date" in part and "dateTime" in part and part["date"] and part["dateTime"]:
        raise bad_request(f"Invalid {which} time.")
    if part.get("date"):
        try:
            d = date.fromisoformat(part["date"])
        except (TypeError, ValueError):
            raise bad_request(f"Invalid {which} time.") from None
        return datetime(d.year, d.month, d.day, tzinfo=zone(cal_tz, which=which)), True
    if part.get("dateTime"):
        raw = part["dateTime"]
        try:
            dt = datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            raise bad_request(f"Invalid {which} time.") from None
        tz_name = part.get("timeZone")
        if tz_name:
            tz = zone(tz_name, which=which)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=tz)
        elif dt.tzinfo is None:
            raise bad_request(f"Missing time zone definition for {which} time.", reason="required")
        return dt, False
    raise required(f"Missing {which} time.")


def validate_times(event: JSON, cal_tz: str) -> None:
    """The checks Google makes on start/end/recurrence when an event is written."""
    start, start_all_day = parse_when(event.get("start"), "start", cal_tz)
    end, end_all_day = parse_when(event.get("end"), "end", cal_tz)
    if start_all_day != end_all_day:
        raise bad_request("Start and end times must either both be date or both be dateTime.")
    if end < start or (start_all_day and end == start):
        raise ApiError(
            400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar"
        )
    recurrence = event.get("recurrence")
    if recurrence:
        if not isinstance(recurrence, list) or not all(isinstance(r, str) for r in recurrence):
            raise bad_request("Invalid recurrence rule.")
        for line in recurrence:
            name = line.split(":", 1)[0].split(";", 1)[0].upper()
            if name not in {"RRULE", "EXRULE", "RDATE", "EXDATE"}:
                raise bad_request("Invalid recurrence rule.")
        if not start_all_day and not event["start"].get("timeZone"):
            # Recurring timed events need a zone to expand in.
            raise bad_request("Missing time zone definition for start time.", reason="required")
        try:
            _ruleset(event, cal_tz)
        except ApiError:
            raise
        except Exception:
            raise bad_request("Invalid recurrence rule.") from None


def _ruleset(event: JSON, cal_tz: str) -> tuple[Any, bool, timedelta, ZoneInfo]:
    start, all_day = parse_when(event.get("start"), "start", cal_tz)
    end, _ = parse_when(event.get("end"), "end", cal_tz)
    text = "\n".join(event.get("recurrence") or [])
    if all_day:
        local = datetime(start.year, start.month, start.day)
        tz = zone(cal_tz)
        rules = rrulestr(text, dtstart=local, forceset=True)
    else:
        tz = zone(event["start"].get("timeZone") or cal_tz)
        rules = rrulestr(text, dtstart=start.astimezone(tz), forceset=True)
    # Probe once so a malformed rule fails at write time, not at read time.
    next(iter(rules), None)
    return rules, all_day, end - start, tz


def expand(
    event: JSON, cal_tz: str, window_start: datetime, window_end: datetime
) -> list[Occurrence]:
    """Occurrences of ``event`` overlapping ``[window_start, window_end)``."""
    start, all_day = parse_when(event.get("start"), "start", cal_tz)
    end, _ = parse_when(event.get("end"), "end", cal_tz)
    if not event.get("recurrence"):
        # timeMin bounds the end (exclusive), timeMax the start (exclusive): events.list reference.
        if end > window_start and start < window_end:
            return [_occurrence(event, start, end, all_day, cal_tz)]
        return []
    rules, all_day, duration, tz = _ruleset(event, cal_tz)
    found: list[Occurrence] = []
    for n, occ in enumerate(rules):
        if n >= MAX_ITERATIONS:
            break
        occ_start = occ.replace(tzinfo=tz) if all_day else occ
        if all_day:
            occ_end = (occ + duration_days(duration)).replace(tzinfo=tz)
        else:
            occ_end = occ_start + duration
        if occ_start >= window_end:
            break
        if occ_end > window_start:
            found.append(_occurrence(event, occ_start, occ_end, all_day, cal_tz))
    return found


def duration_days(duration: timedelta) -> timedelta:
    return timedelta(days=round(duration.total_seconds() / 86400))


def _occurrence(
    event: JSON, start: datetime, end: datetime, all_day: bool, cal_tz: str
) -> Occurrence:
    if all_day:
        return Occurrence(start, end, True, start.date(), end.date())
    tz_name = event["start"].get("timeZone")
    tz = zone(tz_name) if tz_name else start.tzinfo
    return Occurrence(start, end, False, start.astimezone(tz), end.astimezone(tz))


def instance_suffix(occ: Occurrence) -> str:
    if occ.all_day:
        assert isinstance(occ.local_start, date)
        return occ.local_start.strftime("%Y%m%d")
    return occ.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def original_start_key(original: Any, cal_tz: str) -> datetime | date | None:
    """Comparable key of an ``originalStartTime`` (UTC instant, or the date of all-day)."""
    if not isinstance(original, dict):
        return None
    if original.get("date"):
        return date.fromisoformat(original["date"])
    if original.get("dateTime"):
        dt, _ = parse_when(original, "start", cal_tz)
        return dt.astimezone(UTC)
    return None


def occurrence_key(occ: Occurrence) -> datetime | date:
    if occ.all_day:
        return occ.start.date()
    return occ.start.astimezone(UTC)


def when_json(value: datetime | date, event_part: JSON) -> JSON:
    if isinstance(value, datetime):
        out: JSON = {"dateTime": value.isoformat()}
        if event_part.get("timeZone"):
            out["timeZone"] = event_part["timeZone"]
        return out
    return {"date": value.isoformat()}


def parse_bound(value: str, name: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise bad_request("Bad Request", location=name) from None


def merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged

"""freebusy.query: the busy intervals of the requested calendars, recurrences expanded and
exceptions applied, clipped to the window and merged (freebusy.query reference)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ._errors import ApiError, required
from ._instances import RecurringInstances
from ._model import Calendar
from ._recurrence import expand, merge_intervals, occurrence_key, parse_bound, zone
from ._rules import FREEBUSY_MAX_CALENDARS, Result
from ._util import JSON, rfc3339


class FreeBusyApi(RecurringInstances):
    """freebusy.query, with the per-calendar errors ``fail_freebusy`` injects."""

    _freebusy_errors: dict[str, str]

    def _busy(self, cal: Calendar, ws: datetime, we: datetime) -> list[tuple[datetime, datetime]]:
        intervals: list[tuple[datetime, datetime]] = []
        for stored in cal.events.values():
            body = stored.body
            if stored.deleted or body.get("status") == "cancelled":
                continue
            if body.get("transparency") == "transparent":
                continue
            if self._is_master(body):
                excepted = self._exception_keys(cal, body["id"])
                occs = [
                    o
                    for o in expand(body, cal.time_zone, ws, we)
                    if occurrence_key(o) not in excepted
                ]
            else:
                occs = expand(body, cal.time_zone, ws, we)
            intervals.extend((max(o.start, ws), min(o.end, we)) for o in occs)
        return merge_intervals([i for i in intervals if i[1] > i[0]])

    def _m_freebusy_query(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        body = body if isinstance(body, dict) else {}
        if not body.get("timeMin"):
            raise required("Missing timeMin parameter.", location="timeMin")
        if not body.get("timeMax"):
            raise required("Missing timeMax parameter.", location="timeMax")
        ws = parse_bound(body["timeMin"], "timeMin")
        we = parse_bound(body["timeMax"], "timeMax")
        if we < ws:
            raise ApiError(
                400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar"
            )
        out_tz = zone(body["timeZone"]) if body.get("timeZone") else None

        def fmt(dt: datetime) -> str:
            if out_tz is None:
                return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return dt.astimezone(out_tz).isoformat()

        calendars: JSON = {}
        for n, item in enumerate(body.get("items") or []):
            requested = item.get("id") if isinstance(item, dict) else None
            if not requested:
                continue
            if n >= FREEBUSY_MAX_CALENDARS:
                calendars[requested] = {
                    "errors": [{"domain": "calendar", "reason": "tooManyCalendarsRequested"}],
                    "busy": [],
                }
                continue
            real_id = self._resolve_calendar_id(account, requested)
            injected = self._freebusy_errors.get(real_id)
            if injected is not None:
                calendars[requested] = {
                    "errors": [{"domain": "global", "reason": injected}],
                    "busy": [],
                }
                continue
            cal = self._calendars.get(real_id)
            if cal is None or self._role(account, cal) is None:
                calendars[requested] = {
                    "errors": [{"domain": "global", "reason": "notFound"}],
                    "busy": [],
                }
                continue
            calendars[requested] = {
                "busy": [{"start": fmt(s), "end": fmt(e)} for s, e in self._busy(cal, ws, we)]
            }
        return (
            200,
            {
                "kind": "calendar#freeBusy",
                "timeMin": rfc3339(ws),
                "timeMax": rfc3339(we),
                "calendars": calendars,
            },
            {},
        )

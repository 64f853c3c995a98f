"""The therapist in Google's UI: creating, editing, dragging and deleting events (and single
occurrences) as Google Calendar's own UI does, for tests and the soak. Each goes through the
same validation as the API, without auth, faults, quotas or counters; watchers are notified as
for any change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ._events import EventsApi
from ._recurrence import parse_when
from ._rules import SERVER_FIELDS
from ._util import JSON, deep_copy, merge_patch


class TherapistUi(EventsApi):
    """Public helpers acting as the calendar's owner in Google's UI."""

    # events by hand ------------------------------------------------------------------------------

    def put_event(self, calendar_id: str, body: JSON) -> JSON:
        """Create an event as another client would (the therapist in Google's UI): same
        validation as events.insert, no auth, faults or counting; watchers are notified."""
        with self._lock:
            cal = self._calendars[calendar_id]
            return deep_copy(self._create_event(cal, body, cal.owner).body)

    def edit_event(self, calendar_id: str, event_id: str, **fields: Any) -> JSON:
        """Edit an event as the therapist would: patch semantics (``None`` removes a field);
        a new etag, ``sequence`` bumped on time changes; watchers are notified."""
        with self._lock:
            cal = self._calendars[calendar_id]
            stored = self._stored_or_instance(cal, event_id)
            current = {k: v for k, v in stored.body.items() if k not in SERVER_FIELDS}
            merged = merge_patch(current, fields)
            if stored.deleted and "status" not in fields:
                merged["status"] = "confirmed"
            self._replace_event(cal, stored, merged, None)
            self._commit_exception(cal, stored)
            return deep_copy(stored.body)

    def delete_event(self, calendar_id: str, event_id: str) -> None:
        """Delete an event as the therapist would (it stays, status "cancelled")."""
        with self._lock:
            cal = self._calendars[calendar_id]
            stored = self._stored_or_instance(cal, event_id)
            if not stored.deleted:
                self._commit_exception(cal, stored)
                self._mark_deleted(cal, stored)
                self._events_changed(cal.id)

    # the therapist in Google's UI ----------------------------------------------------------------
    # Small helpers for tests and the soak: each acts as Google Calendar's own UI would, through
    # the same validation as the API, without auth, faults, quotas or counters; watchers are
    # notified as for any change.

    @staticmethod
    def instance_id(master_id: str, original_start: datetime) -> str:
        """The id Google gives one instance of a recurring timed event: the master's id, ``_``
        and the instance's original start in UTC (``20261027T100000Z``)."""
        return f"{master_id}_{original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"

    def user_drag(
        self, calendar_id: str, event_id: str, start: datetime, end: datetime | None = None
    ) -> JSON:
        """Drag an event (or one instance, by its instance id) to ``start``, keeping its length
        unless ``end`` is given. A time change made in Google's UI bumps ``sequence`` (events
        resource, ``sequence``; RFC 5545 3.8.7.4), as the stand-in does for any time change
        written without a sequence."""
        with self._lock:
            cal = self._calendars[calendar_id]
            body = self._stored_or_instance(cal, event_id).body
            first, _ = parse_when(body.get("start"), "start", cal.time_zone)
            last, _ = parse_when(body.get("end"), "end", cal.time_zone)
            tz_name = (body.get("start") or {}).get("timeZone")
            tz = ZoneInfo(tz_name) if tz_name else UTC

            def when(at: datetime) -> JSON:
                out: JSON = {"dateTime": at.astimezone(tz).isoformat()}
                if tz_name:
                    out["timeZone"] = tz_name
                return out

            finish = end if end is not None else start + (last - first)
            return self.edit_event(calendar_id, event_id, start=when(start), end=when(finish))

    def user_move_instance(
        self,
        calendar_id: str,
        master_id: str,
        original_start: datetime,
        start: datetime,
        end: datetime | None = None,
    ) -> JSON:
        """Move one occurrence of a recurring event ("This event" in Google's UI): it becomes an
        exception instance ``<master>_<original start>`` with ``recurringEventId`` and
        ``originalStartTime`` (recurring events guide, "Modifying instances")."""
        return self.user_drag(calendar_id, self.instance_id(master_id, original_start), start, end)

    def user_delete_instance(
        self, calendar_id: str, master_id: str, original_start: datetime
    ) -> None:
        """Delete one occurrence ("This event"): a cancelled exception instance that hides it
        (recurring events guide; events.list, showDeleted)."""
        self.delete_event(calendar_id, self.instance_id(master_id, original_start))

    def user_delete_event(self, calendar_id: str, event_id: str) -> None:
        """Delete an event (a whole series for a recurring one) in Google's UI."""
        self.delete_event(calendar_id, event_id)

    def user_edit_title(self, calendar_id: str, event_id: str, title: str) -> JSON:
        """Retitle an event or one instance in Google's UI (no time change: same sequence)."""
        return self.edit_event(calendar_id, event_id, summary=title)

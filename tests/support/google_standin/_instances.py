"""Recurring events' instances: computed from the master's recurrence, hidden where an
exception instance (modified or cancelled) stands in for them, and materialised into a new
exception when a client writes to an instance id (recurring events guide)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ._access import CalendarAccess
from ._errors import not_found
from ._model import Calendar, StoredEvent
from ._recurrence import (
    Occurrence,
    expand,
    instance_suffix,
    occurrence_key,
    original_start_key,
    when_json,
    zone,
)
from ._rules import ordered_event
from ._util import JSON, deep_copy, now_utc, rfc3339


class RecurringInstances(CalendarAccess):
    """Instances of recurring events, for the events, listing and freebusy parts."""

    def _is_master(self, body: JSON) -> bool:
        return bool(body.get("recurrence")) and not body.get("recurringEventId")

    def _instance_json(self, master: JSON, occ: Occurrence) -> JSON:
        body = {k: deep_copy(v) for k, v in master.items() if k != "recurrence"}
        body["id"] = f"{master['id']}_{instance_suffix(occ)}"
        body["recurringEventId"] = master["id"]
        body["originalStartTime"] = when_json(occ.local_start, master["start"])
        body["start"] = when_json(occ.local_start, master["start"])
        body["end"] = when_json(occ.local_end, master["end"])
        return ordered_event(body)

    def _exception_keys(self, cal: Calendar, master_id: str) -> set[Any]:
        keys = set()
        for stored in cal.events.values():
            if stored.body.get("recurringEventId") == master_id:
                key = original_start_key(stored.body.get("originalStartTime"), cal.time_zone)
                if key is not None:
                    keys.add(key)
        return keys

    def _instances(
        self, cal: Calendar, master: StoredEvent, window_start: datetime, window_end: datetime
    ) -> list[JSON]:
        excepted = self._exception_keys(cal, master.body["id"])
        return [
            self._instance_json(master.body, occ)
            for occ in expand(master.body, cal.time_zone, window_start, window_end)
            if occurrence_key(occ) not in excepted
        ]

    def _find_instance(self, cal: Calendar, event_id: str) -> JSON | None:
        """The computed (unmodified) instance a recurring-instance id names, if any."""
        if "_" not in event_id:
            return None
        master_id, suffix = event_id.rsplit("_", 1)
        master = cal.events.get(master_id)
        if master is None or master.deleted or not self._is_master(master.body):
            return None
        try:
            if "T" in suffix:
                at = datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            else:
                day = datetime.strptime(suffix, "%Y%m%d").date()
                at = datetime(day.year, day.month, day.day, tzinfo=zone(cal.time_zone))
        except ValueError:
            return None
        for occ in expand(
            master.body, cal.time_zone, at - timedelta(days=2), at + timedelta(days=2)
        ):
            if instance_suffix(occ) == suffix:
                excepted = self._exception_keys(cal, master_id)
                if occurrence_key(occ) in excepted:
                    return None
                return self._instance_json(master.body, occ)
        return None

    def _stored_or_instance(self, cal: Calendar, event_id: str) -> StoredEvent:
        """The stored event, or a new exception materialised from a recurring instance."""
        stored = cal.events.get(event_id)
        if stored is not None:
            return stored
        instance = self._find_instance(cal, event_id)
        if instance is None:
            raise not_found()
        now = rfc3339(now_utc())
        instance["created"] = now
        instance["updated"] = now
        return StoredEvent(body=instance, deleted=False, change=0, order=self._next_order())

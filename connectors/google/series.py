"""Recurring events syncd wrote (reserved slots) and the exception instances a therapist makes of
them in Google Calendar. Pure functions over event resources.

Moving, retitling or deleting one occurrence in Google's UI ("This event") leaves the master
untouched and adds an exception instance ``<master id>_<original start>`` carrying
``recurringEventId`` and ``originalStartTime``; a deleted occurrence is a cancelled exception
(recurring events guide, "Modifying instances"; events.list reference, ``showDeleted``). The
platform wins over such edits as over any other: syncd puts each occurrence back as its series
says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.google.times import zone

# An etag syncd reports for a series whose occurrences the therapist changed: never equal to a
# recorded one, so the planner schedules a repair.
TAMPERED = "tampered:"
# Fields an occurrence shares with its series; an exception differing in one was edited.
SHARED_FIELDS = ("summary", "description", "location", "transparency", "visibility")
# What an instance written back carries from its master.
RESTORED_FIELDS = (*SHARED_FIELDS, "status", "extendedProperties", "colorId", "reminders")


def _instant(when: dict[str, Any] | None) -> datetime | None:
    if not when or "dateTime" not in when:
        return None
    value = datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(when.get("timeZone")))
    return value.astimezone(UTC)


def _duration(master: dict[str, Any]) -> Any:
    start, end = _instant(master.get("start")), _instant(master.get("end"))
    return None if start is None or end is None else end - start


def tampered(master: dict[str, Any], instance: dict[str, Any]) -> bool:
    """Whether an exception instance of ``master`` no longer looks like the occurrence the
    series defines: cancelled, moved, resized or with a shared field edited."""
    if instance.get("status") == "cancelled":
        return True
    original = _instant(instance.get("originalStartTime"))
    duration = _duration(master)
    if original is None or duration is None:
        return False  # all-day series: syncd writes none
    if _instant(instance.get("start")) != original:
        return True
    if _instant(instance.get("end")) != original + duration:
        return True
    return any((instance.get(f) or None) != (master.get(f) or None) for f in SHARED_FIELDS)


def restored(master: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    """The body that puts one occurrence back as the series defines it (no ``sequence``: Google
    raises it itself when the time changes)."""
    original = _instant(instance.get("originalStartTime"))
    duration = _duration(master)
    if original is None or duration is None:
        raise ValueError("only timed series are restored")
    zone_name = (master.get("start") or {}).get("timeZone")
    local = zone(zone_name)

    def when(at: datetime) -> dict[str, str]:
        out = {"dateTime": at.astimezone(local).isoformat()}
        if zone_name:
            out["timeZone"] = zone_name
        return out

    body = {f: master[f] for f in RESTORED_FIELDS if f in master}
    body.setdefault("status", "confirmed")
    body["start"] = when(original)
    body["end"] = when(original + duration)
    return body

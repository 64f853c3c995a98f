"""Events CRUD of the stand-in: events.insert/get/update/patch/delete, the validation and
server-owned fields they share with the therapist's UI actions, and the purge mode of deleted
events.

Every ``_m_<resource>_<method>`` handler runs under the state lock and returns a ``Result`` or
raises :class:`ApiError`."""

from __future__ import annotations

import base64
import time
from typing import Any

from ._errors import (
    ApiError,
    bad_request,
    condition_not_met,
    deleted,
    duplicate,
    forbidden,
    not_found,
)
from ._instances import RecurringInstances
from ._model import Calendar, StoredEvent
from ._recurrence import validate_times
from ._rules import (
    ENUMS,
    MAX_PROPERTIES,
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTY_KEY,
    MAX_PROPERTY_VALUE,
    MAX_REMINDER_OVERRIDES,
    SERVER_FIELDS,
    TIME_FIELDS,
    Result,
    ordered_event,
)
from ._util import EVENT_ID_RE, JSON, base32hex_id, deep_copy, merge_patch, now_utc, rfc3339


class EventsApi(RecurringInstances):
    """Single events and exception instances: create, read, replace, delete."""

    update_deleted: str = "forbidden"
    reinsert_deleted: str = "duplicate"
    purge_deleted_after: float | None
    purged_ids: str = "burnt"
    id_and_ical_uid: str = "accepted"

    # events: building and validating ------------------------------------------------------------

    def _clean_extended_properties(self, body: JSON) -> None:
        """Keys over 44 characters are dropped and values over 1024 truncated, silently; an
        event has at most 300 properties, of at most 32 kB keys and values together
        (extended properties guide, "Limits")."""
        ext = body.get("extendedProperties")
        if ext is None:
            return
        if not isinstance(ext, dict):
            raise bad_request("Invalid extendedProperties.")
        count = size = 0
        for scope in ("private", "shared"):
            props = ext.get(scope)
            if props is None:
                continue
            if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
                raise bad_request(f"Invalid extendedProperties.{scope}.")
            kept = {
                k: v[:MAX_PROPERTY_VALUE] for k, v in props.items() if len(k) <= MAX_PROPERTY_KEY
            }
            ext[scope] = kept
            count += len(kept)
            size += sum(len(k.encode()) + len(v.encode()) for k, v in kept.items())
        if count > MAX_PROPERTIES:
            raise bad_request(
                f"Too many extended properties: {count} (at most {MAX_PROPERTIES}).",
                location="extendedProperties",
            )
        if size > MAX_PROPERTIES_BYTES:
            raise bad_request(
                f"Extended properties too large: {size} bytes (at most 32 kB).",
                location="extendedProperties",
            )

    def _validate_event(self, body: JSON, cal: Calendar) -> None:
        validate_times(body, cal.time_zone)
        for name, allowed in ENUMS.items():
            if name in body and body[name] not in allowed:
                raise bad_request(f"Invalid value for: {name}", location=name)
        if "colorId" in body and str(body["colorId"]) not in {str(i) for i in range(1, 12)}:
            raise bad_request("Invalid color ID.", location="colorId")
        reminders = body.get("reminders")
        if reminders is not None:
            if not isinstance(reminders, dict):
                raise bad_request("Invalid reminders.")
            overrides = reminders.get("overrides") or []
            if not isinstance(overrides, list) or len(overrides) > MAX_REMINDER_OVERRIDES:
                raise bad_request(
                    "The maximum number of override reminders is 5.",
                    location="reminders.overrides",
                )
            if reminders.get("useDefault") and overrides:
                raise ApiError(
                    400,
                    "cannotUseDefaultRemindersAndSpecifyOverride",
                    "Cannot specify both default reminders and overrides at the same time.",
                )
            for item in overrides:
                if not isinstance(item, dict) or item.get("method") not in {"email", "popup"}:
                    raise bad_request("Invalid reminder method.")
                minutes = item.get("minutes")
                if not isinstance(minutes, int) or not 0 <= minutes <= 40320:
                    raise bad_request("Invalid reminder minutes.")
        self._clean_extended_properties(body)

    def _organizer(self, cal: Calendar) -> JSON:
        if cal.primary:
            return {"email": cal.id, "self": True}
        return {"email": cal.id, "displayName": cal.summary, "self": True}

    def _html_link(self, cal: Calendar, event_id: str) -> str:
        eid = base64.urlsafe_b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        return f"https://www.google.com/calendar/event?eid={eid}"

    def _create_event(self, cal: Calendar, body: JSON, actor: str) -> StoredEvent:
        """events.insert semantics, shared by the API and ``put_event``."""
        body = deep_copy(body) if isinstance(body, dict) else {}
        event_id = body.get("id")
        # "only one of them should be supplied at event creation time" (events resource,
        # iCalUID); what Google does with both is undocumented: a switchable mode.
        both = event_id is not None and body.get("iCalUID") is not None
        if both and self.id_and_ical_uid == "rejected":
            raise bad_request("Only one of id and iCalUID may be supplied.", location="iCalUID")
        if event_id is not None:
            if not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
                raise bad_request("Invalid resource id value.", location="id")
            existing = cal.events.get(event_id)
            if existing is not None:
                # The id of a deleted event: 409 (observed), or the insert brings it back.
                if existing.deleted and self.reinsert_deleted == "restore":
                    if existing.body.get("recurringEventId"):
                        raise duplicate()
                    new = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
                    self._replace_event(cal, existing, new, None)
                    return existing
                raise duplicate()
            if event_id in cal.purged_ids:
                raise duplicate()  # purged, but the id stays burnt (purge mode "burnt")
        else:
            event_id = base32hex_id()
            while event_id in cal.events:
                event_id = base32hex_id()
        ical_uid = body.get("iCalUID")
        if ical_uid is not None:
            holder = cal.events.get(cal.ical_uids.get(ical_uid, ""))
            if holder is not None and not holder.deleted:
                raise duplicate()  # only a live event blocks its iCalUID
        self._validate_event(body, cal)
        now = rfc3339(now_utc())
        client = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
        resource: JSON = {
            "kind": "calendar#event",
            "etag": self._next_etag(),
            "id": event_id,
            "status": "confirmed",
            "htmlLink": self._html_link(cal, event_id),
            "created": now,
            "updated": now,
            "creator": {"email": actor, "self": actor == cal.owner},
            "organizer": self._organizer(cal),
            "iCalUID": ical_uid or f"{event_id}@google.com",
            "sequence": body.get("sequence", 0) if isinstance(body.get("sequence"), int) else 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        resource.update(client)
        stored = StoredEvent(
            body=ordered_event(resource),
            deleted=False,
            change=self._next_change(),
            order=self._next_order(),
        )
        if resource["status"] == "cancelled":
            stored.deleted = True
        cal.events[event_id] = stored
        cal.ical_uids[resource["iCalUID"]] = event_id
        cal.updated = now
        self._events_changed(cal.id)
        return stored

    def _check_if_match(self, req: Any, stored_etag: str) -> None:
        if req is None:
            return
        expected = req.headers.get("if-match")
        if expected is not None and expected.strip() not in ("*", stored_etag):
            raise condition_not_met()

    def _replace_event(self, cal: Calendar, stored: StoredEvent, new: JSON, req: Any) -> None:
        """events.update semantics on ``stored`` with the full new client body ``new``."""
        old = stored.body
        new = deep_copy(new)
        self._validate_event(new, cal)
        sequence = old.get("sequence", 0)
        if isinstance(new.get("sequence"), int):
            if new["sequence"] < sequence:
                raise bad_request(
                    "Invalid sequence value. The specified sequence number is below the current"
                    " sequence number of the resource.",
                    reason="invalidSequenceValue",
                    location="sequence",
                )
            sequence = new["sequence"]
        elif any(new.get(f) != old.get(f) for f in TIME_FIELDS):
            sequence += 1
        resource: JSON = {k: old[k] for k in SERVER_FIELDS if k in old}
        resource["status"] = "confirmed"
        resource["reminders"] = {"useDefault": True}
        resource["eventType"] = old.get("eventType", "default")
        resource.update({k: v for k, v in new.items() if k not in SERVER_FIELDS})
        resource["sequence"] = sequence
        resource["etag"] = self._next_etag()
        resource["updated"] = rfc3339(now_utc())
        stored.body = ordered_event(resource)
        stored.deleted = resource["status"] == "cancelled"
        stored.change = self._next_change()
        cal.updated = resource["updated"]
        if stored.deleted:
            self._cascade_delete(cal, stored)
        self._events_changed(cal.id)

    def _mark_deleted(self, cal: Calendar, stored: StoredEvent) -> None:
        stored.deleted = True
        stored.deleted_at = time.time()
        stored.body["status"] = "cancelled"
        stored.body["etag"] = self._next_etag()
        stored.body["updated"] = rfc3339(now_utc())
        stored.change = self._next_change()
        cal.updated = stored.body["updated"]
        self._cascade_delete(cal, stored)

    def _cascade_delete(self, cal: Calendar, master: StoredEvent) -> None:
        """Deleting a recurring event deletes its modified instances too."""
        if not master.body.get("recurrence"):
            return
        for other in cal.events.values():
            if other.body.get("recurringEventId") == master.body["id"] and not other.deleted:
                self._mark_deleted(cal, other)

    # events methods -------------------------------------------------------------------------------

    def _m_events_insert(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="writer")
        stored = self._create_event(cal, body, account)
        return 200, deep_copy(stored.body), {"ETag": stored.body["etag"]}

    def _m_events_get(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        stored = cal.events.get(params["eventId"])
        resource = (
            stored.body if stored is not None else self._find_instance(cal, params["eventId"])
        )
        if resource is None:
            raise not_found()
        if req is not None and req.headers.get("if-none-match") == resource["etag"]:
            return 304, None, {"ETag": resource["etag"]}
        return 200, deep_copy(resource), {"ETag": resource["etag"]}

    def _writable(self, cal: Calendar, event_id: str, req: Any) -> StoredEvent:
        stored = self._stored_or_instance(cal, event_id)
        if stored.deleted:
            # Writing to a deleted event: Google answers 403 Forbidden (observed, see README);
            # ``update_deleted`` selects another behaviour for robustness tests.
            mode = self.update_deleted
            if mode == "gone":
                raise deleted()
            if mode == "not_found":
                raise not_found()
            if mode != "restore":
                raise forbidden()
        self._check_if_match(req, stored.body["etag"])
        return stored

    def _commit_exception(self, cal: Calendar, stored: StoredEvent) -> None:
        if stored.body["id"] not in cal.events:
            cal.events[stored.body["id"]] = stored

    def _m_events_update(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="writer")
        stored = self._writable(cal, params["eventId"], req)
        self._replace_event(cal, stored, body if isinstance(body, dict) else {}, req)
        self._commit_exception(cal, stored)
        return 200, deep_copy(stored.body), {"ETag": stored.body["etag"]}

    def _m_events_patch(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="writer")
        stored = self._writable(cal, params["eventId"], req)
        patch = body if isinstance(body, dict) else {}
        current = {k: v for k, v in stored.body.items() if k not in SERVER_FIELDS}
        merged = merge_patch(current, {k: v for k, v in patch.items() if k != "sequence"})
        if "sequence" in patch:
            merged["sequence"] = patch["sequence"]
        if stored.deleted and "status" not in patch:
            merged["status"] = "confirmed"
        self._replace_event(cal, stored, merged, req)
        self._commit_exception(cal, stored)
        return 200, deep_copy(stored.body), {"ETag": stored.body["etag"]}

    def _m_events_delete(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="writer")
        stored = self._stored_or_instance(cal, params["eventId"])
        if stored.deleted:
            raise deleted()
        self._check_if_match(req, stored.body["etag"])
        self._commit_exception(cal, stored)
        self._mark_deleted(cal, stored)
        self._events_changed(cal.id)
        return 204, None, {}

    # purge mode -----------------------------------------------------------------------------------

    def _purge(self) -> None:
        """Purge mode: deleted events older than ``purge_deleted_after`` vanish (get answers
        404, listings omit them), and sync tokens that never saw the deletion expire (410),
        so no deletion is lost. Cancelled instances stay: they are what hides an occurrence."""
        after = self.purge_deleted_after
        if after is None:
            return
        cutoff = time.time() - after
        for cal in self._calendars.values():
            purged = [
                stored
                for stored in cal.events.values()
                if stored.deleted
                and stored.deleted_at is not None
                and stored.deleted_at <= cutoff
                and not stored.body.get("recurringEventId")
            ]
            for stored in purged:
                event_id = stored.body["id"]
                del cal.events[event_id]
                if cal.ical_uids.get(stored.body.get("iCalUID", "")) == event_id:
                    del cal.ical_uids[stored.body["iCalUID"]]
                if self.purged_ids == "burnt":
                    cal.purged_ids.add(event_id)
                for token, sync in list(self._sync_tokens.items()):
                    if sync.calendar_id == cal.id and sync.change < stored.change:
                        del self._sync_tokens[token]

"""The Calendar v3 methods of the stand-in: calendars, calendarList, events, freebusy, watch.

Every ``_m_<resource>_<method>`` handler runs under the state lock and returns
``(status, json_or_None, extra_headers)`` or raises :class:`ApiError`.
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ._base import StandInState
from ._discovery import insufficient_scopes
from ._errors import (
    ApiError,
    bad_request,
    condition_not_met,
    deleted,
    duplicate,
    forbidden,
    full_sync_required,
    not_found,
    required,
    required_access,
)
from ._model import Calendar, Channel, PageState, StoredEvent, SyncToken
from ._recurrence import (
    DEFAULT_HORIZON,
    Occurrence,
    expand,
    instance_suffix,
    merge_intervals,
    occurrence_key,
    original_start_key,
    parse_bound,
    parse_when,
    validate_times,
    when_json,
    zone,
)
from ._util import EVENT_ID_RE, JSON, base32hex_id, deep_copy, merge_patch, now_utc, rfc3339

Result = tuple[int, JSON | None, dict[str, str]]

# Fields of an event the server owns; whatever else a client sends is stored as sent.
SERVER_FIELDS = frozenset(
    {
        "kind",
        "etag",
        "id",
        "htmlLink",
        "created",
        "updated",
        "creator",
        "organizer",
        "iCalUID",
        "recurringEventId",
        "originalStartTime",
        "sequence",
    }
)
KEY_ORDER = (
    "kind",
    "etag",
    "id",
    "status",
    "htmlLink",
    "created",
    "updated",
    "summary",
    "description",
    "location",
    "colorId",
    "creator",
    "organizer",
    "start",
    "end",
    "endTimeUnspecified",
    "recurrence",
    "recurringEventId",
    "originalStartTime",
    "transparency",
    "visibility",
    "iCalUID",
    "sequence",
    "attendees",
    "extendedProperties",
    "reminders",
    "eventType",
)
ENUMS = {
    "status": {"confirmed", "tentative", "cancelled"},
    "transparency": {"opaque", "transparent"},
    "visibility": {"default", "public", "private", "confidential"},
}
TIME_FIELDS = ("start", "end", "recurrence")
# events.list parameters that may not accompany a syncToken (events.list reference, syncToken).
SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
MAX_RESULTS_DEFAULT = 250
MAX_RESULTS_CAP = 2500
DEFAULT_CHANNEL_TTL = 604800  # seconds; events.watch reference, params.ttl
MAX_CHANNEL_ID = 64  # "Push notifications" guide, required properties: id
MAX_REMINDER_OVERRIDES = 5  # events resource, reminders.overrides
MAX_PROPERTY_KEY = 44  # extended properties guide, "Limits"
MAX_PROPERTY_VALUE = 1024
MAX_PROPERTIES = 300
MAX_PROPERTIES_BYTES = 32 * 1024  # keys and values of one event together
FREEBUSY_MAX_CALENDARS = 50  # freebusy.query reference, calendarExpansionMax
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONFERENCE = {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}


def _ordered(body: JSON) -> JSON:
    out = {k: body[k] for k in KEY_ORDER if k in body}
    out.update({k: v for k, v in body.items() if k not in out})
    return out


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"


def _int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Invalid value '{value}'.", location=name) from None


# calendarList's ``accessRole`` values, weakest first (calendarList resource reference): what
# each lets the account do with a calendar it can see.
ROLES = ("freeBusyReader", "reader", "writer", "owner")


class CalendarApi(StandInState):
    """Calendar v3 resources on top of :class:`StandInState`."""

    update_deleted: str = "forbidden"
    reinsert_deleted: str = "duplicate"
    purged_ids: str = "burnt"
    id_and_ical_uid: str = "accepted"
    _freebusy_errors: dict[str, str]

    # lookups ------------------------------------------------------------------------------------

    def _resolve_calendar_id(self, account: str | None, calendar_id: str) -> str:
        if calendar_id == "primary" and account is not None:
            return account
        return calendar_id

    def _role(self, account: str | None, cal: Calendar) -> str | None:
        """``account``'s accessRole on ``cal``: owner of its own, what it was shared with
        otherwise (None: no access). No account is the stand-in's own test controls."""
        if account is None or cal.owner == account:
            return "owner"
        return cal.shared.get(account)

    def _calendar(self, account: str | None, calendar_id: str, need: str = "reader") -> Calendar:
        """The calendar, if ``account`` may see it with at least the role ``need``. A calendar
        it has no access to is 404, as an unknown one is (Google does not reveal calendars the
        user has no access to); one it sees with a weaker role is 403 ``requiredAccessLevel``."""
        cal = self._calendars.get(self._resolve_calendar_id(account, calendar_id))
        role = None if cal is None else self._role(account, cal)
        if cal is None or role is None:
            raise not_found()
        if ROLES.index(role) < ROLES.index(need):
            raise required_access(need)
        # A token whose only scope permitting this method is calendar.app.created reaches only
        # the calendars its OAuth client created (the scope's description: "See, create,
        # change, and delete events on Google calendars you own" applies to app-created ones).
        if getattr(self._tls, "app_created_only", False) and cal.created_by != getattr(
            self._tls, "client_id", None
        ):
            raise insufficient_scopes()
        # Likewise calendar.events.owned ("See, create, change, and delete events on Google
        # calendars you own"): a calendar shared with the account, even to edit, is not its own.
        if getattr(self._tls, "owned_only", False) and role != "owner":
            raise insufficient_scopes()
        return cal

    def _calendar_json(self, cal: Calendar) -> JSON:
        out: JSON = {"kind": "calendar#calendar", "etag": cal.etag, "id": cal.id}
        out["summary"] = cal.summary
        if cal.description is not None:
            out["description"] = cal.description
        out.update(cal.extra)
        out["timeZone"] = cal.time_zone
        out["conferenceProperties"] = CONFERENCE
        return out

    def _calendar_list_entry(self, cal: Calendar, account: str) -> JSON:
        out = self._calendar_json(cal)
        own = cal.owner == account
        out["kind"] = "calendar#calendarListEntry"
        out.update(
            {
                "colorId": "14" if cal.primary else "7",
                "backgroundColor": "#9fe1e7" if cal.primary else "#42d692",
                "foregroundColor": "#000000",
                "selected": True,
                "accessRole": self._role(account, cal),
                "defaultReminders": self._default_reminders(cal),
            }
        )
        if cal.primary and own:  # another account's primary calendar is not the viewer's
            out["primary"] = True
        return out

    def _default_reminders(self, cal: Calendar) -> list[JSON]:
        return [{"method": "popup", "minutes": 10}] if cal.primary else []

    # calendars / calendarList -----------------------------------------------------------------

    def _new_calendar(
        self, owner: str, summary: str, *, time_zone: str, description: str | None = None
    ) -> Calendar:
        cal_id = f"c_{secrets.token_hex(32)}@group.calendar.google.com"
        cal = Calendar(
            id=cal_id,
            owner=owner,
            summary=summary,
            description=description,
            time_zone=time_zone,
            primary=False,
            etag=self._next_etag(),
            resource_id=base64.urlsafe_b64encode(secrets.token_bytes(18)).decode(),
        )
        self._calendars[cal_id] = cal
        self._accounts[owner].calendar_ids.append(cal_id)
        return cal

    def _m_calendarList_list(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        acct = self._accounts[account]
        items = [self._calendar_list_entry(self._calendars[c], account) for c in acct.calendar_ids]
        return (
            200,
            {
                "kind": "calendar#calendarList",
                "etag": f'"p{self._last_etag}"',
                "nextSyncToken": base32hex_id(16),
                "items": items,
            },
            {},
        )

    def _m_calendarList_get(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="freeBusyReader")
        return 200, self._calendar_list_entry(cal, account), {}

    def _m_calendars_get(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        return 200, self._calendar_json(self._calendar(account, params["calendarId"])), {}

    def _m_calendars_insert(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        body = body if isinstance(body, dict) else {}
        if not body.get("summary"):
            raise required("Missing title.", location="summary")
        tz = body.get("timeZone") or self._calendars[account].time_zone
        zone(tz)
        cal = self._new_calendar(account, body["summary"], time_zone=tz)
        cal.created_by = getattr(self._tls, "client_id", None)
        cal.description = body.get("description")
        cal.extra = {k: body[k] for k in ("location",) if k in body}
        return 200, self._calendar_json(cal), {}

    def _write_calendar(self, cal: Calendar, new: JSON) -> None:
        if not new.get("summary"):
            raise required("Missing title.", location="summary")
        tz = new.get("timeZone") or cal.time_zone
        zone(tz)
        cal.summary = new["summary"]
        cal.description = new.get("description")
        cal.time_zone = tz
        cal.extra = {k: new[k] for k in ("location",) if k in new}
        cal.etag = self._next_etag()

    def _m_calendars_update(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="owner")
        self._write_calendar(cal, body if isinstance(body, dict) else {})
        return 200, self._calendar_json(cal), {}

    def _m_calendars_patch(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="owner")
        merged = merge_patch(self._calendar_json(cal), body if isinstance(body, dict) else {})
        self._write_calendar(cal, merged)
        return 200, self._calendar_json(cal), {}

    def _m_calendars_delete(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="owner")
        if cal.primary:
            # calendars.delete "Deletes a secondary calendar. Use calendars.clear for clearing
            # all events on primary calendars."
            raise bad_request(
                "Cannot delete primary calendar.", reason="cannotDeletePrimaryCalendar"
            )
        del self._calendars[cal.id]
        for holder in (cal.owner, *cal.shared):
            self._accounts[holder].calendar_ids.remove(cal.id)
        for token, sync in list(self._sync_tokens.items()):
            if sync.calendar_id == cal.id:
                del self._sync_tokens[token]
        self._calendar_gone(cal.id)
        return 204, None, {}

    def _m_calendars_clear(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"], need="owner")
        for stored in cal.events.values():
            if not stored.deleted:
                self._mark_deleted(cal, stored)
        self._events_changed(cal.id)
        return 204, None, {}

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
            body=_ordered(resource),
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
        stored.body = _ordered(resource)
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

    # events: recurring instances ----------------------------------------------------------------

    def _is_master(self, body: JSON) -> bool:
        return bool(body.get("recurrence")) and not body.get("recurringEventId")

    def _instance_json(self, master: JSON, occ: Occurrence) -> JSON:
        body = {k: deep_copy(v) for k, v in master.items() if k != "recurrence"}
        body["id"] = f"{master['id']}_{instance_suffix(occ)}"
        body["recurringEventId"] = master["id"]
        body["originalStartTime"] = when_json(occ.local_start, master["start"])
        body["start"] = when_json(occ.local_start, master["start"])
        body["end"] = when_json(occ.local_end, master["end"])
        return _ordered(body)

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

    def _m_events_list(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        max_results = _int(req.param("maxResults"), "maxResults", MAX_RESULTS_DEFAULT)
        if max_results < 1:
            raise bad_request(f"Invalid value '{max_results}'. Values must be at least 1.")
        max_results = min(max_results, MAX_RESULTS_CAP)
        page_token = req.param("pageToken")
        if page_token is not None:
            state = self._pages.get(page_token)
            if state is None or state.calendar_id != cal.id:
                raise bad_request("Invalid page token value.", location="pageToken")
            return 200, self._page(cal, state), {}
        sync_token = req.param("syncToken")
        if sync_token is not None:
            for name in SYNC_INCOMPATIBLE:
                if name in req.query:
                    raise bad_request(
                        f"Parameter {name} cannot be used together with syncToken.",
                        location=name,
                    )
            if _bool(req.param("showDeleted")) is False:
                raise bad_request(
                    "showDeleted cannot be false when syncToken is used.", location="showDeleted"
                )
            sync = self._sync_tokens.get(sync_token)
            if sync is None or sync.calendar_id != cal.id:
                raise full_sync_required()
            changed = sorted(
                (s for s in cal.events.values() if s.change > sync.change), key=lambda s: s.change
            )
            keys: list[Any] = [s.body["id"] for s in changed]
            if _bool(req.param("singleEvents")):
                keys = self._expand_keys(cal, changed, None, None, include_deleted=True)
            state = PageState(cal.id, keys, 0, self._change, max_results, incremental=True)
            return 200, self._page(cal, state), {}
        keys = self._full_listing(cal, req)
        state = PageState(cal.id, keys, 0, self._change, max_results, incremental=False)
        return 200, self._page(cal, state), {}

    def _full_listing(self, cal: Calendar, req: Any) -> list[Any]:
        show_deleted = bool(_bool(req.param("showDeleted")))
        single = bool(_bool(req.param("singleEvents")))
        order_by = req.param("orderBy")
        if order_by not in (None, "startTime", "updated"):
            raise bad_request("Invalid value for: orderBy", location="orderBy")
        if order_by == "startTime" and not single:
            raise bad_request(
                "The requested ordering is not available for the particular query.",
                location="orderBy",
            )
        time_min = req.param("timeMin")
        time_max = req.param("timeMax")
        window_start = parse_bound(time_min, "timeMin") if time_min else None
        window_end = parse_bound(time_max, "timeMax") if time_max else None
        if window_start and window_end and window_end <= window_start:
            raise ApiError(
                400,
                "timeRangeEmpty",
                "The specified time range is empty.",
                domain="calendar",
                location="timeMax",
            )
        updated_min_raw = req.param("updatedMin")
        updated_min = parse_bound(updated_min_raw, "updatedMin") if updated_min_raw else None
        ical_uid = req.param("iCalUID")
        private = [self._constraint(c) for c in req.query.get("privateExtendedProperty", [])]
        shared = [self._constraint(c) for c in req.query.get("sharedExtendedProperty", [])]
        q = (req.param("q") or "").lower().split()

        def wanted(stored: StoredEvent) -> bool:
            body = stored.body
            if updated_min is not None:
                if datetime.fromisoformat(body["updated"]) < updated_min:
                    return False
            elif stored.deleted and not show_deleted:
                # Cancelled exceptions of a live series are listed anyway when singleEvents is
                # false (events.list reference, showDeleted).
                if single or not body.get("recurringEventId"):
                    return False
                master = cal.events.get(body["recurringEventId"])
                if master is None or master.deleted:
                    return False
            if ical_uid is not None and body.get("iCalUID") != ical_uid:
                return False
            ext = body.get("extendedProperties") or {}
            for scope, constraints in (("private", private), ("shared", shared)):
                props = ext.get(scope) or {}
                if any(props.get(k) != v for k, v in constraints):
                    return False
            if q:
                text = " ".join(
                    str(body.get(f, "")) for f in ("summary", "description", "location")
                )
                if not all(term in text.lower() for term in q):
                    return False
            if window_start or window_end:
                ws = window_start or EPOCH
                we = window_end or datetime(9999, 1, 1, tzinfo=UTC)
                if not expand(body, cal.time_zone, ws, we):
                    return False
            return True

        selected = [s for s in sorted(cal.events.values(), key=lambda s: s.order) if wanted(s)]
        if single:
            keys = self._expand_keys(cal, selected, window_start, window_end, include_deleted=False)
        else:
            keys = [s.body["id"] for s in selected]
        if order_by == "updated":
            keys.sort(key=lambda k: self._key_body(cal, k).get("updated", ""))
        elif order_by == "startTime":
            keys.sort(key=lambda k: self._start_of(cal, self._key_body(cal, k)))
        return keys

    def _expand_keys(
        self,
        cal: Calendar,
        selected: list[StoredEvent],
        window_start: datetime | None,
        window_end: datetime | None,
        *,
        include_deleted: bool,
    ) -> list[Any]:
        """singleEvents=true: recurring events become their instances (dicts), others stay ids.
        Without timeMax, instances are expanded to a year ahead of now."""
        ws = window_start or EPOCH
        we = window_end or now_utc() + DEFAULT_HORIZON
        keys: list[Any] = []
        for stored in selected:
            if self._is_master(stored.body):
                if stored.deleted:
                    if include_deleted:
                        keys.append(stored.body["id"])
                    continue
                keys.extend(self._instances(cal, stored, ws, we))
            else:
                keys.append(stored.body["id"])
        return keys

    def _key_body(self, cal: Calendar, key: Any) -> JSON:
        if isinstance(key, dict):
            return key
        stored = cal.events.get(key)
        return stored.body if stored is not None else {}

    def _start_of(self, cal: Calendar, body: JSON) -> datetime:
        try:
            return parse_when(body.get("start"), "start", cal.time_zone)[0]
        except ApiError:
            return EPOCH

    def _constraint(self, value: str) -> tuple[str, str]:
        if "=" not in value:
            raise bad_request("Invalid extended property constraint.")
        key, _, val = value.partition("=")
        return key, val

    def _list_item(self, cal: Calendar, key: Any) -> JSON | None:
        if isinstance(key, dict):
            return deep_copy(key)
        stored = cal.events.get(key)
        if stored is None:
            return None
        if stored.deleted:
            # Deleted events in a listing are only guaranteed to carry their id (events
            # resource, status); cancelled exceptions keep recurringEventId/originalStartTime.
            minimal: JSON = {
                "kind": "calendar#event",
                "etag": stored.body["etag"],
                "id": stored.body["id"],
                "status": "cancelled",
            }
            for name in ("recurringEventId", "originalStartTime"):
                if name in stored.body:
                    minimal[name] = deep_copy(stored.body[name])
            return minimal
        return deep_copy(stored.body)

    def _page(self, cal: Calendar, state: PageState) -> JSON:
        end = state.offset + state.max_results
        items = [
            item
            for item in (self._list_item(cal, k) for k in state.keys[state.offset : end])
            if item is not None
        ]
        out: JSON = {
            "kind": "calendar#events",
            "etag": f'"p{self._last_etag}"',
            "summary": cal.summary,
            "description": cal.description or "",
            "updated": cal.updated or rfc3339(now_utc()),
            "timeZone": cal.time_zone,
            "accessRole": "owner",
            "defaultReminders": self._default_reminders(cal),
        }
        if end < len(state.keys):
            token = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
            self._pages[token] = PageState(
                cal.id, state.keys, end, state.sync_change, state.max_results, state.incremental
            )
            out["nextPageToken"] = token
        else:
            token = "CP" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
            self._sync_tokens[token] = SyncToken(cal.id, state.sync_change)
            out["nextSyncToken"] = token
        out["items"] = items
        return out

    def _m_events_instances(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        master = cal.events.get(params["eventId"])
        if master is None or not self._is_master(master.body):
            raise not_found()
        if master.deleted:
            raise deleted()
        time_min, time_max = req.param("timeMin"), req.param("timeMax")
        ws = parse_bound(time_min, "timeMin") if time_min else EPOCH
        we = parse_bound(time_max, "timeMax") if time_max else now_utc() + DEFAULT_HORIZON
        keys: list[Any] = []
        for instance in self._instances(cal, master, ws, we):
            keys.append(instance)
        for stored in sorted(cal.events.values(), key=lambda s: s.order):
            if stored.body.get("recurringEventId") == master.body["id"]:
                if stored.deleted and not _bool(req.param("showDeleted")):
                    continue
                keys.append(stored.body["id"])
        keys.sort(key=lambda k: self._start_of(cal, self._key_body(cal, k)))
        max_results = min(
            _int(req.param("maxResults"), "maxResults", MAX_RESULTS_DEFAULT), MAX_RESULTS_CAP
        )
        page_token = req.param("pageToken")
        if page_token is not None:
            state = self._pages.get(page_token)
            if state is None:
                raise bad_request("Invalid page token value.", location="pageToken")
        else:
            state = PageState(cal.id, keys, 0, self._change, max_results, incremental=False)
        page = self._page(cal, state)
        page.pop("nextSyncToken", None)
        return 200, page, {}

    # freebusy ------------------------------------------------------------------------------------

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

    # push channels -----------------------------------------------------------------------------

    def _m_events_watch(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        body = body if isinstance(body, dict) else {}
        channel_id = body.get("id")
        if not channel_id:
            raise required("Required channel id.", location="id")
        if body.get("type") not in ("web_hook", "webhook"):
            raise bad_request("Invalid channel type.", location="type")
        if len(str(channel_id)) > MAX_CHANNEL_ID:
            raise bad_request(
                f"Channel id must be at most {MAX_CHANNEL_ID} characters.", location="id"
            )
        address = body.get("address")
        if not address or not str(address).lower().startswith("https://"):
            # The receiver "is an HTTPS server" ("Push notifications" guide).
            raise bad_request(
                f"WebHook callback must be HTTPS: {address}",
                reason="push.webhookUrlNotHttps",
                location="address",
            )
        existing = self._channels.get(channel_id)
        if existing is not None and not existing.stopped:
            raise bad_request(f"Channel id {channel_id} not unique", reason="channelIdNotUnique")
        params_in = body.get("params") or {}
        ttl = _int(params_in.get("ttl"), "params.ttl", DEFAULT_CHANNEL_TTL)
        expiration_ms = int((time.time() + ttl) * 1000)
        if body.get("expiration"):
            expiration_ms = min(expiration_ms, int(body["expiration"]))
        resource_uri = (
            f"{self._root_url}calendar/v3/calendars/{quote(cal.id, safe='')}/events?alt=json"
        )
        channel = Channel(
            id=channel_id,
            resource_id=cal.resource_id,
            resource_uri=resource_uri,
            calendar_id=cal.id,
            owner=account,
            address=address,
            token=body.get("token"),
            expiration_ms=expiration_ms,
        )
        self._channels[channel_id] = channel
        self._notify(channel, "sync")
        out: JSON = {
            "kind": "api#channel",
            "id": channel_id,
            "resourceId": channel.resource_id,
            "resourceUri": resource_uri,
        }
        if channel.token is not None:
            out["token"] = channel.token
        out["expiration"] = str(expiration_ms)
        return 200, out, {}

    def _m_channels_stop(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        body = body if isinstance(body, dict) else {}
        channel = self._channels.get(body.get("id") or "")
        if (
            channel is None
            or channel.stopped
            or channel.resource_id != body.get("resourceId")
            or channel.owner != account
        ):
            raise ApiError(
                404, "notFound", f"Channel '{body.get('id')}' not found for project 'standin'"
            )
        channel.stopped = True
        return 204, None, {}

    def _m_colors_get(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        palette = {str(i): {"background": "#a4bdfc", "foreground": "#1d1d1d"} for i in range(1, 12)}
        return 200, {"kind": "calendar#colors", "updated": rfc3339(EPOCH), "event": palette}, {}

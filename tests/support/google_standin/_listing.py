"""events.list and events.instances: full and filtered listings, incremental sync with sync
tokens, singleEvents expansion, ordering and paging.

Every ``_m_<resource>_<method>`` handler runs under the state lock and returns a ``Result`` or
raises :class:`ApiError`."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from ._errors import ApiError, bad_request, deleted, full_sync_required, not_found
from ._instances import RecurringInstances
from ._model import Calendar, PageState, StoredEvent, SyncToken
from ._recurrence import DEFAULT_HORIZON, expand, parse_bound, parse_when
from ._rules import (
    EPOCH,
    MAX_RESULTS_CAP,
    MAX_RESULTS_DEFAULT,
    SYNC_INCOMPATIBLE,
    Result,
    bool_param,
    int_param,
)
from ._util import JSON, deep_copy, now_utc, rfc3339


class EventListing(RecurringInstances):
    """Listing a calendar's events, in full, filtered or incrementally, page by page."""

    # events.list ---------------------------------------------------------------------------------

    def _m_events_list(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        max_results = int_param(req.param("maxResults"), "maxResults", MAX_RESULTS_DEFAULT)
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
            if bool_param(req.param("showDeleted")) is False:
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
            if bool_param(req.param("singleEvents")):
                keys = self._expand_keys(cal, changed, None, None, include_deleted=True)
            state = PageState(cal.id, keys, 0, self._change, max_results, incremental=True)
            return 200, self._page(cal, state), {}
        keys = self._full_listing(cal, req)
        state = PageState(cal.id, keys, 0, self._change, max_results, incremental=False)
        return 200, self._page(cal, state), {}

    def _full_listing(self, cal: Calendar, req: Any) -> list[Any]:
        show_deleted = bool(bool_param(req.param("showDeleted")))
        single = bool(bool_param(req.param("singleEvents")))
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

    # events.instances ----------------------------------------------------------------------------

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
                if stored.deleted and not bool_param(req.param("showDeleted")):
                    continue
                keys.append(stored.body["id"])
        keys.sort(key=lambda k: self._start_of(cal, self._key_body(cal, k)))
        max_results = min(
            int_param(req.param("maxResults"), "maxResults", MAX_RESULTS_DEFAULT), MAX_RESULTS_CAP
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

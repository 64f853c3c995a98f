"""calendars.* and calendarList.* (and colors.get) of the stand-in.

Every ``_m_<resource>_<method>`` handler runs under the state lock and returns a ``Result`` or
raises :class:`ApiError`."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from ._access import CalendarAccess
from ._errors import bad_request, required
from ._model import Calendar
from ._recurrence import zone
from ._rules import EPOCH, Result
from ._util import JSON, base32hex_id, merge_patch, rfc3339


class CalendarsApi(CalendarAccess):
    """Secondary calendars and the account's calendar list."""

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

    # colors -------------------------------------------------------------------------------------

    def _m_colors_get(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        palette = {str(i): {"background": "#a4bdfc", "foreground": "#1d1d1d"} for i in range(1, 12)}
        return 200, {"kind": "calendar#colors", "updated": rfc3339(EPOCH), "event": palette}, {}

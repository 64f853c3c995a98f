"""Which calendar a call reaches, and with what role: ``primary``, sharing roles, the
app-created and events.owned scope restrictions, and the calendar JSON the calendars and
calendarList parts answer with."""

from __future__ import annotations

from ._base import StandInState
from ._discovery import insufficient_scopes
from ._errors import not_found, required_access
from ._model import Calendar
from ._rules import CONFERENCE, ROLES
from ._util import JSON


class CalendarAccess(StandInState):
    """Calendar lookups shared by every Calendar v3 part."""

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

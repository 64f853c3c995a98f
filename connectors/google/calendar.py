"""Google: the connector's calendar (found, created, addressed) and the account's calendar list.

syncd's dedicated calendar is a secondary calendar whose description carries ``MARKER``; it is
found again after a reconnect by that marker, and created when missing. A configured calendar
(an id, or a URL from ``ensure_calendar``) is checked with calendarList.get, not calendars.get:
the calendar-list scope both connection modes hold permits it (:mod:`connectors.google.scopes`).
It must be one syncd may write events into: its ``accessRole`` in ``WRITABLE_ROLES``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from connectors.errors import AuthFailed, NotFound, ProtocolError
from connectors.google.ids import calendar_id_from, calendar_url, event_id_for, name_for_event_id
from connectors.google.settings import GoogleSettings
from connectors.google.transport import Api

log = logging.getLogger(__name__)

MARKER = "[syncd:{}]"

# The calendarList ``accessRole`` values of a calendar syncd may write into (calendarList
# reference). ``owner`` only: the existing-calendar consent grants calendar.events.owned, whose
# description reaches the events of "calendars you own", so a calendar merely shared with the
# therapist to edit (``writer``) would refuse syncd's writes, and asking for the broader
# calendar.events scope would reach every calendar's events. ``reader`` and ``freeBusyReader``
# refuse every write (403 requiredAccessLevel).
WRITABLE_ROLES = frozenset({"owner"})


def writable(entry: dict[str, Any]) -> bool:
    """Whether syncd may write events into this calendarList entry's calendar."""
    return entry.get("accessRole") in WRITABLE_ROLES


class TargetCalendar:
    """The calendar the connector writes into, and the hrefs of its events."""

    def __init__(self, api: Api, settings: GoogleSettings) -> None:
        self._api = api
        self._settings = settings
        self.id: str | None = None
        if settings.calendar_url:
            self.id = calendar_id_from(settings.calendar_url)
        self._verified = False
        self.marker = MARKER.format(settings.calendar_id)

    @property
    def configured(self) -> str | None:
        """The calendar syncd writes into when the therapist chose it (not the dedicated one)."""
        return self.id if self._settings.calendar_url else None

    def ensure(self) -> str:
        if self.id is not None and self._verified:
            return self.url(self.id)
        if self.id is not None:
            entry = self._api.execute(
                self._api.service.calendarList().get(calendarId=self.id), "calendarList.get"
            )
            if not writable(entry):
                # Checked here rather than left to the first write: a connection to a calendar
                # syncd may not write into is refused before it is stored (the same AuthFailed
                # the first write's 403 would give later).
                raise AuthFailed(
                    f"calendar {self.id} is not owned by this account (accessRole "
                    f"{entry.get('accessRole')}): syncd writes only into a calendar the account "
                    "owns, the ones its consent (calendar.events.owned) reaches"
                )
        else:
            self.id = self._find_or_create_dedicated()
        self._verified = True
        return self.url(self.id)

    def require(self) -> str:
        """The calendar's id, looked up (or created) first when not known yet."""
        if self.id is None:
            self.ensure()
        assert self.id is not None
        return self.id

    def url(self, calendar_id: str) -> str:
        return calendar_url(self._settings.url, calendar_id)

    def calendar_list(self) -> Iterator[dict[str, Any]]:
        """The account's calendarList entries, page by page."""
        page: str | None = None
        while True:
            listing = self._api.execute(
                self._api.service.calendarList().list(pageToken=page, maxResults=250),
                "calendarList.list",
            )
            yield from listing.get("items", [])
            page = listing.get("nextPageToken")
            if not page:
                return

    def _find_or_create_dedicated(self) -> str:
        for item in self.calendar_list():
            if self.marker in (item.get("description") or ""):
                return str(item["id"])
        body = {
            "summary": self._settings.calendar_name,
            "description": (
                "Sessions, held times and reserved slots from the booking platform, kept in step "
                f"by syncd. Edits here are replaced on the next sync. {self.marker}"
            ),
        }
        created = self._api.execute(
            self._api.service.calendars().insert(body=body), "calendars.insert"
        )
        log.info("created the dedicated Google calendar %s", created["id"])
        return str(created["id"])

    # -- hrefs ----------------------------------------------------------------------------------

    def prefix(self) -> str:
        return urlsplit(self.url(self.require())).path

    def href_for(self, name: str) -> str:
        if "/" in name or not name:
            raise ProtocolError(f"resource name {name!r} must be a single path segment")
        event_id_for(name)  # validates the length
        return self.prefix() + name

    def href(self, event_id: str) -> str:
        return self.prefix() + name_for_event_id(event_id)

    def name_of(self, href: str) -> str:
        prefix = self.prefix()
        if not href.startswith(prefix):
            raise NotFound(f"{href} is not in calendar {self.id}")
        return href[len(prefix) :]

    def event_id(self, href: str) -> str:
        return event_id_for(self.name_of(href))

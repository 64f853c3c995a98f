"""Google change detection: events.list with ``syncToken``, so a pass with nothing changed is
one request. A 410 ``fullSyncRequired`` (or a token Google cannot parse) starts over with a
full listing. Deletions are reported by id alone and map back to hrefs through the ids.

An occurrence of one of syncd's series that the therapist moved, edited or deleted in Google is
an exception instance, never an entry of its own: the series is reported as changed, under an
etag no record holds (``TAMPERED``), so the planner repairs it.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.base import Changes
from connectors.errors import InvalidSyncToken, NotFound, ProtocolError
from connectors.google import series
from connectors.google.calendar import TargetCalendar
from connectors.google.events import Events
from connectors.google.ids import is_syncd_name
from connectors.google.transport import Api

log = logging.getLogger(__name__)


class ChangeListing:
    """``changes()`` of one calendar."""

    def __init__(self, api: Api, calendar: TargetCalendar, events: Events) -> None:
        self._api = api
        self._calendar = calendar
        self._events = events

    def changes(self, token: str | None) -> Changes:
        calendar = self._calendar.require()
        if token:
            try:
                return self._list(calendar, token)
            except (InvalidSyncToken, ProtocolError) as exc:
                log.info("sync token refused for %s (%s); full listing", calendar, exc)
        return self._list(calendar, None)

    def _list(self, calendar: str, token: str | None) -> Changes:
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        masters: dict[str, dict[str, Any]] = {}
        exceptions: dict[str, list[dict[str, Any]]] = {}
        page: str | None = None
        while True:
            params: dict[str, Any] = {"calendarId": calendar, "maxResults": 2500}
            if page:
                params["pageToken"] = page
            if token:
                params["syncToken"] = token
            else:
                params["showDeleted"] = False
            response = self._api.execute(self._api.events().list(**params), "events.list")
            for event in response.get("items", []):
                self._events.remember(event)
                master = event.get("recurringEventId")
                if master and is_syncd_name(str(master)):
                    # An occurrence of one of syncd's series, changed in Google: judged below
                    # against its series, never an entry of its own.
                    exceptions.setdefault(str(master), []).append(event)
                    continue
                if event.get("recurrence") and event.get("status") != "cancelled":
                    masters[str(event["id"])] = event
                href = self._calendar.href(event["id"])
                if event.get("status") == "cancelled":
                    if token:
                        deleted.add(href)
                        changed.pop(href, None)
                else:
                    changed[href] = event["etag"]
                    deleted.discard(href)
            page = response.get("nextPageToken")
            if not page:
                self._flag_tampered_series(calendar, masters, exceptions, changed, deleted)
                return Changes(
                    full=token is None,
                    changed=changed,
                    deleted=frozenset(deleted),
                    token=response.get("nextSyncToken"),
                )

    def _flag_tampered_series(
        self,
        calendar: str,
        masters: dict[str, dict[str, Any]],
        exceptions: dict[str, list[dict[str, Any]]],
        changed: dict[str, str],
        deleted: set[str],
    ) -> None:
        """Report a series of syncd's whose occurrences the therapist moved, edited or deleted
        as changed, under an etag no record holds, so the planner repairs it (the update puts
        the occurrences back). Exceptions syncd itself wrote back match their series and change
        nothing."""
        for master_id, instances in exceptions.items():
            href = self._calendar.href(master_id)
            if href in deleted:
                continue
            master = masters.get(master_id)
            if master is None:
                try:
                    master = self._events.fetch(calendar, master_id)
                except NotFound:
                    continue
                self._events.remember(master)
            if any(series.tampered(master, i) for i in instances):
                changed[href] = series.TAMPERED + str(master["etag"])

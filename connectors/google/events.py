"""Google: event resources as syncd writes and reads them, shared by listing and writing.

Bodies are iCalendar at the connector interface (:mod:`connectors.google.ical` maps them), so
the engine and the contract suite are the same for every provider. Google refuses a sequence
lower than the event's (400 invalidSequenceValue) and raises it itself when the therapist moves
the event, so the sequence Google holds for each event seen is remembered and never undercut.
"""

from __future__ import annotations

from typing import Any

from connectors.errors import NotFound
from connectors.google import ical
from connectors.google.ids import event_id_for
from connectors.google.settings import GoogleSettings
from connectors.google.transport import Api


class Events:
    """Event reads and resource building for one connector."""

    def __init__(self, api: Api, settings: GoogleSettings) -> None:
        self._api = api
        self._settings = settings
        self._sequences: dict[str, int] = {}  # event id -> the sequence Google holds

    def fetch(self, calendar: str, event_id: str) -> dict[str, Any]:
        """The event; NotFound when it is gone or deleted (cancelled)."""
        event: dict[str, Any] = self._api.execute(
            self._api.events().get(calendarId=calendar, eventId=event_id), "events.get"
        )
        if event.get("status") == "cancelled":
            raise NotFound(f"event {event_id} was deleted")
        return event

    def remember(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("sequence"), int):
            self._sequences[str(event["id"])] = int(event["sequence"])

    def with_sequence(self, event_id: str, resource: dict[str, Any]) -> dict[str, Any]:
        """``resource`` with at least the sequence Google is known to hold."""
        known = self._sequences.get(event_id)
        if known is not None and known > int(resource.get("sequence") or 0):
            resource["sequence"] = known
        return resource

    def resource(self, name: str, body: str) -> dict[str, Any]:
        """The event resource that writes ``body`` as ``name``."""
        resource = ical.to_google(body, name)
        # "only one of them should be supplied at event creation time" (events resource,
        # iCalUID): the id carries syncd's name; the UID travels in a private property.
        resource.pop("iCalUID", None)
        resource["id"] = event_id_for(name)
        if self._settings.color_id:
            resource["colorId"] = self._settings.color_id
        if self._settings.reminder_minutes is not None:
            resource["reminders"] = {
                "useDefault": False,
                "overrides": [
                    {"method": "popup", "minutes": m} for m in self._settings.reminder_minutes
                ],
            }
        return resource

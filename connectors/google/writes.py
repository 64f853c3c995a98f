"""Google single writes: read, insert, conditional update and delete of one event, and the
repair of a series whose occurrences the therapist changed.

An insert whose id is burnt (a deleted event held it: Google answers 409 and never frees it)
moves on to the name's next generation; a repair that Google will not let write an occurrence
back replaces the whole series under its next generation. 412 after someone's edit and Google's
403 for updating a deleted event are told apart by reading the event.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from connectors.base import FetchedItem, RemoteItem
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    AuthRevoked,
    NotFound,
    PreconditionFailed,
    ProtocolError,
)
from connectors.google import ical, series
from connectors.google.calendar import TargetCalendar
from connectors.google.errors import SequenceTooLow, sequence_fallback
from connectors.google.events import Events
from connectors.google.ids import MAX_GENERATIONS, generation, split_generation
from connectors.google.transport import Api

log = logging.getLogger(__name__)


class EventWriter:
    """get/create/update/delete of one connector."""

    def __init__(self, api: Api, calendar: TargetCalendar, events: Events) -> None:
        self._api = api
        self._calendar = calendar
        self._events = events

    def get(self, href: str) -> FetchedItem:
        event = self._events.fetch(self._calendar.require(), self._calendar.event_id(href))
        return FetchedItem(href, event["etag"], ical.to_ical(event))

    def create(self, name: str, body: str) -> RemoteItem:
        """Insert ``name``; when its id is burnt, the next generation. A name that already
        carries a generation (``x~3.ics``, the one last used) starts there, so an entry deleted
        again and again never walks all generations."""
        calendar = self._calendar.require()
        base, first = split_generation(name)
        for n in range(first, first + MAX_GENERATIONS):
            named = generation(base, n)
            resource = self._events.resource(named, body)
            try:
                event = self._api.execute(
                    self._api.events().insert(calendarId=calendar, body=resource), "events.insert"
                )
            except AlreadyExists:
                self._burnt(calendar, named, resource)  # raises unless the id is burnt
                continue
            return RemoteItem(self._calendar.href(event["id"]), event["etag"])
        raise ProtocolError(f"{name}: deleted and re-created more than {MAX_GENERATIONS} times")

    def _burnt(self, calendar: str, named: str, resource: dict[str, Any]) -> None:
        """After a 409: returns when the id belongs to a deleted event, or to one Google has
        purged since (get answers 404): try the next generation. Raises AlreadyExists when a
        live event holds the id. (No iCalUID is sent, so the id is the only thing that can
        clash.)"""
        try:
            current = self._api.execute(
                self._api.events().get(calendarId=calendar, eventId=resource["id"]), "events.get"
            )
        except NotFound:
            return
        if current.get("status") == "cancelled":
            return
        raise AlreadyExists(f"{named} already exists", href=self._calendar.href(current["id"]))

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        calendar = self._calendar.require()
        event_id = self._calendar.event_id(href)
        name = self._calendar.name_of(href)
        resource = self._events.with_sequence(event_id, self._events.resource(name, body))
        etag = etag.removeprefix(series.TAMPERED)
        try:
            try:
                event = self._write_update(calendar, event_id, resource, etag, retry=True)
            except SequenceTooLow:
                current = self._events.fetch(calendar, event_id)
                resource["sequence"] = int(current.get("sequence") or 0)
                event = self._write_update(calendar, event_id, resource, etag)
        except (PreconditionFailed, AuthFailed):
            # 412 after someone's edit, or Google's 403 for updating a deleted event: which one
            # it was decides between PreconditionFailed and NotFound.
            self._events.fetch(calendar, event_id)
            raise
        if resource.get("recurrence"):
            return self._restore_occurrences(calendar, href, name, body, event)
        return RemoteItem(href, event["etag"])

    def _write_update(
        self,
        calendar: str,
        event_id: str,
        resource: dict[str, Any],
        etag: str,
        *,
        retry: bool = False,
    ) -> dict[str, Any]:
        """The update; with ``retry``, a sequence below Google's raises SequenceTooLow (the
        caller re-reads it and writes once more), otherwise it is a ProtocolError."""
        event: dict[str, Any] = self._api.execute(
            self._api.events().update(calendarId=calendar, eventId=event_id, body=resource),
            "events.update",
            if_match=etag,
            fallback=sequence_fallback if retry else None,
        )
        self._events.remember(event)
        return event

    def delete(self, href: str, etag: str | None) -> None:
        calendar = self._calendar.require()
        event_id = self._calendar.event_id(href)
        try:
            self._api.execute(
                self._api.events().delete(calendarId=calendar, eventId=event_id),
                "events.delete",
                if_match=etag,
            )
        except PreconditionFailed:
            self._events.fetch(calendar, event_id)
            raise

    # -- series the therapist changed -----------------------------------------------------------

    def _restore_occurrences(
        self, calendar: str, href: str, name: str, body: str, master: dict[str, Any]
    ) -> RemoteItem:
        """Put back every occurrence of a series the therapist moved, edited or deleted. An
        occurrence Google will not let syncd write back (a deleted one, in some of Google's
        behaviours) makes syncd replace the whole series under its next generation."""
        broken = [i for i in self._exceptions(calendar, master["id"]) if series.tampered(master, i)]
        for instance in broken:
            try:
                self._api.execute(
                    self._api.events().update(
                        calendarId=calendar,
                        eventId=instance["id"],
                        body=series.restored(master, instance),
                    ),
                    "events.update",
                )
            except (NotFound, AuthFailed, PreconditionFailed, ProtocolError) as exc:
                if isinstance(exc, AuthRevoked):
                    raise
                log.info("an occurrence of %s cannot be written back (%s): new series", href, exc)
                return self._replace_series(calendar, name, body, master)
        return RemoteItem(href, master["etag"])

    def _exceptions(self, calendar: str, master_id: str) -> list[dict[str, Any]]:
        """The series' exception instances, cancelled ones included (events.instances)."""
        found: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "calendarId": calendar,
                "eventId": master_id,
                "showDeleted": True,
                "maxResults": 2500,
            }
            if page:
                params["pageToken"] = page
            response = self._api.execute(self._api.events().instances(**params), "events.instances")
            found.extend(response.get("items", []))
            page = response.get("nextPageToken")
            if not page:
                return found

    def _replace_series(
        self, calendar: str, name: str, body: str, master: dict[str, Any]
    ) -> RemoteItem:
        base, n = split_generation(name)
        item = self.create(generation(base, n + 1), body)
        with contextlib.suppress(NotFound):
            self._api.execute(
                self._api.events().delete(calendarId=calendar, eventId=master["id"]),
                "events.delete",
            )
        return item

"""Google batch writes (:class:`connectors.base.BatchWriter`): up to ``max_batch`` writes in one
HTTP request, each part's outcome reported on its own.

A failed part is answered with its typed error; the engine sends it again through the
single-write path (adopting on 409, re-reading on 412) or, throttled, at the next pass. A write
that takes more than one request (a series whose occurrences must be put back) is not sent in a
batch at all: its part answers :class:`connectors.errors.NotBatched`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import RemoteItem, Write
from connectors.errors import ConnectorError, NotBatched, ProtocolError
from connectors.google import series
from connectors.google.calendar import TargetCalendar
from connectors.google.errors import translate
from connectors.google.events import Events
from connectors.google.transport import Api

Result = RemoteItem | ConnectorError | None


class BatchWrites:
    """``write_many()`` of one connector."""

    def __init__(self, api: Api, calendar: TargetCalendar, events: Events, max_batch: int) -> None:
        self._api = api
        self._calendar = calendar
        self._events = events
        self.max_batch = max_batch

    def write_many(self, writes: Sequence[Write]) -> list[Result]:
        if len(writes) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} writes per batch")
        calendar = self._calendar.require()
        results: list[Result] = [None] * len(writes)
        hrefs: list[str] = []

        def callback_for(i: int) -> Callable[[str, Any, Exception | None], None]:
            def done(_request_id: str, response: Any, exception: Exception | None) -> None:
                if exception is not None:
                    try:
                        results[i] = translate(exception, f"batch {writes[i].op}")
                    except Exception as unknown:
                        results[i] = ProtocolError(f"batch part failed: {unknown}")
                elif writes[i].op == "delete":
                    results[i] = None
                else:
                    results[i] = RemoteItem(hrefs[i], response["etag"])

            return done

        batch = self._api.service.new_batch_http_request()
        parts = 0
        for i, w in enumerate(writes):
            if w.op == "update" and (w.etag or "").startswith(series.TAMPERED):
                hrefs.append(w.href or "")
                results[i] = NotBatched(f"{w.href}: occurrences to restore")
                continue
            href, request = self._request(calendar, w)
            hrefs.append(href)
            if w.etag and w.op != "create":
                request.headers["If-Match"] = w.etag
            batch.add(request, callback=callback_for(i))
            parts += 1
        if parts:
            self._api.execute_batch(batch, parts)
        return results

    def _request(self, calendar: str, w: Write) -> tuple[str, Any]:
        """(href, the API request) of one write."""
        events = self._api.events()
        if w.op == "create":
            assert w.name is not None and w.body is not None
            resource = self._events.resource(w.name, w.body)
            return self._calendar.href_for(w.name), events.insert(
                calendarId=calendar, body=resource
            )
        assert w.href is not None
        event_id = self._calendar.event_id(w.href)
        if w.op == "update":
            assert w.body is not None
            resource = self._events.resource(self._calendar.name_of(w.href), w.body)
            body = self._events.with_sequence(event_id, resource)
            return w.href, events.update(calendarId=calendar, eventId=event_id, body=body)
        return w.href, events.delete(calendarId=calendar, eventId=event_id)

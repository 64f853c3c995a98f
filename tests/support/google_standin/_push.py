"""Push notification delivery (Calendar API guide "Push notifications").

Each channel's messages go out in order (``sync`` first, then ``exists`` after each change of
the watched events, ``not_exists`` when the calendar is deleted), from a small thread pool with a
short timeout, so a receiver that is down or slow never blocks the API nor other channels.
"""

from __future__ import annotations

import http.client
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlsplit

from ._base import StandInState
from ._model import Channel, Notification


class PushDelivery(StandInState):
    notify_timeout: float = 2.0
    _executor: ThreadPoolExecutor | None = None

    def _channel_live(self, channel: Channel) -> bool:
        return not channel.stopped and channel.expiration_ms > time.time() * 1000

    def _events_changed(self, calendar_id: str) -> None:
        with self._lock:
            self._changed_cond.notify_all()
            for channel in self._channels.values():
                if channel.calendar_id == calendar_id and self._channel_live(channel):
                    self._notify(channel, "exists")

    def _calendar_gone(self, calendar_id: str) -> None:
        with self._lock:
            for channel in self._channels.values():
                if channel.calendar_id == calendar_id and self._channel_live(channel):
                    self._notify(channel, "not_exists")
                    channel.stopped = True

    def _notify(self, channel: Channel, state: str) -> None:
        with self._lock:
            channel.message_number += 1
            channel.queue.append((state, channel.message_number))
            if not channel.draining and self._executor is not None:
                channel.draining = True
                self._executor.submit(self._drain, channel)

    def _drain(self, channel: Channel) -> None:
        while True:
            with self._lock:
                if not channel.queue:
                    channel.draining = False
                    return
                state, number = channel.queue.popleft()
            status, error = self._post(channel, state, number)
            with self._lock:
                self._notifications.append(
                    Notification(
                        channel_id=channel.id,
                        resource_id=channel.resource_id,
                        resource_uri=channel.resource_uri,
                        resource_state=state,
                        message_number=number,
                        token=channel.token,
                        address=channel.address,
                        calendar_id=channel.calendar_id,
                        status=status,
                        error=error,
                    )
                )
                self._changed_cond.notify_all()

    def _post(self, channel: Channel, state: str, number: int) -> tuple[int | None, str | None]:
        expiration = datetime.fromtimestamp(channel.expiration_ms / 1000, tz=UTC)
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": format_datetime(expiration, usegmt=True),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(number),
            "Content-Length": "0",
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        url = urlsplit(channel.address)
        conn: http.client.HTTPConnection
        try:
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(
                    url.hostname or "",
                    url.port,
                    timeout=self.notify_timeout,
                    context=ssl._create_unverified_context(),
                )
            else:
                conn = http.client.HTTPConnection(
                    url.hostname or "", url.port, timeout=self.notify_timeout
                )
            try:
                path = url.path or "/"
                if url.query:
                    path += "?" + url.query
                conn.request("POST", path, body=b"", headers=headers)
                resp = conn.getresponse()
                resp.read()
                return resp.status, None
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"

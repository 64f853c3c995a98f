"""Google push channels (events.watch, channels.stop) and the revocation of a grant.

A watch channel announces changes of the calendar at an HTTPS address until it expires (push
notifications guide); syncd renews it before then and stops it on disconnect. Revoking asks
Google's OAuth revoke endpoint to forget the refresh token ("OAuth 2.0 for web server apps",
Revoking a token); a token already revoked answers 400, which is as good as done.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import httpx

from connectors.base import WatchChannel
from connectors.common import plain
from connectors.egress import EgressPolicy
from connectors.egress_http import httpx_client
from connectors.errors import NotFound, Transient
from connectors.google.calendar import TargetCalendar
from connectors.google.transport import Api


class Channels:
    """Watch channels on the connector's calendar."""

    def __init__(self, api: Api, calendar: TargetCalendar) -> None:
        self._api = api
        self._calendar = calendar

    def watch(self, channel_id: str, address: str, token: str, ttl: int) -> WatchChannel:
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "params": {"ttl": str(ttl)},
        }
        calendar = self._calendar.require()
        response = self._api.execute(
            self._api.events().watch(calendarId=calendar, body=body), "events.watch"
        )
        expiration = int(response.get("expiration", 0))  # milliseconds since the epoch
        return WatchChannel(
            id=channel_id,
            resource_id=response.get("resourceId"),
            expires_at=datetime.fromtimestamp(expiration / 1000, UTC),
        )

    def stop(self, channel_id: str, resource_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._api.execute(
                self._api.service.channels().stop(
                    body={"id": channel_id, "resourceId": resource_id}
                ),
                "channels.stop",
            )


def revoke_grant(refresh_token: str, revoke_uri: str, egress: EgressPolicy, timeout: float) -> None:
    """Ask Google to forget ``refresh_token``. Raises DestinationRefused (the outbound policy)
    or Transient (no answer, the name does not resolve, or Google failed: 429 or 5xx). Any
    other answer counts as done: a token Google no longer knows (400) is as revoked as one it
    forgets now."""
    try:
        with httpx_client(egress, timeout=timeout) as client:
            response = client.post(revoke_uri, data={"token": refresh_token})
    except (httpx.HTTPError, OSError) as exc:
        raise Transient(f"token revocation: {plain(exc)}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise Transient(f"token revocation: Google answered HTTP {response.status_code}")

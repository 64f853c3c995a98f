"""events.watch and channels.stop: opening and closing push channels ("Push notifications"
guide; events.watch reference). Delivery itself is in ``_push.py``."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from ._access import CalendarAccess
from ._errors import ApiError, bad_request, required
from ._model import Channel
from ._rules import DEFAULT_CHANNEL_TTL, MAX_CHANNEL_ID, Result, int_param
from ._util import JSON


class ChannelsApi(CalendarAccess):
    """Push channels on a calendar's events."""

    def _m_events_watch(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        cal = self._calendar(account, params["calendarId"])
        body = body if isinstance(body, dict) else {}
        channel_id = body.get("id")
        if not channel_id:
            raise required("Required channel id.", location="id")
        if body.get("type") not in ("web_hook", "webhook"):
            raise bad_request("Invalid channel type.", location="type")
        if len(str(channel_id)) > MAX_CHANNEL_ID:
            raise bad_request(
                f"Channel id must be at most {MAX_CHANNEL_ID} characters.", location="id"
            )
        address = body.get("address")
        if not address or not str(address).lower().startswith("https://"):
            # The receiver "is an HTTPS server" ("Push notifications" guide).
            raise bad_request(
                f"WebHook callback must be HTTPS: {address}",
                reason="push.webhookUrlNotHttps",
                location="address",
            )
        existing = self._channels.get(channel_id)
        if existing is not None and not existing.stopped:
            raise bad_request(f"Channel id {channel_id} not unique", reason="channelIdNotUnique")
        params_in = body.get("params") or {}
        ttl = int_param(params_in.get("ttl"), "params.ttl", DEFAULT_CHANNEL_TTL)
        expiration_ms = int((time.time() + ttl) * 1000)
        if body.get("expiration"):
            expiration_ms = min(expiration_ms, int(body["expiration"]))
        resource_uri = (
            f"{self._root_url}calendar/v3/calendars/{quote(cal.id, safe='')}/events?alt=json"
        )
        channel = Channel(
            id=channel_id,
            resource_id=cal.resource_id,
            resource_uri=resource_uri,
            calendar_id=cal.id,
            owner=account,
            address=address,
            token=body.get("token"),
            expiration_ms=expiration_ms,
        )
        self._channels[channel_id] = channel
        self._notify(channel, "sync")
        out: JSON = {
            "kind": "api#channel",
            "id": channel_id,
            "resourceId": channel.resource_id,
            "resourceUri": resource_uri,
        }
        if channel.token is not None:
            out["token"] = channel.token
        out["expiration"] = str(expiration_ms)
        return 200, out, {}

    def _m_channels_stop(self, account: str, params: JSON, req: Any, body: Any) -> Result:
        body = body if isinstance(body, dict) else {}
        channel = self._channels.get(body.get("id") or "")
        if (
            channel is None
            or channel.stopped
            or channel.resource_id != body.get("resourceId")
            or channel.owner != account
        ):
            raise ApiError(
                404, "notFound", f"Channel '{body.get('id')}' not found for project 'standin'"
            )
        channel.stopped = True
        return 204, None, {}

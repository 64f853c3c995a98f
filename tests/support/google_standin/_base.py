"""Shared state of the stand-in, and the request/response values the mixins exchange."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ._errors import ApiError
from ._model import (
    AccessToken,
    Account,
    AuthCode,
    Calendar,
    Channel,
    Client,
    Fault,
    Notification,
    PageState,
    RefreshToken,
    StoredEvent,
    SyncToken,
)

API_PREFIX = "/calendar/v3/"
BATCH_PATH = "/batch/calendar/v3"


@dataclass
class Request:
    method: str
    path: str  # raw (still percent-encoded) path, no query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    out = {"Content-Type": "application/json; charset=UTF-8"}
    out.update(headers or {})
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(status, data, out)


def error_response(error: ApiError) -> Response:
    return json_response(error.code, error.body(), error.headers)


class StandInState:
    """All mutable state, guarded by ``self._lock`` (re-entrant: handlers call helpers)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changed_cond = threading.Condition(self._lock)
        self._clients: dict[str, Client] = {}
        self._accounts: dict[str, Account] = {}
        self._calendars: dict[str, Calendar] = {}
        self._refresh_tokens: dict[str, RefreshToken] = {}
        self._access_tokens: dict[str, AccessToken] = {}
        self._codes: dict[str, AuthCode] = {}
        self._channels: dict[str, Channel] = {}
        self._sync_tokens: dict[str, SyncToken] = {}
        self._pages: dict[str, PageState] = {}
        self._faults: list[Fault] = []
        self._notifications: list[Notification] = []
        self._change = 0
        self._order = 0
        self._last_etag = 0
        self._requests = 0
        self._calls: Counter[str] = Counter()
        self._root_url = "http://127.0.0.1:0/"
        self._grants: dict[tuple[str, str], set[str]] = {}  # (account, client) -> scopes
        self._tls = threading.local()  # the grant of the request being served

    # counters ---------------------------------------------------------------------------------

    def _next_change(self) -> int:
        self._change += 1
        return self._change

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def _next_etag(self) -> str:
        """Quoted, numeric and strictly increasing, like Google's ``"3346892308754000"``."""
        self._last_etag = max(self._last_etag + 1, int(time.time() * 1_000_000))
        return f'"{self._last_etag}"'

    def _count(self, method: str) -> None:
        with self._lock:
            self._calls[method] += 1

    # hooks provided by the other mixins / GoogleStandIn ---------------------------------------
    # They live here, last in every part's MRO, so a stub can never shadow the implementation.

    def _events_changed(self, calendar_id: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _calendar_gone(self, calendar_id: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _mark_deleted(
        self, cal: Calendar, stored: StoredEvent
    ) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _notify(self, channel: Channel, state: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _api_call(self, req: Request) -> Response:  # pragma: no cover - overridden
        raise NotImplementedError

    def _purge(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def discovery_document(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _take_fault(
        self, method: str, account: str | None, calendar_ids: set[str]
    ) -> ApiError | None:  # pragma: no cover - overridden
        raise NotImplementedError

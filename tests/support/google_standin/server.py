"""GoogleStandIn: a local HTTP stand-in of the Google Calendar v3 API and Google's OAuth
endpoints, for driving the real google-api-python-client in tests and benchmarks.

See ``README.md`` in this package for the behaviours reproduced and the choices made.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email import message_from_string
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from socket import SHUT_RDWR, socket
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from ._api import ROLES, SERVER_FIELDS, CalendarApi
from ._base import Request, Response
from ._discovery import (
    APP_CREATED,
    EVENTS_OWNED,
    check_parameters,
    insufficient_scopes,
    permitting,
)
from ._errors import FAULT_KINDS, ApiError, fault_error, not_found
from ._model import Account, Calendar, Client, Fault, Notification
from ._oauth import CALENDAR_SCOPE, OAuthEndpoints
from ._push import PushDelivery
from ._recurrence import parse_when
from ._util import JSON, apply_fields, deep_copy, merge_patch, parse_fields

API_PREFIX = "/calendar/v3/"
BATCH_PATH = "/batch/calendar/v3"

# (HTTP method, path pattern below /calendar/v3/, API method name); literals before variables.
ROUTES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("GET", ("users", "me", "calendarList"), "calendarList.list"),
    ("GET", ("users", "me", "calendarList", "{calendarId}"), "calendarList.get"),
    ("POST", ("calendars",), "calendars.insert"),
    ("GET", ("calendars", "{calendarId}"), "calendars.get"),
    ("PUT", ("calendars", "{calendarId}"), "calendars.update"),
    ("PATCH", ("calendars", "{calendarId}"), "calendars.patch"),
    ("DELETE", ("calendars", "{calendarId}"), "calendars.delete"),
    ("POST", ("calendars", "{calendarId}", "clear"), "calendars.clear"),
    ("GET", ("calendars", "{calendarId}", "events"), "events.list"),
    ("POST", ("calendars", "{calendarId}", "events"), "events.insert"),
    ("POST", ("calendars", "{calendarId}", "events", "watch"), "events.watch"),
    ("POST", ("calendars", "{calendarId}", "events", "import"), "events.import"),
    ("POST", ("calendars", "{calendarId}", "events", "quickAdd"), "events.quickAdd"),
    ("GET", ("calendars", "{calendarId}", "events", "{eventId}"), "events.get"),
    ("PUT", ("calendars", "{calendarId}", "events", "{eventId}"), "events.update"),
    ("PATCH", ("calendars", "{calendarId}", "events", "{eventId}"), "events.patch"),
    ("DELETE", ("calendars", "{calendarId}", "events", "{eventId}"), "events.delete"),
    ("GET", ("calendars", "{calendarId}", "events", "{eventId}", "instances"), "events.instances"),
    ("POST", ("calendars", "{calendarId}", "events", "{eventId}", "move"), "events.move"),
    ("POST", ("channels", "stop"), "channels.stop"),
    ("POST", ("freeBusy",), "freebusy.query"),
    ("GET", ("colors",), "colors.get"),
)
NOT_IMPLEMENTED = frozenset({"events.import", "events.quickAdd", "events.move"})
UPDATE_DELETED_MODES = ("forbidden", "gone", "not_found", "restore")
REINSERT_DELETED_MODES = ("duplicate", "restore")
PURGED_ID_MODES = ("burnt", "free")
ID_AND_ICAL_UID_MODES = ("accepted", "rejected")
# Methods a calendar's usage limits stop ("Avoid Calendar use limits": creating and changing
# events); reads keep working.
WRITE_METHODS = frozenset(
    {"events.insert", "events.update", "events.patch", "events.delete", "events.import"}
)
# Google's per-user quota: 600 requests per minute per user per project, a sliding window
# ("Usage limits" guide); every part of a batch counts ("Send batch requests").
USER_RATE_LIMIT = 600
USER_RATE_WINDOW = 60.0

# Where Google's behaviour is undocumented, each plausible one as a named set of modes; syncd's
# Google tests run against every profile (tests/support/google_standin/README.md, "Modes").
MODE_PROFILES: dict[str, dict[str, Any]] = {
    "observed": {},
    "update-gone": {"update_deleted": "gone"},
    "update-404": {"update_deleted": "not_found"},
    "undelete": {"update_deleted": "restore", "reinsert_deleted": "restore"},
    "purge-burnt": {"purge_deleted_after": 0.0, "purged_ids": "burnt"},
    "purge-free": {"purge_deleted_after": 0.0, "purged_ids": "free"},
    "one-id-only": {"id_and_ical_uid": "rejected"},
}


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    out = {"Content-Type": "application/json; charset=UTF-8"}
    out.update(headers or {})
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    return Response(status, data, out)


def _error_response(error: ApiError) -> Response:
    return _json_response(error.code, error.body(), error.headers)


def packaged_discovery_document() -> JSON:
    """The calendar.v3 discovery document packaged in google-api-python-client."""
    docs = resources.files("googleapiclient.discovery_cache") / "documents"
    doc: JSON = json.loads((docs / "calendar.v3.json").read_text(encoding="utf-8"))
    return doc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stand_in: GoogleStandIn

    def __init__(self, stand_in: GoogleStandIn) -> None:
        self.stand_in = stand_in
        self.open_sockets: set[socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60
    # Small writes must not wait for delayed ACKs (Nagle): ~40 ms per call otherwise.
    disable_nagle_algorithm = True

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        req = Request(
            method=method,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        resp = self.server.stand_in._handle_http(req)
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        with_body = resp.status not in (204, 304)
        if with_body:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if with_body and resp.body:
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        return


class GoogleStandIn(PushDelivery, OAuthEndpoints, CalendarApi):
    """A Calendar v3 API on 127.0.0.1 that behaves as Google documents it.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        max_batch: int = 50,
        access_token_ttl: int = 3599,
        notify_timeout: float = 2.0,
        update_deleted: str = "forbidden",
        reinsert_deleted: str = "duplicate",
        purge_deleted_after: float | None = None,
        purged_ids: str = "burnt",
        id_and_ical_uid: str = "accepted",
        user_rate_limit: int | None = USER_RATE_LIMIT,
        user_rate_window: float = USER_RATE_WINDOW,
    ) -> None:
        super().__init__()
        for value, allowed, name in (
            (update_deleted, UPDATE_DELETED_MODES, "update_deleted"),
            (reinsert_deleted, REINSERT_DELETED_MODES, "reinsert_deleted"),
            (purged_ids, PURGED_ID_MODES, "purged_ids"),
            (id_and_ical_uid, ID_AND_ICAL_UID_MODES, "id_and_ical_uid"),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}")
        self.max_batch = max_batch
        self.access_token_ttl = access_token_ttl
        self.notify_timeout = notify_timeout
        self.update_deleted = update_deleted
        self.reinsert_deleted = reinsert_deleted
        self.purge_deleted_after = purge_deleted_after
        self.purged_ids = purged_ids
        self.id_and_ical_uid = id_and_ical_uid
        self.user_rate_limit = user_rate_limit
        self.user_rate_window = user_rate_window
        self._user_calls: dict[str, deque[float]] = {}
        self._calendar_limits: dict[str, tuple[float, float | None]] = {}
        self._freebusy_errors = {}
        self.consenting_account: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> GoogleStandIn:
        if self._server is not None:
            return self
        self._server = _Server(self)
        port = self._server.server_address[1]
        self._root_url = f"http://127.0.0.1:{port}/"
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="standin-push")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="google-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> GoogleStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses ----------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return self._root_url

    @property
    def token_url(self) -> str:
        return self._root_url + "token"

    @property
    def auth_url(self) -> str:
        return self._root_url + "o/oauth2/auth"

    @property
    def revoke_url(self) -> str:
        return self._root_url + "revoke"

    def discovery_document(self) -> JSON:
        """The packaged calendar.v3 discovery document with its roots pointed here."""
        doc = packaged_discovery_document()
        doc["rootUrl"] = self._root_url
        doc["mtlsRootUrl"] = self._root_url
        doc["baseUrl"] = self._root_url + doc["servicePath"]
        return doc

    # accounts (test controls) -------------------------------------------------------------------

    def add_account(
        self,
        email: str,
        client_id: str = "cid",
        client_secret: str = "csecret",
        *,
        time_zone: str = "UTC",
        summary: str | None = None,
        scopes: Iterable[str] = (CALENDAR_SCOPE,),
    ) -> str:
        """Register an account (and OAuth client) with its primary calendar, whose id is the
        email; returns a refresh token for it, granted ``scopes`` (full calendar access unless
        told). Again for a known account: a new token."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                self._clients[client_id] = Client(client_id, client_secret)
            elif client.client_secret != client_secret:
                raise ValueError(f"client {client_id!r} is registered with another secret")
            if email not in self._accounts:
                self._accounts[email] = Account(email, client_id, [email])
                self._calendars[email] = Calendar(
                    id=email,
                    owner=email,
                    summary=summary or email,
                    description=None,
                    time_zone=time_zone,
                    primary=True,
                    etag=self._next_etag(),
                    resource_id=secrets.token_urlsafe(18),
                )
            return self._issue_refresh_token(email, client_id, " ".join(scopes))

    def add_calendar(self, email: str, summary: str, *, time_zone: str | None = None) -> str:
        """Create a secondary calendar for an account, as the user would in Google's UI."""
        with self._lock:
            tz = time_zone or self._calendars[email].time_zone
            return self._new_calendar(email, summary, time_zone=tz).id

    def share_calendar(self, calendar_id: str, email: str, role: str) -> None:
        """Share a calendar with another account as its owner would in Google's UI: it appears
        in that account's calendar list with ``role`` as its accessRole (one of ``ROLES``; owner is
        "Make changes and manage sharing")."""
        if role not in ROLES:
            raise ValueError(f"accessRole {role!r} is not one of {ROLES}")
        with self._lock:
            cal = self._calendars[calendar_id]
            if email not in cal.shared:
                self._accounts[email].calendar_ids.append(calendar_id)
            cal.shared[email] = role

    def client_credentials(self, refresh_token: str) -> tuple[str, str]:
        """(client_id, client_secret) of the OAuth client a refresh token was issued to."""
        with self._lock:
            client = self._clients[self._refresh_tokens[refresh_token].client_id]
            return client.client_id, client.client_secret

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and every access token obtained with it (as the user does
        under "Third-party apps with account access")."""
        with self._lock:
            self._revoke_refresh_token(refresh_token)

    def expire_access_tokens(self) -> None:
        """Make every access token invalid: the next API call answers 401 and the client
        refreshes."""
        with self._lock:
            self._access_tokens.clear()

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Forget sync tokens (of one calendar, or all): using one answers 410
        fullSyncRequired."""
        with self._lock:
            for token, sync in list(self._sync_tokens.items()):
                if calendar_id is None or sync.calendar_id == calendar_id:
                    del self._sync_tokens[token]

    # faults -------------------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        times: int | None = 1,
        *,
        calendar_id: str | None = None,
        account: str | None = None,
        methods: Iterable[str] | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> Fault:
        """Make the next ``times`` matching API calls (None: all of them) fail with ``kind``.

        Scoped to a calendar, an account and/or API method names (``events.insert``...); the
        OAuth endpoints (``token``, ``auth``, ``revoke``) only when named in ``methods``.
        Batch parts are matched one by one. Returns the rule (see ``hits``/``remaining``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "slow" and delay is None:
            raise ValueError("a 'slow' fault needs delay=seconds")
        fault = Fault(
            kind=kind,
            remaining=times,
            calendar_id=calendar_id,
            account=account,
            methods=frozenset(methods) if methods is not None else None,
            retry_after=retry_after,
            delay=delay,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, account: str | None, calendar_ids: set[str]) -> Any:
        """Consume the first matching fault: a 'slow' one sleeps here (outside the lock) and
        returns None; any other returns its ApiError."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, account, calendar_ids):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    break
            else:
                return None
        if fault.kind == "slow":
            time.sleep(fault.delay or 0)
            return None
        return fault_error(fault.kind, fault.retry_after)

    # counters and inspection --------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """HTTP requests received (a batch is one)."""
        with self._lock:
            return self._requests

    @property
    def calls(self) -> Counter[str]:
        """API calls by method name (``events.insert``, ``batch``, ``token``...); each batch part
        counts as its own call."""
        with self._lock:
            return Counter(self._calls)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests = 0
            self._calls.clear()

    @property
    def notifications_sent(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[Notification]:
        """Block until at least ``count`` notifications were delivered (or tried)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._notifications) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._notifications)} notifications after {timeout}s, "
                        f"expected {count}"
                    )
                self._changed_cond.wait(remaining)
            return list(self._notifications)

    @property
    def active_channels(self) -> list[str]:
        with self._lock:
            return [c.id for c in self._channels.values() if self._channel_live(c)]

    def calendars(self, email: str) -> list[str]:
        """Ids of an account's calendars, the primary first."""
        with self._lock:
            return list(self._accounts[email].calendar_ids)

    def events(self, calendar_id: str, include_deleted: bool = False) -> list[JSON]:
        """The stored events of a calendar (full resources, deleted ones with status
        "cancelled" when asked), in creation order."""
        with self._lock:
            cal = self._calendars[calendar_id]
            return [
                deep_copy(s.body)
                for s in sorted(cal.events.values(), key=lambda s: s.order)
                if include_deleted or not s.deleted
            ]

    def get_event(self, calendar_id: str, event_id: str) -> JSON | None:
        with self._lock:
            stored = self._calendars[calendar_id].events.get(event_id)
            return deep_copy(stored.body) if stored is not None else None

    def put_event(self, calendar_id: str, body: JSON) -> JSON:
        """Create an event as another client would (the therapist in Google's UI): same
        validation as events.insert, no auth, faults or counting; watchers are notified."""
        with self._lock:
            cal = self._calendars[calendar_id]
            return deep_copy(self._create_event(cal, body, cal.owner).body)

    def edit_event(self, calendar_id: str, event_id: str, **fields: Any) -> JSON:
        """Edit an event as the therapist would: patch semantics (``None`` removes a field);
        a new etag, ``sequence`` bumped on time changes; watchers are notified."""
        with self._lock:
            cal = self._calendars[calendar_id]
            stored = self._stored_or_instance(cal, event_id)
            current = {k: v for k, v in stored.body.items() if k not in SERVER_FIELDS}
            merged = merge_patch(current, fields)
            if stored.deleted and "status" not in fields:
                merged["status"] = "confirmed"
            self._replace_event(cal, stored, merged, None)
            self._commit_exception(cal, stored)
            return deep_copy(stored.body)

    def delete_event(self, calendar_id: str, event_id: str) -> None:
        """Delete an event as the therapist would (it stays, status "cancelled")."""
        with self._lock:
            cal = self._calendars[calendar_id]
            stored = self._stored_or_instance(cal, event_id)
            if not stored.deleted:
                self._commit_exception(cal, stored)
                self._mark_deleted(cal, stored)
                self._events_changed(cal.id)

    # the therapist in Google's UI ----------------------------------------------------------------
    # Small helpers for tests and the soak: each acts as Google Calendar's own UI would, through
    # the same validation as the API, without auth, faults, quotas or counters; watchers are
    # notified as for any change.

    @staticmethod
    def instance_id(master_id: str, original_start: datetime) -> str:
        """The id Google gives one instance of a recurring timed event: the master's id, ``_``
        and the instance's original start in UTC (``20261027T100000Z``)."""
        return f"{master_id}_{original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"

    def user_drag(
        self, calendar_id: str, event_id: str, start: datetime, end: datetime | None = None
    ) -> JSON:
        """Drag an event (or one instance, by its instance id) to ``start``, keeping its length
        unless ``end`` is given. A time change made in Google's UI bumps ``sequence`` (events
        resource, ``sequence``; RFC 5545 3.8.7.4), as the stand-in does for any time change
        written without a sequence."""
        with self._lock:
            cal = self._calendars[calendar_id]
            body = self._stored_or_instance(cal, event_id).body
            first, _ = parse_when(body.get("start"), "start", cal.time_zone)
            last, _ = parse_when(body.get("end"), "end", cal.time_zone)
            tz_name = (body.get("start") or {}).get("timeZone")
            tz = ZoneInfo(tz_name) if tz_name else UTC

            def when(at: datetime) -> JSON:
                out: JSON = {"dateTime": at.astimezone(tz).isoformat()}
                if tz_name:
                    out["timeZone"] = tz_name
                return out

            finish = end if end is not None else start + (last - first)
            return self.edit_event(calendar_id, event_id, start=when(start), end=when(finish))

    def user_move_instance(
        self,
        calendar_id: str,
        master_id: str,
        original_start: datetime,
        start: datetime,
        end: datetime | None = None,
    ) -> JSON:
        """Move one occurrence of a recurring event ("This event" in Google's UI): it becomes an
        exception instance ``<master>_<original start>`` with ``recurringEventId`` and
        ``originalStartTime`` (recurring events guide, "Modifying instances")."""
        return self.user_drag(calendar_id, self.instance_id(master_id, original_start), start, end)

    def user_delete_instance(
        self, calendar_id: str, master_id: str, original_start: datetime
    ) -> None:
        """Delete one occurrence ("This event"): a cancelled exception instance that hides it
        (recurring events guide; events.list, showDeleted)."""
        self.delete_event(calendar_id, self.instance_id(master_id, original_start))

    def user_delete_event(self, calendar_id: str, event_id: str) -> None:
        """Delete an event (a whole series for a recurring one) in Google's UI."""
        self.delete_event(calendar_id, event_id)

    def user_edit_title(self, calendar_id: str, event_id: str, title: str) -> JSON:
        """Retitle an event or one instance in Google's UI (no time change: same sequence)."""
        return self.edit_event(calendar_id, event_id, summary=title)

    # HTTP dispatch ------------------------------------------------------------------------------

    def _handle_http(self, req: Request) -> Response:
        with self._lock:
            self._requests += 1
        path = req.path
        try:
            if path == "/token" and req.method == "POST":
                self._count("token")
                return self._token_endpoint(req)
            if path == "/o/oauth2/auth" and req.method == "GET":
                self._count("auth")
                return self._auth_endpoint(req)
            if path == "/revoke" and req.method in ("POST", "GET"):
                self._count("revoke")
                return self._revoke_endpoint(req)
            if path == BATCH_PATH and req.method == "POST":
                self._count("batch")
                return self._batch(req)
            if path.startswith(API_PREFIX):
                return self._api_call(req)
            if path == "/discovery/v1/apis/calendar/v3/rest" and req.method == "GET":
                return _json_response(200, self.discovery_document())
            return _error_response(not_found())
        except Exception as exc:  # a stand-in bug must surface as a 500, not a dropped socket
            return _error_response(ApiError(500, "backendError", f"stand-in error: {exc!r}"))

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        segments = [unquote(s) for s in path[len(API_PREFIX) :].split("/")]
        for verb, pattern, name in ROUTES:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, segment in zip(pattern, segments, strict=True):
                if part.startswith("{"):
                    if not segment:
                        break
                    params[part[1:-1]] = segment
                elif part != segment:
                    break
            else:
                if verb == method:
                    return name, params
        return None

    def _api_call(self, req: Request) -> Response:
        route = self._route(req.method, req.path)
        if route is None:
            self._count("unknown")
            return _error_response(not_found())
        name, params = route
        self._count(name)
        self._tls.app_created_only = False
        self._tls.owned_only = False
        self._tls.client_id = None
        try:
            access = self._access(req.headers)
            account = access.email
            # The discovery document says which scopes permit the method, and which parameters
            # it takes: a request Google would refuse is refused here too.
            allowed = permitting(name, access.scopes)
            if not allowed:
                raise insufficient_scopes()
            self._tls.app_created_only = allowed == {APP_CREATED}
            self._tls.owned_only = allowed == {EVENTS_OWNED}
            self._tls.client_id = access.client_id
            check_parameters(name, req.query, params)
            if name in NOT_IMPLEMENTED:
                raise ApiError(501, "notImplemented", f"{name} is not implemented by the stand-in")
            body: Any = None
            if req.body:
                try:
                    body = json.loads(req.body)
                except ValueError:
                    raise ApiError(400, "parseError", "Parse Error") from None
            calendar_ids: set[str] = set()
            if "calendarId" in params:
                calendar_ids.add(self._resolve_calendar_id(account, params["calendarId"]))
            if name == "freebusy.query" and isinstance(body, dict):
                for item in body.get("items") or []:
                    if isinstance(item, dict) and item.get("id"):
                        calendar_ids.add(self._resolve_calendar_id(account, item["id"]))
            error = self._take_fault(name, account, calendar_ids)
            if error is not None:
                raise error
            self._check_usage_limits(name, account, calendar_ids)
            handler = getattr(self, "_m_" + name.replace(".", "_"))
            with self._lock:
                self._purge()
                status, payload, headers = handler(account, params, req, body)
            fields = req.param("fields")
            if payload is not None and fields:
                try:
                    payload = apply_fields(parse_fields(fields), payload)
                except ValueError:
                    raise ApiError(400, "invalidParameter", "Invalid field selection") from None
            return _json_response(status, payload, headers)
        except ApiError as error:
            return _error_response(error)

    # usage limits and purging ---------------------------------------------------------------------

    def _check_usage_limits(self, name: str, account: str, calendar_ids: set[str]) -> None:
        """A calendar over its usage limits refuses writes until the limit lifts; every call
        (each batch part too) counts toward the account's per-minute quota."""
        now = time.time()
        with self._lock:
            if name in WRITE_METHODS:
                for calendar_id in calendar_ids:
                    limit = self._calendar_limits.get(calendar_id)
                    if limit is not None and limit[0] > now:
                        retry_after = limit[1]
                        raise fault_error("quota", retry_after)
            if self.user_rate_limit is None:
                return
            calls = self._user_calls.setdefault(account, deque())
            while calls and calls[0] <= now - self.user_rate_window:
                calls.popleft()
            if len(calls) >= self.user_rate_limit:
                raise fault_error("user_rate_limit", None)
            calls.append(now)

    def _purge(self) -> None:
        """Purge mode: deleted events older than ``purge_deleted_after`` vanish (get answers
        404, listings omit them), and sync tokens that never saw the deletion expire (410),
        so no deletion is lost. Cancelled instances stay: they are what hides an occurrence."""
        after = self.purge_deleted_after
        if after is None:
            return
        cutoff = time.time() - after
        for cal in self._calendars.values():
            purged = [
                stored
                for stored in cal.events.values()
                if stored.deleted
                and stored.deleted_at is not None
                and stored.deleted_at <= cutoff
                and not stored.body.get("recurringEventId")
            ]
            for stored in purged:
                event_id = stored.body["id"]
                del cal.events[event_id]
                if cal.ical_uids.get(stored.body.get("iCalUID", "")) == event_id:
                    del cal.ical_uids[stored.body["iCalUID"]]
                if self.purged_ids == "burnt":
                    cal.purged_ids.add(event_id)
                for token, sync in list(self._sync_tokens.items()):
                    if sync.calendar_id == cal.id and sync.change < stored.change:
                        del self._sync_tokens[token]

    def limit_calendar(
        self, calendar_id: str, seconds: float, *, retry_after: float | None = None
    ) -> None:
        """Put a calendar over Google's usage limits for ``seconds``: every write to it
        answers 403 ``quotaExceeded`` (domain usageLimits), with a ``Retry-After`` header when
        given, until then ("Avoid Calendar use limits"; "Handle API errors")."""
        with self._lock:
            self._calendar_limits[calendar_id] = (time.time() + seconds, retry_after)

    def fail_freebusy(self, calendar_id: str, reason: str | None = "internalError") -> None:
        """freebusy.query answers this calendar with ``errors: [{reason}]`` and no busy
        intervals, the others normally (freebusy.query reference, calendars.(key).errors);
        ``None`` clears it."""
        with self._lock:
            if reason is None:
                self._freebusy_errors.pop(calendar_id, None)
            else:
                self._freebusy_errors[calendar_id] = reason

    # batch --------------------------------------------------------------------------------------

    def _batch(self, req: Request) -> Response:
        """``POST /batch/calendar/v3``: multipart/mixed of application/http parts (Calendar API
        guide "Send batch requests"). The outer request's headers apply to every part unless
        the part sets its own; the answer has one application/http part per request, in order,
        each with ``Content-ID: <response-ID>``."""
        content_type = req.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/mixed"):
            return _error_response(ApiError(400, "badRequest", "Batch must be multipart/mixed"))
        message = BytesParser(policy=compat32).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + req.body
        )
        parts = message.get_payload() if message.is_multipart() else []
        if not isinstance(parts, list) or not parts:
            return _error_response(ApiError(400, "badRequest", "Empty batch request"))
        if len(parts) > self.max_batch:
            return _error_response(
                ApiError(
                    400,
                    "badRequest",
                    f"Too many requests in batch: {len(parts)} (at most {self.max_batch}).",
                )
            )
        outer_headers = {
            k: v
            for k, v in req.headers.items()
            if not k.startswith("content-") and k not in ("host", "connection")
        }
        boundary = "batch_" + secrets.token_hex(12)
        chunks: list[str] = []
        for part in parts:
            assert isinstance(part, Message)  # the parts of a multipart message are messages
            content_id = (part.get("Content-ID") or "").strip()
            inner = self._batch_part(part.get_payload(), outer_headers, req.query)
            reason = HTTPStatus(inner.status).phrase
            lines = [f"HTTP/1.1 {inner.status} {reason}"]
            lines += [f"{k}: {v}" for k, v in inner.headers.items()]
            lines.append(f"Content-Length: {len(inner.body)}")
            response_id = (
                f"<response-{content_id[1:-1]}>"
                if content_id.startswith("<") and content_id.endswith(">")
                else f"response-{content_id}"
            )
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: {response_id}\r\n\r\n"
                + "\r\n".join(lines)
                + "\r\n\r\n"
                + inner.body.decode("utf-8")
                + "\r\n"
            )
        chunks.append(f"--{boundary}--\r\n")
        return Response(
            200,
            "".join(chunks).encode("utf-8"),
            {"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    def _batch_part(
        self, payload: Any, outer_headers: dict[str, str], outer_query: dict[str, list[str]]
    ) -> Response:
        if not isinstance(payload, str) or not payload.strip():
            return _error_response(ApiError(400, "badRequest", "Empty batch part"))
        request_line, _, rest = payload.lstrip("\r\n").partition("\n")
        pieces = request_line.strip().split(" ")
        if len(pieces) < 2:
            return _error_response(ApiError(400, "badRequest", "Malformed batch part"))
        method, target = pieces[0].upper(), pieces[1]
        inner = message_from_string(rest, policy=compat32)
        headers = dict(outer_headers)
        headers.update({k.lower(): v for k, v in inner.items()})
        body_text = inner.get_payload()
        body = body_text.encode("utf-8") if isinstance(body_text, str) else b""
        if not body.strip():
            body = b""
        split = urlsplit(target)
        query = {k: list(v) for k, v in outer_query.items()}
        query.update(parse_qs(split.query, keep_blank_values=True))
        inner_req = Request(method, split.path, query, headers, body)
        if not split.path.startswith(API_PREFIX):
            return _error_response(not_found())
        return self._api_call(inner_req)

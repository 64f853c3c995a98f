"""The stand-in's HTTP front: the threading server on 127.0.0.1, the request handler, and the
dispatch of a request to the OAuth endpoints, the batch endpoint, the discovery document or a
Calendar v3 method (checked for auth, scopes, parameters, faults and usage limits first)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import SHUT_RDWR, socket
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ._access import CalendarAccess
from ._base import API_PREFIX, BATCH_PATH, Request, Response, error_response, json_response
from ._batch import BatchEndpoint
from ._discovery import (
    APP_CREATED,
    EVENTS_OWNED,
    check_parameters,
    insufficient_scopes,
    permitting,
)
from ._errors import ApiError, not_found
from ._faults import FaultInjection
from ._oauth import OAuthEndpoints
from ._util import apply_fields, parse_fields

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stand_in: HttpDispatch

    def __init__(self, stand_in: HttpDispatch) -> None:
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


class HttpDispatch(BatchEndpoint, FaultInjection, OAuthEndpoints, CalendarAccess):
    """Routes each request; a Calendar v3 call runs its ``_m_<resource>_<method>`` handler."""

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
                return json_response(200, self.discovery_document())
            return error_response(not_found())
        except Exception as exc:  # a stand-in bug must surface as a 500, not a dropped socket
            return error_response(ApiError(500, "backendError", f"stand-in error: {exc!r}"))

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
            return error_response(not_found())
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
            return json_response(status, payload, headers)
        except ApiError as error:
            return error_response(error)

"""CalDAV: how a request reaches the server.

The ``caldav`` library's :class:`DAVClient` carries the HTTP session, auth negotiation
(Basic/Digest/Bearer from the server's challenge) and principal / calendar-home discovery.
Everything syncd sends itself is a plain WebDAV request through ``DAVClient.request``, because
the library's object API (``save()``, ``add_event()``) rewrites bodies and bumps SEQUENCE,
while syncd needs byte-exact conditional writes.

- The outbound policy: the client's HTTP session is replaced by one whose every connection
  (redirect hops, principal, calendar home and calendars on other hosts) is resolved and
  checked by :class:`connectors.egress.EgressPolicy`, and opened to the address that passed.
- The pass header goes with every request, the library's own discovery included.
- Auth: the library negotiates the scheme from the server's first 401. Once a server has asked
  for Basic, later connectors for the same account send it with their first request
  (:mod:`connectors.caldav.memory`).
- Writes skip the DAV client once the server has shown which credentials it wants and go
  straight to the library's HTTP session (the same keep-alive pool, TLS settings and
  proxies): the DAV client's per-request work costs ~3 ms of CPU, 5-10% of a PUT to a local
  server, and a bulk pass is a sequential loop of PUTs.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from time import monotonic
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from caldav.davclient import DAVClient
from caldav.lib import error as caldav_error
from caldav.lib.http_sync import requests as http_lib

from connectors.base import pass_headers
from connectors.caldav.errors import HTTPStatusError, Op, QueryFailed, translated
from connectors.caldav.memory import ServerMemory
from connectors.caldav.settings import CalDAVSettings
from connectors.caldav.webdav import XML_HEADERS, preconditions
from connectors.egress_http import niquests_session
from connectors.errors import Transient

_T = TypeVar("_T")

_LEAN_METHODS: Final = frozenset({"PUT", "DELETE"})


class _PassTaggedDAVClient(DAVClient):
    """Every request, the library's own discovery requests included, carries the pass header."""

    def request(
        self,
        url: Any,
        method: Any = "GET",
        body: Any = "",
        headers: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        tagged = {**pass_headers(), **(headers or {})}
        return super().request(url, method, body, tagged, *args, **kwargs)


# caldav annotates ``timeout`` as int (niquests takes a float) and leaves principal discovery
# and calendar creation unannotated, so the client is handled as Any.
_DAVClient: Any = _PassTaggedDAVClient


class _WireResponse:
    """A reply from the HTTP session, with what callers of :meth:`Transport.request` read from
    the library's DAVResponse: status, headers (case-insensitive ``get``), raw text and the
    XML tree."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body.decode("utf-8", errors="replace")
        self.tree: ET.Element | None = None
        if body.strip() and "xml" in (headers.get("Content-Type") or ""):
            # Only ever a DAV:error body (preconditions); expat refuses entity expansion bombs.
            with contextlib.suppress(ET.ParseError):
                self.tree = ET.fromstring(body)  # noqa: S314 - see above


class Transport:
    """The HTTP side of one connector. Not thread-safe, like the connector."""

    def __init__(self, settings: CalDAVSettings, memory: ServerMemory) -> None:
        """No network I/O happens here; an unusable URL raises ValueError."""
        self._settings = settings
        self._memory = memory
        try:
            self.client: Any = _DAVClient(
                url=settings.url,
                username=settings.username,
                password=settings.password,
                timeout=settings.timeout,
                enable_rfc6764=False,
                # Retries (backoff, Retry-After) belong to the engine, not to a sleeping client.
                rate_limit_handle=False,
            )
        except Exception as exc:
            raise ValueError(f"unusable CalDAV url {settings.url!r}: {exc}") from exc
        library_session = self.client.session
        self.client.session = niquests_session(
            settings.egress, multiplexed=bool(getattr(library_session, "multiplexed", False))
        )
        library_session.close()
        # Whether a request through the library has gone through with the credentials it now
        # holds (none, or the scheme the server asked for); until then writes use the library.
        self._auth_settled = False
        parts = urlsplit(settings.url)
        self._account = (f"{parts.scheme}://{parts.netloc}".lower(), settings.username)
        self._preemptive_basic = memory.wants_basic(self._account)
        if self._preemptive_basic:
            self.client.auth = http_lib.auth.HTTPBasicAuth(settings.username, settings.password)

    def request(
        self,
        method: str,
        url: str,
        op: Op,
        *,
        body: str | bytes = "",
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...],
    ) -> Any:
        """The reply, if its status is in ``ok``; otherwise the translated error."""
        what = f"{method} {url}"
        with translated(op, what):
            response: Any = None
            if method in _LEAN_METHODS:
                response = self._lean_request(method, url, body, headers or {})
            if response is None:
                response = self.with_auth_fallback(
                    lambda: self.client.request(url, method, body, dict(headers or {}))
                )
            status = int(response.status)
            if status not in ok:
                raise HTTPStatusError(status, response.headers or {}, preconditions(response.tree))
            return response

    def with_auth_fallback(self, call: Callable[[], _T]) -> _T:
        """``call()`` through the DAV client; when Basic sent unasked is refused, once more
        after letting the library negotiate."""
        try:
            result = call()
        except caldav_error.AuthorizationError as exc:
            if exc.status != 401 or not self._preemptive_basic:
                raise
            # Basic was assumed from another connector's experience and refused (the password
            # changed, or the server now wants another scheme): forget it and let the library
            # negotiate from the server's challenge, which also tells a wrong password apart.
            self._preemptive_basic = False
            self._memory.forget_basic(self._account)
            self.client.auth = None
            result = call()
        if isinstance(self.client.auth, http_lib.auth.HTTPBasicAuth):
            self._memory.learn_basic(self._account)
        self._auth_settled = True
        return result

    def _lean_request(
        self, method: str, url: str, body: str | bytes, headers: Mapping[str, str]
    ) -> _WireResponse | None:
        """The request straight through the library's HTTP session, or None when it must go
        through the DAV client: credentials not settled yet or of a scheme other than Basic, or
        a 401 (the DAV client then negotiates from the server's challenge)."""
        if not self._auth_settled:
            return None
        auth = self.client.auth
        if auth is not None and not isinstance(auth, http_lib.auth.HTTPBasicAuth):
            return None
        sent = {
            "User-Agent": str(self.client.headers.get("User-Agent", "syncd")),
            **pass_headers(),
            **headers,
        }
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        reply = self.client.session.request(
            method,
            url,
            data=data or None,
            headers=sent,
            auth=auth,
            timeout=self._settings.timeout,
            allow_redirects=False,
        )
        if reply.status_code == 401:
            self._auth_settled = False
            return None
        return _WireResponse(int(reply.status_code), reply.headers, reply.content or b"")

    def propfind(self, url: str, body: str, *, depth: str) -> Any:
        """A PROPFIND of ``body``'s properties, answered with a multistatus."""
        headers = {"Depth": depth, **XML_HEADERS}
        return self.request("PROPFIND", url, Op.READ, body=body, headers=headers, ok=(207,))

    def report(self, url: str, op: Op, body: str, *, depth: str = "1", ok: int = 207) -> Any:
        """A REPORT (sync-collection, free-busy-query, calendar-query or -multiget)."""
        headers = {"Depth": depth, **XML_HEADERS}
        return self.request("REPORT", url, op, body=body, headers=headers, ok=(ok,))

    @contextlib.contextmanager
    def time_left(self, deadline: float, what: str, *, server: bool = False) -> Iterator[None]:
        """Requests inside wait no longer than until ``deadline`` (monotonic). With no time
        left: QueryFailed for a server-side busy query (``server``), so that the item-wise read
        takes over; Transient otherwise."""
        left = deadline - monotonic()
        if left <= 0:
            message = f"{what}: not done within {self._settings.timeout:g} s"
            raise QueryFailed(message) if server else Transient(message)
        saved = self.client.timeout
        self.client.timeout = min(float(saved or left), left)
        try:
            yield
        finally:
            self.client.timeout = saved

    def close(self) -> None:
        with translated(Op.READ, "close"):
            self.client.close()

"""CalDAV: the one place that turns library exceptions, HTTP-library exceptions and HTTP
statuses into :mod:`connectors.errors` types.

The same status means different things to different requests, so each operation family has
its own mapping, asked before the generic one (:func:`status_error`):

- sync-collection (:func:`sync_answer`): the REPORT refused means "list with PROPFIND
  instead", a refused token means a full listing;
- busy-time queries (:func:`busy_answer`): a report the server does not do means "take the
  next method", a server that broke on the calendar's data means "read it item by item";
- creates (:func:`create_answer`): something already there;
- everything else (:func:`http_answer`).

"Take the next method" is a :class:`Fallback`: internal, outside the public hierarchy, so no
caller can mistake it for a failure. The method that asked catches it; :func:`surfaced`, at
the connector's boundary, turns one nobody caught into the typed error it stands for.

The server's explanation is never part of a message: it can quote the entry that was sent, and
with it a client's name (messages reach logs and the dashboard).
"""

from __future__ import annotations

import contextlib
import enum
import http.client
from collections.abc import Iterator, Mapping
from typing import Final

from caldav.lib import error as caldav_error
from caldav.lib.http_sync import requests as http_lib

from connectors import errors as public
from connectors.caldav.webdav import SUPPORTED_REPORT, UID_CONFLICT, VALID_SYNC_TOKEN
from connectors.common import parse_retry_after, plain


class Op(enum.Enum):
    """What a request was for: the same status means different things to different requests."""

    READ = "read"
    CREATE = "create"
    WRITE = "write"
    SYNC = "sync"  # sync-collection with a token from an earlier reply
    SYNC_INITIAL = "sync-initial"  # sync-collection with the empty token: a full listing
    FREEBUSY = "free-busy"  # free-busy-query REPORT: the server may not have it
    EXPAND_QUERY = "expand-query"  # calendar-query asking for <C:expand>: likewise
    BUSY_QUERY = "busy-query"  # calendar-query or calendar-multiget read for busy time


_SYNC_OPS: Final = frozenset({Op.SYNC, Op.SYNC_INITIAL})
_REPORT_OPS: Final = frozenset({Op.FREEBUSY, Op.EXPAND_QUERY})
_BUSY_OPS: Final = frozenset({Op.FREEBUSY, Op.EXPAND_QUERY, Op.BUSY_QUERY})


class Fallback(Exception):
    """The method a request used does not work here; its caller takes the next one. Never
    leaves the connector: :meth:`to_public` is what it would mean to a caller outside."""

    def to_public(self) -> public.ConnectorError:
        return public.ProtocolError(str(self))


class SyncUnsupported(Fallback):
    """No usable sync-collection REPORT: changes() lists with PROPFIND."""


class ReportUnsupported(Fallback):
    """The server cannot answer free-busy-query, or calendar-query with <C:expand>: busy()
    takes the next method."""


class QueryFailed(Fallback):
    """The server broke on a busy-time query over a calendar's data (5xx other than 503, or no
    answer in time): busy() reads that calendar item by item."""

    def to_public(self) -> public.ConnectorError:
        return public.Transient(str(self))


Answer = public.ConnectorError | Fallback


class HTTPStatusError(Exception):
    """A response with a status the caller did not expect; only ever fed to :func:`translate`."""

    def __init__(
        self, status: int, headers: Mapping[str, str], preconditions: frozenset[str]
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.preconditions = preconditions


def sync_answer(status: int, preconditions: frozenset[str], op: Op, message: str) -> Answer | None:
    if op not in _SYNC_OPS:
        return None
    if SUPPORTED_REPORT in preconditions or status in (405, 415, 422, 501):
        return SyncUnsupported(message)
    if op is Op.SYNC and (VALID_SYNC_TOKEN in preconditions or status in (400, 412)):
        # RFC 6578 says 403/409 with valid-sync-token; Xandikos answers 412, others 400.
        return public.InvalidSyncToken(message)
    if op is Op.SYNC_INITIAL and status in (400, 403, 409, 412):
        # The empty token cannot be stale, so this is the REPORT itself being refused. A
        # real permission problem shows up again on the PROPFIND fallback.
        return SyncUnsupported(message)
    return None


def busy_answer(
    status: int, preconditions: frozenset[str], retry_after: str | None, op: Op, message: str
) -> Answer | None:
    if op not in _BUSY_OPS:
        return None
    if op in _REPORT_OPS and (
        SUPPORTED_REPORT in preconditions
        or status in (207, 400, 405, 415, 422, 501)
        or (op is Op.EXPAND_QUERY and status == 403 and preconditions)
    ):
        # The request refused, not the calendar (a bare 403 is about permissions, and stays
        # AuthFailed); anything else about the calendar shows up again on the calendar-query
        # that follows.
        return ReportUnsupported(message)
    if 500 <= status <= 599 and status not in (501, 503, 505) and retry_after is None:
        # The server broke on the calendar's data (Xandikos answers 500 when one item is
        # unreadable). 503 and Retry-After ask for less load, not for more requests.
        return QueryFailed(message)
    return None


def create_answer(
    status: int, preconditions: frozenset[str], op: Op, message: str
) -> Answer | None:
    if op is not Op.CREATE:
        return None
    if preconditions & UID_CONFLICT:
        return public.AlreadyExists(
            f"{message}: another resource in the calendar already has this UID"
        )
    if status == 412:
        return public.AlreadyExists(message)
    return None


def http_answer(status: int, retry_after: str | None, message: str) -> public.ConnectorError:
    if status in (408, 429) or (500 <= status <= 599 and status not in (501, 505)):
        return public.Transient(message, retry_after=parse_retry_after(retry_after))
    if status in (401, 403):
        return public.AuthFailed(message)
    if status in (404, 410):
        return public.NotFound(message)
    if status == 412:
        return public.PreconditionFailed(message)
    return public.ProtocolError(message)


def status_error(
    status: int, preconditions: frozenset[str], retry_after: str | None, op: Op, what: str
) -> Answer:
    """What an HTTP status means for a request of ``op``."""
    message = f"{what}: HTTP {status}"
    if preconditions:
        message += " (" + ", ".join(sorted(preconditions)) + ")"
    if status == 401:
        return public.AuthFailed(message)
    return (
        sync_answer(status, preconditions, op, message)
        or busy_answer(status, preconditions, retry_after, op, message)
        or create_answer(status, preconditions, op, message)
        or http_answer(status, retry_after, message)
    )


def _library_error(exc: caldav_error.DAVError, op: Op, what: str) -> Answer:
    if isinstance(exc, caldav_error.RateLimitError):
        # Raised by the library itself for 429, and for 503 with Retry-After.
        return public.Transient(
            f"{what}: HTTP {exc.status} rate limited",
            retry_after=parse_retry_after(exc.retry_after),
        )
    if exc.status is not None:
        return status_error(exc.status, frozenset(exc.preconditions), None, op, what)
    if isinstance(exc, caldav_error.NotFoundError):
        return public.NotFound(f"{what}: {exc.reason}")
    return public.ProtocolError(f"{what}: {exc}")


def _transport_error(exc: BaseException, op: Op, what: str) -> Answer:
    if isinstance(exc, http_lib.exceptions.ReadTimeout) and op in _BUSY_OPS:
        # Connected, but the server is still working on the query (an endless recurrence).
        return QueryFailed(f"{what}: {type(exc).__name__}")
    if isinstance(
        exc,
        http_lib.exceptions.Timeout
        | http_lib.exceptions.ConnectionError
        | http_lib.exceptions.ChunkedEncodingError,
    ):
        return public.Transient(f"{what}: {plain(exc)}")
    if isinstance(exc, http_lib.exceptions.RequestException):
        # Invalid URL, too many redirects, bad header: configuration, not weather.
        return public.ProtocolError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError | http.client.HTTPException):
        # Refused, reset, timed out, a reply cut short, below the HTTP library's own types.
        return public.Transient(f"{what}: {plain(exc)}")
    return public.ProtocolError(f"{what}: {type(exc).__name__}: {exc}")


def translate(exc: BaseException, op: Op, what: str) -> Answer:
    """The one mapping from everything the caldav/HTTP stack can raise."""
    if isinstance(exc, public.ConnectorError | Fallback):
        return exc
    if isinstance(exc, HTTPStatusError):
        retry_after = exc.headers.get("Retry-After")
        return status_error(exc.status, exc.preconditions, retry_after, op, what)
    if isinstance(exc, caldav_error.DAVError):
        return _library_error(exc, op, what)
    if isinstance(exc, NotImplementedError):
        # DAVClient's answer to a WWW-Authenticate challenge it has no scheme for.
        return public.AuthFailed(f"{what}: {exc}")
    return _transport_error(exc, op, what)


@contextlib.contextmanager
def translated(op: Op, what: str) -> Iterator[None]:
    try:
        yield
    except (public.ConnectorError, Fallback):
        raise
    except Exception as exc:
        raise translate(exc, op, what) from exc


@contextlib.contextmanager
def surfaced() -> Iterator[None]:
    """At the connector's boundary: a fallback that no method took leaves as the typed error
    it stands for, never as itself."""
    try:
        yield
    except Fallback as exc:
        raise exc.to_public() from exc

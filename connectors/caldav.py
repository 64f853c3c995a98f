"""CalDAV connector: one calendar on any CalDAV server (Radicale, Xandikos, iCloud, Fastmail, …).

The ``caldav`` library's :class:`DAVClient` carries the HTTP session, auth negotiation
(Basic/Digest/Bearer from the server's challenge) and principal / calendar-home discovery, and
creates syncd's dedicated calendar. Everything else is plain WebDAV requests sent through
``DAVClient.request``, because the library's object API (``save()``, ``add_event()``) rewrites
bodies and bumps SEQUENCE, while syncd needs byte-exact conditional writes.

Hrefs
    An href is the *percent-decoded path* of a resource (``/alice/syncd/a b@c.ics``): servers
    disagree on how to encode the same path (Radicale sends ``%40`` for ``@``, Xandikos sends
    ``@``), so decoding is the only form that ``create()`` can predict and that stays equal to
    what ``changes()`` reports for the same resource. When a request is made, the part below the
    calendar is re-encoded and appended to the calendar URL exactly as the server spelled it.
    (A name containing an encoded ``/`` cannot be represented; servers do not produce those.)

ETags
    Kept exactly as the server sent them, quotes and ``W/`` included, from the ``ETag`` header or
    the ``getetag`` property (which agree on every server tested), so they can be sent back
    verbatim in ``If-Match``.

Bodies
    Sent byte for byte as given (no CRLF rewriting, no SEQUENCE bump). Servers may re-serialise
    what they store: Radicale and Xandikos both reorder properties, so a body read back equals
    the one written line for line, and byte for byte only once it is in the server's own form.

Auth
    The library negotiates the scheme from the server's first 401. Once a server has asked for
    Basic, later connectors for the same account send it with their first request, so that a
    connector made for a single quiet sync pass costs a single request.

Busy time (:class:`connectors.base.BusyReader`)
    ``calendars()`` lists the VEVENT-capable calendars of the principal's calendar home (one
    PROPFIND, Depth 1). syncd's dedicated calendar is recognised by its address alone,
    ``<calendar home>/<calendar_id>/``, however the connector reached it (``ensure_calendar`` or a
    stored ``calendar_url``); its ``is_syncd`` is True and ``busy()`` never reads it. A configured
    ``calendar_url`` anywhere else is an existing calendar of the therapist that syncd writes into:
    it is read, and syncd's entries in it (UID ``syncd-…`` or an ``X-SYNCD-KIND`` property) are
    left out.

    ``busy()`` picks a method per calendar from what this connector instance has seen the server
    do (probed by the first request that needs it, then fixed for the instance; never by server
    name): the RFC 4791 ``free-busy-query`` REPORT for calendars that hold no syncd entries when
    the options can be honoured from FBTYPEs (``all_day="transparency"``: free-busy leaves out
    transparent events but cannot tell all-day ones apart); otherwise, and after a server has
    refused free-busy-query once, a ``calendar-query`` with a time-range filter and ``<C:expand>``.
    A server that answers the expand request with RRULEs still in place has not expanded, so
    from then on the query goes without it and the connector expands with
    ``recurring_ical_events`` (which it does for any unexpanded reply anyway, so the answer is
    right from the first call). Radicale 3.9 and Xandikos 0.4 do both free-busy-query and expand.

    Intervals are clipped to ``[start, end)`` and sorted; free-busy periods are merged by the
    server and carry no ``ref``, calendar-query ones are one per occurrence with the resource's
    href as ``ref``. All-day dates and floating times are taken as UTC, as both servers do for
    free-busy without a ``calendar-timezone``. Nothing of an event but its times, status,
    transparency and UID is looked at, and only hrefs ever reach a log line.

Hostile items (busy time)
    One broken item can make a server fail busy time for its whole calendar: Xandikos 0.4
    answers 500 to free-busy-query and calendar-query when it meets an item it cannot parse,
    and Radicale 3.9 and Xandikos keep expanding an endless ``FREQ=SECONDLY`` rule past any
    timeout. Each calendar's read therefore has the budget of one request (``timeout``); the
    server-side queries get a third of it. When one fails with a 5xx (not 503, nor with
    Retry-After: those ask for less load) or gets no answer in that time, the calendar is read
    item by item within the rest of the budget: a PROPFIND (Depth 1) lists the items,
    calendar-multiget fetches them 50 at a time (a chunk the server fails on is halved until the
    failing item is alone), and each is expanded here on its own. Only the properties busy time
    needs are parsed (titles, descriptions, attachments are dropped unread); a rule whose
    expansion would step through more than 100,000 instants from its DTSTART to the window's
    end, or an item with more than 2000 occurrences in the window, is not expanded. Items that
    cannot be used are skipped, logged by href with a reason of our own wording and listed in
    ``busy_skipped``; the busy time of the others is returned. Running out of budget is
    Transient (a partial answer would show busy time as free). A calendar that needed this is
    read item by item for the next hour without asking the server first, so that a query still
    running there is not started again on every pass. With the default 15 s the server-side
    query has 5 s and the item-wise read 10 s: one PROPFIND, one multiget per 50 items and the
    local expansion (measured 3-9 ms per single event, 15-20 ms per recurring one on a loaded
    2-core machine) fit in that for calendars of several hundred items; a larger calendar that
    a server cannot evaluate stays Transient, its last busy time kept and flagged when stale.

Errors
    :func:`_translate` is the only place that turns library exceptions, HTTP-library exceptions
    and HTTP statuses into :mod:`connectors.errors` types; every public method runs its network
    I/O under :func:`_translated`, so nothing else escapes.
"""

from __future__ import annotations

import codecs
import contextlib
import enum
import http.client
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from time import monotonic
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import icalendar
import recurring_ical_events
from caldav.davclient import DAVClient
from caldav.lib import error as caldav_error
from caldav.lib.http_sync import requests as http_lib
from caldav.lib.python_utilities import WireBytes

from connectors.base import (
    BusyInterval,
    BusyOptions,
    CalendarInfo,
    Changes,
    FetchedItem,
    RemoteItem,
    pass_headers,
)
from connectors.egress import STRICT, EgressPolicy
from connectors.egress_http import niquests_session
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    ConnectorError,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
    unreachable,
)

__all__ = ["CalDAVConnector", "CalDAVSettings"]

log = logging.getLogger(__name__)

DAV: Final = "{DAV:}"
CALDAV: Final = "{urn:ietf:params:xml:ns:caldav}"

# caldav annotates ``timeout`` as int (niquests takes a float) and leaves principal discovery
# and calendar creation unannotated, so the client is handled as Any.


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


_DAVClientFactory: Any = _PassTaggedDAVClient

_T = TypeVar("_T")

# (origin, username) pairs whose server has challenged this process with Basic auth. Connectors
# are cheap to make (one per sync pass, say); a new one for the same account sends Basic
# credentials with its first request instead of first collecting a 401, so a pass that finds
# nothing changed costs one request. Only ever learnt from the server's own challenge, so no
# credentials go anywhere, or in any form, that the server did not ask for.
_BASIC_AUTH_ORIGINS: set[tuple[str, str]] = set()

# A server that keeps truncating its sync-collection reply would otherwise loop forever.
_MAX_SYNC_PAGES: Final = 1000

_XML_HEADERS: Final = {"Content-Type": "application/xml; charset=utf-8"}
_ICS_CONTENT_TYPE: Final = "text/calendar; charset=utf-8"

_SYNC_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:sync-collection xmlns:D="DAV:">'
    "<D:sync-token>{token}</D:sync-token>"
    "<D:sync-level>1</D:sync-level>"
    "<D:prop><D:getetag/></D:prop>"
    "</D:sync-collection>"
)
_PROPFIND_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>'
)

_CALENDARS_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>'
    "<D:displayname/><D:resourcetype/><C:supported-calendar-component-set/>"
    "</D:prop></D:propfind>"
)
_FREEBUSY_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
    '<C:time-range start="{start}" end="{end}"/>'
    "</C:free-busy-query>"
)
_QUERY_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><C:calendar-data>{expand}</C:calendar-data></D:prop>"
    '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
    '<C:time-range start="{start}" end="{end}"/>'
    "</C:comp-filter></C:comp-filter></C:filter>"
    "</C:calendar-query>"
)
_EXPAND: Final = '<C:expand start="{start}" end="{end}"/>'
# How syncd marks what it writes into a calendar it does not own (see syncd.ical).
_SYNCD_UID_PREFIX: Final = "syncd-"
_SYNCD_KIND: Final = "X-SYNCD-KIND"

# Busy time on a calendar the server cannot evaluate (see "Hostile items" in the module doc).
# The server-side query gets this share of the per-calendar budget (``timeout``); the item-wise
# fallback gets the rest.
_SERVER_SHARE: Final = 1 / 3
_MULTIGET_CHUNK: Final = 50
# More occurrences than this in the window and an item is skipped: no therapist's own event
# recurs more often than hourly over weeks (8 weeks of hourly is 1344).
_MAX_OCCURRENCES: Final = 2000
# Upper bound of the recurrence instants the expansion may step through from DTSTART to the end
# of the window (dateutil cannot skip ahead): ~0.5 s and a few MB at most per item.
_MAX_RECURRENCE_STEPS: Final = 100_000
# How long a calendar that made the server fail or time out is read item by item without asking
# the server first: a query that timed out may still be running there (Radicale and Xandikos
# keep expanding an endless rule), so asking again every pass would pile them up.
_ITEMWISE_FOR: Final = 3600.0
_ITEMWISE_UNTIL: dict[tuple[str, str], float] = {}  # (username, calendar URL) -> monotonic
_MULTIGET_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}"
    "</C:calendar-multiget>"
)
_FREQ_SECONDS: Final = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3600,
    "DAILY": 86400,
    "WEEKLY": 7 * 86400,
    "MONTHLY": 28 * 86400,
    "YEARLY": 365 * 86400,
}
_DAYS_PER_PERIOD: Final = {"WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}
_DAY_PARTS: Final = ("BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH")
_FINER_PARTS: Final = {
    "SECONDLY": (),
    "MINUTELY": ("BYSECOND",),
    "HOURLY": ("BYMINUTE", "BYSECOND"),
}

_VALID_SYNC_TOKEN: Final = f"{DAV}valid-sync-token"
_SUPPORTED_REPORT: Final = f"{DAV}supported-report"
# RFC 4791 5.3.2.1 / RFC 6638 3.2.4.1: the UID is already used by another resource.
_UID_CONFLICT: Final = frozenset(
    {f"{CALDAV}no-uid-conflict", f"{CALDAV}unique-scheduling-object-resource"}
)
_CHARSET_RE: Final = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._:-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class CalDAVSettings:
    """Where and how to reach one CalDAV calendar.

    ``url`` is the server's (or the principal's) base URL. With ``calendar_url`` the connector
    writes into that existing calendar; without it, into a dedicated calendar ``calendar_id`` with
    display name ``calendar_name`` in the user's calendar home, created when missing.
    ``timeout`` (seconds) bounds every request. ``egress`` decides which addresses any
    request, redirect hop or discovered URL may reach (public ones only, by default).
    """

    url: str
    username: str
    password: str
    calendar_url: str | None = None
    calendar_name: str = "Therapy sessions"
    calendar_id: str = "syncd"
    timeout: float = 15.0
    egress: EgressPolicy = STRICT


class _Op(enum.Enum):
    """What a request was for: the same status means different things to different requests."""

    READ = "read"
    CREATE = "create"
    WRITE = "write"
    SYNC = "sync"  # sync-collection with a token from an earlier reply
    SYNC_INITIAL = "sync-initial"  # sync-collection with the empty token: a full listing
    FREEBUSY = "free-busy"  # free-busy-query REPORT: the server may not have it
    EXPAND_QUERY = "expand-query"  # calendar-query asking for <C:expand>: likewise
    BUSY_QUERY = "busy-query"  # calendar-query or calendar-multiget read for busy time


class _SyncUnsupported(ProtocolError):
    """The server has no usable sync-collection REPORT; changes() falls back to PROPFIND.

    Never escapes the connector; a ProtocolError subclass so that it would still be typed if it
    ever did.
    """


class _ReportUnsupported(ProtocolError):
    """The server cannot answer free-busy-query, or calendar-query with <C:expand>; busy()
    falls back to the next method. Never escapes the connector."""


class _QueryFailed(Transient):
    """The server broke on a busy-time query over a calendar's data (5xx other than 503, or no
    answer in time); busy() reads that calendar item by item instead. A Transient so that it
    would still be typed if it ever escaped."""


class _Unreadable(Exception):
    """One calendar item busy() cannot use; the message says why and never quotes the item."""


class _HTTPStatusError(Exception):
    """A response with a status the caller did not expect; only ever fed to _translate."""

    def __init__(
        self, status: int, headers: Mapping[str, str], preconditions: frozenset[str]
    ) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.preconditions = preconditions


def _parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _translate_status(
    status: int,
    preconditions: frozenset[str],
    retry_after: str | None,
    op: _Op,
    what: str,
) -> ConnectorError:
    """The HTTP-status half of :func:`_translate` (which is its only caller). The server's
    explanation is never part of the message: it can quote the entry that was sent, and
    with it a client's name (messages reach logs and the dashboard)."""
    message = f"{what}: HTTP {status}"
    if preconditions:
        message += " (" + ", ".join(sorted(preconditions)) + ")"
    if status == 401:
        return AuthFailed(message)
    if op in (_Op.SYNC, _Op.SYNC_INITIAL):
        if _SUPPORTED_REPORT in preconditions or status in (405, 415, 422, 501):
            return _SyncUnsupported(message)
        if op is _Op.SYNC and (_VALID_SYNC_TOKEN in preconditions or status in (400, 412)):
            # RFC 6578 says 403/409 with valid-sync-token; Xandikos answers 412, others 400.
            return InvalidSyncToken(message)
        if op is _Op.SYNC_INITIAL and status in (400, 403, 409, 412):
            # The empty token cannot be stale, so this is the REPORT itself being refused. A
            # real permission problem shows up again on the PROPFIND fallback.
            return _SyncUnsupported(message)
    if op in (_Op.FREEBUSY, _Op.EXPAND_QUERY) and (
        _SUPPORTED_REPORT in preconditions
        or status in (207, 400, 405, 415, 422, 501)
        or (op is _Op.EXPAND_QUERY and status == 403 and preconditions)
    ):
        # The request refused, not the calendar (a bare 403 is about permissions, and stays
        # AuthFailed); anything else about the calendar shows up again on the calendar-query
        # that follows.
        return _ReportUnsupported(message)
    if (
        op in (_Op.FREEBUSY, _Op.EXPAND_QUERY, _Op.BUSY_QUERY)
        and 500 <= status <= 599
        and status not in (501, 503, 505)
        and retry_after is None
    ):
        # The server broke on the calendar's data (Xandikos answers 500 when one item is
        # unreadable). 503 and Retry-After ask for less load, not for more requests.
        return _QueryFailed(message)
    if op is _Op.CREATE and (status == 412 or preconditions & _UID_CONFLICT):
        if preconditions & _UID_CONFLICT:
            message += ": another resource in the calendar already has this UID"
        return AlreadyExists(message)
    if status in (408, 429) or (500 <= status <= 599 and status not in (501, 505)):
        return Transient(message, retry_after=_parse_retry_after(retry_after))
    if status == 403:
        return AuthFailed(message)
    if status in (404, 410):
        return NotFound(message)
    if status == 412:
        return PreconditionFailed(message)
    return ProtocolError(message)


def _translate(exc: BaseException, op: _Op, what: str) -> ConnectorError:
    """The one mapping from everything the caldav/HTTP stack can raise to connectors.errors."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, _HTTPStatusError):
        retry_after = exc.headers.get("Retry-After")
        return _translate_status(exc.status, exc.preconditions, retry_after, op, what)
    if isinstance(exc, caldav_error.RateLimitError):
        # Raised by the library itself for 429, and for 503 with Retry-After.
        return Transient(
            f"{what}: HTTP {exc.status} rate limited",
            retry_after=_parse_retry_after(exc.retry_after),
        )
    if isinstance(exc, caldav_error.DAVError):
        if exc.status is not None:
            preconditions = frozenset(exc.preconditions)
            return _translate_status(exc.status, preconditions, None, op, what)
        if isinstance(exc, caldav_error.NotFoundError):
            return NotFound(f"{what}: {exc.reason}")
        return ProtocolError(f"{what}: {exc}")
    if isinstance(exc, NotImplementedError):
        # DAVClient's answer to a WWW-Authenticate challenge it has no scheme for.
        return AuthFailed(f"{what}: {exc}")
    if isinstance(exc, http_lib.exceptions.ReadTimeout) and op in (
        _Op.FREEBUSY,
        _Op.EXPAND_QUERY,
        _Op.BUSY_QUERY,
    ):
        # Connected, but the server is still working on the query (an endless recurrence).
        return _QueryFailed(f"{what}: {type(exc).__name__}")
    if isinstance(
        exc,
        http_lib.exceptions.Timeout
        | http_lib.exceptions.ConnectionError
        | http_lib.exceptions.ChunkedEncodingError,
    ):
        return Transient(f"{what}: {_plain(exc)}")
    if isinstance(exc, http_lib.exceptions.RequestException):
        # Invalid URL, too many redirects, bad header: configuration, not weather.
        return ProtocolError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, OSError | http.client.HTTPException):
        # Refused, reset, timed out, a reply cut short, below the HTTP library's own types.
        return Transient(f"{what}: {_plain(exc)}")
    return ProtocolError(f"{what}: {type(exc).__name__}: {exc}")


def _plain(exc: BaseException) -> str:
    """One line an operator can act on ("could not reach host:port: connection refused"),
    rather than the HTTP library's repr of its connection pool."""
    text = unreachable(exc) or f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


@contextlib.contextmanager
def _translated(op: _Op, what: str) -> Iterator[None]:
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        raise _translate(exc, op, what) from exc


@dataclass(frozen=True, slots=True)
class _Member:
    href: str
    status: int | None  # the response-level status, present for sync deletions and 507
    etag: str | None
    is_collection: bool


@dataclass(frozen=True, slots=True)
class _Multistatus:
    members: list[_Member]
    sync_token: str | None


def _status_code(text: str | None) -> int | None:
    # "HTTP/1.1 404 Not Found"
    if not text:
        return None
    parts = text.split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def _href_path(text: str) -> str:
    return unquote(urlsplit(text.strip()).path)


def _parse_multistatus(tree: Any, what: str) -> _Multistatus:
    """The members of a PROPFIND or sync-collection multistatus (RFC 4918 13, RFC 6578 3.2)."""
    if tree is None or getattr(tree, "tag", None) != f"{DAV}multistatus":
        raise ProtocolError(f"{what}: expected a DAV:multistatus body")
    members: list[_Member] = []
    for response in tree.iterfind(f"{DAV}response"):
        href_el = response.find(f"{DAV}href")
        if href_el is None or not href_el.text:
            continue
        etag: str | None = None
        is_collection = False
        for propstat in response.iterfind(f"{DAV}propstat"):
            if _status_code(propstat.findtext(f"{DAV}status")) != 200:
                continue
            etag_el = propstat.find(f"{DAV}prop/{DAV}getetag")
            if etag_el is not None and etag_el.text:
                # Only XML whitespace is dropped: the quotes are part of the entity-tag.
                etag = etag_el.text.strip()
            if propstat.find(f"{DAV}prop/{DAV}resourcetype/{DAV}collection") is not None:
                is_collection = True
        members.append(
            _Member(
                href=_href_path(href_el.text),
                status=_status_code(response.findtext(f"{DAV}status")),
                etag=etag,
                is_collection=is_collection,
            )
        )
    token = tree.findtext(f"{DAV}sync-token")
    return _Multistatus(members=members, sync_token=token.strip() if token else None)


def _preconditions(tree: Any) -> frozenset[str]:
    """The precondition elements of a DAV:error body (RFC 4918 16)."""
    if tree is None or getattr(tree, "tag", None) != f"{DAV}error":
        return frozenset()
    return frozenset(child.tag for child in tree if isinstance(child.tag, str))


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _quote_path(path: str) -> str:
    return quote(path, safe="/")


def _body_text(response: Any) -> str:
    # The library keeps the undecoded bytes of a non-XML body in ``_raw_body``; its public
    # ``raw`` has CRLF rewritten to LF, so it is only the fallback.
    data = getattr(response, "_raw_body", None)
    if not isinstance(data, bytes) or not data:
        return str(response.raw or "")
    charset = "utf-8"
    match = _CHARSET_RE.search(response.headers.get("Content-Type") or "")
    if match:
        with contextlib.suppress(LookupError):
            charset = codecs.lookup(match.group(1)).name
    return data.decode(charset, errors="replace")


# -- busy time helpers ---------------------------------------------------------------------------


def _utc_window(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """``[start, end)`` in UTC, or None when it is empty. Naive times are a caller's bug."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("busy(): start and end must be timezone-aware")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return (start, end) if end > start else None


def _ical_utc(value: datetime, *, up: bool = False) -> str:
    """An iCalendar UTC date-time (whole seconds: rounded down, or up with ``up``)."""
    if up and value.microsecond:
        value += timedelta(seconds=1)
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _as_utc(value: date | datetime) -> datetime:
    """Aware UTC; a date is its midnight and a floating time is read as UTC (what Radicale and
    Xandikos do for free-busy when a calendar states no ``calendar-timezone``)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=UTC)


def _clip(
    start: datetime, end: datetime, window_start: datetime, window_end: datetime
) -> tuple[datetime, datetime] | None:
    start, end = max(start, window_start), min(end, window_end)
    return (start, end) if end > start else None


def _freebusy_periods(text: str, what: str) -> list[tuple[datetime, datetime, str]]:
    """The FREEBUSY periods of a free-busy-query answer as (start, end, FBTYPE), FREE left
    out. Anything but a VCALENDAR with a VFREEBUSY means the server does not do the report."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
        components = calendar.walk("VFREEBUSY")
        if not components:
            raise _ReportUnsupported(f"{what}: no VFREEBUSY in the answer")
        periods: list[tuple[datetime, datetime, str]] = []
        for component in components:
            values = component.get("FREEBUSY")
            if values is None:
                continue
            for period in values if isinstance(values, list) else [values]:
                # RFC 5545 3.2.9: an FBTYPE the client does not know counts as BUSY.
                fbtype = str(period.params.get("FBTYPE", "BUSY")).upper()
                if fbtype == "FREE":
                    continue
                periods.append((_as_utc(period.start), _as_utc(period.end), fbtype))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _ReportUnsupported(f"{what}: unreadable free-busy answer ({exc})") from exc
    return periods


def _calendar_data(tree: Any, what: str) -> list[tuple[str, str]]:
    """(href, calendar-data) of every resource in a calendar-query multistatus."""
    if tree is None or getattr(tree, "tag", None) != f"{DAV}multistatus":
        raise ProtocolError(f"{what}: expected a DAV:multistatus body")
    found: list[tuple[str, str]] = []
    for response in tree.iterfind(f"{DAV}response"):
        href = response.findtext(f"{DAV}href")
        if not href:
            continue
        for propstat in response.iterfind(f"{DAV}propstat"):
            if _status_code(propstat.findtext(f"{DAV}status")) != 200:
                continue
            data = propstat.findtext(f"{DAV}prop/{CALDAV}calendar-data")
            if data and data.strip():
                found.append((_href_path(href), data))
    return found


def _occurrence_busy(
    event: Any, start: datetime, end: datetime, options: BusyOptions
) -> tuple[datetime, datetime, bool] | None:
    """(start, end, tentative) of one occurrence that makes the therapist busy, clipped to the
    window; None for syncd's own entries, cancelled, transparent (per ``options`` for all-day
    events) and, unless ``options.tentative_busy``, tentative ones."""
    uid = str(event.get("UID", ""))
    if uid.startswith(_SYNCD_UID_PREFIX) or _SYNCD_KIND in event:
        return None
    status = str(event.get("STATUS", "CONFIRMED")).strip().upper()
    if status == "CANCELLED":
        return None
    transparent = str(event.get("TRANSP", "OPAQUE")).strip().upper() == "TRANSPARENT"
    dtstart = event.get("DTSTART")
    if dtstart is None:
        return None
    first = dtstart.dt
    all_day = not isinstance(first, datetime)
    tentative = status == "TENTATIVE"
    if not options.counts(all_day=all_day, transparent=transparent, tentative=tentative):
        return None
    if event.get("DTEND") is not None:
        last = event["DTEND"].dt
    elif event.get("DURATION") is not None:
        last = first + event["DURATION"].dt
    else:
        last = first + timedelta(days=1) if all_day else first
    clipped = _clip(_as_utc(first), _as_utc(last), start, end)
    return None if clipped is None else (clipped[0], clipped[1], tentative)


# What busy time reads of a VEVENT (with _occurrence_busy and the recurrence expansion); the rest
# is dropped before parsing (see _busy_lines).
_BUSY_PROPERTIES: Final = frozenset(
    {
        "UID",
        "DTSTART",
        "DTEND",
        "DURATION",
        "RRULE",
        "RDATE",
        "EXDATE",
        "EXRULE",
        "RECURRENCE-ID",
        "STATUS",
        "TRANSP",
        _SYNCD_KIND,
    }
)
# A line break that does not start a folded continuation: the end of a content line.
_LOGICAL_LINE_END: Final = re.compile(r"\r?\n(?![ \t])")


def _busy_lines(text: str) -> str:
    """The item with only what busy time reads: in each VEVENT the _BUSY_PROPERTIES and no
    nested component (VALARM); outside (VTIMEZONE, the calendar's own properties) everything.
    Titles, descriptions, attendees and inline attachments are never parsed: a 2 MB description
    costs the parser over a second, and what is not parsed cannot leak."""
    kept: list[str] = []
    depth = 0  # 0: outside any VEVENT, 1: in one, more: in a component nested in it
    for line in _LOGICAL_LINE_END.split(text):
        head, _, value = line.partition(":")
        name = head.split(";", 1)[0].strip().upper()
        if name == "BEGIN" and (depth or value.strip().upper() == "VEVENT"):
            depth += 1
            if depth == 1:
                kept.append(line)
        elif name == "END" and depth:
            depth -= 1
            if depth == 0:
                kept.append(line)
        elif depth == 0 or (depth == 1 and name in _BUSY_PROPERTIES):
            kept.append(line)
    return "\r\n".join(kept)


def _as_list(value: Any) -> list[Any]:
    # icalendar gives a list when a property or rule part is repeated, else the one value.
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _recurrence_steps(event: Any, end: datetime) -> int:
    """An upper bound of the instants the expansion steps through for ``event``'s rules, from
    its DTSTART to ``end``: dateutil walks every candidate from DTSTART on, so an old or dense
    rule costs time and memory before the window is even reached."""
    rules = [*_as_list(event.get("RRULE")), *_as_list(event.get("EXRULE"))]
    dtstart = event.get("DTSTART")
    if not rules or dtstart is None:
        return 0
    first = _as_utc(dtstart.dt)
    total = 0
    for rule in rules:
        freq = str(next(iter(_as_list(rule.get("FREQ"))), "")).upper()
        unit = _FREQ_SECONDS.get(freq)
        if unit is None:
            raise _Unreadable("recurrence rule without a known FREQ")
        interval = int(next(iter(_as_list(rule.get("INTERVAL"))), 1))
        if interval < 1:
            raise _Unreadable("recurrence rule with INTERVAL below 1")
        limit = end
        for until in _as_list(rule.get("UNTIL"))[:1]:
            limit = min(limit, _as_utc(until))
        span = max(0.0, (limit - first).total_seconds())
        steps = int(span // (unit * interval)) + 1
        if freq in _DAYS_PER_PERIOD and any(rule.get(part) for part in _DAY_PARTS):
            steps *= _DAYS_PER_PERIOD[freq]
        for part in _FINER_PARTS.get(freq, ("BYHOUR", "BYMINUTE", "BYSECOND")):
            steps *= max(1, len(_as_list(rule.get(part))))
        count = _as_list(rule.get("COUNT"))
        if count and not any(str(key).upper().startswith("BY") for key in rule):
            # Every candidate of a rule without BY parts is an instance, so COUNT bounds them.
            steps = min(steps, max(0, int(count[0])))
        total += steps
    return total


def _ident(value: Any) -> str | None:
    return None if value is None else repr(getattr(value, "dt", value))


def _occurrences(query: Any, start: datetime, end: datetime, sliced: bool) -> Iterator[Any]:
    """The occurrences of ``query`` overlapping [start, end), possibly more than once each.
    ``sliced`` reads a dense item a few hours at a time, so that the item's occurrence cap stops
    the expansion after a bounded amount of work (the library builds a whole span at once)."""
    if not sliced:
        yield from query.between(start, end)
        return
    low, span = start, timedelta(minutes=15)
    while low < end:
        high = min(low + span, end)
        batch = query.between(low, high)
        yield from batch
        if len(batch) < 64:
            span *= 2
        low = high


def _item_busy(
    calendar: Any, start: datetime, end: datetime, options: BusyOptions, deadline: float
) -> list[tuple[datetime, datetime, bool]]:
    """(start, end, tentative) of every busy occurrence of one calendar item in the window.
    Raises _Unreadable for an item that cannot be used (too many occurrences, too dense a rule)
    and Transient once ``deadline`` (monotonic) has passed."""
    events = calendar.walk("VEVENT")
    if len(events) > _MAX_OCCURRENCES:
        raise _Unreadable(f"more than {_MAX_OCCURRENCES} events")
    instants = 0  # at most this many occurrences in all: few enough is expanded at once
    for event in events:
        steps = _recurrence_steps(event, end)
        if steps > _MAX_RECURRENCE_STEPS:
            raise _Unreadable("recurrence too dense to expand")
        rdates = sum(len(getattr(v, "dts", [v])) for v in _as_list(event.get("RDATE")))
        instants += steps + rdates + 1
    sliced = instants > _MAX_OCCURRENCES
    seen: set[tuple[str, str | None, str | None]] = set()
    found: list[tuple[datetime, datetime, bool]] = []
    for occurrence in _occurrences(recurring_ical_events.of(calendar), start, end, sliced):
        key = (
            str(occurrence.get("UID", "")),
            _ident(occurrence.get("RECURRENCE-ID")),
            _ident(occurrence.get("DTSTART")),
        )
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > _MAX_OCCURRENCES:
            raise _Unreadable(f"more than {_MAX_OCCURRENCES} occurrences in the window")
        if len(seen) % 64 == 0 and monotonic() > deadline:
            raise Transient("busy: out of time expanding an item")
        interval = _occurrence_busy(occurrence, start, end, options)
        if interval is not None:
            found.append(interval)
    return found


# -- the write path's transport ------------------------------------------------------------------

# Writes skip the DAV client once the server has shown which credentials it wants and go straight
# to the library's own HTTP session (the same niquests keep-alive pool, TLS settings and proxies):
# the DAV client's per-request work costs ~3 ms of CPU, 5-10% of a PUT to a local server, and a
# bulk pass is a sequential loop of PUTs.
_LEAN_METHODS: Final = frozenset({"PUT", "DELETE"})


class _WireResponse:
    """A reply from the HTTP session, with what _request's callers read from the library's
    DAVResponse: status, headers (case-insensitive ``get``), raw text and the XML tree."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body.decode("utf-8", errors="replace")
        self.tree: ET.Element | None = None
        if body.strip() and "xml" in (headers.get("Content-Type") or ""):
            # Only ever a DAV:error body (preconditions); expat refuses entity expansion bombs.
            with contextlib.suppress(ET.ParseError):
                self.tree = ET.fromstring(body)  # noqa: S314 - see above


class CalDAVConnector:
    """One calendar on a CalDAV server, behind the :class:`connectors.base.Connector` protocol.

    Not thread-safe: the engine serialises the work of one therapist, which is all one
    connector instance serves.
    """

    # Some servers (Xandikos) leave out of a sync-collection diff a resource created and deleted
    # after the token; the engine then re-reads the token after its own writes.
    reports_all_deletions = False

    def __init__(self, settings: CalDAVSettings) -> None:
        """No network I/O happens here; unusable settings raise ValueError."""
        dedicated = not settings.calendar_url
        if dedicated and (not settings.calendar_id or "/" in settings.calendar_id):
            raise ValueError("calendar_id must be a non-empty name without '/'")
        self.settings = settings
        try:
            self._client: Any = _DAVClientFactory(
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
        # Every request goes through this session, the library's discovery included: each new
        # connection (redirect hops, principal, calendar home and calendars on other hosts)
        # is resolved and checked by the policy, and opened to the address that was checked.
        library_session = self._client.session
        self._client.session = niquests_session(
            settings.egress, multiplexed=bool(getattr(library_session, "multiplexed", False))
        )
        library_session.close()
        self._calendar_url: str | None = None
        self._calendar_path = ""
        # None until the server has shown whether sync-collection works; then fixed for the
        # lifetime of this instance.
        self._sync_supported: bool | None = None
        # The same for free-busy-query and for calendar-query with <C:expand> (busy time).
        self._freebusy_supported: bool | None = None
        self._expand_supported: bool | None = None
        # The items the last busy() call left out: href -> why (never any of the item's text).
        self.busy_skipped: dict[str, str] = {}
        self._home: Any = None  # the library's CalendarSet for the calendar home, once found
        # Whether a request through the library has gone through with the credentials it now
        # holds (none, or the scheme the server asked for); until then writes use the library.
        self._auth_settled = False
        parts = urlsplit(settings.url)
        self._auth_key = (f"{parts.scheme}://{parts.netloc}".lower(), settings.username)
        self._preemptive_basic = self._auth_key in _BASIC_AUTH_ORIGINS
        if self._preemptive_basic:
            self._client.auth = http_lib.auth.HTTPBasicAuth(settings.username, settings.password)

    # -- Connector protocol ---------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        if self._calendar_url is not None:
            return self._calendar_url
        with _translated(_Op.READ, "ensure_calendar"):
            if self.settings.calendar_url:
                url = _with_slash(urljoin(self.settings.url, self.settings.calendar_url))
                kind = self._resource_kind(url)
                if kind is None:
                    raise NotFound(f"calendar {url} does not exist")
                if kind != "calendar":
                    raise ProtocolError(f"{url} is not a calendar collection")
            else:
                url = self._find_or_create_dedicated()
        self._calendar_url = url
        self._calendar_path = _href_path(url)
        return url

    def changes(self, token: str | None) -> Changes:
        calendar = self._calendar()
        try:
            if token is not None and self._sync_supported is not False:
                try:
                    return self._sync(calendar, token)
                except InvalidSyncToken as exc:
                    log.info("sync token for %s refused (%s); full listing", calendar, exc)
                except _SyncUnsupported as exc:
                    log.info("sync-collection refused by %s (%s); full listing", calendar, exc)
            return self._full_listing(calendar)
        except NotFound:
            # The calendar itself is gone; let the next ensure_calendar() look again.
            self._forget_calendar()
            raise

    def get(self, href: str) -> FetchedItem:
        url = self._member_url(href)
        response = self._request("GET", url, _Op.READ, ok=(200,))
        etag = response.headers.get("ETag")
        if etag is None:
            etag = self._etag_of(href)
        return FetchedItem(href=href, etag=etag, body=_body_text(response))

    def href_for(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise ProtocolError(f"invalid resource name {name!r}")
        self._calendar()
        return self._calendar_path + name

    def create(self, name: str, body: str) -> RemoteItem:
        href = self.href_for(name)
        calendar = self._calendar()
        response = self._request(
            "PUT",
            calendar + quote(name, safe=""),
            _Op.CREATE,
            body=WireBytes(body.encode("utf-8")),
            headers={"If-None-Match": "*", "Content-Type": _ICS_CONTENT_TYPE},
            ok=(200, 201, 204),
        )
        return RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        url = self._member_url(href)
        try:
            response = self._request(
                "PUT",
                url,
                _Op.WRITE,
                body=WireBytes(body.encode("utf-8")),
                headers={"If-Match": etag, "Content-Type": _ICS_CONTENT_TYPE},
                ok=(200, 201, 204),
            )
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise
        return RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def delete(self, href: str, etag: str | None) -> None:
        url = self._member_url(href)
        headers = {"If-Match": etag} if etag is not None else {}
        try:
            self._request("DELETE", url, _Op.WRITE, headers=headers, ok=(200, 202, 204))
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise

    def delete_calendar(self) -> bool:
        """Delete the whole calendar collection (used when disconnecting syncd's own). Checked
        afterwards: False when the server acknowledged the DELETE but still has the calendar,
        so the caller can remove syncd's entries one by one instead."""
        url = self.ensure_calendar()
        with contextlib.suppress(NotFound):
            self._request("DELETE", url, _Op.WRITE, ok=(200, 202, 204))
        with _translated(_Op.READ, "delete_calendar"):
            gone = self._resource_kind(url) is None
        if gone:
            self._forget_calendar()
        return gone

    def close(self) -> None:
        with _translated(_Op.READ, "close"):
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- busy time (BusyReader) -----------------------------------------------------------------

    def calendars(self) -> list[CalendarInfo]:
        """The VEVENT-capable calendars in the principal's calendar home; ``ref`` is the
        calendar's absolute URL, ``is_syncd`` marks syncd's dedicated calendar."""
        with _translated(_Op.READ, "calendars"):
            home = self._calendar_home_url()
        response = self._request(
            "PROPFIND",
            home,
            _Op.READ,
            body=_CALENDARS_BODY,
            headers={"Depth": "1", **_XML_HEADERS},
            ok=(207,),
        )
        tree = response.tree
        if tree is None or tree.tag != f"{DAV}multistatus":
            raise ProtocolError(f"PROPFIND {home}: expected a DAV:multistatus body")
        found: list[CalendarInfo] = []
        for element in tree.iterfind(f"{DAV}response"):
            href = element.findtext(f"{DAV}href")
            if not href:
                continue
            name: str | None = None
            is_calendar = False
            components: set[str] | None = None  # None: the server states no restriction
            for propstat in element.iterfind(f"{DAV}propstat"):
                if _status_code(propstat.findtext(f"{DAV}status")) != 200:
                    continue
                prop = propstat.find(f"{DAV}prop")
                if prop is None:
                    continue
                name = prop.findtext(f"{DAV}displayname") or name
                if prop.find(f"{DAV}resourcetype/{CALDAV}calendar") is not None:
                    is_calendar = True
                supported = prop.find(f"{CALDAV}supported-calendar-component-set")
                if supported is not None and len(supported):
                    components = {
                        str(comp.get("name", "")).upper()
                        for comp in supported.iterfind(f"{CALDAV}comp")
                    }
            if not is_calendar or (components is not None and "VEVENT" not in components):
                continue
            url = _with_slash(urljoin(home, href.strip()))
            path = _href_path(url)
            label = name.strip() if name and name.strip() else path.rstrip("/").rsplit("/", 1)[-1]
            found.append(CalendarInfo(ref=url, name=label, is_syncd=self._is_dedicated(path)))
        return found

    def busy(
        self,
        start: datetime,
        end: datetime,
        calendars: Sequence[str],
        options: BusyOptions,
    ) -> list[BusyInterval]:
        """Busy intervals overlapping ``[start, end)``, clipped to it, in aware UTC, sorted.

        Per calendar: nothing for syncd's dedicated calendar; free-busy-query where it is known
        to give the right answer (not the calendar syncd writes into, ``all_day`` following
        transparency, the server not having refused it before); calendar-query otherwise. A
        calendar that does not exist raises NotFound.
        """
        if isinstance(calendars, str):
            raise TypeError("busy(): calendars is a sequence of refs, not one ref")
        window = _utc_window(start, end)
        if window is None:
            return []
        start, end = window
        self.busy_skipped = {}
        found: list[BusyInterval] = []
        for ref in calendars:
            url = _with_slash(urljoin(self.settings.url, ref))
            with _translated(_Op.READ, "busy"):
                role = self._role(url)
            if role == "syncd":
                continue
            # Each calendar has the budget of one request; the server-side query a share of it.
            now = monotonic()
            deadline = now + self.settings.timeout
            itemwise = (self.settings.username, url)
            if _ITEMWISE_UNTIL.get(itemwise, 0.0) <= now:
                try:
                    server_deadline = now + self.settings.timeout * _SERVER_SHARE
                    found.extend(
                        self._server_busy(
                            ref, url, role, start, end, options, server_deadline, deadline
                        )
                    )
                    continue
                except _QueryFailed as exc:
                    log.warning("busy: query failed on %s (%s); reading item by item", url, exc)
                    _ITEMWISE_UNTIL[itemwise] = monotonic() + _ITEMWISE_FOR
            found.extend(self._itemwise_busy(ref, url, start, end, options, deadline))
        found.sort(key=lambda i: (i.start, i.end, i.calendar, i.ref or ""))
        return found

    def _is_dedicated(self, path: str) -> bool:
        """Whether the calendar at ``path`` (decoded) is syncd's dedicated one: the calendar
        ``calendar_id`` directly in the principal's calendar home. The home is only looked up
        when the last segment matches, so most calls cost nothing."""
        parent, _, segment = path.rstrip("/").rpartition("/")
        if segment != self.settings.calendar_id:
            return False
        return _with_slash(parent) == _with_slash(_href_path(self._calendar_home_url()))

    def _role(self, url: str) -> str:
        """ "syncd" (the dedicated calendar: never busy), "write" (an existing calendar syncd
        writes into: its entries are skipped) or "other" (no syncd entries in it)."""
        path = _with_slash(_href_path(url))
        if self._is_dedicated(path):
            return "syncd"
        configured = self.settings.calendar_url
        if configured:
            target = _with_slash(_href_path(urljoin(self.settings.url, configured)))
            if path == target:
                return "write"
        return "other"

    def _server_busy(
        self,
        ref: str,
        url: str,
        role: str,
        start: datetime,
        end: datetime,
        options: BusyOptions,
        server_deadline: float,
        deadline: float,
    ) -> list[BusyInterval]:
        """Busy time as the server evaluates it: free-busy-query where it gives the right answer,
        calendar-query otherwise. Raises _QueryFailed when the server breaks on the calendar or
        has not answered by ``server_deadline``."""
        if (
            role == "other"
            and options.all_day == "transparency"
            and self._freebusy_supported is not False
        ):
            intervals = self._free_busy(ref, url, start, end, options, server_deadline)
            if intervals is not None:
                return intervals
        return self._queried_busy(ref, url, start, end, options, server_deadline, deadline)

    @contextlib.contextmanager
    def _time_left(self, deadline: float, what: str, *, server: bool = False) -> Iterator[None]:
        """Requests inside wait no longer than until ``deadline`` (monotonic). With no time left:
        _QueryFailed for the server-side attempt (``server``), so that the item-wise read takes
        over; Transient otherwise."""
        left = deadline - monotonic()
        if left <= 0:
            failure = _QueryFailed if server else Transient
            raise failure(f"{what}: not done within {self.settings.timeout:g} s")
        saved = self._client.timeout
        self._client.timeout = min(float(saved or left), left)
        try:
            yield
        finally:
            self._client.timeout = saved

    def _free_busy(
        self,
        ref: str,
        url: str,
        start: datetime,
        end: datetime,
        options: BusyOptions,
        server_deadline: float,
    ) -> list[BusyInterval] | None:
        """The free-busy-query answer, or None when the server turned out not to do it."""
        body = _FREEBUSY_BODY.format(start=_ical_utc(start), end=_ical_utc(end, up=True))
        try:
            with self._time_left(server_deadline, f"REPORT {url}", server=True):
                response = self._request(
                    "REPORT",
                    url,
                    _Op.FREEBUSY,
                    body=body,
                    headers={"Depth": "1", **_XML_HEADERS},
                    ok=(200,),
                )
            periods = _freebusy_periods(_body_text(response), f"REPORT {url}")
        except _ReportUnsupported as exc:
            log.info("free-busy-query unusable on %s (%s); using calendar-query", url, exc)
            self._freebusy_supported = False
            return None
        self._freebusy_supported = True
        found: list[BusyInterval] = []
        for period_start, period_end, fbtype in periods:
            tentative = fbtype == "BUSY-TENTATIVE"
            if tentative and not options.tentative_busy:
                continue
            clipped = _clip(period_start, period_end, start, end)
            if clipped is not None:
                found.append(BusyInterval(*clipped, calendar=ref, tentative=tentative))
        return found

    def _queried_busy(
        self,
        ref: str,
        url: str,
        start: datetime,
        end: datetime,
        options: BusyOptions,
        server_deadline: float,
        deadline: float,
    ) -> list[BusyInterval]:
        bounds = {"start": _ical_utc(start), "end": _ical_utc(end, up=True)}
        expand = self._expand_supported is not False
        headers = {"Depth": "1", **_XML_HEADERS}
        what = f"REPORT {url}"
        try:
            with self._time_left(server_deadline, what, server=True):
                response = self._request(
                    "REPORT",
                    url,
                    _Op.EXPAND_QUERY if expand else _Op.BUSY_QUERY,
                    body=_QUERY_BODY.format(
                        expand=_EXPAND.format(**bounds) if expand else "", **bounds
                    ),
                    headers=headers,
                    ok=(207,),
                )
        except _ReportUnsupported as exc:
            log.info("calendar-query with expand refused by %s (%s); expanding here", url, exc)
            self._expand_supported = expand = False
            with self._time_left(server_deadline, what, server=True):
                response = self._request(
                    "REPORT",
                    url,
                    _Op.BUSY_QUERY,
                    body=_QUERY_BODY.format(expand="", **bounds),
                    headers=headers,
                    ok=(207,),
                )
        found: list[BusyInterval] = []
        unexpanded = instances = False
        for href, text in _calendar_data(response.tree, what):
            calendar = self._parse_item(ref, href, text)
            if calendar is None:
                continue
            events = calendar.walk("VEVENT")
            unexpanded = unexpanded or any("RRULE" in e or "RDATE" in e for e in events)
            instances = instances or any("RECURRENCE-ID" in e for e in events)
            found.extend(self._item_intervals(ref, href, calendar, start, end, options, deadline))
        if expand and unexpanded:
            log.info("%s does not expand recurrences; expanding them here from now on", url)
            self._expand_supported = False
        elif expand and instances:
            self._expand_supported = True
        return found

    def _itemwise_busy(
        self,
        ref: str,
        url: str,
        start: datetime,
        end: datetime,
        options: BusyOptions,
        deadline: float,
    ) -> list[BusyInterval]:
        """Busy time of a calendar the server cannot evaluate: its items listed (PROPFIND),
        fetched in chunks (calendar-multiget) and expanded here, each on its own, so that a
        broken item is skipped (recorded in ``busy_skipped``) instead of failing the calendar.
        A chunk the server fails on is split until the failing items are alone. Raises
        Transient when ``deadline`` passes first: a partial answer would show busy time as free."""
        with self._time_left(deadline, f"PROPFIND {url}"):
            response = self._request(
                "PROPFIND",
                url,
                _Op.READ,
                body=_PROPFIND_BODY,
                headers={"Depth": "1", **_XML_HEADERS},
                ok=(207,),
            )
        own = _with_slash(_href_path(url))
        hrefs = sorted(
            member.href
            for member in _parse_multistatus(response.tree, f"PROPFIND {url}").members
            if member.status in (None, 200)
            and not member.is_collection
            and _with_slash(member.href) != own
        )
        pending = [hrefs[i : i + _MULTIGET_CHUNK] for i in range(0, len(hrefs), _MULTIGET_CHUNK)]
        found: list[BusyInterval] = []
        while pending:
            chunk = pending.pop(0)
            try:
                with self._time_left(deadline, f"REPORT {url}"):
                    items = self._multiget(url, chunk)
            except _QueryFailed as exc:
                if len(chunk) == 1:
                    self._skip(ref, chunk[0], f"the server fails to send it ({exc})")
                else:
                    half = len(chunk) // 2
                    pending[:0] = [chunk[:half], chunk[half:]]
                continue
            for href in sorted(set(chunk) - {href for href, _ in items}):
                self._skip(ref, href, "the server sent no calendar data for it")
            for href, text in items:
                calendar = self._parse_item(ref, href, text)
                if calendar is not None:
                    found.extend(
                        self._item_intervals(ref, href, calendar, start, end, options, deadline)
                    )
        return found

    def _multiget(self, url: str, hrefs: Sequence[str]) -> list[tuple[str, str]]:
        body = _MULTIGET_BODY.format(
            hrefs="".join(f"<D:href>{escape(_quote_path(href))}</D:href>" for href in hrefs)
        )
        response = self._request(
            "REPORT",
            url,
            _Op.BUSY_QUERY,
            body=body,
            headers={"Depth": "1", **_XML_HEADERS},
            ok=(207,),
        )
        return _calendar_data(response.tree, f"REPORT {url}")

    def _parse_item(self, ref: str, href: str, text: str) -> Any:
        """The item as an icalendar Calendar, or None (recorded) when it cannot be parsed."""
        try:
            return icalendar.Calendar.from_ical(_busy_lines(text))
        except Exception as exc:  # a hostile item may make the parser raise anything
            self._skip(ref, href, f"unreadable ({type(exc).__name__})")
            return None

    def _item_intervals(
        self,
        ref: str,
        href: str,
        calendar: Any,
        start: datetime,
        end: datetime,
        options: BusyOptions,
        deadline: float,
    ) -> list[BusyInterval]:
        if monotonic() > deadline:
            raise Transient(f"busy: {ref} not read within {self.settings.timeout:g} s")
        try:
            spans = _item_busy(calendar, start, end, options, deadline)
        except ConnectorError:
            raise
        except _Unreadable as exc:
            self._skip(ref, href, str(exc))
            return []
        except Exception as exc:  # so may its expansion
            self._skip(ref, href, f"cannot expand ({type(exc).__name__})")
            return []
        return [
            BusyInterval(s, e, calendar=ref, tentative=tentative, ref=href)
            for s, e, tentative in spans
        ]

    def _skip(self, ref: str, href: str, reason: str) -> None:
        # Only the href and a reason of our own wording: an exception's message can quote the
        # item's text (a title, an attendee), so only its type is ever named.
        self.busy_skipped[href] = reason
        log.warning("busy: skipped %s in %s: %s", href, ref, reason)

    # -- calendar discovery ---------------------------------------------------------------------

    def _calendar_home(self) -> Any:
        """The principal's calendar home (the library's CalendarSet), discovered once."""
        if self._home is None:
            principal = self._with_auth_fallback(self._client.principal)
            self._home = principal.calendar_home_set
        return self._home

    def _calendar_home_url(self) -> str:
        return _with_slash(str(self._calendar_home().url))

    def _find_or_create_dedicated(self) -> str:
        home = self._calendar_home()
        home_url = _with_slash(str(home.url))
        candidate = home_url + quote(self.settings.calendar_id, safe="") + "/"
        kind = self._resource_kind(candidate)
        if kind == "calendar":
            return candidate
        if kind is not None:
            raise ProtocolError(f"{candidate} exists but is not a calendar collection")
        try:
            calendar = home.make_calendar(
                name=self.settings.calendar_name,
                cal_id=self.settings.calendar_id,
                supported_calendar_component_set=["VEVENT"],
            )
        except Exception:
            # Another replica may have created it between the PROPFIND and the MKCALENDAR.
            if self._resource_kind(candidate) == "calendar":
                return candidate
            raise
        return _with_slash(str(calendar.url))

    def _resource_kind(self, url: str) -> str | None:
        """What is at ``url``: "calendar", "collection", "resource", or None when absent."""
        try:
            response = self._request(
                "PROPFIND",
                url,
                _Op.READ,
                body="""<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>""",
                headers={"Depth": "0", **_XML_HEADERS},
                ok=(207,),
            )
        except NotFound:
            return None
        tree = response.tree
        if tree is None or tree.tag != f"{DAV}multistatus":
            raise ProtocolError(f"PROPFIND {url}: expected a DAV:multistatus body")
        for element in tree.iterfind(f"{DAV}response"):
            if _status_code(element.findtext(f"{DAV}status")) in (404, 410):
                return None
            for propstat in element.iterfind(f"{DAV}propstat"):
                if _status_code(propstat.findtext(f"{DAV}status")) != 200:
                    continue
                resourcetype = propstat.find(f"{DAV}prop/{DAV}resourcetype")
                if resourcetype is None:
                    continue
                if resourcetype.find(f"{CALDAV}calendar") is not None:
                    return "calendar"
                if resourcetype.find(f"{DAV}collection") is not None:
                    return "collection"
            return "resource"
        return None

    def _calendar(self) -> str:
        """The calendar URL for the other methods. A configured ``calendar_url`` is used without
        the PROPFIND that ensure_calendar() spends on it: a connector made for one sync pass
        then costs a single request when nothing changed, and a calendar that has gone away
        still shows up as NotFound from the request that needed it."""
        if self._calendar_url is not None:
            return self._calendar_url
        if self.settings.calendar_url:
            url = _with_slash(urljoin(self.settings.url, self.settings.calendar_url))
            self._calendar_path = _href_path(url)
            return url
        return self.ensure_calendar()

    def _forget_calendar(self) -> None:
        self._calendar_url = None
        self._calendar_path = ""

    # -- change detection -----------------------------------------------------------------------

    def _full_listing(self, calendar: str) -> Changes:
        if self._sync_supported is not False:
            try:
                changes = self._sync(calendar, "")
            except _SyncUnsupported as exc:
                log.info("sync-collection unsupported by %s (%s); using PROPFIND", calendar, exc)
            else:
                self._sync_supported = True
                return changes
        changes = self._propfind_listing(calendar)
        self._sync_supported = False
        return changes

    def _sync(self, calendar: str, token: str) -> Changes:
        """sync-collection REPORT from ``token`` ("" for everything), following truncation."""
        full = token == ""
        op = _Op.SYNC_INITIAL if full else _Op.SYNC
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for page in range(_MAX_SYNC_PAGES):
            try:
                response = self._request(
                    "REPORT",
                    calendar,
                    op,
                    body=_SYNC_BODY.format(token=escape(token)),
                    headers={"Depth": "0", **_XML_HEADERS},
                    ok=(207,),
                )
            except InvalidSyncToken as exc:
                if page == 0:
                    raise
                raise ProtocolError(f"server refused the sync token it just issued: {exc}") from exc
            result = _parse_multistatus(response.tree, f"REPORT {calendar}")
            truncated = False
            for member in result.members:
                if member.status == 507:
                    # RFC 6578 3.6: the reply was cut short; continue from its token.
                    truncated = True
                elif self._is_calendar_or_child_collection(member):
                    continue
                elif member.status in (404, 410):
                    changed.pop(member.href, None)
                    if not full:
                        deleted.add(member.href)
                elif member.status in (None, 200):
                    changed[member.href] = member.etag or ""
                    deleted.discard(member.href)
            if not truncated:
                return Changes(
                    full=full, changed=changed, deleted=frozenset(deleted), token=result.sync_token
                )
            if not result.sync_token or result.sync_token == token:
                raise ProtocolError(f"REPORT {calendar}: truncated reply without a new sync token")
            token = result.sync_token
            op = _Op.SYNC
        raise ProtocolError(f"REPORT {calendar}: still truncated after {_MAX_SYNC_PAGES} pages")

    def _propfind_listing(self, calendar: str) -> Changes:
        response = self._request(
            "PROPFIND",
            calendar,
            _Op.READ,
            body=_PROPFIND_BODY,
            headers={"Depth": "1", **_XML_HEADERS},
            ok=(207,),
        )
        result = _parse_multistatus(response.tree, f"PROPFIND {calendar}")
        changed = {
            member.href: member.etag or ""
            for member in result.members
            if member.status in (None, 200)
            and not member.is_collection
            and not self._is_calendar_or_child_collection(member)
        }
        return Changes(full=True, changed=changed, token=None)

    def _is_calendar_or_child_collection(self, member: _Member) -> bool:
        return member.href.endswith("/") or member.href == self._calendar_path.rstrip("/")

    # -- single resources -----------------------------------------------------------------------

    def _member_url(self, href: str) -> str:
        calendar = self._calendar()
        path = urlsplit(href).path if "://" in href else href
        if not path.startswith("/"):
            raise ProtocolError(f"href {href!r} is not an absolute path")
        if path.startswith(self._calendar_path):
            # Keep the calendar's own spelling from the server and encode only the name.
            return calendar + _quote_path(path[len(self._calendar_path) :])
        parts = urlsplit(calendar)
        return f"{parts.scheme}://{parts.netloc}{_quote_path(path)}"

    def _etag_after_write(self, href: str, response: Any) -> str:
        etag = response.headers.get("ETag")
        if etag:
            return str(etag)
        # RFC 4791 5.3.4: a server that altered the body on storage sends no ETag; the
        # stored resource's ETag is one PROPFIND away, without downloading the body.
        return self._etag_of(href)

    def _etag_of(self, href: str) -> str:
        url = self._member_url(href)
        response = self._request(
            "PROPFIND",
            url,
            _Op.READ,
            body=_PROPFIND_BODY,
            headers={"Depth": "0", **_XML_HEADERS},
            ok=(207,),
        )
        for member in _parse_multistatus(response.tree, f"PROPFIND {url}").members:
            if member.status in (404, 410):
                raise NotFound(f"PROPFIND {url}: HTTP {member.status}")
            if member.etag:
                return member.etag
        raise ProtocolError(f"PROPFIND {url}: server reports no getetag")

    def _raise_if_absent(self, href: str) -> None:
        """Tell "gone" from "changed" after a 412: servers answer If-Match on a missing
        resource with 412 (RFC 9110 13.1.1), but the engine must recreate, not merge."""
        try:
            kind = self._resource_kind(self._member_url(href))
        except ConnectorError:
            return
        if kind is None:
            raise NotFound(f"{href} does not exist")

    # -- transport ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        op: _Op,
        *,
        body: str | bytes = "",
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...],
    ) -> Any:
        what = f"{method} {url}"
        with _translated(op, what):
            response: Any = None
            if method in _LEAN_METHODS:
                response = self._lean_request(method, url, body, headers or {})
            if response is None:
                response = self._with_auth_fallback(
                    lambda: self._client.request(url, method, body, dict(headers or {}))
                )
            status = int(response.status)
            if status not in ok:
                raise _HTTPStatusError(
                    status, response.headers or {}, _preconditions(response.tree)
                )
            return response

    def _with_auth_fallback(self, call: Callable[[], _T]) -> _T:
        try:
            result = call()
        except caldav_error.AuthorizationError as exc:
            if exc.status != 401 or not self._preemptive_basic:
                raise
            # Basic was assumed from another connector's experience and refused (the password
            # changed, or the server now wants another scheme): forget it and let the library
            # negotiate from the server's challenge, which also tells a wrong password apart.
            self._preemptive_basic = False
            _BASIC_AUTH_ORIGINS.discard(self._auth_key)
            self._client.auth = None
            result = call()
        if isinstance(self._client.auth, http_lib.auth.HTTPBasicAuth):
            _BASIC_AUTH_ORIGINS.add(self._auth_key)
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
        auth = self._client.auth
        if auth is not None and not isinstance(auth, http_lib.auth.HTTPBasicAuth):
            return None
        sent = {
            "User-Agent": str(self._client.headers.get("User-Agent", "syncd")),
            **pass_headers(),
            **headers,
        }
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        reply = self._client.session.request(
            method,
            url,
            data=data or None,
            headers=sent,
            auth=auth,
            timeout=self.settings.timeout,
            allow_redirects=False,
        )
        if reply.status_code == 401:
            self._auth_settled = False
            return None
        return _WireResponse(int(reply.status_code), reply.headers, reply.content or b"")

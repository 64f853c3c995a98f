"""Google Calendar behind the connector interface (google-api-python-client + google-auth).

Hrefs and ids. Google has no resource names, so syncd makes one: an event's id is the base32hex
encoding of its resource name, and its href is the calendar's path plus that name. The mapping is
a bijection, so a deletion that an incremental listing reports by id alone still maps back to the
href the engine knows, without any state. An insert repeated after a crash therefore hits the
same id and gets 409 instead of a duplicate. Events created by anyone else have ids that do not
decode to a name; they get ``id:<event id>`` as their name, which syncd never writes to.

Bodies are iCalendar at the interface (see :mod:`connectors.google_ical`), so the engine and the
contract suite are the same for every provider. Writes can be batched (:meth:`write_many`, at most
``max_batch`` per HTTP request, each part's result reported separately).

Busy time (:class:`connectors.base.BusyReader`). ``calendars()`` is calendarList.list: ``ref`` is
the calendar id, and ``is_syncd`` marks syncd's dedicated calendar (the one whose description
carries ``MARKER``) and nothing else. ``busy()`` reads the account's calendar list once per
connector instance (to recognise the dedicated calendar, which never counts, and to know the
calendars' zones), then:

- the calendar syncd writes into when it is an existing calendar (``calendar_url`` given and not
  the dedicated one) with events.list (timeMin/timeMax, singleEvents=true, only the time, status
  and transparency fields requested), skipping syncd's own events (private extended property
  ``syncd=1``, or a ``syncd-`` iCalUID), cancelled and transparent ones, and applying
  ``BusyOptions`` fully; ``ref`` is the event (instance) id, all-day dates are read in the
  calendar's zone;
- every other calendar with freebusy.query (at most 50 calendars and 60 days per request,
  Google refusing longer spans). Google counts opaque, non-cancelled events, tentative ones
  included, and does not say which were tentative or all-day: such intervals have
  ``tentative=False`` and ``ref=None``, ``tentative_busy=False`` cannot drop tentative events and
  ``all_day`` behaves as ``"transparency"`` whatever it says.

Intervals are clipped to ``[start, end)`` and sorted; freebusy ones are merged per calendar.
Titles, descriptions and attendees are never requested for busy time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.resources
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from connectors import google_ical, google_series
from connectors.base import (
    BusyInterval,
    BusyOptions,
    CalendarInfo,
    Changes,
    FetchedItem,
    RemoteItem,
    Write,
    pass_headers,
)
from connectors.egress import STRICT, EgressPolicy
from connectors.egress_http import PolicyHttp
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    AuthRevoked,
    BusyIncomplete,
    ConnectorError,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
    unreachable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

GOOGLE_API = "https://www.googleapis.com/"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
QUOTA_REASONS = {"quotaExceeded", "dailyLimitExceeded"}
# A calendar over its usage limits stays so for hours ("Avoid Calendar use limits"); without a
# Retry-After from Google, that calendar is left alone this long before one write is tried.
QUOTA_BACKOFF = 3600.0
MARKER = "[syncd:{}]"
MAX_GENERATIONS = 50
# An etag syncd reports for a series whose occurrences the therapist changed: never equal to a
# recorded one, so the planner schedules a repair (see google_series).
TAMPERED = "tampered:"
# freebusy.query: calendars per request (calendarExpansionMax) and the longest span Google takes.
FREEBUSY_MAX_CALENDARS = 50
FREEBUSY_MAX_SPAN = timedelta(days=60)
# Only what busy time needs: never titles, descriptions or attendees.
BUSY_EVENT_FIELDS = (
    "items(id,iCalUID,status,transparency,start,end,extendedProperties/private/"
    f"{google_ical.PROP_OWNED}),nextPageToken,timeZone"
)


@dataclass(frozen=True)
class GoogleSettings:
    refresh_token: str
    client_id: str
    client_secret: str
    url: str = GOOGLE_API
    token_uri: str = GOOGLE_TOKEN_URI
    calendar_url: str | None = None  # a calendar URL from ensure_calendar, or a calendar id
    calendar_name: str = "Therapy sessions"
    calendar_id: str = "syncd"  # marks syncd's dedicated calendar in its description
    timeout: float = 15.0
    color_id: str | None = None
    reminder_minutes: tuple[int, ...] | None = None  # None: the calendar's default reminders
    min_interval: float = 0.0  # seconds between two requests to this account
    max_batch: int = 50
    egress: EgressPolicy = STRICT  # where requests (API, batch, token refresh) may go


def generation(name: str, n: int) -> str:
    """``x.ics`` under generation ``n``: Google never lets an id of a deleted event be used
    again (insert → 409, update → 403), so restoring a deleted entry needs a new name."""
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}~{n}.{ext}" if dot else f"{name}~{n}"


def split_generation(name: str) -> tuple[str, int]:
    """``x~3.ics`` → (``x.ics``, 3); a name without a generation is generation 0."""
    stem, dot, ext = name.rpartition(".")
    head, tilde, n = stem.rpartition("~")
    if dot and tilde and n.isdigit() and head:
        return f"{head}.{ext}", int(n)
    return name, 0


def event_id_for(name: str) -> str:
    if name.startswith("id:"):
        return name[3:]
    encoded = base64.b32hexencode(name.encode()).decode().rstrip("=").lower()
    if not 5 <= len(encoded) <= 1024:
        raise ProtocolError(f"resource name {name!r} is too short or too long for a Google id")
    return encoded


def name_for_event_id(event_id: str) -> str:
    try:
        padded = event_id.upper() + "=" * (-len(event_id) % 8)
        name = base64.b32hexdecode(padded).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return f"id:{event_id}"
    if "/" in name or not name or event_id_for(name) != event_id:
        return f"id:{event_id}"
    return name


def _discovery_document(root: str) -> dict[str, Any]:
    path = importlib.resources.files("googleapiclient").joinpath(
        "discovery_cache/documents/calendar.v3.json"
    )
    doc: dict[str, Any] = json.loads(path.read_text())
    # Batch requests are built from rootUrl + batchPath, so they follow the endpoint too.
    doc["rootUrl"] = root if root.endswith("/") else root + "/"
    return doc


def _reason(exc: HttpError) -> str:
    try:
        body = json.loads(exc.content)
        errors = body.get("error", {}).get("errors") or [{}]
        return str(errors[0].get("reason") or body.get("error", {}).get("status") or "")
    except (ValueError, AttributeError):
        return ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


class _SequenceTooLow(ProtocolError):
    """400 invalidSequenceValue: the event's sequence on Google is higher than the one sent."""


class _NotBatched(ProtocolError):
    """A write the batch leaves to the single-write path (a series whose occurrences the
    therapist changed: putting them back takes more than one request)."""


def _plain(exc: BaseException) -> str:
    text = unreachable(exc) or f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def translate(exc: BaseException, what: str) -> ConnectorError:
    """The one place Google library, auth and transport errors become connector errors."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, HttpError):
        status = int(exc.resp.status)
        reason = _reason(exc)
        hint = _retry_after(exc.resp.get("retry-after"))
        message = f"{what}: HTTP {status} {reason}".strip()
        if status == 403 and reason in RATE_LIMIT_REASONS:
            return Transient(message, hint)
        if status == 403 and reason in QUOTA_REASONS:
            return Transient(message, max(hint or 0.0, QUOTA_BACKOFF))
        if status == 429 or status >= 500:
            return Transient(message, hint)
        if status in (401, 403):
            return AuthFailed(message)
        if status == 404:
            return NotFound(message)
        if status == 409:
            return AlreadyExists(message)
        if status == 410:
            return InvalidSyncToken(message) if reason == "fullSyncRequired" else NotFound(message)
        if status == 412:
            return PreconditionFailed(message)
        if status == 400 and reason == "invalidSequenceValue":
            return _SequenceTooLow(message)
        return ProtocolError(message)
    if isinstance(exc, google.auth.exceptions.RefreshError):
        text = str(exc)
        if "invalid_grant" in text:
            return AuthRevoked(f"{what}: the Google grant was revoked or expired ({text})")
        if getattr(exc, "retryable", False):
            return Transient(f"{what}: token refresh failed: {text}")
        return AuthFailed(f"{what}: token refresh failed: {text}")
    # http.client's own errors (an answer cut off mid-body: IncompleteRead) reach us unwrapped
    # through httplib2; the request may or may not have been applied, like a timeout.
    if isinstance(
        exc, google.auth.exceptions.TransportError | httplib2.HttpLib2Error | HTTPException
    ):
        return Transient(f"{what}: {_plain(exc)}")
    if isinstance(exc, TimeoutError | socket.timeout | ConnectionError | OSError):
        return Transient(f"{what}: {_plain(exc)}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        return ProtocolError(f"{what}: unexpected answer: {type(exc).__name__}: {exc}")
    raise exc


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise translate(exc, what) from exc


@dataclass(frozen=True, slots=True)
class _CalendarEntry:
    """What busy time needs from one calendarList entry."""

    id: str
    name: str
    is_syncd: bool
    time_zone: str | None


def _utc_window(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """``[start, end)`` in UTC, or None when it is empty. Naive times are a caller's bug."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("busy(): start and end must be timezone-aware")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return (start, end) if end > start else None


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _instant(when: dict[str, Any], calendar_zone: str | None) -> tuple[datetime, bool]:
    """(aware UTC instant, all-day) of an event's ``start`` or ``end``; an all-day date is its
    midnight in the calendar's zone, as Google's own freebusy reads it."""
    if "dateTime" in when:
        value = datetime.fromisoformat(str(when["dateTime"]))
        if value.tzinfo is None:
            value = value.replace(tzinfo=_zone(when.get("timeZone") or calendar_zone))
        return value.astimezone(UTC), False
    day = date.fromisoformat(str(when["date"]))
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=_zone(calendar_zone))
    return midnight.astimezone(UTC), True


def _clip(
    start: datetime, end: datetime, window_start: datetime, window_end: datetime
) -> tuple[datetime, datetime] | None:
    start, end = max(start, window_start), min(end, window_end)
    return (start, end) if end > start else None


def _event_busy(
    event: dict[str, Any],
    calendar_zone: str | None,
    start: datetime,
    end: datetime,
    options: BusyOptions,
) -> tuple[datetime, datetime, bool] | None:
    """(start, end, tentative) of one listed event (instance) that makes the therapist busy,
    clipped to the window; None for syncd's own, cancelled, transparent (per ``options`` for
    all-day events) and, unless ``options.tentative_busy``, tentative events."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    if private.get(google_ical.PROP_OWNED) == "1":
        return None
    if str(event.get("iCalUID") or "").startswith("syncd-"):
        return None
    status = event.get("status", "confirmed")
    if status == "cancelled":
        return None
    first, all_day = _instant(event["start"], calendar_zone)
    last, _ = _instant(event.get("end") or event["start"], calendar_zone)
    transparent = event.get("transparency") == "transparent"
    tentative = status == "tentative"
    if not options.counts(all_day=all_day, transparent=transparent, tentative=tentative):
        return None
    clipped = _clip(first, last, start, end)
    return None if clipped is None else (clipped[0], clipped[1], tentative)


def _merged(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching intervals joined (freebusy answers cut at request boundaries)."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class _PassTaggedHttp(PolicyHttp):
    """Adds the pass header to every request, batches included (one outer POST); every
    connection, token refreshes included, passes the outbound policy."""

    def request(
        self,
        uri: Any,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return super().request(
            uri, method, body, {**pass_headers(), **(headers or {})}, *args, **kwargs
        )


class GoogleConnector:
    """One Google calendar of one account. Not thread-safe (one therapist, one worker)."""

    # Google reports every deletion in an incremental listing, whenever the event was created.
    reports_all_deletions = True

    def __init__(self, settings: GoogleSettings) -> None:
        self.settings = settings
        self.max_batch = max(1, min(settings.max_batch, 1000))
        credentials = Credentials(
            token=None,
            refresh_token=settings.refresh_token,
            token_uri=settings.token_uri,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
        )
        http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=_PassTaggedHttp(settings.egress, timeout=settings.timeout)
        )
        self._service: Any = build_from_document(_discovery_document(settings.url), http=http)
        self._calendar: str | None = None
        if settings.calendar_url:
            self._calendar = self._calendar_id_from(settings.calendar_url)
        self._verified = False
        self._events_resource: Any = None
        # The account's calendar list as busy time needs it, read once per instance.
        self._calendar_entries: dict[str, _CalendarEntry] | None = None
        self._ready_at = 0.0
        self._pace_lock = threading.Lock()
        # The sequence Google holds for each event seen, so a repair never sends a lower one.
        self._sequences: dict[str, int] = {}

    # -- addressing -------------------------------------------------------------------------

    def _calendar_id_from(self, url_or_id: str) -> str:
        if "://" not in url_or_id and "/" not in url_or_id:
            return url_or_id
        path = urlsplit(url_or_id).path
        marker = "/calendars/"
        if marker not in path:
            raise ProtocolError(f"{url_or_id} is not a Google calendar URL")
        return unquote(path.split(marker, 1)[1].strip("/").split("/", 1)[0])

    def _calendar_url(self, calendar_id: str) -> str:
        root = self.settings.url.rstrip("/")
        return f"{root}/calendar/v3/calendars/{quote(calendar_id, safe='@.')}/"

    def _prefix(self) -> str:
        return urlsplit(self._calendar_url(self._require_calendar())).path

    def _require_calendar(self) -> str:
        if self._calendar is None:
            self.ensure_calendar()
        assert self._calendar is not None
        return self._calendar

    def href_for(self, name: str) -> str:
        if "/" in name or not name:
            raise ProtocolError(f"resource name {name!r} must be a single path segment")
        event_id_for(name)  # validates the length
        return self._prefix() + name

    def _href(self, event_id: str) -> str:
        return self._prefix() + name_for_event_id(event_id)

    def _event_id(self, href: str) -> str:
        prefix = self._prefix()
        if not href.startswith(prefix):
            raise NotFound(f"{href} is not in calendar {self._calendar}")
        return event_id_for(href[len(prefix) :])

    # -- requests ---------------------------------------------------------------------------

    def _pace(self, cost: int = 1) -> None:
        # Google counts requests per user, each part of a batch as one ("Send batch requests"):
        # after a request of ``cost`` calls the next waits ``cost`` intervals, which keeps one
        # busy therapist under the per-user rate limit instead of bursting into 403s.
        interval = self.settings.min_interval
        if interval <= 0:
            return
        with self._pace_lock:
            now = time.monotonic()
            wait = self._ready_at - now
            if wait > 0:
                time.sleep(wait)
                now = time.monotonic()
            self._ready_at = now + cost * interval

    def _execute(self, request: Any, what: str, *, if_match: str | None = None) -> Any:
        if if_match:
            request.headers["If-Match"] = if_match
        self._pace()
        with _translated(what):
            return request.execute(num_retries=0)

    def _events(self) -> Any:
        # Building the resource walks the discovery document: ~30% of a batched mirror's CPU
        # when done per write (bench/ profile), so it is built once per connector.
        if self._events_resource is None:
            self._events_resource = self._service.events()
        return self._events_resource

    # -- calendar ---------------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        if self._calendar is not None and self._verified:
            return self._calendar_url(self._calendar)
        if self._calendar is not None:
            # calendarList.get, not calendars.get: it is permitted by the calendar-list scope
            # both connection modes hold (connectors.google_scopes).
            self._execute(
                self._service.calendarList().get(calendarId=self._calendar), "calendarList.get"
            )
        else:
            self._calendar = self._find_or_create_dedicated()
        self._verified = True
        return self._calendar_url(self._calendar)

    def _find_or_create_dedicated(self) -> str:
        marker = MARKER.format(self.settings.calendar_id)
        page: str | None = None
        while True:
            listing = self._execute(
                self._service.calendarList().list(pageToken=page, maxResults=250),
                "calendarList.list",
            )
            for item in listing.get("items", []):
                if marker in (item.get("description") or ""):
                    return str(item["id"])
            page = listing.get("nextPageToken")
            if not page:
                break
        body = {
            "summary": self.settings.calendar_name,
            "description": (
                "Sessions, held times and reserved slots from the booking platform, kept in step "
                f"by syncd. Edits here are replaced on the next sync. {marker}"
            ),
        }
        created = self._execute(self._service.calendars().insert(body=body), "calendars.insert")
        log.info("created the dedicated Google calendar %s", created["id"])
        return str(created["id"])

    # -- listing ----------------------------------------------------------------------------

    def changes(self, token: str | None) -> Changes:
        calendar = self._require_calendar()
        if token:
            try:
                return self._list(calendar, token)
            except (InvalidSyncToken, ProtocolError) as exc:
                # 410 fullSyncRequired (or a token Google cannot parse): start over.
                log.info("sync token refused for %s (%s); full listing", calendar, exc)
        return self._list(calendar, None)

    def _list(self, calendar: str, token: str | None) -> Changes:
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        masters: dict[str, dict[str, Any]] = {}
        exceptions: dict[str, list[dict[str, Any]]] = {}
        page: str | None = None
        while True:
            params: dict[str, Any] = {"calendarId": calendar, "maxResults": 2500}
            if page:
                params["pageToken"] = page
            if token:
                params["syncToken"] = token
            else:
                params["showDeleted"] = False
            response = self._execute(self._events().list(**params), "events.list")
            for event in response.get("items", []):
                self._remember(event)
                master = event.get("recurringEventId")
                if master and not name_for_event_id(str(master)).startswith("id:"):
                    # An occurrence of one of syncd's series, changed in Google: judged below
                    # against its series, never an entry of its own.
                    exceptions.setdefault(str(master), []).append(event)
                    continue
                if event.get("recurrence") and event.get("status") != "cancelled":
                    masters[str(event["id"])] = event
                href = self._href(event["id"])
                if event.get("status") == "cancelled":
                    if token:
                        deleted.add(href)
                        changed.pop(href, None)
                else:
                    changed[href] = event["etag"]
                    deleted.discard(href)
            page = response.get("nextPageToken")
            if not page:
                self._flag_tampered_series(calendar, masters, exceptions, changed, deleted)
                return Changes(
                    full=token is None,
                    changed=changed,
                    deleted=frozenset(deleted),
                    token=response.get("nextSyncToken"),
                )

    def _remember(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("sequence"), int):
            self._sequences[str(event["id"])] = int(event["sequence"])

    def _flag_tampered_series(
        self,
        calendar: str,
        masters: dict[str, dict[str, Any]],
        exceptions: dict[str, list[dict[str, Any]]],
        changed: dict[str, str],
        deleted: set[str],
    ) -> None:
        """Report a series of syncd's whose occurrences the therapist moved, edited or deleted
        as changed, under an etag no record holds, so the planner repairs it (:meth:`update`
        puts the occurrences back). Exceptions syncd itself wrote back match their series and
        change nothing."""
        for master_id, instances in exceptions.items():
            href = self._href(master_id)
            if href in deleted:
                continue
            master = masters.get(master_id)
            if master is None:
                try:
                    master = self._get(calendar, master_id)
                except NotFound:
                    continue
                self._remember(master)
            if any(google_series.tampered(master, i) for i in instances):
                changed[href] = TAMPERED + str(master["etag"])

    # -- single writes ----------------------------------------------------------------------

    def get(self, href: str) -> FetchedItem:
        event = self._get(self._require_calendar(), self._event_id(href))
        return FetchedItem(href, event["etag"], google_ical.to_ical(event))

    def _get(self, calendar: str, event_id: str) -> dict[str, Any]:
        event: dict[str, Any] = self._execute(
            self._events().get(calendarId=calendar, eventId=event_id), "events.get"
        )
        if event.get("status") == "cancelled":
            raise NotFound(f"event {event_id} was deleted")
        return event

    def _resource(self, name: str, body: str) -> dict[str, Any]:
        resource = google_ical.to_google(body, name)
        # "only one of them should be supplied at event creation time" (events resource,
        # iCalUID): the id carries syncd's name; the UID travels in a private property.
        resource.pop("iCalUID", None)
        resource["id"] = event_id_for(name)
        if self.settings.color_id:
            resource["colorId"] = self.settings.color_id
        if self.settings.reminder_minutes is not None:
            resource["reminders"] = {
                "useDefault": False,
                "overrides": [
                    {"method": "popup", "minutes": m} for m in self.settings.reminder_minutes
                ],
            }
        return resource

    def create(self, name: str, body: str) -> RemoteItem:
        """Insert ``name``; when its id is burnt (a deleted event held it), the next
        generation. A name that already carries a generation (``x~3.ics``, the one last used)
        starts there, so an entry deleted again and again never walks all generations."""
        calendar = self._require_calendar()
        base, first = split_generation(name)
        for n in range(first, first + MAX_GENERATIONS):
            named = generation(base, n)
            resource = self._resource(named, body)
            try:
                event = self._execute(
                    self._events().insert(calendarId=calendar, body=resource), "events.insert"
                )
            except AlreadyExists:
                self._burnt(calendar, named, resource)  # raises unless the id is burnt
                continue
            return RemoteItem(self._href(event["id"]), event["etag"])
        raise ProtocolError(f"{name}: deleted and re-created more than {MAX_GENERATIONS} times")

    def _burnt(self, calendar: str, named: str, resource: dict[str, Any]) -> None:
        """After a 409: returns when the id belongs to a deleted event, or to one Google has
        purged since (get answers 404): try the next generation. Raises AlreadyExists when a
        live event holds the id. (No iCalUID is sent, so the id is the only thing that can
        clash.)"""
        try:
            current = self._execute(
                self._events().get(calendarId=calendar, eventId=resource["id"]), "events.get"
            )
        except NotFound:
            return
        if current.get("status") == "cancelled":
            return
        raise AlreadyExists(f"{named} already exists", href=self._href(current["id"]))

    def _with_sequence(self, event_id: str, resource: dict[str, Any]) -> dict[str, Any]:
        """Google refuses a sequence lower than the event's (400 invalidSequenceValue), and
        raises it itself when the therapist moves the event: send at least the known one."""
        known = self._sequences.get(event_id)
        if known is not None and known > int(resource.get("sequence") or 0):
            resource["sequence"] = known
        return resource

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        calendar = self._require_calendar()
        event_id = self._event_id(href)
        name = href[len(self._prefix()) :]
        resource = self._with_sequence(event_id, self._resource(name, body))
        etag = etag.removeprefix(TAMPERED)
        try:
            try:
                event = self._write_update(calendar, event_id, resource, etag)
            except _SequenceTooLow:
                current = self._get(calendar, event_id)
                resource["sequence"] = int(current.get("sequence") or 0)
                event = self._write_update(calendar, event_id, resource, etag)
        except (PreconditionFailed, AuthFailed):
            # 412 after someone's edit, or Google's 403 for updating a deleted event: which one
            # it was decides between PreconditionFailed and NotFound.
            self._get(calendar, event_id)
            raise
        if resource.get("recurrence"):
            return self._restore_occurrences(calendar, href, name, body, event)
        return RemoteItem(href, event["etag"])

    def _write_update(
        self, calendar: str, event_id: str, resource: dict[str, Any], etag: str
    ) -> dict[str, Any]:
        event: dict[str, Any] = self._execute(
            self._events().update(calendarId=calendar, eventId=event_id, body=resource),
            "events.update",
            if_match=etag,
        )
        self._remember(event)
        return event

    def _restore_occurrences(
        self, calendar: str, href: str, name: str, body: str, master: dict[str, Any]
    ) -> RemoteItem:
        """Put back every occurrence of a series the therapist moved, edited or deleted. An
        occurrence Google will not let syncd write back (a deleted one, in some of Google's
        behaviours) makes syncd replace the whole series under its next generation."""
        broken = [
            i for i in self._exceptions(calendar, master["id"]) if google_series.tampered(master, i)
        ]
        for instance in broken:
            try:
                self._execute(
                    self._events().update(
                        calendarId=calendar,
                        eventId=instance["id"],
                        body=google_series.restored(master, instance),
                    ),
                    "events.update",
                )
            except (NotFound, AuthFailed, PreconditionFailed, ProtocolError) as exc:
                if isinstance(exc, AuthRevoked):
                    raise
                log.info("an occurrence of %s cannot be written back (%s): new series", href, exc)
                return self._replace_series(calendar, href, name, body, master)
        return RemoteItem(href, master["etag"])

    def _exceptions(self, calendar: str, master_id: str) -> list[dict[str, Any]]:
        """The series' exception instances, cancelled ones included (events.instances)."""
        found: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "calendarId": calendar,
                "eventId": master_id,
                "showDeleted": True,
                "maxResults": 2500,
            }
            if page:
                params["pageToken"] = page
            response = self._execute(self._events().instances(**params), "events.instances")
            found.extend(response.get("items", []))
            page = response.get("nextPageToken")
            if not page:
                return found

    def _replace_series(
        self, calendar: str, href: str, name: str, body: str, master: dict[str, Any]
    ) -> RemoteItem:
        base, n = split_generation(name)
        item = self.create(generation(base, n + 1), body)
        with contextlib.suppress(NotFound):
            self._execute(
                self._events().delete(calendarId=calendar, eventId=master["id"]), "events.delete"
            )
        return item

    def delete(self, href: str, etag: str | None) -> None:
        calendar = self._require_calendar()
        event_id = self._event_id(href)
        try:
            self._execute(
                self._events().delete(calendarId=calendar, eventId=event_id),
                "events.delete",
                if_match=etag,
            )
        except PreconditionFailed:
            self._get(calendar, event_id)
            raise

    # -- batch ------------------------------------------------------------------------------

    def write_many(self, writes: Sequence[Write]) -> list[RemoteItem | ConnectorError | None]:
        """Up to ``max_batch`` writes in one HTTP request; each part's outcome separately."""
        if len(writes) > self.max_batch:
            raise ValueError(f"at most {self.max_batch} writes per batch")
        calendar = self._require_calendar()
        results: list[RemoteItem | ConnectorError | None] = [None] * len(writes)
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

        batch = self._service.new_batch_http_request()
        parts = 0
        for i, w in enumerate(writes):
            if w.op == "update" and (w.etag or "").startswith(TAMPERED):
                hrefs.append(w.href or "")
                results[i] = _NotBatched(f"{w.href}: occurrences to restore")
                continue
            if w.op == "create":
                assert w.name is not None and w.body is not None
                hrefs.append(self.href_for(w.name))
                request = self._events().insert(
                    calendarId=calendar, body=self._resource(w.name, w.body)
                )
            elif w.op == "update":
                assert w.href is not None and w.body is not None
                hrefs.append(w.href)
                name = w.href[len(self._prefix()) :]
                event_id = self._event_id(w.href)
                request = self._events().update(
                    calendarId=calendar,
                    eventId=event_id,
                    body=self._with_sequence(event_id, self._resource(name, w.body)),
                )
            else:
                assert w.href is not None
                hrefs.append(w.href)
                request = self._events().delete(calendarId=calendar, eventId=self._event_id(w.href))
            if w.etag and w.op != "create":
                request.headers["If-Match"] = w.etag
            batch.add(request, callback=callback_for(i))
            parts += 1
        if parts:
            self._pace(parts)
            with _translated("batch"):
                batch.execute()
        return results

    # -- busy time (BusyReader) -------------------------------------------------------------

    def calendars(self) -> list[CalendarInfo]:
        """The account's calendars (calendarList.list); ``is_syncd`` marks the dedicated one."""
        entries = self._list_calendars()
        return [CalendarInfo(ref=e.id, name=e.name, is_syncd=e.is_syncd) for e in entries.values()]

    def busy(
        self,
        start: datetime,
        end: datetime,
        calendars: Sequence[str],
        options: BusyOptions,
    ) -> list[BusyInterval]:
        """Busy intervals overlapping ``[start, end)``, clipped to it, in aware UTC, sorted.
        See the module docstring for which calendar is read how."""
        if isinstance(calendars, str):
            raise TypeError("busy(): calendars is a sequence of refs, not one ref")
        window = _utc_window(start, end)
        if window is None:
            return []
        start, end = window
        entries = self._calendar_entries
        if entries is None:
            entries = self._list_calendars()
        written = self._calendar if self.settings.calendar_url else None
        by_freebusy: list[tuple[str, str]] = []
        found: list[BusyInterval] = []
        for ref in calendars:
            calendar_id = self._calendar_id_from(ref)
            entry = entries.get(calendar_id)
            if entry is not None and entry.is_syncd:
                continue
            if written is None and calendar_id == self._calendar:
                continue  # the dedicated calendar, created after the list was read
            if calendar_id == written:
                zone = entry.time_zone if entry is not None else None
                found.extend(self._listed_busy(ref, calendar_id, zone, start, end, options))
            else:
                by_freebusy.append((ref, calendar_id))
        try:
            found.extend(self._freebusy(by_freebusy, start, end))
        except BusyIncomplete as partial:
            found.extend(partial.intervals)
            found.sort(key=lambda i: (i.start, i.end, i.calendar, i.ref or ""))
            raise BusyIncomplete(found, partial.failed) from None
        found.sort(key=lambda i: (i.start, i.end, i.calendar, i.ref or ""))
        return found

    def _list_calendars(self) -> dict[str, _CalendarEntry]:
        marker = MARKER.format(self.settings.calendar_id)
        entries: dict[str, _CalendarEntry] = {}
        page: str | None = None
        while True:
            listing = self._execute(
                self._service.calendarList().list(pageToken=page, maxResults=250),
                "calendarList.list",
            )
            with _translated("calendarList.list"):
                for item in listing.get("items", []):
                    calendar_id = str(item["id"])
                    entries[calendar_id] = _CalendarEntry(
                        id=calendar_id,
                        name=str(item.get("summaryOverride") or item.get("summary") or calendar_id),
                        is_syncd=marker in (item.get("description") or ""),
                        time_zone=item.get("timeZone"),
                    )
            page = listing.get("nextPageToken")
            if not page:
                break
        self._calendar_entries = entries
        return entries

    def _listed_busy(
        self,
        ref: str,
        calendar_id: str,
        zone: str | None,
        start: datetime,
        end: datetime,
        options: BusyOptions,
    ) -> list[BusyInterval]:
        found: list[BusyInterval] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {
                "calendarId": calendar_id,
                "timeMin": _rfc3339(start),
                "timeMax": _rfc3339(end),
                "singleEvents": True,
                "showDeleted": False,
                "maxResults": 2500,
                "fields": BUSY_EVENT_FIELDS,
            }
            if page:
                params["pageToken"] = page
            response = self._execute(self._events().list(**params), "events.list")
            with _translated("events.list"):
                calendar_zone = response.get("timeZone") or zone
                for event in response.get("items", []):
                    interval = _event_busy(event, calendar_zone, start, end, options)
                    if interval is not None:
                        found.append(
                            BusyInterval(
                                interval[0],
                                interval[1],
                                calendar=ref,
                                tentative=interval[2],
                                ref=str(event["id"]),
                            )
                        )
            page = response.get("nextPageToken")
            if not page:
                return found

    def _freebusy(
        self, calendars: list[tuple[str, str]], start: datetime, end: datetime
    ) -> list[BusyInterval]:
        if not calendars:
            return []
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        failed: dict[str, str] = {}
        for first in range(0, len(calendars), FREEBUSY_MAX_CALENDARS):
            group = calendars[first : first + FREEBUSY_MAX_CALENDARS]
            ids = list(dict.fromkeys(calendar_id for _, calendar_id in group))
            piece_start = start
            while piece_start < end:
                piece_end = min(end, piece_start + FREEBUSY_MAX_SPAN)
                body = {
                    "timeMin": _rfc3339(piece_start),
                    "timeMax": _rfc3339(piece_end),
                    "items": [{"id": calendar_id} for calendar_id in ids],
                }
                response = self._execute(
                    self._service.freebusy().query(body=body), "freebusy.query"
                )
                with _translated("freebusy.query"):
                    answers = response.get("calendars") or {}
                    for calendar_id in ids:
                        answer = answers.get(calendar_id) or {"errors": [{"reason": "missing"}]}
                        errors = answer.get("errors") or []
                        if errors:
                            # One calendar's error (deleted since it was chosen, no longer
                            # shared, a backend hiccup) leaves the others' answers good.
                            failed[calendar_id] = str(errors[0].get("reason") or "unknown")
                            continue
                        for period in answer.get("busy") or []:
                            clipped = _clip(
                                datetime.fromisoformat(period["start"]).astimezone(UTC),
                                datetime.fromisoformat(period["end"]).astimezone(UTC),
                                start,
                                end,
                            )
                            if clipped is not None:
                                spans.setdefault(calendar_id, []).append(clipped)
                piece_start = piece_end
        found = [
            BusyInterval(s, e, calendar=ref)
            for ref, calendar_id in dict.fromkeys(calendars)
            if calendar_id not in failed
            for s, e in _merged(spans.get(calendar_id, []))
        ]
        if failed:
            refs = {calendar_id: ref for ref, calendar_id in calendars}
            raise BusyIncomplete(found, {refs[c]: reason for c, reason in failed.items()})
        return found

    # -- push -------------------------------------------------------------------------------

    def watch(self, channel_id: str, address: str, token: str, ttl: int) -> dict[str, Any]:
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "params": {"ttl": str(ttl)},
        }
        calendar = self._require_calendar()
        response: dict[str, Any] = self._execute(
            self._events().watch(calendarId=calendar, body=body), "events.watch"
        )
        return response

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._execute(
                self._service.channels().stop(body={"id": channel_id, "resourceId": resource_id}),
                "channels.stop",
            )

    def delete_calendar(self) -> bool:
        calendar = self._require_calendar()
        with contextlib.suppress(NotFound):
            self._execute(self._service.calendars().delete(calendarId=calendar), "calendars.delete")
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._service.close()

    def __enter__(self) -> GoogleConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

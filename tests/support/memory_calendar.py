"""An in-memory CalDAV account: the calendar double of the stateful model (tests/test_model.py).

It passes the whole connector contract of tests/test_connector_contract.py (target ``memory``,
beside Radicale, Xandikos and the Google stand-in), so what the model proves about the engine
is proven against a double that behaves as the real connectors do:

- :class:`MemoryServer` is one account: a calendar home ``/<username>/`` at ``url`` holding any
  number of calendars (display name, resources, RFC 6578 sync journal). Sync tokens are only
  valid for the calendar that issued them.
- :class:`MemoryCalendar` is the connector for one of them, made like ``CalDAVSettings``: the
  dedicated calendar ``calendar_id`` (found, or created with ``calendar_name``) or an existing
  ``calendar_url``. Writes are conditional as connectors/caldav/ reports them (create is
  If-None-Match: *, update/delete If-Match), every write gives a fresh ETag, a resource name is
  one path segment, and a UID lives in one resource of a calendar only (CalDAV
  ``no-uid-conflict``). A connector made for any other ``url`` than the server's reaches
  nothing: every call is Transient at once, as a refused connection is.

``put``/``remove``/``items`` are what another client (the therapist's phone) does to the
connector's calendar, outside the protocol.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import quote, unquote, urljoin, urlsplit

from connectors.base import (
    AccessRevoker,
    BatchWriter,
    BusyReader,
    CalendarOwner,
    Changes,
    ChangeWatcher,
    FetchedItem,
    RemoteItem,
)
from connectors.errors import (
    AlreadyExists,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
)

SYNCD_CALENDAR_NAME = "Therapy sessions"

_UID = re.compile(r"^UID:(.*?)\r?$", re.MULTILINE)


def uid_of(body: str) -> str | None:
    found = _UID.search(body)
    return found.group(1).strip() if found else None


def _path_of(url: str) -> str:
    """The decoded path of a URL, as hrefs are (see connectors/caldav/hrefs.py), ending in ``/``."""
    path = unquote(urlsplit(url).path)
    return path if path.endswith("/") else path + "/"


class MemoryCollection:
    """One calendar of a :class:`MemoryServer`: its resources and its change journal."""

    def __init__(self, server: MemoryServer, path: str, name: str) -> None:
        self.server = server
        self.path = path
        self.name = name
        self.items: dict[str, tuple[str, str]] = {}  # href -> (etag, body)
        self._journal: list[str] = []  # hrefs in the order they were written or deleted
        self._tokens: dict[str, tuple[int, frozenset[str]]] = {}

    def changes(self, token: str | None) -> Changes:
        if token is None or token not in self._tokens:
            return Changes(full=True, changed=self.listing(), token=self._token())
        position, existed = self._tokens[token]
        touched = set(self._journal[position:])
        omit = self.server.omit_transient_deletes
        return Changes(
            full=False,
            changed={h: self.items[h][0] for h in touched if h in self.items},
            deleted=frozenset(
                h for h in touched if h not in self.items and (h in existed or not omit)
            ),
            token=self._token(),
        )

    def listing(self) -> dict[str, str]:
        return {h: etag for h, (etag, _) in self.items.items()}

    def put(self, href: str, body: str) -> str:
        etag = self.server.new_etag()
        self.items[href] = (etag, body)
        self._journal.append(href)
        return etag

    def remove(self, href: str) -> None:
        if self.items.pop(href, None) is not None:
            self._journal.append(href)

    def uid_holder(self, href: str, body: str) -> str | None:
        """Another resource of this calendar that has ``body``'s UID."""
        uid = uid_of(body)
        if uid is None:
            return None
        for other, (_etag, other_body) in self.items.items():
            if other != href and uid_of(other_body) == uid:
                return other
        return None

    def _token(self) -> str:
        # Unique across the server, so a token of one calendar is invalid for another.
        token = f"memory-sync:{self.path}:{len(self._tokens)}"
        self._tokens[token] = (len(self._journal), frozenset(self.items))
        return token


class MemoryServer:
    """One CalDAV account in memory. ``omit_transient_deletes`` makes a change listing leave
    out a resource created and deleted since the token, as Xandikos does."""

    def __init__(
        self,
        url: str = "http://memory.invalid/",
        username: str = "therapist",
        *,
        omit_transient_deletes: bool = False,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.home = _path_of(urljoin(self.url, quote(username, safe="") + "/"))
        self.omit_transient_deletes = omit_transient_deletes
        self.calendars: dict[str, MemoryCollection] = {}  # path -> calendar
        self._etags = itertools.count(1)

    def new_etag(self) -> str:
        return f'"{next(self._etags)}"'

    def url_of(self, path: str) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{quote(path)}"

    def make_calendar(self, path: str, name: str) -> MemoryCollection:
        collection = self.calendars.get(path)
        if collection is None:
            collection = self.calendars[path] = MemoryCollection(self, path, name)
        return collection

    def count_named(self, name: str) -> int:
        return sum(1 for c in self.calendars.values() if c.name == name)

    def holding(self, href: str) -> MemoryCollection | None:
        """The calendar a resource href belongs to."""
        return self.calendars.get(href.rsplit("/", 1)[0] + "/")


class NoCapabilities:
    """The capability accessors of a connector that has none of the optional capabilities
    (:mod:`connectors.base`): busy time, batches, calendar ownership, push and revocation are
    proven against the real connectors. A double that has one overrides its accessor."""

    def busy_reader(self) -> BusyReader | None:
        return None

    def batch_writer(self) -> BatchWriter | None:
        return None

    def calendar_owner(self) -> CalendarOwner | None:
        return None

    def change_watcher(self) -> ChangeWatcher | None:
        return None

    def access_revoker(self) -> AccessRevoker | None:
        return None


class MemoryCalendar(NoCapabilities):
    """The connector for one calendar of a :class:`MemoryServer` (a fresh account when none is
    given). Arguments mirror ``CalDAVSettings``; see the module docstring."""

    def __init__(
        self,
        server: MemoryServer | None = None,
        *,
        url: str | None = None,
        calendar_url: str | None = None,
        calendar_id: str = "syncd",
        calendar_name: str = SYNCD_CALENDAR_NAME,
    ) -> None:
        if not calendar_url and (not calendar_id or "/" in calendar_id):
            raise ValueError("calendar_id must be a non-empty name without '/'")
        self.server = server if server is not None else MemoryServer()
        self.url = url if url is not None else self.server.url
        self.calendar_url = calendar_url
        self.calendar_id = calendar_id
        self.calendar_name = calendar_name
        self.reports_all_deletions = not self.server.omit_transient_deletes

    # -- Connector protocol ---------------------------------------------------------------------

    def ensure_calendar(self) -> str:
        return self.server.url_of(self._collection().path)

    def changes(self, token: str | None) -> Changes:
        return self._collection().changes(token)

    def href_for(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise ProtocolError(f"invalid resource name {name!r}")
        return self._collection().path + name

    def get(self, href: str) -> FetchedItem:
        collection = self._holding(href)
        if href not in collection.items:
            raise NotFound(href)
        etag, body = collection.items[href]
        return FetchedItem(href, etag, body)

    def create(self, name: str, body: str) -> RemoteItem:
        href = self.href_for(name)
        collection = self._collection()
        if href in collection.items:
            raise AlreadyExists(f"{href}: something is there")
        if (other := collection.uid_holder(href, body)) is not None:
            raise AlreadyExists(f"{href}: its UID is already in {other}")
        return RemoteItem(href, collection.put(href, body))

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        collection = self._holding(href)
        if href not in collection.items:
            raise NotFound(href)
        if collection.items[href][0] != etag:
            raise PreconditionFailed(href)
        if (other := collection.uid_holder(href, body)) is not None:
            raise AlreadyExists(f"{href}: its UID is already in {other}")
        return RemoteItem(href, collection.put(href, body))

    def delete(self, href: str, etag: str | None) -> None:
        collection = self._holding(href)
        if href not in collection.items:
            raise NotFound(href)
        if etag is not None and collection.items[href][0] != etag:
            raise PreconditionFailed(href)
        collection.remove(href)

    def close(self) -> None:
        pass

    # -- what other clients do to this calendar; not the protocol --------------------------------

    @property
    def items(self) -> dict[str, tuple[str, str]]:
        return self._collection().items

    def put(self, href: str, body: str) -> str:
        return self._holding(href).put(href, body)

    def remove(self, href: str) -> None:
        self._holding(href).remove(href)

    def listing(self) -> dict[str, str]:
        return self._collection().listing()

    # -- the account ----------------------------------------------------------------------------

    def _reach(self) -> MemoryServer:
        if (self.url if self.url.endswith("/") else self.url + "/") != self.server.url:
            raise Transient(f"{self.url}: connection refused (no server answers there)")
        return self.server

    def _collection(self) -> MemoryCollection:
        server = self._reach()
        if self.calendar_url:
            path = _path_of(urljoin(self.url, self.calendar_url))
            collection = server.calendars.get(path)
            if collection is not None:
                return collection
            if path == server.home:
                raise ProtocolError(f"{path} is not a calendar collection")
            raise NotFound(f"calendar {path} does not exist")
        path = server.home + self.calendar_id + "/"
        return server.make_calendar(path, self.calendar_name)

    def _holding(self, href: str) -> MemoryCollection:
        server = self._reach()
        if not href.startswith("/"):
            raise ProtocolError(f"href {href!r} is not an absolute path")
        collection = server.holding(href)
        if collection is None:
            raise NotFound(f"{href}: no such calendar")
        return collection

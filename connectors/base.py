"""The connector interface: the only thing the engine knows about a calendar provider.

:class:`Connector` is what every provider does. What only some do is a capability, declared
here as its own small protocol and reached through an accessor of the connector that answers
the capability or None (``connector.busy_reader()``, ``connector.batch_writer()``, ...), so a
caller never asks which provider it has, nor probes for a method by name:

- :class:`BusyReader`: read the therapist's busy time in their own calendars;
- :class:`BatchWriter`: send many writes in one request;
- :class:`CalendarOwner`: remove the whole calendar syncd created;
- :class:`ChangeWatcher`: open and stop push channels that announce remote changes;
- :class:`AccessRevoker`: ask the provider to forget the grant the connector holds.

A connector whose accessor returns ``self`` states, in a form mypy checks, that it implements
the capability.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from connectors.errors import ConnectorError

# The pass a request belongs to, sent as ``X-Syncd-Pass`` with every request to a calendar
# server. It is the ``pass_id`` of syncd's logs, so a server's access log lines up with them;
# the replica tests use it to see, at the server, that two passes of one therapist never overlap.
# Random per pass: it says nothing about the therapist or the client.
current_pass: ContextVar[str | None] = ContextVar("syncd_current_pass", default=None)
PASS_HEADER = "X-Syncd-Pass"  # noqa: S105 - a header name, not a secret


def pass_headers() -> dict[str, str]:
    tag = current_pass.get()
    return {PASS_HEADER: tag} if tag else {}


@dataclass(frozen=True, slots=True)
class RemoteItem:
    """One resource on the server, as far as change detection needs it."""

    href: str
    etag: str


@dataclass(frozen=True, slots=True)
class FetchedItem:
    href: str
    etag: str
    body: str


@dataclass(frozen=True, slots=True)
class Changes:
    """What a change query found.

    ``full`` means ``changed`` is the complete listing of the calendar: anything not in it is gone.
    Otherwise ``changed`` and ``deleted`` are the differences since the token that was passed in.
    ``token`` is what to pass next time (None when the server has no sync support).
    """

    full: bool
    changed: dict[str, str] = field(default_factory=dict)  # href -> etag
    deleted: frozenset[str] = frozenset()
    token: str | None = None


class Connector(Protocol):
    """One calendar of one account. Every method does network I/O with a timeout and raises only
    :mod:`connectors.errors` types. Hrefs are server paths (``/user/cal/x.ics``).

    ``reports_all_deletions`` is True when an incremental listing reports the deletion of a
    resource even if it was created after the token was issued (Google does; some CalDAV servers
    do not, so for them the engine re-reads the token after its own writes).
    """

    reports_all_deletions: bool

    def ensure_calendar(self) -> str:
        """Make sure the target calendar exists (creating syncd's dedicated one if configured so)
        and return its URL."""
        ...

    def changes(self, token: str | None) -> Changes:
        """Changes since ``token``; a full listing when ``token`` is None or no longer valid."""
        ...

    def href_for(self, name: str) -> str:
        """The href a resource created as ``name`` has (after ``ensure_calendar``)."""
        ...

    def get(self, href: str) -> FetchedItem: ...

    def create(self, name: str, body: str) -> RemoteItem:
        """Create resource ``name`` (a file name inside the calendar) only if absent
        (If-None-Match: *). Raises AlreadyExists when something is there."""
        ...

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        """Replace the resource only if it still has ``etag`` (If-Match)."""
        ...

    def delete(self, href: str, etag: str | None) -> None:
        """Delete the resource, conditionally on ``etag`` when given."""
        ...

    def close(self) -> None: ...

    # -- optional capabilities: each answers the capability, or None where there is none --------

    def busy_reader(self) -> BusyReader | None: ...

    def batch_writer(self) -> BatchWriter | None: ...

    def calendar_owner(self) -> CalendarOwner | None: ...

    def change_watcher(self) -> ChangeWatcher | None: ...

    def access_revoker(self) -> AccessRevoker | None: ...


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a batch: ``create`` uses name+body, ``update`` href+body+etag, ``delete``
    href (+etag)."""

    op: Literal["create", "update", "delete"]
    name: str | None = None
    href: str | None = None
    body: str | None = None
    etag: str | None = None


class BatchWriter(Protocol):
    """The batch hook: providers that can send many writes in one request implement it. Each
    result is the written item (None for a delete) or the typed error of that part alone."""

    max_batch: int

    def write_many(self, writes: Sequence[Write]) -> list[RemoteItem | ConnectorError | None]: ...


# -- busy time (the therapist's own calendars, read back) ---------------------------------------


@dataclass(frozen=True, slots=True)
class CalendarInfo:
    """One calendar of the account. ``ref`` is what selections store: the calendar's URL
    (CalDAV) or id (Google)."""

    ref: str
    name: str
    is_syncd: bool  # syncd's own dedicated calendar: never counts as busy


@dataclass(frozen=True, slots=True)
class BusyInterval:
    """Time the therapist is busy. Only the interval and a reference are kept: never titles,
    descriptions or attendees of the therapist's own events."""

    start: datetime  # aware UTC
    end: datetime
    calendar: str  # CalendarInfo.ref
    tentative: bool = False
    ref: str | None = None  # the remote event (href or event id) when the method reveals it


@dataclass(frozen=True, slots=True)
class BusyOptions:
    tentative_busy: bool = True  # TENTATIVE events count as busy
    all_day: Literal["transparency", "busy", "free"] = "transparency"

    def counts(self, *, all_day: bool, transparent: bool, tentative: bool) -> bool:
        """Whether an event (not cancelled, not syncd's own) counts as busy time: the one
        statement of the policy, shared by every provider."""
        if all_day and self.all_day != "transparency":
            if self.all_day == "free":
                return False
        elif transparent:
            return False
        return self.tentative_busy or not tentative


class BusyReader(Protocol):
    def calendars(self) -> list[CalendarInfo]: ...

    def busy(
        self,
        start: datetime,
        end: datetime,
        calendars: Sequence[str],
        options: BusyOptions,
    ) -> list[BusyInterval]:
        """Busy intervals overlapping [start, end) in the given calendars (refs). Never counts
        syncd's own entries, TRANSPARENT or CANCELLED events; recurring events expanded."""
        ...


# -- owning, watching, revoking ------------------------------------------------------------------


class CalendarOwner(Protocol):
    """The provider lets syncd remove a whole calendar, which it does on disconnect when the
    calendar is syncd's own (the caller knows that from the stored connection)."""

    def delete_calendar(self) -> bool:
        """Delete the connector's calendar with everything in it. False when the server
        acknowledged but the calendar is still there: the caller then removes syncd's entries
        one by one."""
        ...


@dataclass(frozen=True, slots=True)
class WatchChannel:
    """A push channel the provider opened: it announces changes of the connector's calendar
    at the address given until ``expires_at``. ``resource_id`` is the provider's name for what
    is watched, needed to stop the channel (None when it gave none)."""

    id: str
    resource_id: str | None
    expires_at: datetime  # aware UTC


class ChangeWatcher(Protocol):
    """The provider pushes change notifications to an HTTPS address (Google's watch channels;
    Microsoft Graph's subscriptions are the same shape)."""

    def watch(self, channel_id: str, address: str, token: str, ttl: int) -> WatchChannel:
        """Open channel ``channel_id`` to ``address`` for ``ttl`` seconds; every notification
        carries ``token``, so the receiver can tell it from a forgery."""
        ...

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """Stop a channel; one the provider no longer knows counts as stopped."""
        ...


class AccessRevoker(Protocol):
    """The connector holds a grant the provider can be asked to forget (an OAuth refresh
    token), as disconnecting should. A password cannot be revoked this way."""

    def revoke_access(self) -> None:
        """Ask the provider to forget the grant. Raises only :mod:`connectors.errors` types;
        an already revoked grant is not an error."""
        ...

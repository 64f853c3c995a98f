"""The connector interface: the only thing the engine knows about a calendar provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    :mod:`connectors.errors` types. Hrefs are server paths (``/user/cal/x.ics``)."""

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

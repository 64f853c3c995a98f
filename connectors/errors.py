"""The one typed error hierarchy every connector raises.

Each provider module translates its library's and HTTP errors into these in one place, so the
engine decides retry / repair / give-up without knowing which provider it talks to.
"""

from __future__ import annotations

from typing import Any


class ConnectorError(Exception):
    """Base of everything a connector raises on purpose."""


class NotFound(ConnectorError):
    """The resource (event or calendar) does not exist (HTTP 404/410)."""


class AlreadyExists(ConnectorError):
    """A create found something already at that name (412 on If-None-Match, 409 duplicate).

    ``href`` is where the existing resource lives, when the connector knows it is not simply
    ``href_for(name)`` (Google: a later generation of the name)."""

    def __init__(self, message: str, href: str | None = None) -> None:
        super().__init__(message)
        self.href = href


class PreconditionFailed(ConnectorError):
    """The ETag given with If-Match is stale: someone changed the resource since we saw it."""


class Transient(ConnectorError):
    """Worth retrying: timeout, connection reset, 5xx, 429, rate-limit 403.

    ``retry_after`` carries the server's Retry-After hint in seconds, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthFailed(ConnectorError):
    """Credentials refused or revoked: needs a person, retrying will not help."""


class AuthRevoked(AuthFailed):
    """The grant itself is gone (OAuth ``invalid_grant``: revoked or expired): only the therapist
    reconnecting can fix it, so no request is worth sending until then."""


class InvalidSyncToken(ConnectorError):
    """The server no longer accepts our sync token; a full listing is needed."""


class ProtocolError(ConnectorError):
    """The server answered something we cannot interpret (permanent, not retried)."""


class BusyIncomplete(ConnectorError):
    """Busy time was read for some calendars but not for others (Google's freeBusy answers an
    error per calendar). ``intervals`` holds what was read; ``failed`` maps each calendar ref
    that could not be read to the reason, so only those keep their last known busy time."""

    def __init__(self, intervals: list[Any], failed: dict[str, str]) -> None:
        listed = ", ".join(f"{ref}: {reason}" for ref, reason in sorted(failed.items()))
        super().__init__(f"busy time of {len(failed)} calendar(s) could not be read ({listed})")
        self.intervals = intervals
        self.failed = failed


class DestinationRefused(ProtocolError):
    """The outbound policy (:mod:`connectors.egress`) refused where a request would go: a
    host that is, or resolves to, a non-public address. Permanent until the URL or the
    policy changes. The message is one plain sentence; ``host`` and ``address`` say what."""

    def __init__(self, message: str, *, host: str = "", address: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.address = address

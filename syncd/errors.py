"""The errors of admin operations (connect, resync, links, erasure...): each message is the one
line shown to the admin or therapist. A module of its own, free of imports, so every service can
raise them without depending on the operations that use them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.errors import ConnectorError


class OperationError(Exception):
    """A refused admin operation; the message is the one line shown to the admin."""


class UrlRefused(OperationError):
    """A server address the outbound-request policy refuses (not a URL, or a private host)."""


class ConnectFailed(OperationError):
    """The account could not be used; ``error`` is the connector's typed error, so a caller
    that speaks to therapists can say what went wrong in its own words."""

    def __init__(self, message: str, error: ConnectorError) -> None:
        super().__init__(message)
        self.error = error

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


class NotBatched(ConnectorError):
    """A part of a batch (:class:`connectors.base.BatchWriter`) the connector did not send
    because it takes more than one request (Google: a series whose occurrences must be put
    back). Nothing was written: the caller sends it through the single-write path."""


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


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, ``reason``, exception args)."""
    seen: dict[int, BaseException] = {}
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen or len(seen) > 20:
            continue
        seen[id(e)] = e
        for nested in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args):
            if isinstance(nested, BaseException):
                todo.append(nested)
    return list(seen.values())


def network_reason(exc: BaseException) -> str | None:
    """Why a connection failed, in plain words ("connection refused", "timed out"…), found
    anywhere in what ``exc`` wraps; None when it is not a failure to reach a server.

    HTTP libraries wrap the socket error several layers deep (niquests ConnectionError →
    urllib3 MaxRetryError → NewConnectionError → ConnectionRefusedError); the innermost cause
    is what an operator can act on."""
    import socket
    import ssl

    chain = _chain(exc)

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if find(ConnectionRefusedError):
        return "connection refused"
    if find(socket.gaierror):
        return "the host name does not resolve"
    if find(ConnectionResetError):
        return "the connection was reset"
    if (cert := find(ssl.SSLCertVerificationError)) is not None:
        detail = getattr(cert, "verify_message", "") or "not trusted"
        return f"its TLS certificate is not accepted ({detail})"
    if find(ssl.SSLError):
        return "the TLS handshake failed"
    if any(isinstance(e, OSError) and e.errno in (101, 113) for e in chain):
        return "no route to the host"
    if find(TimeoutError) or any("Timeout" in type(e).__name__ for e in chain):
        return "timed out"
    if find(ConnectionError):
        return "the connection failed"
    return None


def network_host(exc: BaseException) -> str | None:
    """``host:port`` of the request ``exc`` failed on, when the HTTP library recorded it."""
    from urllib.parse import urlsplit

    for e in _chain(exc):
        url = getattr(getattr(e, "request", None), "url", None)
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            if parts.hostname:
                host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                return f"{host}:{parts.port}" if parts.port else host
    return None


def unreachable(exc: BaseException, fallback_host: str | None = None) -> str | None:
    """The line "could not reach HOST: REASON" for a failure to reach a server, else None."""
    reason = network_reason(exc)
    if reason is None:
        return None
    host = network_host(exc) or fallback_host
    return f"could not reach {host}: {reason}" if host else f"could not reach the server: {reason}"

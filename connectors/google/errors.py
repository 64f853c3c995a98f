"""Google: the one place that turns google-api-python-client, google-auth and transport errors
into :mod:`connectors.errors` types.

One internal fallback exists: :class:`SequenceTooLow` (400 ``invalidSequenceValue`` to an
update), which the single-write path answers by re-reading the event's sequence. It is not part
of the public hierarchy; it is raised only where the caller asked for it
(``fallback=sequence_fallback``), everywhere else the same answer is a public.ProtocolError.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from http.client import HTTPException

import google.auth.exceptions
import httplib2
from googleapiclient.errors import HttpError

from connectors import errors as public
from connectors.common import parse_retry_after, plain

RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
QUOTA_REASONS = {"quotaExceeded", "dailyLimitExceeded"}
# A calendar over its usage limits stays so for hours ("Avoid Calendar use limits"); without a
# Retry-After from Google, that calendar is left alone this long before one write is tried.
QUOTA_BACKOFF = 3600.0


class SequenceTooLow(Exception):
    """400 invalidSequenceValue: the event's sequence on Google is higher than the one sent.
    Internal: the caller re-reads the sequence and writes again."""


Fallback = Callable[[BaseException], Exception | None]


def reason(exc: HttpError) -> str:
    """The ``reason`` of Google's error body (``rateLimitExceeded``, ``fullSyncRequired``…)."""
    try:
        body = json.loads(exc.content)
        errors = body.get("error", {}).get("errors") or [{}]
        return str(errors[0].get("reason") or body.get("error", {}).get("status") or "")
    except (ValueError, AttributeError):
        return ""


def sequence_fallback(exc: BaseException) -> Exception | None:
    """Claims 400 invalidSequenceValue as :class:`SequenceTooLow` (see :func:`translated`)."""
    if not isinstance(exc, HttpError) or int(exc.resp.status) != 400:
        return None
    if reason(exc) != "invalidSequenceValue":
        return None
    return SequenceTooLow("HTTP 400 invalidSequenceValue")


def _http_error(exc: HttpError, what: str) -> public.ConnectorError:
    status = int(exc.resp.status)
    why = reason(exc)
    hint = parse_retry_after(exc.resp.get("retry-after"))
    message = f"{what}: HTTP {status} {why}".strip()
    if status == 403 and why in RATE_LIMIT_REASONS:
        return public.Transient(message, hint)
    if status == 403 and why in QUOTA_REASONS:
        return public.Transient(message, max(hint or 0.0, QUOTA_BACKOFF))
    if status == 429 or status >= 500:
        return public.Transient(message, hint)
    if status in (401, 403):
        return public.AuthFailed(message)
    if status == 404:
        return public.NotFound(message)
    if status == 409:
        return public.AlreadyExists(message)
    if status == 410:
        return (
            public.InvalidSyncToken(message)
            if why == "fullSyncRequired"
            else public.NotFound(message)
        )
    if status == 412:
        return public.PreconditionFailed(message)
    return public.ProtocolError(message)


def _refresh_error(exc: google.auth.exceptions.RefreshError, what: str) -> public.ConnectorError:
    text = str(exc)
    if "invalid_grant" in text:
        return public.AuthRevoked(f"{what}: the Google grant was revoked or expired ({text})")
    if getattr(exc, "retryable", False):
        return public.Transient(f"{what}: token refresh failed: {text}")
    return public.AuthFailed(f"{what}: token refresh failed: {text}")


def translate(exc: BaseException, what: str) -> public.ConnectorError:
    """The one place Google library, auth and transport errors become connector errors."""
    if isinstance(exc, public.ConnectorError):
        return exc
    if isinstance(exc, HttpError):
        return _http_error(exc, what)
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return _refresh_error(exc, what)
    # http.client's own errors (an answer cut off mid-body: IncompleteRead) reach us unwrapped
    # through httplib2; the request may or may not have been applied, like a timeout.
    if isinstance(
        exc, google.auth.exceptions.TransportError | httplib2.HttpLib2Error | HTTPException
    ):
        return public.Transient(f"{what}: {plain(exc)}")
    if isinstance(exc, TimeoutError | socket.timeout | ConnectionError | OSError):
        return public.Transient(f"{what}: {plain(exc)}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        return public.ProtocolError(f"{what}: unexpected answer: {type(exc).__name__}: {exc}")
    raise exc


@contextlib.contextmanager
def translated(what: str, fallback: Fallback | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        signal = fallback(exc) if fallback is not None else None
        if signal is not None:
            raise signal from exc
        raise translate(exc, what) from exc

"""``POST /v1/events``: platform events over HTTP, signed like the outbound webhook.

The body is one event object or a JSON array of events. ``Syncd-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`` authenticates it; several ``v1=`` may be sent
(one per key while the platform rotates keys) and any one matching is enough. A timestamp more
than ``[api] signature_tolerance`` seconds from now is refused, so a captured request cannot be
replayed later; replaying an event id within that window is harmless (``duplicate``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.app import App
from syncd.ingest import Ingestor, Outcome, Result
from syncd.json_input import JSONError, parse_json
from syncd.ratelimit import Kind
from syncd.secrets import SecretError, read_secret_file
from syncd.web import security
from syncd.web.host import Host
from syncd.web.responses import error_response

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Syncd-Signature"
INGEST_SECRET_ENV = "SYNCD_INGEST_SECRET"  # noqa: S105 - a variable name


class SignatureError(Exception):
    """Why a request's signature is refused (the 401 message)."""


def ingest_secret(app: App) -> bytes:
    """The inbound HMAC key: ``$SYNCD_INGEST_SECRET``, else ``[api] ingest_secret_file``."""
    if env := os.environ.get(INGEST_SECRET_ENV, "").strip():
        return env.encode()
    path = app.config.api.ingest_secret_file
    if path is not None:
        return read_secret_file(path).encode()
    raise SecretError(f"no ingest secret: set ${INGEST_SECRET_ENV} or [api] ingest_secret_file")


def parse_signature(header: str) -> tuple[int, list[str]]:
    """``(t, [v1, ...])`` of a ``Syncd-Signature`` header; SignatureError when malformed."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            # ASCII digits only: str.isdigit() accepts "²" (int() refuses it) and
            # Arabic-Indic digits (int() reads them as another number).
            if (
                timestamp is not None
                or not (value.isascii() and value.isdigit())
                or len(value) > 12
            ):
                raise SignatureError(f"malformed {SIGNATURE_HEADER} header: bad t=")
            timestamp = int(value)
        elif key == "v1":
            if len(value) != 64 or any(ch not in "0123456789abcdefABCDEF" for ch in value):
                raise SignatureError(f"malformed {SIGNATURE_HEADER} header: bad v1=")
            macs.append(value.lower())
        # other schemes (v0=, v2=) are ignored, as the sender may add them
    if timestamp is None or not macs:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: needs t= and v1=")
    return timestamp, macs


def check_signature(
    header: str | None, body: bytes, secret: bytes, now: float, tolerance: float
) -> None:
    """Raise SignatureError unless ``header`` signs ``body`` with ``secret`` close to ``now``."""
    if header is None or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp, macs = parse_signature(header)
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Compare against every candidate, so the time taken does not say which one matched.
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(expected, mac)
    if not matched:
        raise SignatureError("signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"signature timestamp is more than {tolerance:g} s from now")


def result_json(outcome: Outcome) -> dict[str, Any]:
    return {"id": outcome.event_id, "result": outcome.result.value, "error": outcome.error}


def routes(app: App, daemon: Host) -> list[BaseRoute]:
    ingestor = app.ingestor()
    api = app.config.api

    async def events(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        try:
            secret = await loop.run_in_executor(None, ingest_secret, app)
        except SecretError as exc:
            log.error("POST /v1/events refused: %s", exc)
            return error_response(503, "event ingestion is not configured on this daemon")
        wait = await security.refused_for(request, app, Kind.SIGNATURE)
        if wait is not None:
            return security.too_many(Kind.SIGNATURE, wait)
        body = await request.body()
        header = request.headers.get(SIGNATURE_HEADER)
        try:
            check_signature(header, body, secret, app.clock().timestamp(), api.signature_tolerance)
        except SignatureError as exc:
            if header is not None and header.strip():  # a missing signature is no guess
                await security.count_failure(request, app, Kind.SIGNATURE)
            return error_response(401, str(exc))
        try:
            payload = parse_json(body)
        except JSONError as exc:
            return error_response(400, str(exc))
        batch = payload if isinstance(payload, list) else [payload]
        if not batch:
            return error_response(400, "an empty batch: send one event or a non-empty array")
        if len(batch) > api.max_events:
            return error_response(400, f"at most {api.max_events} events per request")
        outcomes = await loop.run_in_executor(None, _ingest_all, ingestor, batch)
        if any(o.result is Result.APPLIED for o in outcomes):
            daemon.wake()
        return JSONResponse({"results": [result_json(o) for o in outcomes]})

    return [Route("/v1/events", events, methods=["POST"])]


def _ingest_all(ingestor: Ingestor, batch: list[Any]) -> list[Outcome]:
    """Each event on its own: a refused one does not stop the others."""
    return [
        ingestor.ingest(item)
        if isinstance(item, dict)
        else Outcome(None, Result.REFUSED, error="event: an event must be a JSON object")
        for item in batch
    ]

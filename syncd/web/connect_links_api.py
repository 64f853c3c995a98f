"""``POST /v1/admin/connect-links``: the platform asks for a link to send a therapist, who opens
it to connect their own calendar (admin scope; see :mod:`syncd.connect_links`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import connect_links
from syncd.app import App
from syncd.auth import Scope
from syncd.errors import OperationError
from syncd.web.host import Host
from syncd.web.responses import error_response
from syncd.web.security import require

PATH = "/v1/admin/connect-links"


class BadRequest(ValueError):
    pass


def parse(body: bytes) -> tuple[str, float | None]:
    """``(therapist id, days or None)`` of a request body, or BadRequest naming the field."""
    try:
        data: Any = json.loads(body) if body.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("malformed JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(data) - {"therapist_id", "days"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    tid = data.get("therapist_id")
    if not isinstance(tid, str) or not tid or len(tid) > 200:
        raise BadRequest("therapist_id: a non-empty string of at most 200 characters is required")
    days = data.get("days")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 90
    ):
        raise BadRequest("days: a number greater than 0 and at most 90")
    return tid, None if days is None else float(days)


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    async def create(request: Request) -> Response:
        denied = await require(request, app, Scope.ADMIN)
        if isinstance(denied, Response):
            return denied
        try:
            tid, days = parse(await request.body())
        except BadRequest as exc:
            return error_response(400, str(exc))
        loop = asyncio.get_running_loop()
        try:
            link = await loop.run_in_executor(
                None, lambda: connect_links.create(app, tid, days=days)
            )
        except OperationError as exc:
            status = 404 if "unknown therapist" in str(exc) else 400
            return error_response(status, str(exc))
        return JSONResponse(
            {
                "therapist_id": link.therapist_id,
                "url": link.url,
                "expires_at": link.expires_at.isoformat(),
            },
            status_code=201,
        )

    return [Route(PATH, create, methods=["POST"])]

"""Read-only JSON endpoints: availability and conflicts. Served on the daemon's port, which is
bound to localhost by default; both need a bearer token with the ``read`` scope."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import operations
from syncd.app import App
from syncd.auth import Scope
from syncd.web.host import Host
from syncd.web.responses import error_response
from syncd.web.security import require


def _instant(value: str | None, default: datetime, name: str) -> datetime:
    if value is None:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: not an ISO-8601 instant") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: an offset or Z is required")
    return parsed


def availability_json(view: operations.AvailabilityView) -> dict[str, Any]:
    return {
        "therapist_id": view.therapist_id,
        "timezone": view.timezone,
        "from": view.start.isoformat(),
        "to": view.end.isoformat(),
        "slots": [{"start": x.start.isoformat(), "end": x.end.isoformat()} for x in view.slots],
        "sources": [
            {
                "source": src.source,
                "as_of": src.as_of.isoformat() if src.as_of else None,
                "stale": src.stale,
                "error": src.error,
            }
            for src in view.sources
        ],
    }


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    async def availability(request: Request) -> Response:
        if isinstance(denied := await require(request, app, Scope.READ), Response):
            return denied
        now = app.clock()
        try:
            start = _instant(request.query_params.get("from"), now, "from")
            end = _instant(request.query_params.get("to"), start + timedelta(days=7), "to")
            view = await asyncio.get_running_loop().run_in_executor(
                None, operations.availability_for, app, request.path_params["id"], start, end
            )
        except ValueError as exc:
            return error_response(400, str(exc))
        except operations.OperationError as exc:
            status = 404 if "unknown therapist" in str(exc) else 400
            return error_response(status, str(exc))
        return JSONResponse(availability_json(view))

    async def conflicts(request: Request) -> Response:
        if isinstance(denied := await require(request, app, Scope.READ), Response):
            return denied
        rows = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: operations.conflicts(
                app,
                therapist_id=request.query_params.get("therapist"),
                include_resolved=request.query_params.get("all") in ("1", "true"),
            ),
        )
        return JSONResponse(
            {
                "conflicts": [
                    {
                        "id": r.id,
                        "therapist_id": r.therapist_id,
                        "entity": {"kind": r.entity_kind, "id": r.entity_id},
                        "overlap": {"start": r.start_at.isoformat(), "end": r.end_at.isoformat()},
                        "connection_id": r.connection_id,
                        "calendar": r.calendar_ref,
                        "remote_ref": r.remote_ref,
                        "detected_at": r.detected_at.isoformat(),
                        "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
                    }
                    for r in rows
                ]
            }
        )

    return [
        Route("/v1/therapists/{id}/availability", availability, methods=["GET"]),
        Route("/v1/conflicts", conflicts, methods=["GET"]),
    ]

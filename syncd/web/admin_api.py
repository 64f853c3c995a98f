"""The admin API: status, the outbox, resync and erasure over HTTP, behind bearer tokens
(``read`` for GET, ``admin`` for POST and DELETE). Resync runs the same lease-guarded passes as
``syncd resync``, so it is safe while the daemon runs; erasure is ``syncd forget``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import erasure, operations, outbox
from syncd.app import App
from syncd.auth import Scope
from syncd.json_input import JSONError, parse_json
from syncd.store import replicas
from syncd.web.host import Host
from syncd.web.responses import error_response
from syncd.web.security import off_loop, require

MAX_OUTBOX_LIMIT = 500


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_json(row: operations.StatusRow) -> dict[str, Any]:
    return {
        "therapist_id": row.therapist_id,
        "connection_id": row.connection_id,
        "provider": row.provider,
        "state": row.state,
        "entries": row.entries,
        "last_success_at": _iso(row.last_success_at),
        "due_at": _iso(row.due_at),
        "failures": row.failures,
        "drift": row.drift,
        "last_error": row.last_error,
        "busy_as_of": _iso(row.busy_as_of),
        "busy_state": row.busy_state,
        "held_by": row.held_by,
        "busy_error": row.busy_error,
        "paused_until": _iso(row.paused_until),
    }


def replica_json(r: replicas.ReplicaInfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "host": r.host,
        "pid": r.pid,
        "version": r.version,
        "started_at": _iso(r.started_at),
        "seen_at": _iso(r.seen_at),
        "alive": r.alive,
        "state": r.state,
        "leases": r.leases,
    }


def outbox_json(entries: list[outbox.OutboxEntry], summary: outbox.OutboxSummary) -> dict[str, Any]:
    return {
        "summary": {
            "pending": summary.pending,
            "oldest_pending_created_at": _iso(summary.oldest_pending_created_at),
            "failing": summary.failing,
        },
        "notifications": [
            {
                "id": e.id,
                "event_id": e.event_id,
                "topic": e.topic,
                "state": e.state,
                "created_at": _iso(e.created_at),
                "delivered_at": _iso(e.delivered_at),
                "attempts": e.attempts,
                "next_attempt_at": _iso(e.next_attempt_at),
                "last_status": e.last_status,
                "last_error": e.last_error,
            }
            for e in entries
        ],
    }


def resync_json(result: operations.ResyncResult) -> dict[str, Any]:
    report = result.report
    connections = report.connections if report is not None else []
    errors = [f"connection {c.connection_id}: {c.error}" for c in connections if c.error]
    if result.busy:
        errors.append("a pass is running for this therapist; try again shortly")
    return {
        "therapist_id": result.therapist_id,
        "busy": result.busy,
        "connections": [
            {
                "connection_id": c.connection_id,
                "applied": c.applied,
                "drift": c.drift,
                "error": c.error,
                "actions": [
                    {"op": a.op.value, "uid": a.uid, "description": a.describe()} for a in c.actions
                ],
            }
            for c in connections
        ],
        "errors": errors,
    }


def erased_json(erased: erasure.Erased) -> dict[str, Any]:
    return {
        "found": erased.found,
        "sessions": erased.sessions,
        "offers": erased.offers,
        "reserved_slots": erased.reserved_slots,
        "history": erased.history,
        "inbound_events": erased.inbound_events,
        "notifications": erased.notifications,
        "conflicts": erased.conflicts,
        "connections": erased.connections,
        "calendar_entries_removed": erased.calendar_entries,
        "calendars_pending": erased.pending_calendars,
        "calendars_left": erased.calendars_left,
    }


class BadRequest(ValueError):
    pass


def parse_resync(body: bytes) -> tuple[list[str] | None, bool, bool]:
    """``(therapist ids or None for all, full, dry_run)`` of a resync request body."""
    try:
        data = parse_json(body) if body.strip() else None
    except JSONError as exc:
        raise BadRequest(str(exc)) from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(data) - {"therapists", "all", "full", "dry_run"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    flags = {}
    for name in ("all", "full", "dry_run"):
        value = data.get(name, False)
        if not isinstance(value, bool):
            raise BadRequest(f"{name}: must be true or false")
        flags[name] = value
    ids = data.get("therapists")
    if flags["all"]:
        if ids is not None:
            raise BadRequest('give either "therapists" or "all": true, not both')
        return None, flags["full"], flags["dry_run"]
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(x, str) and x for x in ids)
        or len(ids) > 1000
    ):
        raise BadRequest('"therapists" must be a non-empty list of ids (or send "all": true)')
    return list(dict.fromkeys(ids)), flags["full"], flags["dry_run"]


def _resync(
    app: App, ids: list[str] | None, full: bool, dry_run: bool
) -> list[operations.ResyncResult]:
    known = operations.all_therapist_ids(app)
    if ids is None:
        ids = known
    missing = [x for x in ids if x not in set(known)]
    if missing:
        raise LookupError(f"unknown therapist {missing[0]!r}")
    return operations.resync(app, ids, full=full, dry_run=dry_run)


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    async def therapists(request: Request) -> Response:
        denied = await require(request, app, Scope.READ)
        if isinstance(denied, Response):
            return denied
        rows = await asyncio.get_running_loop().run_in_executor(None, operations.status, app)
        return JSONResponse({"therapists": [status_json(r) for r in rows]})

    async def replica_view(request: Request) -> Response:
        denied = await require(request, app, Scope.READ)
        if isinstance(denied, Response):
            return denied

        def read() -> dict[str, Any]:
            now = app.clock()
            alive_within = timedelta(seconds=app.config.daemon.lease_seconds)
            with app.sessions() as s:
                leases = replicas.leases_by_owner(s, now)  # read once, for both answers
                found = replicas.overview(s, now, alive_within, leases)
            return {"replicas": [replica_json(r) for r in found], "leases": leases}

        return JSONResponse(await asyncio.get_running_loop().run_in_executor(None, read))

    async def outbox_view(request: Request) -> Response:
        denied = await require(request, app, Scope.READ)
        if isinstance(denied, Response):
            return denied
        raw = request.query_params.get("limit", "50")
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_OUTBOX_LIMIT:
            return error_response(400, f"limit: an integer from 1 to {MAX_OUTBOX_LIMIT}")
        limit = int(raw)

        def read() -> dict[str, Any]:
            with app.sessions() as s:
                return outbox_json(outbox.list_recent(s, limit), outbox.pending_summary(s))

        return JSONResponse(await asyncio.get_running_loop().run_in_executor(None, read))

    async def resync(request: Request) -> Response:
        denied = await require(request, app, Scope.ADMIN)
        if isinstance(denied, Response):
            return denied
        try:
            ids, full, dry_run = parse_resync(await request.body())
        except BadRequest as exc:
            return error_response(400, str(exc))
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                None, _resync, app, ids, full, dry_run
            )
        except LookupError as exc:
            return error_response(404, str(exc.args[0]))
        except operations.OperationError as exc:
            status = 404 if "unknown therapist" in str(exc) else 400
            return error_response(status, str(exc))
        return JSONResponse(
            {"dry_run": dry_run, "full": full, "results": [resync_json(r) for r in results]}
        )

    async def forget(request: Request) -> Response:
        denied = await require(request, app, Scope.ADMIN)
        if isinstance(denied, Response):
            return denied
        entity_id = request.path_params["id"]
        keep = request.query_params.get("keep_calendar_entries", "false")
        if keep not in ("true", "false"):
            return error_response(400, "keep_calendar_entries: true or false")
        try:
            if request.url.path.startswith("/v1/admin/clients/"):
                erased = await off_loop(erasure.forget_client, app, entity_id)
            else:
                erased = await off_loop(
                    erasure.forget_therapist, app, entity_id, keep_calendar_entries=keep == "true"
                )
        except erasure.NotErased as exc:
            return error_response(409, str(exc))
        except operations.OperationError as exc:
            return error_response(400, str(exc))
        return JSONResponse(erased_json(erased))

    return [
        Route("/v1/admin/clients/{id}", forget, methods=["DELETE"]),
        Route("/v1/admin/therapists/{id}", forget, methods=["DELETE"]),
        Route("/v1/admin/therapists", therapists, methods=["GET"]),
        Route("/v1/admin/replicas", replica_view, methods=["GET"]),
        Route("/v1/admin/outbox", outbox_view, methods=["GET"]),
        Route("/v1/admin/resync", resync, methods=["POST"]),
    ]

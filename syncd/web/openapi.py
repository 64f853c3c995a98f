"""The OpenAPI 3.1 description of the daemon's JSON endpoints, served at ``GET /openapi.json``.

Hand-written and committed as ``docs/openapi.json``; a test keeps the two equal and checks that
every JSON route the daemon serves is described. Regenerate the file after a change with
``python -m syncd.web.openapi > docs/openapi.json``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import __version__
from syncd.app import App
from syncd.web.host import Host

PATH = "/openapi.json"

_NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{description}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_READ: list[dict[str, list[str]]] = [{"bearer": ["read"]}]
_AUTH_ERRORS = {
    "401": _error("Unauthorized"),
    "403": _error("Forbidden"),
    "429": _error("TooManyFailures"),
}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["status", "error"],
        status={"type": "integer", "examples": [404]},
        error={"type": "string", "examples": ["Not Found"]},
    ),
    "PlatformEvent": {
        **_obj(
            ["id", "type", "occurred_at", "data"],
            id={"type": "string"},
            type={
                "type": "string",
                "enum": [
                    "therapist.upserted",
                    "session.upserted",
                    "offer.upserted",
                    "reserved_slot.upserted",
                ],
            },
            occurred_at=_TIME,
            data={"type": "object", "description": "see syncd/schema/platform-events.schema.json"},
        ),
        "description": "One platform event, as in the platform contract (README).",
    },
    "EventResult": _obj(
        ["id", "result", "error"],
        id={"type": ["string", "null"]},
        result={"type": "string", "enum": ["applied", "duplicate", "stale", "refused"]},
        error={"type": ["string", "null"], "description": "why an event was refused"},
    ),
    "Slot": _obj(["start", "end"], start=_TIME, end=_TIME),
    "Availability": _obj(
        ["therapist_id", "timezone", "from", "to", "slots", "sources"],
        therapist_id={"type": "string"},
        timezone={"type": "string"},
        **{"from": _TIME, "to": _TIME},
        slots={"type": "array", "items": _ref("Slot")},
        sources={
            "type": "array",
            "items": _obj(
                ["source", "as_of", "stale", "error"],
                source={"type": "string"},
                as_of=_NULLABLE_TIME,
                stale={"type": "boolean"},
                error={"type": ["string", "null"]},
            ),
        },
    ),
    "Conflict": _obj(
        ["id", "therapist_id", "entity", "overlap", "connection_id", "calendar", "remote_ref"],
        id={"type": "integer"},
        therapist_id={"type": "string"},
        entity=_obj(["kind", "id"], kind={"type": "string"}, id={"type": "string"}),
        overlap=_ref("Slot"),
        connection_id={"type": "integer"},
        calendar={"type": ["string", "null"]},
        remote_ref={"type": ["string", "null"]},
        detected_at=_TIME,
        resolved_at=_NULLABLE_TIME,
    ),
    "TherapistStatus": _obj(
        ["therapist_id", "connection_id", "provider", "state", "entries"],
        therapist_id={"type": "string"},
        connection_id={"type": ["integer", "null"]},
        provider={"type": ["string", "null"]},
        state={"type": "string"},
        entries={"type": "integer"},
        last_success_at=_NULLABLE_TIME,
        due_at=_NULLABLE_TIME,
        failures={"type": "integer"},
        drift={"type": "integer"},
        last_error={"type": ["string", "null"]},
        busy_as_of=_NULLABLE_TIME,
        busy_state={"type": "string", "enum": ["fresh", "stale", "flagged", "-"]},
        busy_error={
            "type": ["string", "null"],
            "description": "why busy time, or one calendar's part of it, is not current",
        },
        paused_until=_NULLABLE_TIME,
        held_by={
            "type": ["string", "null"],
            "description": "the replica (or CLI resync) whose lease covers a running pass",
        },
    ),
    "Replica": _obj(
        ["id", "host", "pid", "version", "started_at", "seen_at", "alive", "state", "leases"],
        id={"type": "string", "description": "host:pid:random, as in logs and lease rows"},
        host={"type": "string"},
        pid={"type": "integer"},
        version={"type": "string"},
        started_at=_TIME,
        seen_at=_TIME,
        alive={
            "type": "boolean",
            "description": "heartbeat within one lease period and its process not known gone",
        },
        state={
            "type": "string",
            "enum": ["alive", "silent", "gone"],
            "description": "silent: no heartbeat within one lease period; gone: its process no "
            "longer exists on the host answering",
        },
        leases={"type": "integer", "description": "therapist passes it is running now"},
    ),
    "Notification": _obj(
        ["id", "event_id", "topic", "state", "created_at", "attempts"],
        id={"type": "integer"},
        event_id={"type": "string"},
        topic={"type": "string"},
        state={"type": "string", "enum": ["delivered", "failing", "pending"]},
        created_at=_TIME,
        delivered_at=_NULLABLE_TIME,
        attempts={"type": "integer"},
        next_attempt_at=_NULLABLE_TIME,
        last_status={"type": ["integer", "null"]},
        last_error={"type": ["string", "null"]},
    ),
    "ResyncRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "therapists": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "all": {"type": "boolean", "default": False},
            "full": {"type": "boolean", "default": False},
            "dry_run": {"type": "boolean", "default": False},
        },
        "description": 'Either "therapists" or "all": true.',
    },
    "ConnectLinkRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["therapist_id"],
        "properties": {
            "therapist_id": {"type": "string", "minLength": 1, "maxLength": 200},
            "days": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 90,
                "description": "how long the link stays valid (default: [connect] link_days, 7)",
            },
        },
    },
    "ConnectLink": _obj(
        ["therapist_id", "url", "expires_at"],
        therapist_id={"type": "string"},
        url={
            "type": "string",
            "format": "uri",
            "description": "<public_url>/connect/<signed token>: send it to the therapist only",
        },
        expires_at=_TIME,
    ),
    "Erased": _obj(
        ["found", "sessions", "offers", "reserved_slots", "history", "notifications"],
        found={"type": "boolean", "description": "false: nothing was stored about them"},
        sessions=_COUNT,
        offers=_COUNT,
        reserved_slots=_COUNT,
        history=_COUNT | {"description": "stored inbound event bodies"},
        inbound_events=_COUNT,
        notifications=_COUNT | {"description": "outbox notifications naming them"},
        conflicts=_COUNT,
        connections=_COUNT | {"description": "calendar connections removed (therapist)"},
        calendar_entries_removed=_COUNT,
        calendars_pending={
            "type": "array",
            "items": {"type": "string"},
            "description": "therapists whose calendars the daemon's next pass cleans",
        },
        calendars_left={
            "type": "array",
            "items": {"type": "integer"},
            "description": "connections needing re-authorisation: entries may remain there",
        },
    ),
    "ResyncResult": _obj(
        ["therapist_id", "busy", "connections", "errors"],
        therapist_id={"type": "string"},
        busy={"type": "boolean", "description": "a pass was running; nothing was done"},
        connections={
            "type": "array",
            "items": _obj(
                ["connection_id", "applied", "drift", "error", "actions"],
                connection_id={"type": "integer"},
                applied={"type": "integer"},
                drift={"type": "integer"},
                error={"type": ["string", "null"]},
                actions={
                    "type": "array",
                    "items": _obj(
                        ["op", "uid", "description"],
                        op={
                            "type": "string",
                            "enum": ["create", "update", "delete", "forget", "rehash"],
                        },
                        uid={"type": ["string", "null"]},
                        description={"type": "string"},
                    ),
                },
            ),
        },
        errors={"type": "array", "items": {"type": "string"}},
    ),
}

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: 200 while the process runs",
            "responses": {"200": _json(_obj(["status"], status={"const": "ok"}), "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: the database answers SELECT 1 within 2 s",
            "responses": {
                "200": _json(_obj(["status"], status={"const": "ready"}), "ready"),
                "503": _json(
                    _obj(
                        ["status", "reason"],
                        status={"const": "unavailable"},
                        reason={"type": "string"},
                    ),
                    "the database did not answer",
                ),
            },
        }
    },
    PATH: {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI 3.1 document")},
        }
    },
    "/v1/events": {
        "post": {
            "summary": "Platform events: one event or an array of at most 500",
            "description": (
                "Signed with the Syncd-Signature header: t=<unix seconds>,v1=<hex "
                'HMAC-SHA256(secret, "<t>." + raw body)>; several v1= may be given (key '
                "rotation), any one matching suffices. Refused when t is more than 300 s "
                "from the daemon's clock. Each event is applied on its own; a replayed id is "
                "answered duplicate and changes nothing."
            ),
            "security": [{"signature": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ref("PlatformEvent"),
                                {
                                    "type": "array",
                                    "items": _ref("PlatformEvent"),
                                    "minItems": 1,
                                    "maxItems": 500,
                                },
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    _obj(["results"], results={"type": "array", "items": _ref("EventResult")}),
                    "one result per event, in order",
                ),
                "400": _error("BadRequest"),
                "401": _error("Unauthorized"),
                "413": _error("TooLarge"),
                "429": _error("TooManyFailures"),
                "503": _error("Unavailable"),
            },
        }
    },
    "/v1/therapists/{id}/availability": {
        "get": {
            "summary": "A therapist's free slots",
            "security": _READ,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "from", "in": "query", "schema": _TIME, "description": "default: now"},
                {"name": "to", "in": "query", "schema": _TIME, "description": "default: +7 days"},
            ],
            "responses": {
                "200": _json(_ref("Availability"), "the slots and where busy time came from"),
                "400": _error("BadRequest"),
                **_AUTH_ERRORS,
                "404": _error("NotFound"),
            },
        }
    },
    "/v1/conflicts": {
        "get": {
            "summary": "Overlaps between platform entries and the therapist's own busy time",
            "security": _READ,
            "parameters": [
                {"name": "therapist", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "all",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["1", "true"]},
                    "description": "include resolved conflicts",
                },
            ],
            "responses": {
                "200": _json(
                    _obj(["conflicts"], conflicts={"type": "array", "items": _ref("Conflict")}),
                    "the conflicts, by start",
                ),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/therapists": {
        "get": {
            "summary": "Sync status per therapist and connection (as `syncd status`)",
            "security": _READ,
            "responses": {
                "200": _json(
                    _obj(
                        ["therapists"],
                        therapists={"type": "array", "items": _ref("TherapistStatus")},
                    ),
                    "one row per therapist and connection",
                ),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/replicas": {
        "get": {
            "summary": "The daemon processes sharing this database and the leases each holds",
            "security": _READ,
            "responses": {
                "200": _json(
                    _obj(
                        ["replicas", "leases"],
                        replicas={"type": "array", "items": _ref("Replica")},
                        leases={
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                            "description": "unexpired leases per owner, registered or not",
                        },
                    ),
                    "registered replicas, oldest first",
                ),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/outbox": {
        "get": {
            "summary": "The newest notifications to the platform and the pending summary",
            "security": _READ,
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                }
            ],
            "responses": {
                "200": _json(
                    _obj(
                        ["summary", "notifications"],
                        summary=_obj(
                            ["pending", "oldest_pending_created_at", "failing"],
                            pending={"type": "integer"},
                            oldest_pending_created_at=_NULLABLE_TIME,
                            failing={"type": "integer"},
                        ),
                        notifications={"type": "array", "items": _ref("Notification")},
                    ),
                    "newest first",
                ),
                "400": _error("BadRequest"),
                **_AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/connect-links": {
        "post": {
            "summary": "A single-use link the therapist opens to connect their own calendar",
            "description": (
                "The page it opens offers Google and CalDAV providers (iCloud, Fastmail, "
                "Nextcloud, others), tries the credentials before storing anything, lets the "
                "therapist choose busy calendars, shows sample entries and can disconnect. It "
                "also reconnects a connection that needs re-authorisation (calendar."
                "disconnected notifications carry such a link, as reconnect_url). Single use, "
                "expiring; only an HMAC-signed id is in the URL."
            ),
            "security": [{"bearer": ["admin"]}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ConnectLinkRequest")}},
            },
            "responses": {
                "201": _json(_ref("ConnectLink"), "the link and when it expires"),
                "400": _error("BadRequest"),
                **_AUTH_ERRORS,
                "404": _error("NotFound"),
            },
        }
    },
    "/v1/admin/resync": {
        "post": {
            "summary": "Run passes now (dry_run: only plan them)",
            "security": [{"bearer": ["admin"]}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ResyncRequest")}},
            },
            "responses": {
                "200": _json(
                    _obj(
                        ["dry_run", "full", "results"],
                        dry_run={"type": "boolean"},
                        full={"type": "boolean"},
                        results={"type": "array", "items": _ref("ResyncResult")},
                    ),
                    "per therapist: the planned (dry run) or applied actions, and errors",
                ),
                "400": _error("BadRequest"),
                **_AUTH_ERRORS,
                "404": _error("NotFound"),
            },
        }
    },
}

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}}


def _forget(who: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "delete": {
            "summary": f"Erase a {who} (as `syncd forget {who}`); idempotent",
            "security": [{"bearer": ["admin"]}],
            "parameters": [_ID, *extra],
            "responses": {
                "200": _json(_ref("Erased"), "what was erased (counts only)"),
                "400": _error("BadRequest"),
                **_AUTH_ERRORS,
                "409": _error("NotErased"),
            },
        }
    }


PATHS["/v1/admin/clients/{id}"] = _forget("client", [])
PATHS["/v1/admin/therapists/{id}"] = _forget(
    "therapist",
    [
        {
            "name": "keep_calendar_entries",
            "in": "query",
            "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
            "description": "erase even if a calendar cannot be reached, leaving entries there",
        }
    ],
)

_RESPONSES = {
    name: _json(_ref("Error"), text)
    for name, text in [
        ("BadRequest", "a malformed request"),
        ("Unauthorized", "missing or invalid credentials (the error says which)"),
        ("Forbidden", "the token's scope does not allow this"),
        ("NotFound", "unknown therapist"),
        ("TooLarge", "request body over 1 MiB"),
        ("Unavailable", "not configured on this daemon"),
        ("NotErased", "not possible now (a calendar unreachable, a pass running); retry"),
    ]
}
_RESPONSES["TooManyFailures"] = {
    **_json(_ref("Error"), "too many failed credential checks from this address ([limits])"),
    "headers": {
        "Retry-After": {
            "description": "seconds until this address may try again",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy)."""
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "syncd",
            "version": __version__,
            "description": "The calendar-sync daemon's HTTP API. Errors are "
            '{"status": <code>, "error": <message>}.',
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": _RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "syncd_... tokens (`syncd token create`); scopes read "
                    "(GET) and admin (also POST)",
                },
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Syncd-Signature",
                    "description": "HMAC-SHA256 with the shared ingest secret",
                },
            },
        },
    }
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    return copy


def render() -> str:
    return json.dumps(document(), indent=2) + "\n"


def routes(_app: App, _daemon: Host) -> list[BaseRoute]:
    body = document()

    async def openapi(_request: Request) -> Response:
        return JSONResponse(body)

    return [Route(PATH, openapi, methods=["GET"])]


if __name__ == "__main__":
    print(render(), end="")

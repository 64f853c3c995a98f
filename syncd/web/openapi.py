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
from syncd.web.openapi_schemas import (
    AUTH_ERRORS,
    NULLABLE_TIME,
    READ,
    SCHEMAS,
    TIME,
    body,
    error_ref,
    obj,
    ref,
)

PATH = "/openapi.json"

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: 200 while the process runs",
            "responses": {"200": body(obj(["status"], status={"const": "ok"}), "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: the database answers SELECT 1 within 2 s",
            "responses": {
                "200": body(obj(["status"], status={"const": "ready"}), "ready"),
                "503": body(
                    obj(
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
            "responses": {"200": body({"type": "object"}, "the OpenAPI 3.1 document")},
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
                                ref("PlatformEvent"),
                                {
                                    "type": "array",
                                    "items": ref("PlatformEvent"),
                                    "minItems": 1,
                                    "maxItems": 500,
                                },
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": body(
                    obj(["results"], results={"type": "array", "items": ref("EventResult")}),
                    "one result per event, in order",
                ),
                "400": error_ref("BadRequest"),
                "401": error_ref("Unauthorized"),
                "413": error_ref("TooLarge"),
                "429": error_ref("TooManyFailures"),
                "503": error_ref("Unavailable"),
            },
        }
    },
    "/v1/therapists/{id}/availability": {
        "get": {
            "summary": "A therapist's free slots",
            "security": READ,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "from", "in": "query", "schema": TIME, "description": "default: now"},
                {"name": "to", "in": "query", "schema": TIME, "description": "default: +7 days"},
            ],
            "responses": {
                "200": body(ref("Availability"), "the slots and where busy time came from"),
                "400": error_ref("BadRequest"),
                **AUTH_ERRORS,
                "404": error_ref("NotFound"),
            },
        }
    },
    "/v1/conflicts": {
        "get": {
            "summary": "Overlaps between platform entries and the therapist's own busy time",
            "security": READ,
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
                "200": body(
                    obj(["conflicts"], conflicts={"type": "array", "items": ref("Conflict")}),
                    "the conflicts, by start",
                ),
                **AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/therapists": {
        "get": {
            "summary": "Sync status per therapist and connection (as `syncd status`)",
            "security": READ,
            "responses": {
                "200": body(
                    obj(
                        ["therapists"],
                        therapists={"type": "array", "items": ref("TherapistStatus")},
                    ),
                    "one row per therapist and connection",
                ),
                **AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/replicas": {
        "get": {
            "summary": "The daemon processes sharing this database and the leases each holds",
            "security": READ,
            "responses": {
                "200": body(
                    obj(
                        ["replicas", "leases"],
                        replicas={"type": "array", "items": ref("Replica")},
                        leases={
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                            "description": "unexpired leases per owner, registered or not",
                        },
                    ),
                    "registered replicas, oldest first",
                ),
                **AUTH_ERRORS,
            },
        }
    },
    "/v1/admin/outbox": {
        "get": {
            "summary": "The newest notifications to the platform and the pending summary",
            "security": READ,
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                }
            ],
            "responses": {
                "200": body(
                    obj(
                        ["summary", "notifications"],
                        summary=obj(
                            ["pending", "oldest_pending_created_at", "failing"],
                            pending={"type": "integer"},
                            oldest_pending_created_at=NULLABLE_TIME,
                            failing={"type": "integer"},
                        ),
                        notifications={"type": "array", "items": ref("Notification")},
                    ),
                    "newest first",
                ),
                "400": error_ref("BadRequest"),
                **AUTH_ERRORS,
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
                "content": {"application/json": {"schema": ref("ConnectLinkRequest")}},
            },
            "responses": {
                "201": body(ref("ConnectLink"), "the link and when it expires"),
                "400": error_ref("BadRequest"),
                **AUTH_ERRORS,
                "404": error_ref("NotFound"),
            },
        }
    },
    "/v1/admin/resync": {
        "post": {
            "summary": "Run passes now (dry_run: only plan them)",
            "security": [{"bearer": ["admin"]}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("ResyncRequest")}},
            },
            "responses": {
                "200": body(
                    obj(
                        ["dry_run", "full", "results"],
                        dry_run={"type": "boolean"},
                        full={"type": "boolean"},
                        results={"type": "array", "items": ref("ResyncResult")},
                    ),
                    "per therapist: the planned (dry run) or applied actions, and errors",
                ),
                "400": error_ref("BadRequest"),
                **AUTH_ERRORS,
                "404": error_ref("NotFound"),
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
                "200": body(ref("Erased"), "what was erased (counts only)"),
                "400": error_ref("BadRequest"),
                **AUTH_ERRORS,
                "409": error_ref("NotErased"),
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
    name: body(ref("Error"), text)
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
    **body(ref("Error"), "too many failed credential checks from this address ([limits])"),
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

"""The building blocks of the OpenAPI description (:mod:`syncd.web.openapi`): small schema
helpers and the component schemas of every JSON body the daemon sends or accepts."""

from __future__ import annotations

from typing import Any

NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_ref(description: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{description}"}


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


READ: list[dict[str, list[str]]] = [{"bearer": ["read"]}]
AUTH_ERRORS = {
    "401": error_ref("Unauthorized"),
    "403": error_ref("Forbidden"),
    "429": error_ref("TooManyFailures"),
}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["status", "error"],
        status={"type": "integer", "examples": [404]},
        error={"type": "string", "examples": ["Not Found"]},
    ),
    "PlatformEvent": {
        **obj(
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
            occurred_at=TIME,
            data={"type": "object", "description": "see syncd/schema/platform-events.schema.json"},
        ),
        "description": "One platform event, as in the platform contract (README).",
    },
    "EventResult": obj(
        ["id", "result", "error"],
        id={"type": ["string", "null"]},
        result={"type": "string", "enum": ["applied", "duplicate", "stale", "refused"]},
        error={"type": ["string", "null"], "description": "why an event was refused"},
    ),
    "Slot": obj(["start", "end"], start=TIME, end=TIME),
    "Availability": obj(
        ["therapist_id", "timezone", "from", "to", "slots", "sources"],
        therapist_id={"type": "string"},
        timezone={"type": "string"},
        **{"from": TIME, "to": TIME},
        slots={"type": "array", "items": ref("Slot")},
        sources={
            "type": "array",
            "items": obj(
                ["source", "as_of", "stale", "error"],
                source={"type": "string"},
                as_of=NULLABLE_TIME,
                stale={"type": "boolean"},
                error={"type": ["string", "null"]},
            ),
        },
    ),
    "Conflict": obj(
        ["id", "therapist_id", "entity", "overlap", "connection_id", "calendar", "remote_ref"],
        id={"type": "integer"},
        therapist_id={"type": "string"},
        entity=obj(["kind", "id"], kind={"type": "string"}, id={"type": "string"}),
        overlap=ref("Slot"),
        connection_id={"type": "integer"},
        calendar={"type": ["string", "null"]},
        remote_ref={"type": ["string", "null"]},
        detected_at=TIME,
        resolved_at=NULLABLE_TIME,
    ),
    "TherapistStatus": obj(
        ["therapist_id", "connection_id", "provider", "state", "entries"],
        therapist_id={"type": "string"},
        connection_id={"type": ["integer", "null"]},
        provider={"type": ["string", "null"]},
        state={"type": "string"},
        entries={"type": "integer"},
        last_success_at=NULLABLE_TIME,
        due_at=NULLABLE_TIME,
        failures={"type": "integer"},
        drift={"type": "integer"},
        last_error={"type": ["string", "null"]},
        busy_as_of=NULLABLE_TIME,
        busy_state={"type": "string", "enum": ["fresh", "stale", "flagged", "-"]},
        busy_error={
            "type": ["string", "null"],
            "description": "why busy time, or one calendar's part of it, is not current",
        },
        paused_until=NULLABLE_TIME,
        held_by={
            "type": ["string", "null"],
            "description": "the replica (or CLI resync) whose lease covers a running pass",
        },
    ),
    "Replica": obj(
        ["id", "host", "pid", "version", "started_at", "seen_at", "alive", "state", "leases"],
        id={"type": "string", "description": "host:pid:random, as in logs and lease rows"},
        host={"type": "string"},
        pid={"type": "integer"},
        version={"type": "string"},
        started_at=TIME,
        seen_at=TIME,
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
    "Notification": obj(
        ["id", "event_id", "topic", "state", "created_at", "attempts"],
        id={"type": "integer"},
        event_id={"type": "string"},
        topic={"type": "string"},
        state={"type": "string", "enum": ["delivered", "failing", "pending"]},
        created_at=TIME,
        delivered_at=NULLABLE_TIME,
        attempts={"type": "integer"},
        next_attempt_at=NULLABLE_TIME,
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
    "ConnectLink": obj(
        ["therapist_id", "url", "expires_at"],
        therapist_id={"type": "string"},
        url={
            "type": "string",
            "format": "uri",
            "description": "<public_url>/connect/<signed token>: send it to the therapist only",
        },
        expires_at=TIME,
    ),
    "Erased": obj(
        ["found", "sessions", "offers", "reserved_slots", "history", "notifications"],
        found={"type": "boolean", "description": "false: nothing was stored about them"},
        sessions=COUNT,
        offers=COUNT,
        reserved_slots=COUNT,
        history=COUNT | {"description": "stored inbound event bodies"},
        inbound_events=COUNT,
        notifications=COUNT | {"description": "outbox notifications naming them"},
        conflicts=COUNT,
        connections=COUNT | {"description": "calendar connections removed (therapist)"},
        calendar_entries_removed=COUNT,
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
    "ResyncResult": obj(
        ["therapist_id", "busy", "connections", "errors"],
        therapist_id={"type": "string"},
        busy={"type": "boolean", "description": "a pass was running; nothing was done"},
        connections={
            "type": "array",
            "items": obj(
                ["connection_id", "applied", "drift", "error", "actions"],
                connection_id={"type": "integer"},
                applied={"type": "integer"},
                drift={"type": "integer"},
                error={"type": ["string", "null"]},
                actions={
                    "type": "array",
                    "items": obj(
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

"""What the Calendar v3 API fixes for every method part: the event fields the server owns, the
documented limits and enum values, calendar access roles, and the small parameter parsers the
parts share."""

from __future__ import annotations

from datetime import UTC, datetime

from ._errors import bad_request
from ._util import JSON

# What every ``_m_<resource>_<method>`` handler returns: (status, json_or_None, extra_headers).
Result = tuple[int, JSON | None, dict[str, str]]

# Fields of an event the server owns; whatever else a client sends is stored as sent.
SERVER_FIELDS = frozenset(
    {
        "kind",
        "etag",
        "id",
        "htmlLink",
        "created",
        "updated",
        "creator",
        "organizer",
        "iCalUID",
        "recurringEventId",
        "originalStartTime",
        "sequence",
    }
)
KEY_ORDER = (
    "kind",
    "etag",
    "id",
    "status",
    "htmlLink",
    "created",
    "updated",
    "summary",
    "description",
    "location",
    "colorId",
    "creator",
    "organizer",
    "start",
    "end",
    "endTimeUnspecified",
    "recurrence",
    "recurringEventId",
    "originalStartTime",
    "transparency",
    "visibility",
    "iCalUID",
    "sequence",
    "attendees",
    "extendedProperties",
    "reminders",
    "eventType",
)
ENUMS = {
    "status": {"confirmed", "tentative", "cancelled"},
    "transparency": {"opaque", "transparent"},
    "visibility": {"default", "public", "private", "confidential"},
}
TIME_FIELDS = ("start", "end", "recurrence")
# events.list parameters that may not accompany a syncToken (events.list reference, syncToken).
SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
MAX_RESULTS_DEFAULT = 250
MAX_RESULTS_CAP = 2500
DEFAULT_CHANNEL_TTL = 604800  # seconds; events.watch reference, params.ttl
MAX_CHANNEL_ID = 64  # "Push notifications" guide, required properties: id
MAX_REMINDER_OVERRIDES = 5  # events resource, reminders.overrides
MAX_PROPERTY_KEY = 44  # extended properties guide, "Limits"
MAX_PROPERTY_VALUE = 1024
MAX_PROPERTIES = 300
MAX_PROPERTIES_BYTES = 32 * 1024  # keys and values of one event together
FREEBUSY_MAX_CALENDARS = 50  # freebusy.query reference, calendarExpansionMax
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONFERENCE = {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}


def ordered_event(body: JSON) -> JSON:
    out = {k: body[k] for k in KEY_ORDER if k in body}
    out.update({k: v for k, v in body.items() if k not in out})
    return out


def bool_param(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"


def int_param(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Invalid value '{value}'.", location=name) from None


# calendarList's ``accessRole`` values, weakest first (calendarList resource reference): what
# each lets the account do with a calendar it can see.
ROLES = ("freeBusyReader", "reader", "writer", "owner")

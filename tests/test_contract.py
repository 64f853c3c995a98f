"""The platform contract (DESIGN.md §3): what is accepted, what is refused and how it is named."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd import domain as d
from syncd.contract import (
    ContractError,
    OfferUpserted,
    ReservedSlotUpserted,
    SessionUpserted,
    TherapistUpserted,
    json_schema,
    offer_from,
    parse_event,
    session_from,
)

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "syncd/schema/platform-events.schema.json"

# The example event of DESIGN.md §3, verbatim.
DESIGN_EXAMPLE = """
{"id": "evt_7f3a", "type": "session.upserted", "occurred_at": "2026-11-21T10:00:00Z",
 "data": {"id": "s-1001", "version": 3, "therapist_id": "t-17",
          "client": {"id": "c-88", "name": "Jane Doe"}, "kind": "follow_up",
          "start": "2026-12-01T10:00:00+00:00", "end": "2026-12-01T10:50:00+00:00",
          "location": {"type": "in_person", "address": "10 Harley St, London"},
          "status": "confirmed",
          "change": {"reason": "client_requested", "by": "therapist"}}}
"""


def session_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(DESIGN_EXAMPLE)
    return event


def therapist_event(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "t-17",
        "version": 1,
        "display_name": "Dr Example",
        "timezone": "Europe/London",
    }
    body.update(data)
    return {
        "id": "evt_t1",
        "type": "therapist.upserted",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": body,
    }


def refused(raw: str | bytes | dict[str, Any]) -> ContractError:
    with pytest.raises(ContractError) as info:
        parse_event(raw)
    err = info.value
    text = str(err)
    assert text, "the error must say something"
    assert "\n" not in text and "\r" not in text, f"not one line: {text!r}"
    return err


_DROP = object()


def with_data(**changes: Any) -> dict[str, Any]:
    event = session_event()
    for key, value in changes.items():
        if value is _DROP:
            del event["data"][key]
        else:
            event["data"][key] = value
    return event


# -- refusals -------------------------------------------------------------------------------------


def _set_type(value: Any) -> dict[str, Any]:
    event = session_event()
    event["type"] = value
    return event


def _without_type() -> dict[str, Any]:
    event = session_event()
    del event["type"]
    return event


def _with_top_level_extra() -> dict[str, Any]:
    event = session_event()
    event["priority"] = "high"
    return event


BAD_INPUTS: list[tuple[str, Any, str, str]] = [
    ("malformed JSON", '{"id": "evt_1", "type": ', "event", "json"),
    ("malformed JSON bytes", b"{not json}", "event", "json"),
    ("not UTF-8", b"\xc3\x28{}", "event", "json"),
    ("a JSON array", "[1, 2, 3]", "event", "json_object"),
    ("a JSON string", '"session.upserted"', "event", "json_object"),
    ("JSON null", "null", "event", "json_object"),
    ("unknown type", _set_type("session.deleted"), "type", "union_tag_invalid"),
    ("missing type", _without_type(), "type", "union_tag_not_found"),
    ("missing data.start", with_data(start=_DROP), "data.start", "missing"),
    ("missing data.client", with_data(client=_DROP), "data.client", "missing"),
    ("mistyped version", with_data(version="x"), "data.version", "int_parsing"),
    ("negative version", with_data(version=-1), "data.version", "greater_than_equal"),
    ("naive start", with_data(start="2026-12-01T10:00:00"), "data.start", "timezone_aware"),
    (
        "end equal to start",
        with_data(end="2026-12-01T10:00:00+00:00"),
        "data.end",
        "end_after_start",
    ),
    (
        "end before start",
        with_data(end="2026-12-01T09:00:00+00:00"),
        "data.end",
        "end_after_start",
    ),
    (
        # 10:30 at +01:00 is 09:30Z, before the 10:00Z start: compared as instants.
        "end before start in another offset",
        with_data(end="2026-12-01T10:30:00+01:00"),
        "data.end",
        "end_after_start",
    ),
    ("unknown zone", therapist_event(timezone="Europe/Atlantis"), "data.timezone", "iana_zone"),
    ("empty zone", therapist_event(timezone=""), "data.timezone", "iana_zone"),
    ("path as zone", therapist_event(timezone="../../etc/passwd"), "data.timezone", "iana_zone"),
    ("unknown extra data field", with_data(notes="x"), "data.notes", "extra_forbidden"),
    ("unknown extra top-level field", _with_top_level_extra(), "priority", "extra_forbidden"),
    (
        "cancelled without cancellation",
        with_data(status="cancelled"),
        "data.cancellation",
        "cancellation_required",
    ),
    (
        "cancellation on a confirmed session",
        with_data(cancellation={"reason": "client_cancelled", "by": "client"}),
        "data.cancellation",
        "cancellation_only_when_cancelled",
    ),
    (
        "in_person without address",
        with_data(location={"type": "in_person"}),
        "data.location",
        "address_required",
    ),
    (
        "in_person with empty address",
        with_data(location={"type": "in_person", "address": ""}),
        "data.location",
        "address_required",
    ),
    ("unknown status", with_data(status="maybe"), "data.status", "enum"),
]


@pytest.mark.parametrize(
    ("raw", "field", "rule"),
    [pytest.param(raw, field, rule, id=name) for name, raw, field, rule in BAD_INPUTS],
)
def test_bad_input_is_refused_naming_field_and_rule(raw: Any, field: str, rule: str) -> None:
    err = refused(copy.deepcopy(raw) if isinstance(raw, dict) else raw)
    assert (err.field, err.rule) == (field, rule)
    # The one line carries both, so whoever sent the event can act on it.
    assert str(err).startswith(f"{field}: ")
    assert str(err).endswith(f"[rule: {rule}]")


def test_naive_datetime_message_asks_for_an_offset() -> None:
    err = refused(with_data(start="2026-12-01T10:00:00"))
    assert "offset" in err.message


def test_unknown_type_message_lists_the_known_types() -> None:
    err = refused(_set_type("session.deleted"))
    for known in ("therapist.upserted", "session.upserted", "offer.upserted"):
        assert known in str(err)


# Regression: sender-controlled text (a zone value, an unknown key) used to be echoed verbatim, so
# a line break in it made str(ContractError) span two lines (fixed in a326626).


def test_error_is_one_line_even_when_the_zone_value_contains_a_newline() -> None:
    err = refused(therapist_event(timezone="Europe/Lon\ndon\r\x00"))
    assert (err.field, err.rule) == ("data.timezone", "iana_zone")
    assert "Europe/Lon" in str(err)  # still says which value, escaped


def test_error_is_one_line_even_when_an_unknown_key_contains_a_newline() -> None:
    event = session_event()
    event["data"]["bad\nkey"] = 1
    err = refused(event)
    assert err.rule == "extra_forbidden"
    assert "\n" not in err.field and err.field.startswith("data.bad")


# -- acceptance -----------------------------------------------------------------------------------


def test_design_example_parses_into_utc_instants() -> None:
    event = parse_event(DESIGN_EXAMPLE)
    assert isinstance(event, SessionUpserted)
    assert event.id == "evt_7f3a"
    assert event.occurred_at == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    s = session_from(event.data)
    assert s.id == "s-1001" and s.version == 3 and s.therapist_id == "t-17"
    assert s.client == d.Client("c-88", "Jane Doe")
    assert s.kind is d.SessionKind.FOLLOW_UP
    assert s.status is d.SessionStatus.CONFIRMED
    assert s.location == d.Location(d.LocationType.IN_PERSON, "10 Harley St, London")
    assert s.change == d.Change(d.ChangeReason.CLIENT_REQUESTED, d.Actor.THERAPIST)
    assert s.cancellation is None
    assert s.start == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert s.end - s.start == timedelta(minutes=50)


@pytest.mark.parametrize("raw_type", [str, bytes, dict])
def test_every_input_form_is_accepted(raw_type: type) -> None:
    forms: dict[type, Any] = {
        str: DESIGN_EXAMPLE,
        bytes: DESIGN_EXAMPLE.encode(),
        dict: json.loads(DESIGN_EXAMPLE),
    }
    assert parse_event(forms[raw_type]).data.id == "s-1001"


def test_offset_is_converted_to_utc() -> None:
    event = parse_event(
        with_data(start="2026-06-01T11:00:00+01:00", end="2026-06-01T11:50:00+01:00")
    )
    assert isinstance(event, SessionUpserted)
    start = event.data.start
    assert start.utcoffset() == timedelta(0)
    assert start.tzinfo is UTC
    assert (start.hour, start.minute) == (10, 0)
    assert event.data.end == datetime(2026, 6, 1, 10, 50, tzinfo=UTC)


def test_z_suffix_and_negative_offset_become_utc() -> None:
    event = parse_event(with_data(start="2026-06-01T05:00:00-05:00", end="2026-06-01T10:50:00Z"))
    assert isinstance(event, SessionUpserted)
    assert event.data.start == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert event.data.start.tzinfo is UTC and event.data.end.tzinfo is UTC


def test_cancelled_session_with_cancellation_parses() -> None:
    event = parse_event(
        with_data(status="cancelled", cancellation={"reason": "not_best_fit", "by": "team"})
    )
    assert isinstance(event, SessionUpserted)
    s = session_from(event.data)
    assert s.cancellation == d.Cancellation(d.CancellationReason.NOT_BEST_FIT, d.Actor.TEAM)
    assert not s.blocks_time


@pytest.mark.parametrize(
    "location",
    [{"type": "video", "url": "https://meet.example/abc"}, {"type": "video"}, {"type": "phone"}],
)
def test_remote_locations_need_no_address(location: dict[str, str]) -> None:
    event = parse_event(with_data(location=location))
    assert isinstance(event, SessionUpserted)
    assert event.data.location.type.value == location["type"]


def test_therapist_event_parses_with_defaults() -> None:
    event = parse_event(therapist_event(timezone="America/New_York"))
    assert isinstance(event, TherapistUpserted)
    assert event.data.timezone == "America/New_York"
    assert event.data.privacy.client_label is d.ClientLabel.NONE
    assert event.data.privacy.include_location is True


def test_offer_event_parses_and_expiry_defaults_to_24_hours() -> None:
    event = parse_event(
        {
            "id": "evt_o1",
            "type": "offer.upserted",
            "occurred_at": "2026-11-21T10:00:00Z",
            "data": {
                "id": "o-1",
                "version": 1,
                "session_id": "s-1001",
                "alternatives": [
                    {"start": "2026-12-02T10:00:00+01:00", "end": "2026-12-02T10:50:00+01:00"}
                ],
                "sent_at": "2026-11-21T10:00:00Z",
                "state": "pending",
            },
        }
    )
    assert isinstance(event, OfferUpserted)
    offer = offer_from(event.data)
    assert offer.alternatives[0].start == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert offer.expires_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def offer_event(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "o-1",
        "version": 2,
        "session_id": "s-1001",
        "alternatives": [{"start": "2026-12-02T10:00:00Z", "end": "2026-12-02T10:50:00Z"}],
        "sent_at": "2026-11-21T10:00:00Z",
        "state": "pending",
    }
    body.update(data)
    return {
        "id": "evt_o2",
        "type": "offer.upserted",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": body,
    }


# Regression: an accepted_alternative that names no alternative used to be accepted (fixed in
# a326626).
@pytest.mark.parametrize("index", [1, 3])
def test_offer_accepting_a_missing_alternative_is_refused(index: int) -> None:
    err = refused(offer_event(state="accepted", accepted_alternative=index))
    assert (err.field, err.rule) == ("data.accepted_alternative", "alternative_index")


def test_accepted_offer_needs_the_accepted_alternative() -> None:
    err = refused(offer_event(state="accepted"))
    assert (err.field, err.rule) == ("data.accepted_alternative", "alternative_required")


def test_offer_accepting_an_existing_alternative_parses() -> None:
    event = parse_event(
        offer_event(
            state="accepted", accepted_alternative=0, responded_at="2026-11-21T12:00:00+01:00"
        )
    )
    assert isinstance(event, OfferUpserted)
    assert event.data.accepted_alternative == 0
    assert event.data.responded_at == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)


def test_reserved_slot_event_parses() -> None:
    event = parse_event(
        {
            "id": "evt_r1",
            "type": "reserved_slot.upserted",
            "occurred_at": "2026-11-21T10:00:00Z",
            "data": {
                "id": "r-1",
                "version": 1,
                "therapist_id": "t-17",
                "client": {"id": "c-88"},
                "first_start_local": "2026-12-01T10:00:00",
                "timezone": "Europe/London",
                "duration_minutes": 50,
                "rrule": "FREQ=WEEKLY",
                "state": "active",
            },
        }
    )
    assert isinstance(event, ReservedSlotUpserted)
    assert event.data.first_start_local == datetime(2026, 12, 1, 10, 0)


# -- the committed JSON Schema --------------------------------------------------------------------


def test_committed_schema_equals_the_contract() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    generated = json.loads(json.dumps(json_schema()))
    assert committed == generated, (
        "syncd/schema/platform-events.schema.json is out of date: regenerate it from "
        "syncd.contract.json_schema()"
    )


def test_schema_names_every_event_type() -> None:
    text = SCHEMA_FILE.read_text()
    for name in ("therapist.upserted", "session.upserted", "offer.upserted"):
        assert name in text
    assert "reserved_slot.upserted" in text


def _conforms(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    """The subset of JSON Schema the committed file uses, enough to check the example without
    the jsonschema package: $ref, anyOf, const, enum, type, required, properties,
    additionalProperties."""
    if "$ref" in schema:
        return _conforms(value, defs[schema["$ref"].removeprefix("#/$defs/")], defs)
    if "anyOf" in schema:
        return any(_conforms(value, branch, defs) for branch in schema["anyOf"])
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    kinds = {"object": dict, "string": str, "integer": int, "boolean": bool, "array": list}
    kind = schema.get("type")
    if kind == "null":
        return value is None
    if kind is not None and not isinstance(value, kinds[kind]):
        return False
    if kind == "object":
        props = schema.get("properties", {})
        if not set(schema.get("required", [])) <= value.keys():
            return False
        if schema.get("additionalProperties") is False and not value.keys() <= props.keys():
            return False
        return all(_conforms(v, props[k], defs) for k, v in value.items() if k in props)
    return True


def test_schema_admits_the_design_example_structurally() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    defs = schema["$defs"]
    example = json.loads(DESIGN_EXAMPLE)
    branch = {"$ref": schema["discriminator"]["mapping"][example["type"]]}
    assert branch in schema["oneOf"]
    assert _conforms(example, branch, defs)
    # and the checker is not a yes-machine:
    for broken in (
        with_data(kind="group"),
        with_data(start=_DROP),
        with_data(notes="x"),
        with_data(location={"type": "in_person", "address": 10}),
    ):
        assert not _conforms(broken, branch, defs)


def test_schema_validates_the_design_example() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed; the schema/example check needs it"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(json.loads(DESIGN_EXAMPLE))) == []
    bad = json.loads(DESIGN_EXAMPLE)
    bad["data"]["kind"] = "group"
    assert list(validator.iter_errors(bad)) != []


def test_offer_expiring_before_it_was_sent_is_refused() -> None:
    raw = {
        "id": "e-off",
        "type": "offer.upserted",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {
            "id": "o-1",
            "version": 1,
            "session_id": "s-1",
            "alternatives": [{"start": "2026-12-02T10:00:00Z", "end": "2026-12-02T10:50:00Z"}],
            "sent_at": "2026-11-21T10:00:00Z",
            "expires_at": "2026-11-21T09:00:00Z",
            "state": "pending",
        },
    }
    with pytest.raises(ContractError) as exc:
        parse_event(raw)
    assert exc.value.field == "data.expires_at" and exc.value.rule == "expires_after_sent"


def test_reserved_slot_local_start_must_not_carry_an_offset() -> None:
    raw: dict[str, Any] = {
        "id": "e-rs",
        "type": "reserved_slot.upserted",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {
            "id": "r-1",
            "version": 1,
            "therapist_id": "t-1",
            "client": {"id": "c-1"},
            "first_start_local": "2026-12-01T10:00:00+01:00",
            "timezone": "Europe/London",
            "duration_minutes": 50,
            "rrule": "FREQ=WEEKLY",
            "state": "active",
        },
    }
    with pytest.raises(ContractError) as exc:
        parse_event(raw)
    assert exc.value.field == "data.first_start_local" and exc.value.rule == "wall_clock_time"
    raw["data"]["first_start_local"] = "2026-12-01T10:00:00"
    event = parse_event(raw)
    assert isinstance(event, ReservedSlotUpserted)
    assert event.data.first_start_local.hour == 10

"""The platform contract (DESIGN.md §3): inbound events, validated at the boundary.

Pydantic models are the single definition of the wire format; the committed JSON Schema
(``syncd/schema/platform-events.schema.json``) is generated from them and a test keeps the two
identical. Everything past this module works with :mod:`syncd.domain` objects only.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from syncd import domain as d
from syncd.json_input import JSONError, one_line, parse_json

EVENT_TYPES = ("therapist.upserted", "session.upserted", "offer.upserted", "reserved_slot.upserted")


class ContractError(ValueError):
    """An inbound event broke the contract or a booking rule. ``field`` is a dotted path into the
    event, ``rule`` a short stable name; ``str()`` is the one line shown to whoever sent it."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        # Field names and values come from the sender: escape line breaks to keep one line.
        field, message = one_line(field), one_line(message)
        super().__init__(f"{field}: {message} [rule: {rule}]")
        self.field = field
        self.rule = rule
        self.message = message


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a name the file system refuses (too long, a directory such as "Europe").
        shown = name if len(name) <= 100 else name[:100] + "…"
        raise PydanticCustomError(
            "iana_zone", "unknown IANA time zone '{name}'", {"name": shown}
        ) from exc
    return name


def _to_utc(value: datetime) -> datetime:
    from datetime import UTC

    return value.astimezone(UTC)


Zone = Annotated[str, AfterValidator(_check_zone), Field(examples=["Europe/London"])]
Instant = Annotated[AwareDatetime, AfterValidator(_to_utc)]
EntityId = Annotated[str, Field(min_length=1, max_length=200)]
# Every integer in the contract is bounded. Versions reach up to 2**53 - 1, the largest integer
# every JSON implementation holds exactly (RFC 7493 §2.2), which also fits the 64-bit columns.
MAX_VERSION = 2**53 - 1
Version = Annotated[int, Field(ge=0, le=MAX_VERSION)]
MAX_ALTERNATIVES = 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _end_after_start(end: Any, info: ValidationInfo) -> Any:
    start = info.data.get("start")
    if start is not None and end <= start:
        raise PydanticCustomError("end_after_start", "end must be after start")
    return end


class WorkingHoursIn(_Model):
    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday")]
    start: time
    end: time

    _ordered = field_validator("end")(_end_after_start)


class PrivacyIn(_Model):
    client_label: d.ClientLabel = d.ClientLabel.NONE
    include_location: bool = True


class TherapistIn(_Model):
    id: EntityId
    version: Version
    display_name: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Zone
    working_hours: list[WorkingHoursIn] = []
    slot_minutes: Annotated[int, Field(ge=5, le=480)] = 50
    buffer_minutes: Annotated[int, Field(ge=0, le=240)] = 10
    active: bool = True
    privacy: PrivacyIn = PrivacyIn()


class ClientIn(_Model):
    id: EntityId
    name: Annotated[str | None, Field(max_length=200)] = None


class LocationIn(_Model):
    type: d.LocationType
    address: Annotated[str | None, Field(max_length=500)] = None
    url: Annotated[str | None, Field(max_length=2000)] = None

    @model_validator(mode="after")
    def _address_for_in_person(self) -> LocationIn:
        if self.type is d.LocationType.IN_PERSON and not self.address:
            raise PydanticCustomError("address_required", "an in_person location needs an address")
        return self


class ChangeIn(_Model):
    reason: d.ChangeReason
    by: d.Actor


class CancellationIn(_Model):
    reason: d.CancellationReason
    by: d.Actor


class SessionIn(_Model):
    id: EntityId
    version: Version
    therapist_id: EntityId
    client: ClientIn
    kind: d.SessionKind
    start: Instant
    end: Instant
    location: LocationIn
    status: d.SessionStatus
    change: ChangeIn | None = None
    cancellation: Annotated[CancellationIn | None, Field(validate_default=True)] = None

    _ordered = field_validator("end")(_end_after_start)

    @field_validator("cancellation")
    @classmethod
    def _cancellation_matches_status(
        cls, value: CancellationIn | None, info: ValidationInfo
    ) -> CancellationIn | None:
        cancelled = info.data.get("status") is d.SessionStatus.CANCELLED
        if cancelled and value is None:
            raise PydanticCustomError(
                "cancellation_required", "a cancelled session needs a cancellation reason and by"
            )
        if not cancelled and value is not None:
            raise PydanticCustomError(
                "cancellation_only_when_cancelled",
                "cancellation is only allowed when status is cancelled",
            )
        return value


class AlternativeIn(_Model):
    start: Instant
    end: Instant

    _ordered = field_validator("end")(_end_after_start)


class OfferIn(_Model):
    id: EntityId
    version: Version
    session_id: EntityId
    alternatives: Annotated[list[AlternativeIn], Field(min_length=1, max_length=MAX_ALTERNATIVES)]
    sent_at: Instant
    expires_at: Instant | None = None
    state: d.OfferState

    @field_validator("expires_at")
    @classmethod
    def _expires_after_sent(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        sent = info.data.get("sent_at")
        if value is not None and sent is not None and value <= sent:
            raise PydanticCustomError("expires_after_sent", "expires_at must be after sent_at")
        return value

    accepted_alternative: Annotated[
        int | None, Field(ge=0, le=MAX_ALTERNATIVES - 1, validate_default=True)
    ] = None
    responded_at: Instant | None = None

    @field_validator("accepted_alternative")
    @classmethod
    def _names_an_alternative(cls, value: int | None, info: ValidationInfo) -> int | None:
        alternatives = info.data.get("alternatives") or []
        state = info.data.get("state")
        if value is not None and value >= len(alternatives):
            raise PydanticCustomError(
                "alternative_index",
                "accepted_alternative {value} names no alternative (there are {n})",
                {"value": value, "n": len(alternatives)},
            )
        if state is d.OfferState.ACCEPTED and value is None:
            raise PydanticCustomError(
                "alternative_required", "an accepted offer needs accepted_alternative"
            )
        return value


def _wall_clock(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise PydanticCustomError(
            "wall_clock_time", "a local wall-clock time without offset; the zone is in timezone"
        )
    return value


class ReservedSlotIn(_Model):
    id: EntityId
    version: Version
    therapist_id: EntityId
    client: ClientIn
    first_start_local: Annotated[
        datetime,
        AfterValidator(_wall_clock),
        Field(description="wall-clock start of the first occurrence, no offset"),
    ]
    timezone: Zone
    duration_minutes: Annotated[int, Field(ge=5, le=480)]
    rrule: Annotated[str, Field(min_length=1, max_length=500, examples=["FREQ=WEEKLY"])]
    until: Instant | None = None
    state: d.ReservationState


class _Envelope(_Model):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    occurred_at: Instant


class TherapistUpserted(_Envelope):
    type: Literal["therapist.upserted"]
    data: TherapistIn


class SessionUpserted(_Envelope):
    type: Literal["session.upserted"]
    data: SessionIn


class OfferUpserted(_Envelope):
    type: Literal["offer.upserted"]
    data: OfferIn


class ReservedSlotUpserted(_Envelope):
    type: Literal["reserved_slot.upserted"]
    data: ReservedSlotIn


PlatformEvent = Annotated[
    TherapistUpserted | SessionUpserted | OfferUpserted | ReservedSlotUpserted,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[PlatformEvent] = TypeAdapter(PlatformEvent)


def json_schema() -> dict[str, Any]:
    schema = _ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "syncd platform event"
    return schema


def _first_error(exc: ValidationError) -> ContractError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    # Pydantic puts the discriminator tag into the path (e.g. "session.upserted"); readers want
    # the path inside the event, not the union branch.
    loc = [p for p in loc if p not in EVENT_TYPES]
    field = ".".join(loc) or "event"
    message = err["msg"].removeprefix("Value error, ")
    rule = err["type"]
    if rule == "union_tag_invalid":
        field, message = "type", f"unknown event type (expected one of {', '.join(EVENT_TYPES)})"
    elif rule == "union_tag_not_found":
        field, message = "type", "missing event type"
    elif rule == "timezone_aware":
        message = "naive datetime: an offset or Z is required"
    return ContractError(field, rule, message)


def load_json(raw: str | bytes) -> dict[str, Any]:
    try:
        value = parse_json(raw)
    except JSONError as exc:
        raise ContractError("event", "json", str(exc)) from None
    if not isinstance(value, dict):
        raise ContractError("event", "json_object", "an event must be a JSON object")
    return value


def _refuse_surrogates(raw: dict[str, Any]) -> None:
    """Lone surrogates (legal in JSON escapes, not in UTF-8) can be neither stored nor quoted in
    an error message; refuse them first, naming the field. Iterative: the input may be deep."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ContractError(
                    path or "event", "unicode", "text with a lone surrogate (invalid Unicode)"
                ) from None
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{path}.{key}" if path else str(key)
                stack.append((name, key))
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", item) for i, item in enumerate(value))


def parse_event(raw: str | bytes | dict[str, Any]) -> PlatformEvent:
    """Parse and validate one event; raise ContractError naming the field and the rule."""
    if not isinstance(raw, dict):
        raw = load_json(raw)
    _refuse_surrogates(raw)
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise _first_error(exc) from None


# -- wire → domain -----------------------------------------------------------------------------


def therapist_from(m: TherapistIn) -> d.Therapist:
    return d.Therapist(
        id=m.id,
        version=m.version,
        display_name=m.display_name,
        timezone=m.timezone,
        working_hours=tuple(d.WorkingHours(w.weekday, w.start, w.end) for w in m.working_hours),
        slot_minutes=m.slot_minutes,
        buffer_minutes=m.buffer_minutes,
        active=m.active,
        privacy=d.Privacy(m.privacy.client_label, m.privacy.include_location),
    )


def session_from(m: SessionIn) -> d.Session:
    return d.Session(
        id=m.id,
        version=m.version,
        therapist_id=m.therapist_id,
        client=d.Client(m.client.id, m.client.name),
        kind=m.kind,
        start=m.start,
        end=m.end,
        location=d.Location(m.location.type, m.location.address, m.location.url),
        status=m.status,
        change=d.Change(m.change.reason, m.change.by) if m.change else None,
        cancellation=(
            d.Cancellation(m.cancellation.reason, m.cancellation.by) if m.cancellation else None
        ),
    )


def offer_from(m: OfferIn, hold: timedelta = d.DEFAULT_HOLD) -> d.Offer:
    return d.Offer(
        id=m.id,
        version=m.version,
        session_id=m.session_id,
        alternatives=tuple(d.Alternative(a.start, a.end) for a in m.alternatives),
        sent_at=m.sent_at,
        expires_at=m.expires_at or m.sent_at + hold,
        state=m.state,
        accepted_alternative=m.accepted_alternative,
        responded_at=m.responded_at,
    )


def reserved_slot_from(m: ReservedSlotIn) -> d.ReservedSlot:
    return d.ReservedSlot(
        id=m.id,
        version=m.version,
        therapist_id=m.therapist_id,
        client=d.Client(m.client.id, m.client.name),
        first_start_local=m.first_start_local.replace(tzinfo=None),
        timezone=m.timezone,
        duration=timedelta(minutes=m.duration_minutes),
        rrule=m.rrule,
        until=m.until,
        state=m.state,
    )

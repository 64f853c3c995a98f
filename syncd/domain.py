"""Domain value objects: the platform's state as syncd keeps it.

Everything here is immutable and I/O-free. Instants are timezone-aware UTC; local wall-clock
values only appear together with an IANA zone name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta


class LocationType(enum.StrEnum):
    IN_PERSON = "in_person"
    VIDEO = "video"
    PHONE = "phone"


class SessionStatus(enum.StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class SessionKind(enum.StrEnum):
    INITIAL = "initial"
    FOLLOW_UP = "follow_up"


class ChangeReason(enum.StrEnum):
    """Why a session was rearranged (moved) or reinstated."""

    CLIENT_REQUESTED = "client_requested"
    THERAPIST_UNAVAILABLE = "therapist_unavailable"
    CORRECTING_ERROR = "correcting_error"


class Actor(enum.StrEnum):
    CLIENT = "client"
    THERAPIST = "therapist"
    TEAM = "team"
    SYSTEM = "system"


class CancellationReason(enum.StrEnum):
    CLIENT_CANCELLED = "client_cancelled"
    THERAPIST_UNAVAILABLE = "therapist_unavailable"
    NOT_BEST_FIT = "not_best_fit"
    UNCONFIRMED_TIMEOUT = "unconfirmed_timeout"
    ALTERNATIVES_REJECTED = "alternatives_rejected"
    ADMIN_ACTION = "admin_action"


class ClientLabel(enum.StrEnum):
    """How much of the client a therapist chose to see in their calendar titles."""

    NONE = "none"
    INITIALS = "initials"
    FIRST_NAME = "first_name"


class OfferState(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ReservationState(enum.StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """One stretch of working time on one weekday (0 = Monday), in the therapist's zone."""

    weekday: int
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class Privacy:
    client_label: ClientLabel = ClientLabel.NONE
    include_location: bool = True


@dataclass(frozen=True, slots=True)
class Therapist:
    id: str
    version: int
    display_name: str
    timezone: str
    working_hours: tuple[WorkingHours, ...] = ()
    slot_minutes: int = 50
    buffer_minutes: int = 10
    active: bool = True
    privacy: Privacy = field(default_factory=Privacy)


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    type: LocationType
    address: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    reason: ChangeReason
    by: Actor


@dataclass(frozen=True, slots=True)
class Cancellation:
    reason: CancellationReason
    by: Actor


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    version: int
    therapist_id: str
    client: Client
    kind: SessionKind
    start: datetime
    end: datetime
    location: Location
    status: SessionStatus
    change: Change | None = None
    cancellation: Cancellation | None = None

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)

    @property
    def blocks_time(self) -> bool:
        return self.status is not SessionStatus.CANCELLED


@dataclass(frozen=True, slots=True)
class Alternative:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Offer:
    """Alternative times offered for a session; each is held while the offer is pending."""

    id: str
    version: int
    session_id: str
    alternatives: tuple[Alternative, ...]
    sent_at: datetime
    expires_at: datetime
    state: OfferState
    accepted_alternative: int | None = None
    responded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReservedSlot:
    """A regular time reserved for an ongoing client: a recurrence in the therapist's zone."""

    id: str
    version: int
    therapist_id: str
    client: Client
    first_start_local: datetime  # naive wall-clock time in ``timezone``
    timezone: str
    duration: timedelta
    rrule: str
    until: datetime | None
    state: ReservationState


DEFAULT_HOLD = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class PlatformState:
    """One therapist's whole state as the platform sent it: what projection, the booking rules
    and occupancy read."""

    therapist: Therapist
    sessions: tuple[Session, ...] = ()
    offers: tuple[Offer, ...] = ()
    reserved_slots: tuple[ReservedSlot, ...] = ()

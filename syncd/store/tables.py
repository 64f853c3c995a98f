"""The database schema. Alembic migrations in ``syncd/migrations`` create exactly this."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; all instants must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Platform versions may be large (a millisecond timestamp is a common choice), so they are 64-bit
# on PostgreSQL; SQLite's INTEGER is 64-bit already (and stays INTEGER, so autogenerate is quiet).
EntityVersion = BigInteger().with_variant(Integer(), "sqlite")
# Integer primary keys are 32-bit on PostgreSQL: an id from outside beyond this names no row
# (and would make the database refuse the query).
MAX_ROW_ID = 2**31 - 1


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class TherapistRow(Base):
    __tablename__ = "therapists"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(EntityVersion)
    display_name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    working_hours: Mapped[list[Any]]
    slot_minutes: Mapped[int]
    buffer_minutes: Mapped[int]
    active: Mapped[bool] = mapped_column(Boolean)
    privacy: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(EntityVersion)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(200))
    client_name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    location: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    change: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancellation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class EntityHistoryRow(Base):
    """Every accepted version of every entity, so a cancelled or moved session keeps its past."""

    __tablename__ = "entity_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(EntityVersion)
    event_id: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime]
    __table_args__ = (Index("ix_entity_history_entity", "entity_type", "entity_id"),)


class OfferRow(Base):
    __tablename__ = "offers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(EntityVersion)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    alternatives: Mapped[list[Any]]
    sent_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)
    accepted_alternative: Mapped[int | None]
    responded_at: Mapped[datetime | None]
    # Set when syncd itself expired the offer; the conditional UPDATE on it releases exactly once.
    released_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class ReservedSlotRow(Base):
    __tablename__ = "reserved_slots"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(EntityVersion)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(200))
    client_name: Mapped[str | None] = mapped_column(String(200))
    first_start_local: Mapped[str] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64))
    duration_minutes: Mapped[int]
    rrule: Mapped[str] = mapped_column(String(500))
    until: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime]


class InboundEventRow(Base):
    """Event ids seen, for at-least-once delivery: a repeated id is acknowledged and ignored."""

    __tablename__ = "inbound_events"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(EntityVersion)
    outcome: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime]


class ConnectionRow(Base):
    __tablename__ = "connections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(200))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # encrypted (Fernet), never plain
    calendar_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # new | ok | error | auth_failed | needs_reauth
    sync_token: Mapped[str | None] = mapped_column(Text)
    last_pass_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    # syncd created this calendar, so disconnecting may delete it whole.
    calendar_owned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Google push: the watch channel, its token (hashed: it authenticates notifications) and end.
    channel_id: Mapped[str | None] = mapped_column(String(64))
    channel_token_hash: Mapped[str | None] = mapped_column(String(64))
    channel_resource_id: Mapped[str | None] = mapped_column(String(200))
    channel_expires_at: Mapped[datetime | None]
    # Busy time: which calendars count (None: all but syncd's own), and how fresh it is.
    busy_calendars: Mapped[list[Any] | None] = mapped_column(JSON)
    busy_fetched_at: Mapped[datetime | None]
    busy_error: Mapped[str | None] = mapped_column(Text)
    busy_flagged_at: Mapped[datetime | None]  # stale beyond the limit, and announced
    # The provider asked syncd to stay away this long (Google's usage limits of one calendar):
    # no request goes to this connection before then; other connections are unaffected.
    backoff_until: Mapped[datetime | None]


class OAuthRequestRow(Base):
    """An authorization link handed out by ``syncd connect google``, until it is used."""

    __tablename__ = "oauth_requests"
    state: Mapped[str] = mapped_column(String(64), primary_key=True)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"))
    provider: Mapped[str] = mapped_column(String(20))
    code_verifier: Mapped[bytes] = mapped_column(LargeBinary)  # encrypted
    calendar_id: Mapped[str | None] = mapped_column(Text)  # an existing calendar, if chosen
    redirect_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    connection_id: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)


class ConnectLinkRow(Base):
    """A connect link (``/connect/<signed id>``) handed to a therapist: single use, expiring.
    The id alone is not enough to open it: the URL carries an HMAC of the id under a key
    derived from the secret key, so a database dump opens no link."""

    __tablename__ = "connect_links"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The connection that using the link made or restored.
    connection_id: Mapped[int | None]
    # A reconnect link (sent with calendar.disconnected): the connection that needs it.
    for_connection_id: Mapped[int | None] = mapped_column(index=True)
    # A Google consent started from this link: its OAuth state, the mode, and (existing-calendar
    # mode) the refresh token, encrypted, until the therapist picks the calendar to write into.
    google_state: Mapped[str | None] = mapped_column(String(64), index=True)
    google_mode: Mapped[str | None] = mapped_column(String(20))
    pending_secret: Mapped[bytes | None] = mapped_column(LargeBinary)


class MirrorRow(Base):
    """The sync status table: what syncd last wrote for each entry, per connection."""

    __tablename__ = "mirror"
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    uid: Mapped[str] = mapped_column(String(300), primary_key=True)
    href: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class DriftRow(Base):
    """A mirrored entry found edited or deleted in the therapist's calendar, and repaired."""

    __tablename__ = "drift"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    uid: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))  # edited | deleted
    detected_at: Mapped[datetime]


class SyncQueueRow(Base):
    """When each therapist next needs a pass. The database, not the scheduler, holds this, so a
    restart finds overdue work; the lease lets several replicas share the queue."""

    __tablename__ = "sync_queue"
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), primary_key=True)
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    last_pass_at: Mapped[datetime | None]


class ReplicaRow(Base):
    """One row per running daemon process (replica), refreshed by its heartbeat, so status,
    metrics and the dashboard can say who is alive and who holds which lease. Purely
    informational: correctness rests on the lease rows, never on this table."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)


class OutboxRow(Base):
    """Notifications to the platform, written in the same transaction as the change, and their
    delivery state. A row is claimed through an expiring lease (conditional UPDATE), so several
    replicas never send the same row at the same time."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The notification's id on the wire, the same on every attempt (the receiver dedupes on it).
    event_id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: uuid.uuid4().hex)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)  # NULL: now
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_status: Mapped[int | None]  # HTTP status of the last attempt (None: no response)
    last_error: Mapped[str | None] = mapped_column(Text)


class BusyIntervalRow(Base):
    """The therapist's own busy time as last read: intervals only, never titles or attendees."""

    __tablename__ = "busy_intervals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    calendar_ref: Mapped[str] = mapped_column(Text)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    tentative: Mapped[bool] = mapped_column(Boolean, default=False)
    remote_ref: Mapped[str | None] = mapped_column(Text)


class ConflictRow(Base):
    """A busy interval of the therapist's own calendar overlapping something booked. syncd only
    records and announces it; nothing booked is ever moved or cancelled because of it."""

    __tablename__ = "conflicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), index=True)
    connection_id: Mapped[int]
    entity_kind: Mapped[str] = mapped_column(String(20))  # session | hold | reserved
    entity_id: Mapped[str] = mapped_column(String(200))
    start_at: Mapped[datetime]  # the overlap
    end_at: Mapped[datetime]
    busy_start_at: Mapped[datetime]  # the busy interval that overlaps (identity of the clash)
    busy_end_at: Mapped[datetime]
    calendar_ref: Mapped[str] = mapped_column(Text)
    remote_ref: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)


class AvailabilityRow(Base):
    """The bookable slots last announced to the platform, to send changes only."""

    __tablename__ = "availability"
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), primary_key=True)
    slots: Mapped[list[Any]]
    computed_at: Mapped[datetime]


class ApiTokenRow(Base):
    """Admin API / dashboard tokens. Only a SHA-256 of each token is stored: a database dump
    does not let anyone in."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(20))  # read | admin
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class FeedTokenRow(Base):
    """A therapist's read-only ICS feed (``GET /feeds/<token>.ics``). Only a SHA-256 of the token
    is stored, so the URL is shown once, when created or rotated; rotating replaces the hash."""

    __tablename__ = "feed_tokens"
    therapist_id: Mapped[str] = mapped_column(ForeignKey("therapists.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]


class AdminSessionRow(Base):
    """A signed-in dashboard session. The cookie carries a random secret and only its SHA-256
    is stored (a database dump lets no one in); deleting the row ends the session at once on
    every replica: signing out, ``syncd sessions revoke``, or the retention sweep once expired."""

    __tablename__ = "admin_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    csrf: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))  # the address it signed in from
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime]


class RateLimitRow(Base):
    """Failed credential checks per kind, client address and fixed time window, counted in the
    database so every replica sees the same count."""

    __tablename__ = "rate_limits"
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    failures: Mapped[int] = mapped_column(Integer)


class ErasedEntityRow(Base):
    """What ``syncd forget`` erased: a SHA-256 of entity type and id, never the id itself, and
    the newest version seen, so a late or repeated delivery of erased data is acknowledged as
    stale instead of being stored again. A newer version is the platform's new word: stored."""

    __tablename__ = "erased_entities"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(EntityVersion)
    erased_at: Mapped[datetime]

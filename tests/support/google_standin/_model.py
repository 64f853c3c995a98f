"""In-memory state of the stand-in (guarded by the GoogleStandIn's single lock)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._util import JSON


@dataclass
class Client:
    client_id: str
    client_secret: str


@dataclass
class Account:
    email: str
    client_id: str
    calendar_ids: list[str] = field(default_factory=list)


@dataclass
class RefreshToken:
    token: str
    email: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class AccessToken:
    token: str
    email: str
    refresh_token: str | None
    expires_at: float  # time.time()
    scopes: frozenset[str] = frozenset()  # granted at consent (the refresh token's scope)
    client_id: str = ""


@dataclass
class AuthCode:
    code: str
    email: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str
    access_type: str
    expires_at: float
    used: bool = False


@dataclass
class StoredEvent:
    body: JSON  # the full resource as Google returns it (status "cancelled" once deleted)
    deleted: bool
    change: int  # value of the stand-in's change counter at the last write
    order: int  # creation order (the "stable, unspecified" default ordering)
    deleted_at: float | None = None  # time.time() of the deletion, for the purge modes


@dataclass
class Calendar:
    id: str
    owner: str
    summary: str
    description: str | None
    time_zone: str
    primary: bool
    etag: str
    resource_id: str  # opaque id of this calendar's events collection for push channels
    events: dict[str, StoredEvent] = field(default_factory=dict)
    updated: str = ""  # time of the last event write
    ical_uids: dict[str, str] = field(default_factory=dict)  # iCalUID -> latest event id
    extra: JSON = field(default_factory=dict)  # other client-supplied calendar fields
    shared: dict[str, str] = field(default_factory=dict)  # other account -> its accessRole
    created_by: str | None = None  # OAuth client that created it (calendar.app.created)
    purged_ids: set[str] = field(default_factory=set)  # ids of purged events (purge modes)


@dataclass
class Channel:
    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    owner: str
    address: str
    token: str | None
    expiration_ms: int
    message_number: int = 0
    stopped: bool = False
    queue: deque[tuple[str, int]] = field(default_factory=deque)
    draining: bool = False


@dataclass
class SyncToken:
    calendar_id: str
    change: int


@dataclass
class PageState:
    calendar_id: str
    keys: list[Any]  # event ids (str) or expanded instance dicts
    offset: int
    sync_change: int
    max_results: int
    incremental: bool


@dataclass
class Fault:
    """One injected fault rule; ``remaining`` None means "every matching call"."""

    kind: str
    remaining: int | None
    calendar_id: str | None = None
    account: str | None = None
    methods: frozenset[str] | None = None
    retry_after: float | None = None
    delay: float | None = None
    hits: int = 0

    def matches(self, method: str, account: str | None, calendar_ids: set[str]) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.methods is not None:
            if method not in self.methods:
                return False
        elif method in {"token", "auth", "revoke"}:
            # OAuth endpoints only fail when asked for explicitly.
            return False
        if self.account is not None and account != self.account:
            return False
        return self.calendar_id is None or self.calendar_id in calendar_ids


@dataclass
class Notification:
    """A push notification the stand-in delivered (or tried to)."""

    channel_id: str
    resource_id: str
    resource_uri: str
    resource_state: str
    message_number: int
    token: str | None
    address: str
    calendar_id: str
    status: int | None  # the receiver's HTTP status, None when it could not be reached
    error: str | None = None

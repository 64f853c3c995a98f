"""Where and how to reach one Google calendar."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.egress import STRICT, EgressPolicy

GOOGLE_API = "https://www.googleapis.com/"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"


@dataclass(frozen=True)
class GoogleSettings:
    """One calendar of one Google account: the grant (a refresh token of the platform's OAuth
    client), where the API and the OAuth endpoints are, and syncd's choices for its events."""

    refresh_token: str
    client_id: str
    client_secret: str
    url: str = GOOGLE_API
    token_uri: str = GOOGLE_TOKEN_URI
    revoke_uri: str = GOOGLE_REVOKE_URI
    calendar_url: str | None = None  # a calendar URL from ensure_calendar, or a calendar id
    calendar_name: str = "Therapy sessions"
    calendar_id: str = "syncd"  # marks syncd's dedicated calendar in its description
    timeout: float = 15.0
    color_id: str | None = None
    reminder_minutes: tuple[int, ...] | None = None  # None: the calendar's default reminders
    min_interval: float = 0.0  # seconds between two requests to this account
    max_batch: int = 50
    egress: EgressPolicy = STRICT  # where requests (API, batch, token refresh) may go

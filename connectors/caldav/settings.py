"""Where and how to reach one CalDAV calendar."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.egress import STRICT, EgressPolicy


@dataclass(frozen=True)
class CalDAVSettings:
    """Where and how to reach one CalDAV calendar.

    ``url`` is the server's (or the principal's) base URL. With ``calendar_url`` the connector
    writes into that existing calendar; without it, into a dedicated calendar ``calendar_id`` with
    display name ``calendar_name`` in the user's calendar home, created when missing.
    ``timeout`` (seconds) bounds every request. ``egress`` decides which addresses any
    request, redirect hop or discovered URL may reach (public ones only, by default).
    """

    url: str
    username: str
    password: str
    calendar_url: str | None = None
    calendar_name: str = "Therapy sessions"
    calendar_id: str = "syncd"
    timeout: float = 15.0
    egress: EgressPolicy = STRICT

"""Read-only ICS feeds: one subscription URL per therapist for calendar apps that poll (Apple
Calendar, Thunderbird, Outlook, Google's "From URL", vdirsyncer, khal).

The feed carries exactly the entries a connected calendar is given: the same projection, so the
same privacy rules and the same UIDs (a therapist who subscribes and also connects a calendar sees
one event per UID in apps that merge by UID).

The URL holds a 256-bit random token; only its SHA-256 is stored, and a request is answered by
looking that hash up, so the comparison never runs over the secret itself and a database dump
reveals no working URL. Because of that the URL can only be shown when it is made:
``feed_url`` creates the feed the first time, refuses (``FeedExists``) while one exists, and with
``rotate=True`` issues a new token, which at once turns the old URL into a 404.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syncd import ical
from syncd.app import App
from syncd.errors import OperationError
from syncd.project import project
from syncd.store import repo
from syncd.store.tables import (
    FeedTokenRow,
    OfferRow,
    ReservedSlotRow,
    SessionRow,
    TherapistRow,
)

PATH = "/feeds/{token}.ics"
CONTENT_TYPE = "text/calendar; charset=utf-8"
MAX_TOKEN = 100  # token_urlsafe(32) is 43 characters; anything much longer is not ours


class FeedExists(OperationError):
    """The therapist has a feed already; its URL cannot be shown again, only replaced."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def url_for(app: App, token: str) -> str:
    return app.config.http.base_url + PATH.format(token=token)


def feed_url(app: App, therapist_id: str, rotate: bool = False) -> str:
    """The feed URL of ``therapist_id``: a new feed if none exists, or with ``rotate`` a new token
    replacing the old one. Raises ``FeedExists`` when a feed exists and ``rotate`` is false."""
    token = secrets.token_urlsafe(32)
    now = app.clock()
    try:
        with app.sessions.begin() as s:
            if s.get(TherapistRow, therapist_id) is None:
                raise OperationError(f"unknown therapist {therapist_id!r}")
            row = s.get(FeedTokenRow, therapist_id)
            if row is None:
                s.add(
                    FeedTokenRow(
                        therapist_id=therapist_id, token_hash=_digest(token), created_at=now
                    )
                )
            elif rotate:
                row.token_hash, row.rotated_at = _digest(token), now
            else:
                raise _exists(therapist_id)
    except IntegrityError:
        # Another process created the feed between our read and our insert.
        raise _exists(therapist_id) from None
    return url_for(app, token)


def _exists(therapist_id: str) -> FeedExists:
    return FeedExists(
        f"therapist {therapist_id!r} already has an ICS feed; its URL was shown when it was made "
        f"and is not stored. `syncd feed-url {therapist_id} --rotate` issues a new URL "
        "(the old one stops working)"
    )


def has_feed(app: App, therapist_id: str) -> bool:
    with app.sessions() as s:
        return s.get(FeedTokenRow, therapist_id) is not None


def render_feed(app: App, token: str) -> tuple[str, str] | None:
    """The calendar body and its ETag (quoted SHA-256 of the body) for a feed token, or None for
    an unknown, rotated or malformed token. Blocking (database): call it off the event loop."""
    if not token or len(token) > MAX_TOKEN:
        return None
    with app.sessions() as s:
        row = s.scalar(select(FeedTokenRow).where(FeedTokenRow.token_hash == _digest(token)))
        if row is None:
            return None
        therapist_id = row.therapist_id
        state = repo.platform_state(s, therapist_id)
        if state is None:
            return None
        stamp = _last_change(s, therapist_id)
    desired = project(state, app.clock(), session_url=app.config.platform.session_url or None)
    entries = sorted(desired.values(), key=lambda e: (e.start, e.uid))
    body = ical.to_calendar(entries, stamp, name=app.config.caldav.calendar_name)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest() + '"'
    return body, etag


def _last_change(s: Session, therapist_id: str) -> datetime:
    """DTSTAMP of every event: the latest change to anything of the therapist, so an unchanged
    feed renders byte for byte the same (and keeps its ETag) from one request to the next."""
    times = [s.scalar(select(TherapistRow.updated_at).where(TherapistRow.id == therapist_id))]
    for table in (SessionRow, OfferRow, ReservedSlotRow):
        times.append(
            s.scalar(select(func.max(table.updated_at)).where(table.therapist_id == therapist_id))
        )
    known = [t for t in times if t is not None]
    return max(known) if known else datetime(1970, 1, 1, tzinfo=UTC)

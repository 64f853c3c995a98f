"""Projection: from the platform state and the clock to the calendar entries a therapist must
see (DESIGN.md §2). Pure: no I/O, no clock reads; the same input always gives the same entries.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from syncd import domain as d

UID_DOMAIN = "syncd"
NAME_PREFIX = "syncd-"
_SAFE_ID = re.compile(r"[a-z0-9._-]{1,64}")

LOCATION_WORDS = {
    d.LocationType.IN_PERSON: "In-person session",
    d.LocationType.VIDEO: "Video session",
    d.LocationType.PHONE: "Phone session",
}
MANAGED_NOTE = (
    "Managed by syncd from the booking platform. Edits made here are replaced on the next sync; "
    "add your own notes in a separate event."
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One desired calendar entry. ``name`` is its resource name on CalDAV servers."""

    uid: str
    name: str
    kind: str  # session | hold | blocked | reserved
    start: datetime
    end: datetime
    timezone: str
    summary: str
    status: str  # CONFIRMED | TENTATIVE
    sequence: int
    location: str | None = None
    description: str = MANAGED_NOTE
    rrule: str | None = None
    exdates: tuple[datetime, ...] = field(default_factory=tuple)

    @property
    def content_hash(self) -> str:
        """Fingerprint of everything that ends up in the calendar; equal hash = nothing to do."""
        doc = [
            self.uid,
            self.kind,
            self.start.isoformat(),
            self.end.isoformat(),
            self.timezone,
            self.summary,
            self.status,
            self.sequence,
            self.location,
            self.description,
            self.rrule,
            [x.isoformat() for x in self.exdates],
        ]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PlatformState:
    """Everything projection needs for one therapist."""

    therapist: d.Therapist
    sessions: tuple[d.Session, ...] = ()
    offers: tuple[d.Offer, ...] = ()
    reserved_slots: tuple[d.ReservedSlot, ...] = ()


def safe_id(entity_id: str) -> str:
    """Platform ids become part of UIDs and resource names. Lower-case URL-safe ids stay as they
    are; others are lower-cased and cleaned for readability with a hash of the original
    appended, so ids differing only in case never collide on case-insensitive servers."""
    if _SAFE_ID.fullmatch(entity_id):
        return entity_id
    digest = hashlib.sha256(entity_id.encode()).hexdigest()[:16]
    readable = re.sub(r"[^a-z0-9._-]+", "-", entity_id.lower()).strip("-")[:40]
    return f"{readable}-h{digest}" if readable else f"h{digest}"


def uid_for(kind: str, entity_id: str) -> str:
    return f"{NAME_PREFIX}{kind}-{safe_id(entity_id)}@{UID_DOMAIN}"


def name_for(uid: str) -> str:
    return uid.removesuffix(f"@{UID_DOMAIN}") + ".ics"


def is_ours(resource_name: str) -> bool:
    """Only resources named by syncd are ever touched; everything else belongs to the therapist."""
    return resource_name.startswith(NAME_PREFIX) and resource_name.endswith(".ics")


def client_label(client: d.Client, choice: d.ClientLabel) -> str | None:
    name = (client.name or "").strip()
    if not name or choice is d.ClientLabel.NONE:
        return None
    parts = name.split()
    if choice is d.ClientLabel.FIRST_NAME:
        return parts[0]
    return "".join(p[0].upper() + "." for p in parts if p[0].isalpha()) or None


def location_text(location: d.Location, privacy: d.Privacy) -> str | None:
    if not privacy.include_location:
        return None
    if location.type is d.LocationType.IN_PERSON:
        return location.address
    if location.type is d.LocationType.VIDEO:
        return location.url or "Video call"
    return "Phone call"


def _session_entry(t: d.Therapist, s: d.Session) -> Entry:
    title = "Therapy session"
    label = client_label(s.client, t.privacy.client_label)
    if label:
        title += f" · {label}"
    unconfirmed = s.status is d.SessionStatus.UNCONFIRMED
    if unconfirmed:
        title += " (unconfirmed)"
    uid = uid_for("session", s.id)
    return Entry(
        uid=uid,
        name=name_for(uid),
        kind="session",
        start=s.start,
        end=s.end,
        timezone=t.timezone,
        summary=title,
        status="TENTATIVE" if unconfirmed else "CONFIRMED",
        sequence=s.version,
        location=location_text(s.location, t.privacy),
        description=f"{LOCATION_WORDS[s.location.type]}. {MANAGED_NOTE}",
    )


def project(state: PlatformState, now: datetime) -> dict[str, Entry]:
    """Desired entries keyed by UID. ``now`` decides what has expired (holds, in a later step)."""
    del now  # sessions do not depend on the clock; offers and reservations will
    t = state.therapist
    entries: dict[str, Entry] = {}
    # A paused therapist takes no new bookings, but booked sessions still happen: they stay.
    for s in state.sessions:
        if s.blocks_time:
            e = _session_entry(t, s)
            entries[e.uid] = e
    return entries

"""Projection: from the platform state and the clock to the calendar entries a therapist must
see (DESIGN.md §2). Pure: no I/O, no clock reads; the same input always gives the same entries.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from syncd import domain as d
from syncd import recurrence

UID_DOMAIN = "syncd"
NAME_PREFIX = "syncd-"
_SAFE_ID = re.compile(r"[a-z0-9._-]{1,64}")
HASH_VERSION = "v2:"
_SEP = "\x1f"  # ASCII unit separator

LOCATION_WORDS = {
    d.LocationType.IN_PERSON: "In-person session",
    d.LocationType.VIDEO: "Video session",
    d.LocationType.PHONE: "Phone session",
}
# Therapists read these, so they never name syncd: the entry explains itself and its source.
MANAGED_NOTE = (
    "Kept in step with the booking platform: changes made here are replaced on the next sync, "
    "so add your own notes in a separate event."
)
BOOKING_LINE = "Booking on the platform: {url}"
UNCONFIRMED_NOTE = (
    "Not confirmed yet: please confirm this booking on the platform; an unconfirmed booking "
    "is cancelled when it times out."
)


class Entry(NamedTuple):
    """One desired calendar entry. ``name`` is its resource name on CalDAV servers.

    Immutable like the domain's frozen dataclasses, but a NamedTuple: a frozen dataclass sets
    each field through ``object.__setattr__``, which made construction 40% of projection."""

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
    exdates: tuple[datetime, ...] = ()
    url: str | None = None  # the booking on the platform ([platform] session_url)

    @property
    def content_hash(self) -> str:
        """Fingerprint of everything that ends up in the calendar; equal hash = nothing to do.

        Computed for every entry on every pass, so it is built from plain strings (the legacy
        form's ``json.dumps`` and ``isoformat`` were half of planning): the fields joined by a
        separator none of them holds (else the unambiguous ``ascii()`` of the fields, whose text
        has no raw separator), an instant as its POSIX timestamp, and None as "" (both render
        the same). 160 bits of SHA-256 behind a version prefix that tells it from the legacy
        form (:func:`is_legacy_hash`), within the 64-character column."""
        fields: tuple[str, ...] = (
            self.uid,
            self.kind,
            repr(self.start.timestamp()),
            repr(self.end.timestamp()),
            self.timezone,
            self.summary,
            self.status,
            str(self.sequence),
            self.location or "",
            self.description,
            self.rrule or "",
        )
        if self.exdates:
            fields += tuple(repr(x.timestamp()) for x in self.exdates)
        if self.url:
            # Only when set, so entries without a link keep the fingerprint they had before
            # links existed; "url=" keeps it apart from an EXDATE timestamp.
            fields += ("url=" + self.url,)
        text = _SEP.join(fields)
        if text.count(_SEP) != len(fields) - 1:
            text = ascii(fields)
        return HASH_VERSION + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]

    @property
    def legacy_content_hash(self) -> str:
        """The fingerprint syncd 0.1 stored (mirror table, X-SYNCD-HASH). Only ever computed for
        a mirror row that still carries that form, to recognise unchanged content after an
        upgrade without rewriting it on the server."""
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


def is_legacy_hash(content_hash: str) -> bool:
    return not content_hash.startswith(HASH_VERSION)


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


def _uid_and_name(kind: str, entity_id: str) -> tuple[str, str]:
    """``uid_for`` and ``name_for`` of it, with one ``safe_id``."""
    stem = f"{NAME_PREFIX}{kind}-{safe_id(entity_id)}"
    return f"{stem}@{UID_DOMAIN}", f"{stem}.ics"


def name_for(uid: str) -> str:
    return uid.removesuffix(f"@{UID_DOMAIN}") + ".ics"


def base_name(resource_name: str) -> str:
    """The name without a generation suffix (``x~2.ics`` → ``x.ics``): providers that never
    reuse the id of a deleted resource (Google) re-create an entry under its next generation."""
    stem, dot, ext = resource_name.rpartition(".")
    head, tilde, gen = stem.rpartition("~")
    if dot and tilde and gen.isdigit() and head:
        return f"{head}.{ext}"
    return resource_name


def is_ours(resource_name: str) -> bool:
    """Only resources named by syncd are ever touched; everything else belongs to the therapist."""
    return resource_name.startswith(NAME_PREFIX) and resource_name.endswith(".ics")


def client_label(client: d.Client, choice: d.ClientLabel) -> str | None:
    if choice is d.ClientLabel.NONE:
        return None
    name = (client.name or "").strip()
    if not name:
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


def _title(base: str, client: d.Client, t: d.Therapist) -> str:
    label = client_label(client, t.privacy.client_label)
    return f"{base} · {label}" if label else base


def local_label(instant: datetime, zone: str) -> str:
    """ "Tue 2 Dec 14:05" in the therapist's zone: how times are shown in titles. The date is
    kept (unlike "Tue 14:05") because a session can be weeks away from the entry naming it."""
    local = instant.astimezone(ZoneInfo(zone))
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def booking_url(template: str | None, session_id: str) -> str | None:
    """``[platform] session_url`` filled in for one session (the id URL-encoded), or None."""
    if not template:
        return None
    return template.replace("{session_id}", quote(session_id, safe=""))


def _describe(*lines: str | None) -> str:
    return "\n".join(line for line in lines if line)


def _session_entry(
    t: d.Therapist, s: d.Session, pending: d.Offer | None, sequence: int, url: str | None
) -> Entry:
    uid, name = _uid_and_name("session", s.id)
    unconfirmed = s.status is d.SessionStatus.UNCONFIRMED
    base = _title("Therapy session", s.client, t)
    link = BOOKING_LINE.format(url=url) if url else None
    if pending is not None:
        # The original slot stays blocked while the client considers the alternatives; it is
        # still the session (same entry), so the title says so first.
        until = local_label(pending.expires_at, t.timezone)
        title = f"{base} — alternatives offered, open until {until}"
        status = "CONFIRMED"
        description = _describe(
            f"You offered the client {len(pending.alternatives)} other time"
            f"{'' if len(pending.alternatives) == 1 else 's'} for this session. This time stays "
            f"blocked until the client answers or the offer ends ({until}): if they accept one, "
            "the session moves there; otherwise it stays here.",
            link,
            MANAGED_NOTE,
        )
    else:
        title = base
        if unconfirmed:
            title += " (unconfirmed — please confirm on the platform)"
        status = "TENTATIVE" if unconfirmed else "CONFIRMED"
        description = _describe(
            f"{LOCATION_WORDS[s.location.type]} booked on the platform.",
            UNCONFIRMED_NOTE if unconfirmed else None,
            link,
            MANAGED_NOTE,
        )
    return Entry(
        uid=uid,
        name=name,
        kind="blocked" if pending is not None else "session",
        start=s.start,
        end=s.end,
        timezone=t.timezone,
        summary=title,
        status=status,
        sequence=sequence,
        location=location_text(s.location, t.privacy),
        description=description,
        url=url,
    )


def _hold_entries(
    t: d.Therapist, offer: d.Offer, session: d.Session, url: str | None
) -> list[Entry]:
    until = local_label(offer.expires_at, t.timezone)
    original = local_label(session.start, t.timezone)
    held_for = client_label(session.client, t.privacy.client_label) or "client"
    link = BOOKING_LINE.format(url=url) if url else None
    entries = []
    for i, alt in enumerate(offer.alternatives):
        uid, name = _uid_and_name("hold", f"{offer.id}.{i}")
        entries.append(
            Entry(
                uid=uid,
                name=name,
                kind="hold",
                start=alt.start,
                end=alt.end,
                timezone=t.timezone,
                summary=f"Held for {held_for} — alternative for {original} session · until {until}",
                status="TENTATIVE",
                sequence=offer.version,
                description=_describe(
                    f"Alternative time {i + 1} of {len(offer.alternatives)} you offered instead "
                    f"of the {original} session. Held so nobody else can book it; released "
                    f"automatically at {until} unless the client accepts it.",
                    link,
                    MANAGED_NOTE,
                ),
                url=url,
            )
        )
    return entries


def _ended_rule(slot: d.ReservedSlot, rule: str, first: datetime) -> str:
    """The RRULE of a series that ends at ``slot.until``. RFC 5545 forbids COUNT beside UNTIL
    (servers and clients reject or misread such a rule), so a counted series is recounted:
    COUNT becomes the number of occurrences that start before the end."""
    assert slot.until is not None
    parts = rule.split(";")
    if not any(p.upper().startswith("COUNT=") for p in parts):
        # UNTIL is inclusive; one second before the end keeps an occurrence starting exactly
        # at the end out, as "future occurrences disappear" asks.
        last = slot.until - timedelta(seconds=1)
        return f"{rule};UNTIL={last.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    left = sum(1 for _ in recurrence.occurrences(slot, first, slot.until))
    return ";".join(f"COUNT={left}" if p.upper().startswith("COUNT=") else p for p in parts)


def _reserved_entry(
    t: d.Therapist, slot: d.ReservedSlot, sessions: tuple[d.Session, ...]
) -> Entry | None:
    first = recurrence.first_start(slot)
    if slot.until is not None and slot.until <= first:
        return None  # ended before it ever started
    own = [x for x in sessions if x.client.id == slot.client.id]
    exdates: set[datetime] = set()
    for x in own:
        if x.blocks_time:
            exdates.update(o.start for o in recurrence.occurrences(slot, x.start, x.end))
    rule = slot.rrule.removeprefix("RRULE:")
    if slot.until is not None:
        rule = _ended_rule(slot, rule, first)
    uid, name = _uid_and_name("reserved", slot.id)
    return Entry(
        uid=uid,
        name=name,
        kind="reserved",
        start=first,
        end=first + slot.duration,
        timezone=slot.timezone,
        summary=_title("Reserved slot", slot.client, t),
        status="CONFIRMED",
        # EXDATEs change with the client's sessions, not with the reservation's version: count
        # those versions too so SEQUENCE only ever grows.
        sequence=slot.version + sum(x.version for x in own),
        description=_describe("Regular time reserved for an ongoing client.", MANAGED_NOTE),
        rrule=rule,
        exdates=tuple(sorted(exdates)),
    )


def project(
    state: d.PlatformState, now: datetime, *, session_url: str | None = None
) -> dict[str, Entry]:
    """Desired entries keyed by UID. ``now`` decides which offers are still pending: a hold is
    gone from the projection the moment its offer expires, whether or not anything else ran.
    ``session_url`` is the ``[platform] session_url`` template linking entries to bookings."""
    t = state.therapist
    entries: dict[str, Entry] = {}
    pending = {
        o.session_id: o
        for o in state.offers
        if o.state is d.OfferState.PENDING and now < o.expires_at
    }
    offer_versions: dict[str, int] = {}
    for o in state.offers:
        bump = o.version + (1 if o.state is d.OfferState.EXPIRED else 0)
        offer_versions[o.session_id] = offer_versions.get(o.session_id, 0) + bump
    # A paused therapist takes no new bookings, but booked sessions still happen: they stay.
    for s in state.sessions:
        if not s.blocks_time:
            continue
        offer = pending.get(s.id)
        url = booking_url(session_url, s.id)
        e = _session_entry(t, s, offer, s.version + offer_versions.get(s.id, 0), url)
        entries[e.uid] = e
        if offer is not None:
            for hold in _hold_entries(t, offer, s, url):
                entries[hold.uid] = hold
    for slot in state.reserved_slots:
        r = _reserved_entry(t, slot, state.sessions)
        if r is not None:
            entries[r.uid] = r
    return entries

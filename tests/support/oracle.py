"""The platform's truth about a therapist's calendar, stated independently of syncd.

Model in, expected entries out: from what the platform has said (the test's own record of every
therapist, session, offer and reservation) and an instant, the entries DESIGN.md §2 says the
therapist's calendar must hold; and the comparison of what a calendar server actually holds
(parsed iCalendar from CalDAV, event fields from Google) with that expectation. Nothing here
imports syncd: a bug in syncd's ingestion, projection or planner cannot hide itself by being
the yardstick too. Pure: no I/O, no clock reads.

Used by the soak (tests/support/soak/), the state machine (tests/test_model.py) and the replica
tests (tests/test_replicas.py); its own tests are tests/test_oracle.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from dateutil.rrule import rrulestr

# -- what the therapist reads: every text of DESIGN.md §2, in this one place ---------------------
# (A change of wording is an edit here, and nowhere else in the tests that use the oracle.)

SESSION = "Therapy session"
UNCONFIRMED = " (unconfirmed — please confirm on the platform)"
BLOCKED = " — alternatives offered, open until {until}"  # after the session's own title
HOLD = "Held for {who} — alternative for {session} session · until {until}"
HOLD_ANONYMOUS = "client"  # who a hold is for when the therapist chose no client label
RESERVED = "Reserved slot"
LABEL_SEPARATOR = " · "
VIDEO_WITHOUT_LINK = "Video call"
PHONE = "Phone call"


def client_label(name: str | None, choice: str) -> str | None:
    """What of the client a title shows: nothing (``none``, the default), the initials
    (``initials``: "Jane Doe" -> "J.D."), or the first name (``first_name``: "Jane")."""
    words = (name or "").split()
    if choice == "none" or not words:
        return None
    if choice == "first_name":
        return words[0]
    assert choice == "initials", choice
    return "".join(w[0].upper() + "." for w in words if w[0].isalpha()) or None


def until_text(instant: datetime, zone: str) -> str:
    """An expiry as titles show it, on the therapist's wall clock: "Tue 2 Dec 14:05"."""
    local = instant.astimezone(ZoneInfo(zone))
    return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"


def with_label(title: str, label: str | None) -> str:
    return f"{title}{LABEL_SEPARATOR}{label}" if label else title


def session_title(label: str | None, unconfirmed: bool) -> str:
    return with_label(SESSION, label) + (UNCONFIRMED if unconfirmed else "")


def blocked_title(label: str | None, until: str) -> str:
    """The session keeps its identity while alternatives are offered: its title, then why."""
    return with_label(SESSION, label) + BLOCKED.format(until=until)


def hold_title(label: str | None, session: str, until: str) -> str:
    """``session``: when the session the hold is an alternative for starts (``until_text``)."""
    return HOLD.format(who=label or HOLD_ANONYMOUS, session=session, until=until)


def reserved_title(label: str | None) -> str:
    return with_label(RESERVED, label)


def location_text(location: dict[str, Any], include: bool) -> str | None:
    """Where the session happens, unless the therapist turned locations off."""
    if not include:
        return None
    if location["type"] == "in_person":
        return str(location["address"])
    if location["type"] == "video":
        return str(location.get("url") or VIDEO_WITHOUT_LINK)
    return PHONE


# -- the model: what the platform has said --------------------------------------------------------


@dataclass
class Therapist:
    id: str
    zone: str = "Europe/London"
    label: str = "none"  # privacy.client_label
    include_location: bool = True


@dataclass
class Session:
    id: str
    therapist_id: str
    client_id: str
    client_name: str | None
    start: datetime
    end: datetime
    status: str  # unconfirmed | confirmed | cancelled | completed
    location: dict[str, Any]


@dataclass
class Offer:
    id: str
    session_id: str
    alternatives: list[tuple[datetime, datetime]]
    expires_at: datetime
    state: str  # pending | accepted | rejected | expired

    def holds_at(self, now: datetime) -> bool:
        """An unanswered offer holds its alternatives until the instant it expires."""
        return self.state == "pending" and now < self.expires_at


@dataclass
class Reservation:
    id: str
    therapist_id: str
    client_id: str
    client_name: str | None
    first_local: datetime  # naive wall-clock start in ``zone``
    zone: str
    minutes: int
    rrule: str  # as the platform sent it, e.g. FREQ=WEEKLY;COUNT=4
    until: datetime | None  # occurrences starting at or after it are gone


@dataclass
class Platform:
    therapists: dict[str, Therapist] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    offers: dict[str, Offer] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)


# -- the expectation -----------------------------------------------------------------------------

# Recurrences are compared occurrence by occurrence up to this far after their first start.
HORIZON = timedelta(days=400)


@dataclass(frozen=True)
class Want:
    uid: str
    kind: str  # session | blocked | hold | reserved
    start: datetime
    end: datetime
    zone: str
    summary: str
    status: str  # CONFIRMED | TENTATIVE
    location: str | None = None
    occurrences: tuple[datetime, ...] | None = None  # a series: every start it shows
    exdates: frozenset[datetime] = frozenset()  # a series: the occurrences taken by sessions
    secret_words: tuple[str, ...] = ()  # what the therapist did not opt in to show


def uid(kind: str, entity_id: str) -> str:
    """UIDs derive from the platform's ids (DESIGN.md §2); the tests use ids that need no
    escaping."""
    assert entity_id == entity_id.lower() and " " not in entity_id, entity_id
    return f"syncd-{kind}-{entity_id}@syncd"


def _secret_words(name: str | None, label: str | None) -> tuple[str, ...]:
    shown = set((label or "").split())
    return tuple(w for w in (name or "").split() if len(w) >= 3 and w not in shown)


def occurrences(r: Reservation) -> list[datetime]:
    """Every start of the series in UTC (within HORIZON), computed on the wall clock of its zone
    so that 07:13 stays 07:13 across clock changes, ending before ``until``."""
    zone = ZoneInfo(r.zone)
    first = r.first_local.replace(tzinfo=zone).astimezone(UTC)
    out = []
    for local in rrulestr(r.rrule, dtstart=r.first_local):
        start = local.replace(tzinfo=zone).astimezone(UTC)
        if start >= first + HORIZON or (r.until is not None and start >= r.until):
            break
        out.append(start)
    return out


def expected(p: Platform, therapist_id: str, now: datetime) -> dict[str, Want]:
    """The entries ``therapist_id``'s calendar must hold at ``now``, keyed by UID."""
    t = p.therapists[therapist_id]
    out: dict[str, Want] = {}
    sessions = [s for s in p.sessions.values() if s.therapist_id == therapist_id]
    for s in sessions:
        if s.status == "cancelled":
            continue  # removed, and with it any offer's holds
        label = client_label(s.client_name, t.label)
        secret = _secret_words(s.client_name, label)
        where = location_text(s.location, t.include_location)
        common: dict[str, Any] = {
            "uid": uid("session", s.id),
            "start": s.start,
            "end": s.end,
            "zone": t.zone,
            "secret_words": secret,
        }
        open_offers = [o for o in p.offers.values() if o.session_id == s.id and o.holds_at(now)]
        assert len(open_offers) <= 1, f"the model holds two open offers for {s.id}"
        if not open_offers:
            unconfirmed = s.status == "unconfirmed"
            title = session_title(label, unconfirmed)
            status = "TENTATIVE" if unconfirmed else "CONFIRMED"
            out[uid("session", s.id)] = Want(
                **common, kind="session", summary=title, status=status, location=where
            )
            continue
        offer = open_offers[0]
        until = until_text(offer.expires_at, t.zone)
        out[uid("session", s.id)] = Want(
            **common,
            kind="blocked",
            summary=blocked_title(label, until),
            status="CONFIRMED",
            location=where,
        )
        for i, (start, end) in enumerate(offer.alternatives):
            u = uid("hold", f"{offer.id}.{i}")
            out[u] = Want(
                uid=u,
                kind="hold",
                start=start,
                end=end,
                zone=t.zone,
                summary=hold_title(label, until_text(s.start, t.zone), until),
                status="TENTATIVE",
                secret_words=secret,
            )
    for r in p.reservations.values():
        if r.therapist_id != therapist_id:
            continue
        starts = occurrences(r)
        if not starts:
            continue  # ended before it ever started
        length = timedelta(minutes=r.minutes)
        own = [x for x in sessions if x.client_id == r.client_id and x.status != "cancelled"]
        taken = {o for o in starts for x in own if o < x.end and x.start < o + length}
        label = client_label(r.client_name, t.label)
        out[uid("reserved", r.id)] = Want(
            uid=uid("reserved", r.id),
            kind="reserved",
            start=starts[0],
            end=starts[0] + length,
            zone=r.zone,
            summary=reserved_title(label),
            status="CONFIRMED",
            occurrences=tuple(o for o in starts if o not in taken),
            exdates=frozenset(taken),
            secret_words=_secret_words(r.client_name, label),
        )
    return out


# -- what a server holds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One event as the therapist's own client reads it, whichever server it came from."""

    uid: str
    start: datetime
    end: datetime
    zone: str | None
    summary: str | None
    status: str | None
    private: bool
    location: str | None
    rrule: str | None
    exdates: frozenset[datetime]
    text: str  # every value it carries, for the privacy check


def _exdates(ev: icalendar.cal.Component) -> frozenset[datetime]:
    found = ev.get("EXDATE")
    lists = found if isinstance(found, list) else [found] if found is not None else []
    return frozenset(d.dt.astimezone(UTC) for x in lists for d in x.dts)


def seen_ical(ev: icalendar.cal.Component) -> Seen:
    """A VEVENT as stored on a CalDAV server."""
    start = ev.decoded("DTSTART")
    rule = ev.get("RRULE")
    return Seen(
        uid=str(ev.get("UID")),
        start=start,
        end=ev.decoded("DTEND"),
        zone=ev["DTSTART"].params.get("TZID"),
        summary=str(ev["SUMMARY"]) if "SUMMARY" in ev else None,
        status=str(ev["STATUS"]).upper() if "STATUS" in ev else None,
        private=str(ev.get("CLASS", "")).upper() == "PRIVATE",
        location=str(ev["LOCATION"]) if "LOCATION" in ev else None,
        rrule=rule.to_ical().decode() if rule is not None else None,
        exdates=_exdates(ev),
        text=" ".join(str(v) for _k, v in ev.property_items(recursive=False)),
    )


def seen_google(item: dict[str, Any]) -> Seen:
    """An event resource of the Google Calendar API: its fields, not syncd's stored body. The
    entry's UID is the private property syncd writes it in (syncd sends only the event id at
    creation, so Google's ``iCalUID`` is Google's own); the ``iCalUID`` of anything else."""
    zone = item["start"].get("timeZone")
    private = (item.get("extendedProperties") or {}).get("private") or {}

    def instant(when: dict[str, str]) -> datetime:
        value = datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00"))
        return value.astimezone(ZoneInfo(zone)) if zone else value

    lines = item.get("recurrence") or []
    ev = icalendar.Event.from_ical(
        "BEGIN:VEVENT\r\n" + "".join(f"{line}\r\n" for line in lines) + "END:VEVENT\r\n"
    )
    rule = ev.get("RRULE")
    return Seen(
        uid=str(private.get("syncdUid") or item.get("iCalUID")),
        start=instant(item["start"]),
        end=instant(item["end"]),
        zone=zone,
        summary=item.get("summary"),
        status=str(item.get("status", "confirmed")).upper(),
        private=item.get("visibility") == "private",
        location=item.get("location"),
        rrule=rule.to_ical().decode() if rule is not None else None,
        exdates=_exdates(ev),
        text=json.dumps(item, ensure_ascii=False),
    )


def shown(s: Seen) -> tuple[datetime, ...]:
    """Every start the series shows (within HORIZON), EXDATEs taken out."""
    assert s.rrule is not None
    upper = s.rrule.upper()
    if "COUNT=" in upper and "UNTIL=" in upper:
        raise ValueError("RRULE has both COUNT and UNTIL (RFC 5545 §3.3.10: MUST NOT)")
    out = []
    for o in rrulestr(s.rrule, dtstart=s.start):
        at = o.astimezone(UTC)
        if at >= s.start + HORIZON:
            break
        if at not in s.exdates:
            out.append(at)
    return tuple(out)


def compare(who: str, want: dict[str, Want], seen: list[Seen]) -> list[str]:
    """Every difference between the entries a calendar must hold (``want``, keyed by UID) and
    the events it holds that are syncd's (``seen``), one line each; [] when they agree."""
    problems: list[str] = []
    by_uid: dict[str, Seen] = {}
    for s in seen:
        if s.uid in by_uid:
            problems.append(f"{who}: duplicate UID {s.uid}")
        by_uid[s.uid] = s
    problems += [f"{who}: missing {u}" for u in sorted(set(want) - set(by_uid))]
    problems += [f"{who}: unexpected {u}" for u in sorted(set(by_uid) - set(want))]
    for u in sorted(set(want) & set(by_uid)):
        w, s = want[u], by_uid[u]
        fields: dict[str, tuple[object, object]] = {
            "start": (w.start.astimezone(UTC), s.start.astimezone(UTC)),
            "end": (w.end.astimezone(UTC), s.end.astimezone(UTC)),
            "zone": (w.zone, s.zone),
            "summary": (w.summary, s.summary),
            "status": (w.status, s.status),
            "private": (True, s.private),
            "location": (w.location, s.location),
            "recurs": (w.occurrences is not None, s.rrule is not None),
        }
        if w.occurrences is not None and s.rrule is not None:
            try:
                fields["occurrences"] = (w.occurrences, shown(s))
            except ValueError as exc:
                fields["rrule"] = ("valid", f"{s.rrule}: {exc}")
            fields["exdates"] = (w.exdates, s.exdates)
        for name, (expect, got) in fields.items():
            if expect != got:
                problems.append(f"{who}: {u} {name} is {got!r}, expected {expect!r}")
        leaked = [word for word in w.secret_words if word in s.text]
        if leaked:
            problems.append(f"{who}: {u} shows {leaked} of the client's name, not opted in")
    return problems

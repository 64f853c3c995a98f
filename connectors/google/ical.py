"""iCalendar ↔ Google Calendar event JSON, for the Google connector.

The connector interface speaks iCalendar (one VEVENT per resource), so the engine and the
contract suite are the same for every provider. Google stores fields, not bodies: what syncd
wrote is kept verbatim in private extended properties together with a fingerprint of the fields
it produced. Reading an event back returns that body while the fields still match; once someone
has edited the event in Google, the body is rebuilt from the fields, so an edit is never hidden.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from connectors.errors import ProtocolError

PROP_OWNED = "syncd"
PROP_NAME = "syncdName"
PROP_FINGERPRINT = "syncdFp"
PROP_UID = "syncdUid"  # the entry's UID: Google's iCalUID is left to Google (one of id/iCalUID)
PROP_BODY = "syncdBody"  # syncdBody0, syncdBody1, … (Google caps a value at 1024 characters)
CHUNK = 1000
# Google caps one event's extended properties at 32 kB, keys and values together (extended
# properties guide, "Limits"); counted in UTF-8 bytes, the stricter reading.
MAX_PROPERTY_BYTES = 32 * 1024

_STATUS = {"CONFIRMED": "confirmed", "TENTATIVE": "tentative", "CANCELLED": "cancelled"}
_VISIBILITY = {"PRIVATE": "private", "PUBLIC": "public", "CONFIDENTIAL": "confidential"}
_RECURRENCE = ("RRULE", "EXDATE", "RDATE", "EXRULE")
SOURCE_TITLE = "Booking on the platform"


def _when(value: Any) -> dict[str, str]:
    dt = value.dt if hasattr(value, "dt") else value
    if isinstance(dt, datetime):
        if dt.tzinfo is None:
            raise ProtocolError("floating (zone-less) times are not supported")
        zone = getattr(dt.tzinfo, "key", None) or "UTC"
        return {"dateTime": dt.isoformat(), "timeZone": zone}
    if isinstance(dt, date):
        return {"date": dt.isoformat()}
    raise ProtocolError(f"unsupported date value {dt!r}")


def _vevent(body: str) -> icalendar.cal.Component:
    try:
        cal = icalendar.Calendar.from_ical(body)
    except ValueError as exc:
        raise ProtocolError(f"not iCalendar: {exc}") from None
    events = cal.walk("VEVENT")
    if not events:
        raise ProtocolError("no VEVENT in the body")
    return events[0]


def fields_from_ical(body: str) -> dict[str, Any]:
    """The Google event fields an iCalendar body maps to (no ids, no extended properties)."""
    ev = _vevent(body)
    fields: dict[str, Any] = {
        "iCalUID": str(ev["UID"]),
        "start": _when(ev["DTSTART"]),
        "end": _when(ev["DTEND"]) if "DTEND" in ev else _when(ev["DTSTART"]),
    }
    for key, name in (
        ("SUMMARY", "summary"),
        ("DESCRIPTION", "description"),
        ("LOCATION", "location"),
    ):
        if key in ev:
            fields[name] = str(ev[key])
    if "STATUS" in ev:
        fields["status"] = _STATUS.get(str(ev["STATUS"]).upper(), "confirmed")
    fields["transparency"] = (
        "transparent" if str(ev.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT" else "opaque"
    )
    if "CLASS" in ev:
        fields["visibility"] = _VISIBILITY.get(str(ev["CLASS"]).upper(), "default")
    if "SEQUENCE" in ev:
        fields["sequence"] = int(str(ev["SEQUENCE"]))
    if "URL" in ev:
        # Google's place for a link back to where the event came from (Events resource,
        # "source": title and an http(s) URL), shown as a link on the event.
        fields["source"] = {"title": SOURCE_TITLE, "url": str(ev["URL"])}
    recurrence = [line for prop in _RECURRENCE for line in _content_lines(ev, prop)]
    if recurrence:
        fields["recurrence"] = recurrence
    return fields


def _content_lines(ev: icalendar.cal.Component, prop: str) -> list[str]:
    out = []
    for line in ev.content_lines():
        if line.split(":", 1)[0].split(";", 1)[0].upper() == prop:
            out.append(str(line))
    return out


def _instant(when: dict[str, str] | None) -> str | None:
    if not when:
        return None
    if "dateTime" in when:
        dt = datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=ZoneInfo(when.get("timeZone") or "UTC"))
        return dt.astimezone(UTC).isoformat()
    return when.get("date")


def fingerprint(event: dict[str, Any]) -> str:
    """A hash of what an event means, insensitive to how Google re-serialises it."""
    doc = [
        _instant(event.get("start")),
        _instant(event.get("end")),
        (event.get("start") or {}).get("timeZone"),
        (event.get("summary") or "").strip(),
        (event.get("description") or "").strip(),
        (event.get("location") or "").strip(),
        event.get("status", "confirmed"),
        event.get("transparency", "opaque"),
        event.get("visibility", "default"),
        [line.strip() for line in event.get("recurrence") or []],
    ]
    source_url = (event.get("source") or {}).get("url")
    if source_url:
        doc.append(source_url)  # only when present: events without one keep their fingerprint
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:32]


def to_google(body: str, name: str) -> dict[str, Any]:
    """The event resource to write for ``body`` under resource name ``name``."""
    fields = fields_from_ical(body)
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    private = {
        PROP_OWNED: "1",
        PROP_NAME: name,
        PROP_FINGERPRINT: fingerprint(fields),
        PROP_UID: fields["iCalUID"],
    }
    private.update({f"{PROP_BODY}{i}": chunk for i, chunk in enumerate(chunks)})
    size = sum(len(k.encode()) + len(v.encode()) for k, v in private.items())
    if size > MAX_PROPERTY_BYTES:
        raise ProtocolError(f"event body of {len(body)} characters is too large for Google")
    fields["extendedProperties"] = {"private": private}
    return fields


def to_ical(event: dict[str, Any]) -> str:
    """iCalendar for a Google event: syncd's own body while untouched, else rebuilt."""
    private = (event.get("extendedProperties") or {}).get("private") or {}
    if private.get(PROP_FINGERPRINT) == fingerprint(event):
        chunks = []
        i = 0
        while f"{PROP_BODY}{i}" in private:
            chunks.append(private[f"{PROP_BODY}{i}"])
            i += 1
        if chunks:
            return "".join(chunks)
    return _rebuild(event)


def _parse_when(when: dict[str, str]) -> date | datetime:
    if "dateTime" in when:
        dt = datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00"))
        zone = when.get("timeZone")
        if zone:
            dt = dt.astimezone(ZoneInfo(zone)) if dt.tzinfo else dt.replace(tzinfo=ZoneInfo(zone))
        return dt
    return date.fromisoformat(when["date"])


def _rebuild(event: dict[str, Any]) -> str:
    cal = icalendar.Calendar()
    cal.add("prodid", "-//syncd//google connector//EN")
    cal.add("version", "2.0")
    ev = icalendar.Event()
    private = (event.get("extendedProperties") or {}).get("private") or {}
    ev.add("uid", private.get(PROP_UID) or event.get("iCalUID") or event.get("id", ""))
    updated = event.get("updated")
    ev.add(
        "dtstamp",
        datetime.fromisoformat(updated.replace("Z", "+00:00")) if updated else datetime.now(UTC),
    )
    if event.get("start"):
        ev.add("dtstart", _parse_when(event["start"]))
    if event.get("end"):
        ev.add("dtend", _parse_when(event["end"]))
    for key, name in (
        ("summary", "summary"),
        ("description", "description"),
        ("location", "location"),
    ):
        if event.get(key):
            ev.add(name, event[key])
    status = event.get("status")
    if status in ("confirmed", "tentative", "cancelled"):
        ev.add("status", status.upper())
    ev.add("transp", "TRANSPARENT" if event.get("transparency") == "transparent" else "OPAQUE")
    visibility = event.get("visibility")
    if visibility in ("private", "public", "confidential"):
        ev.add("class", visibility.upper())
    if "sequence" in event:
        ev.add("sequence", int(event["sequence"]))
    source_url = (event.get("source") or {}).get("url")
    if source_url:
        ev.add("url", source_url)
    cal.add_component(ev)
    text = bytes(cal.to_ical()).decode()
    recurrence = event.get("recurrence") or []
    if recurrence:
        lines = "".join(line.strip() + "\r\n" for line in recurrence)
        text = text.replace("END:VEVENT\r\n", lines + "END:VEVENT\r\n", 1)
    return text

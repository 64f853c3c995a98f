"""The WebDAV / CalDAV wire format syncd speaks: request bodies and the parsing of replies.
Pure functions over text and XML trees; nothing here sends a request."""

from __future__ import annotations

import codecs
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from connectors.caldav.hrefs import href_path
from connectors.errors import ProtocolError

DAV: Final = "{DAV:}"
CALDAV: Final = "{urn:ietf:params:xml:ns:caldav}"

XML_HEADERS: Final = {"Content-Type": "application/xml; charset=utf-8"}
ICS_CONTENT_TYPE: Final = "text/calendar; charset=utf-8"

SYNC_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:sync-collection xmlns:D="DAV:">'
    "<D:sync-token>{token}</D:sync-token>"
    "<D:sync-level>1</D:sync-level>"
    "<D:prop><D:getetag/></D:prop>"
    "</D:sync-collection>"
)
PROPFIND_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>'
)
RESOURCETYPE_BODY: Final = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>"""
CALENDARS_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>'
    "<D:displayname/><D:resourcetype/><C:supported-calendar-component-set/>"
    "</D:prop></D:propfind>"
)
FREEBUSY_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
    '<C:time-range start="{start}" end="{end}"/>'
    "</C:free-busy-query>"
)
QUERY_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><C:calendar-data>{expand}</C:calendar-data></D:prop>"
    '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
    '<C:time-range start="{start}" end="{end}"/>'
    "</C:comp-filter></C:comp-filter></C:filter>"
    "</C:calendar-query>"
)
EXPAND: Final = '<C:expand start="{start}" end="{end}"/>'
MULTIGET_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}"
    "</C:calendar-multiget>"
)

VALID_SYNC_TOKEN: Final = f"{DAV}valid-sync-token"
SUPPORTED_REPORT: Final = f"{DAV}supported-report"
# RFC 4791 5.3.2.1 / RFC 6638 3.2.4.1: the UID is already used by another resource.
UID_CONFLICT: Final = frozenset(
    {f"{CALDAV}no-uid-conflict", f"{CALDAV}unique-scheduling-object-resource"}
)
_CHARSET_RE: Final = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._:-]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Member:
    href: str
    status: int | None  # the response-level status, present for sync deletions and 507
    etag: str | None
    is_collection: bool


@dataclass(frozen=True, slots=True)
class Multistatus:
    members: list[Member]
    sync_token: str | None


def status_code(text: str | None) -> int | None:
    # "HTTP/1.1 404 Not Found"
    if not text:
        return None
    parts = text.split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def require_multistatus(tree: Any, what: str) -> Any:
    if tree is None or getattr(tree, "tag", None) != f"{DAV}multistatus":
        raise ProtocolError(f"{what}: expected a DAV:multistatus body")
    return tree


def found_propstats(response: Any) -> Iterator[Any]:
    """The propstats of one multistatus response whose properties were found (status 200); the
    others (404 for a property the server lacks, 403…) carry no values."""
    for propstat in response.iterfind(f"{DAV}propstat"):
        if status_code(propstat.findtext(f"{DAV}status")) == 200:
            yield propstat


def parse_multistatus(tree: Any, what: str) -> Multistatus:
    """The members of a PROPFIND or sync-collection multistatus (RFC 4918 13, RFC 6578 3.2)."""
    require_multistatus(tree, what)
    members: list[Member] = []
    for response in tree.iterfind(f"{DAV}response"):
        href_el = response.find(f"{DAV}href")
        if href_el is None or not href_el.text:
            continue
        etag: str | None = None
        is_collection = False
        for propstat in found_propstats(response):
            etag_el = propstat.find(f"{DAV}prop/{DAV}getetag")
            if etag_el is not None and etag_el.text:
                # Only XML whitespace is dropped: the quotes are part of the entity-tag.
                etag = etag_el.text.strip()
            if propstat.find(f"{DAV}prop/{DAV}resourcetype/{DAV}collection") is not None:
                is_collection = True
        members.append(
            Member(
                href=href_path(href_el.text),
                status=status_code(response.findtext(f"{DAV}status")),
                etag=etag,
                is_collection=is_collection,
            )
        )
    token = tree.findtext(f"{DAV}sync-token")
    return Multistatus(members=members, sync_token=token.strip() if token else None)


def preconditions(tree: Any) -> frozenset[str]:
    """The precondition elements of a DAV:error body (RFC 4918 16)."""
    if tree is None or getattr(tree, "tag", None) != f"{DAV}error":
        return frozenset()
    return frozenset(child.tag for child in tree if isinstance(child.tag, str))


def calendar_data(tree: Any, what: str) -> list[tuple[str, str]]:
    """(href, calendar-data) of every resource in a calendar-query or -multiget multistatus."""
    require_multistatus(tree, what)
    found: list[tuple[str, str]] = []
    for response in tree.iterfind(f"{DAV}response"):
        href = response.findtext(f"{DAV}href")
        if not href:
            continue
        for propstat in found_propstats(response):
            data = propstat.findtext(f"{DAV}prop/{CALDAV}calendar-data")
            if data and data.strip():
                found.append((href_path(href), data))
    return found


def resource_kind(tree: Any, what: str) -> str | None:
    """What a Depth 0 PROPFIND of resourcetype found: "calendar", "collection", "resource",
    or None when the server reports it absent."""
    require_multistatus(tree, what)
    for element in tree.iterfind(f"{DAV}response"):
        if status_code(element.findtext(f"{DAV}status")) in (404, 410):
            return None
        for propstat in found_propstats(element):
            resourcetype = propstat.find(f"{DAV}prop/{DAV}resourcetype")
            if resourcetype is None:
                continue
            if resourcetype.find(f"{CALDAV}calendar") is not None:
                return "calendar"
            if resourcetype.find(f"{DAV}collection") is not None:
                return "collection"
        return "resource"
    return None


def body_text(response: Any) -> str:
    """A reply's body as text, in the charset it names, CRLFs kept."""
    # The library keeps the undecoded bytes of a non-XML body in ``_raw_body``; its public
    # ``raw`` has CRLF rewritten to LF, so it is only the fallback.
    data = getattr(response, "_raw_body", None)
    if not isinstance(data, bytes) or not data:
        return str(response.raw or "")
    charset = "utf-8"
    match = _CHARSET_RE.search(response.headers.get("Content-Type") or "")
    if match:
        with contextlib.suppress(LookupError):
            charset = codecs.lookup(match.group(1)).name
    return data.decode(charset, errors="replace")

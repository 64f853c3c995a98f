"""Google event ids and syncd's resource names, and calendar addresses.

Google has no resource names, so syncd makes one: an event's id is the base32hex encoding of its
resource name, and its href is the calendar's path plus that name. The mapping is a bijection,
so a deletion that an incremental listing reports by id alone still maps back to the href the
engine knows, without any state. An insert repeated after a crash therefore hits the same id
and gets 409 instead of a duplicate. Events created by anyone else have ids that do not decode
to a name; they get ``id:<event id>`` as their name, which syncd never writes to.

Google never lets the id of a deleted event be used again (insert → 409, update → 403), so
restoring a deleted entry needs a new name: a *generation* of it (``x~3.ics``).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, unquote, urlsplit

from connectors.errors import ProtocolError

MAX_GENERATIONS = 50


def generation(name: str, n: int) -> str:
    """``x.ics`` under generation ``n``."""
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}~{n}.{ext}" if dot else f"{name}~{n}"


def split_generation(name: str) -> tuple[str, int]:
    """``x~3.ics`` → (``x.ics``, 3); a name without a generation is generation 0."""
    stem, dot, ext = name.rpartition(".")
    head, tilde, n = stem.rpartition("~")
    if dot and tilde and n.isdigit() and head:
        return f"{head}.{ext}", int(n)
    return name, 0


def event_id_for(name: str) -> str:
    if name.startswith("id:"):
        return name[3:]
    encoded = base64.b32hexencode(name.encode()).decode().rstrip("=").lower()
    if not 5 <= len(encoded) <= 1024:
        raise ProtocolError(f"resource name {name!r} is too short or too long for a Google id")
    return encoded


def name_for_event_id(event_id: str) -> str:
    try:
        padded = event_id.upper() + "=" * (-len(event_id) % 8)
        name = base64.b32hexdecode(padded).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return f"id:{event_id}"
    if "/" in name or not name or event_id_for(name) != event_id:
        return f"id:{event_id}"
    return name


def is_syncd_name(event_id: str) -> bool:
    """Whether ``event_id`` is one syncd made from a resource name."""
    return not name_for_event_id(event_id).startswith("id:")


def calendar_id_from(url_or_id: str) -> str:
    """The calendar id in a calendar URL (``…/calendars/<id>/``), or the id itself."""
    if "://" not in url_or_id and "/" not in url_or_id:
        return url_or_id
    path = urlsplit(url_or_id).path
    marker = "/calendars/"
    if marker not in path:
        raise ProtocolError(f"{url_or_id} is not a Google calendar URL")
    return unquote(path.split(marker, 1)[1].strip("/").split("/", 1)[0])


def calendar_url(api_root: str, calendar_id: str) -> str:
    return f"{api_root.rstrip('/')}/calendar/v3/calendars/{quote(calendar_id, safe='@.')}/"

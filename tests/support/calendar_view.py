"""Reading a calendar back the way a third-party client would: the caldav library's own
high-level API, independent of syncd's connector, so a connector bug cannot hide itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import icalendar
from caldav.calendarobjectresource import Event
from caldav.collection import Calendar
from caldav.davclient import DAVClient

from tests.support.caldav_servers import CalDAVServer


@dataclass(frozen=True)
class Seen:
    href: str
    etag: str | None
    event: icalendar.Event

    @property
    def uid(self) -> str:
        return str(self.event["UID"])

    @property
    def start(self) -> datetime:
        value: datetime = self.event.decoded("DTSTART")
        return value


def read_raw(server: CalDAVServer, calendar_url: str) -> list[icalendar.Calendar]:
    """Every calendar object resource as the server stores it."""
    with DAVClient(
        url=server.url, username=server.username, password=server.password, timeout=10
    ) as client:
        return [icalendar.Calendar.from_ical(obj.data) for obj in _loaded(client, calendar_url)]


def read_calendar(server: CalDAVServer, calendar_url: str) -> dict[str, Seen]:
    """Every VEVENT in the calendar, keyed by UID (a duplicate UID fails the read)."""
    with DAVClient(
        url=server.url, username=server.username, password=server.password, timeout=10
    ) as client:
        out: dict[str, Seen] = {}
        for obj in _loaded(client, calendar_url):
            parsed = icalendar.Calendar.from_ical(obj.data)
            for ev in parsed.events:
                seen = Seen(urlsplit(str(obj.url)).path, obj.props.get("{DAV:}getetag"), ev)
                assert seen.uid not in out, f"duplicate UID {seen.uid}"
                out[seen.uid] = seen
        return out


def _loaded(client: DAVClient, calendar_url: str) -> list[Event]:
    """Every event resource of the calendar, its data loaded. caldav types the answers of its
    calls as "list or coroutine" (one API for sync and async clients); a sync client's are lists."""
    found = Calendar(client=client, url=calendar_url).events()
    assert isinstance(found, list)
    for obj in found:
        if not obj.data:
            obj.load()
    return found


def raw_request(
    server: CalDAVServer,
    url: str,
    method: str,
    body: str = "",
    headers: dict[str, str] | None = None,
) -> int:
    with DAVClient(
        url=server.url, username=server.username, password=server.password, timeout=10
    ) as client:
        resp = client.request(urljoin(server.url, url), method, body, headers or {})
        return int(resp.status)

"""CalDAV: where the connector's calendar is, and which calendars the account has.

The principal's calendar home is found through the library (once per connector). syncd's
dedicated calendar is ``<calendar home>/<calendar_id>/``, created when missing, and recognised
by that address alone, however the connector reached it (``ensure_calendar`` or a stored
``calendar_url``). A configured ``calendar_url`` anywhere else is an existing calendar of the
therapist that syncd writes into.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urljoin

from connectors.base import CalendarInfo
from connectors.caldav.errors import Op, translated
from connectors.caldav.hrefs import href_path, with_slash
from connectors.caldav.settings import CalDAVSettings
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import (
    CALDAV,
    CALENDARS_BODY,
    DAV,
    RESOURCETYPE_BODY,
    found_propstats,
    require_multistatus,
    resource_kind,
)
from connectors.errors import NotFound, ProtocolError


class Calendars:
    """The connector's calendar and the account's calendar home."""

    def __init__(self, transport: Transport, settings: CalDAVSettings) -> None:
        self._transport = transport
        self._settings = settings
        self._url: str | None = None
        self.path = ""  # the calendar's decoded path, once known
        self._home: Any = None  # the library's CalendarSet for the calendar home, once found

    def ensure(self) -> str:
        """The calendar's URL, checked (or created, for the dedicated one)."""
        if self._url is not None:
            return self._url
        with translated(Op.READ, "ensure_calendar"):
            if self._settings.calendar_url:
                url = self._configured()
                kind = self.kind_of(url)
                if kind is None:
                    raise NotFound(f"calendar {url} does not exist")
                if kind != "calendar":
                    raise ProtocolError(f"{url} is not a calendar collection")
            else:
                url = self._find_or_create_dedicated()
        self._url = url
        self.path = href_path(url)
        return url

    def url(self) -> str:
        """The calendar URL for everything but ensure(). A configured ``calendar_url`` is used
        without the PROPFIND that ensure() spends on it: a connector made for one sync pass
        then costs a single request when nothing changed, and a calendar that has gone away
        still shows up as NotFound from the request that needed it."""
        if self._url is not None:
            return self._url
        if self._settings.calendar_url:
            url = self._configured()
            self.path = href_path(url)
            return url
        return self.ensure()

    def forget(self) -> None:
        """The calendar is gone; the next ensure() looks again."""
        self._url = None
        self.path = ""

    def _configured(self) -> str:
        assert self._settings.calendar_url
        return with_slash(urljoin(self._settings.url, self._settings.calendar_url))

    # -- the calendar home ----------------------------------------------------------------------

    def _calendar_home(self) -> Any:
        if self._home is None:
            principal = self._transport.with_auth_fallback(self._transport.client.principal)
            self._home = principal.calendar_home_set
        return self._home

    def home_url(self) -> str:
        return with_slash(str(self._calendar_home().url))

    def _find_or_create_dedicated(self) -> str:
        home = self._calendar_home()
        candidate = with_slash(str(home.url)) + quote(self._settings.calendar_id, safe="") + "/"
        kind = self.kind_of(candidate)
        if kind == "calendar":
            return candidate
        if kind is not None:
            raise ProtocolError(f"{candidate} exists but is not a calendar collection")
        try:
            calendar = home.make_calendar(
                name=self._settings.calendar_name,
                cal_id=self._settings.calendar_id,
                supported_calendar_component_set=["VEVENT"],
            )
        except Exception:
            # Another replica may have created it between the PROPFIND and the MKCALENDAR.
            if self.kind_of(candidate) == "calendar":
                return candidate
            raise
        return with_slash(str(calendar.url))

    def kind_of(self, url: str) -> str | None:
        """What is at ``url``: "calendar", "collection", "resource", or None when absent."""
        try:
            response = self._transport.propfind(url, RESOURCETYPE_BODY, depth="0")
        except NotFound:
            return None
        return resource_kind(response.tree, f"PROPFIND {url}")

    # -- the account's calendars ------------------------------------------------------------------

    def listing(self) -> list[CalendarInfo]:
        """The VEVENT-capable calendars in the calendar home (one PROPFIND, Depth 1); ``ref``
        is the calendar's absolute URL, ``is_syncd`` marks syncd's dedicated calendar."""
        with translated(Op.READ, "calendars"):
            home = self.home_url()
        response = self._transport.propfind(home, CALENDARS_BODY, depth="1")
        tree = require_multistatus(response.tree, f"PROPFIND {home}")
        found: list[CalendarInfo] = []
        for element in tree.iterfind(f"{DAV}response"):
            href = element.findtext(f"{DAV}href")
            if href and (info := self._calendar_info(home, href, element)) is not None:
                found.append(info)
        return found

    def _calendar_info(self, home: str, href: str, element: Any) -> CalendarInfo | None:
        name: str | None = None
        is_calendar = False
        components: set[str] | None = None  # None: the server states no restriction
        for propstat in found_propstats(element):
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            name = prop.findtext(f"{DAV}displayname") or name
            if prop.find(f"{DAV}resourcetype/{CALDAV}calendar") is not None:
                is_calendar = True
            supported = prop.find(f"{CALDAV}supported-calendar-component-set")
            if supported is not None and len(supported):
                components = {
                    str(comp.get("name", "")).upper()
                    for comp in supported.iterfind(f"{CALDAV}comp")
                }
        if not is_calendar or (components is not None and "VEVENT" not in components):
            return None
        url = with_slash(urljoin(home, href.strip()))
        path = href_path(url)
        label = name.strip() if name and name.strip() else path.rstrip("/").rsplit("/", 1)[-1]
        return CalendarInfo(ref=url, name=label, is_syncd=self.is_dedicated(path))

    def is_dedicated(self, path: str) -> bool:
        """Whether the calendar at ``path`` (decoded) is syncd's dedicated one: the calendar
        ``calendar_id`` directly in the principal's calendar home. The home is only looked up
        when the last segment matches, so most calls cost nothing."""
        parent, _, segment = path.rstrip("/").rpartition("/")
        if segment != self._settings.calendar_id:
            return False
        return with_slash(parent) == with_slash(href_path(self.home_url()))

    def role(self, url: str) -> str:
        """ "syncd" (the dedicated calendar: never busy), "write" (an existing calendar syncd
        writes into: its entries are skipped) or "other" (no syncd entries in it)."""
        path = with_slash(href_path(url))
        if self.is_dedicated(path):
            return "syncd"
        if self._settings.calendar_url and path == with_slash(href_path(self._configured())):
            return "write"
        return "other"

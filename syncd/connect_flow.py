"""What the therapist's connect page does, without the HTTP: connect or reconnect a CalDAV
account from a provider preset, choose the calendars that count as busy, show sample entries,
disconnect. Every input is checked as the CLI checks it (the same operations underneath) and
nothing is stored unless the account worked. The Google half is :mod:`syncd.connect_google`.

Seams for work in progress elsewhere: every server address passes :func:`_validate_server_url`
(the outbound-request policy) before it is contacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from connectors.base import CalendarInfo
from connectors.egress_http import httpx_client
from connectors.errors import ConnectorError, DestinationRefused
from syncd import caldav_discovery, caldav_presets, connect_links, operations
from syncd import domain as d
from syncd.app import App
from syncd.caldav_presets import Preset, Problem
from syncd.domain import PlatformState
from syncd.project import local_label, project
from syncd.store import repo
from syncd.store.mapping import therapist_from_row
from syncd.store.tables import ConnectionRow, TherapistRow

MAX_USERNAME = 200
MAX_PASSWORD = 1000
MAX_CALENDARS = 200


class ConnectProblem(Exception):
    """Connecting did not work; ``problem`` says why in plain words (detail second)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _validate_server_url(app: App, url: str) -> None:
    """The outbound-request policy (connectors.egress) for every server address a therapist
    gives or discovery finds, checked before anything is sent there."""
    try:
        app.egress.check_url(url)
    except DestinationRefused as exc:
        raise operations.UrlRefused(f"refused CalDAV URL {url}: {exc}") from None


def _refused(exc: operations.OperationError) -> ConnectProblem:
    return ConnectProblem(
        Problem(
            "This address cannot be used: it is not a public web address (it may point into a "
            "private network). Use the address your provider gives for calendar apps.",
            str(exc),
            "address",
        )
    )


def _text(value: str, what: str, limit: int, field: str) -> str:
    if not value or not value.strip():
        raise ConnectProblem(Problem(f"Please enter your {what}.", field=field))
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise ConnectProblem(Problem(f"That {what} is not valid.", field=field))
    return value


def server_url(
    app: App, preset: Preset, address: str, dns: caldav_discovery.DnsResolver
) -> tuple[str, str | None]:
    """The CalDAV URL to try for ``preset`` and what the therapist typed, and the email address
    it came from (a default user name), checked by the outbound-request policy."""
    try:
        if preset.server_url is not None:
            _validate_server_url(app, preset.server_url)
            return preset.server_url, None
        parsed = caldav_discovery.parse_address(address)
        if preset.address_suffix:  # Nextcloud: its CalDAV root below the address they know
            base = parsed.url or f"https://{parsed.domain}/"
            if preset.address_suffix not in base:
                base = base.rstrip("/") + "/" + preset.address_suffix
            _validate_server_url(app, base)
            return base, parsed.email
        found = caldav_discovery.discover(
            parsed,
            resolver=dns,
            check_url=lambda url: _validate_server_url(app, url),
            open_client=lambda timeout: httpx_client(app.egress, timeout=timeout),
            timeout=app.config.caldav.timeout,
        )
        return found, parsed.email
    except caldav_discovery.DiscoveryError as exc:
        raise ConnectProblem(Problem(str(exc), exc.detail, "address")) from None
    except operations.UrlRefused as exc:
        raise _refused(exc) from None


def connect_caldav(
    app: App,
    link: connect_links.Link,
    preset_key: str,
    *,
    address: str,
    username: str,
    password: str,
    dns: caldav_discovery.DnsResolver,
) -> int:
    """Try the account, and only if it works store it and use up the link."""
    preset = caldav_presets.PRESETS.get(preset_key)
    if preset is None:
        raise ConnectProblem(Problem("Choose one of the calendar providers listed."))
    connect_links.require_open(link, app.clock())
    if preset.server_url is None:
        _text(address, preset.address_label.lower() or "server address", 2000, "address")
    url, email = server_url(app, preset, address, dns)
    username = _text(username.strip() or (email or ""), "user name", MAX_USERNAME, "username")
    password = _text(password, "password", MAX_PASSWORD, "password")
    return _connect(app, link, preset, url, username, password, None)


def reconnect_caldav(app: App, link: connect_links.Link, connection_id: int, password: str) -> int:
    """A new password for an existing CalDAV connection: the same connection (same calendar,
    same mirror), so nothing is written twice."""
    connect_links.require_open(link, app.clock())
    row = connection_of(app, link.therapist_id, connection_id)
    if row.provider != "caldav":
        raise ConnectProblem(Problem("That calendar is not connected with a password."))
    password = _text(password, "password", MAX_PASSWORD, "password")
    calendar = None if row.calendar_owned else row.calendar_url
    return _connect(app, link, preset_of(row.url), row.url, row.username, password, calendar)


def preset_of(url: str) -> Preset:
    for preset in caldav_presets.PRESETS.values():
        if preset.server_url and url.startswith(preset.server_url):
            return preset
    return caldav_presets.OTHER


def _connect(
    app: App,
    link: connect_links.Link,
    preset: Preset,
    url: str,
    username: str,
    password: str,
    calendar_url: str | None,
) -> int:
    try:
        connection_id = operations.connect_caldav(
            app,
            link.therapist_id,
            url=url,
            username=username,
            password=password,
            calendar_url=calendar_url,
        )
    except operations.ConnectFailed as exc:
        raise ConnectProblem(caldav_presets.explain(preset, exc.error, url)) from None
    except operations.UrlRefused as exc:
        raise _refused(exc) from None
    with app.sessions.begin() as s:
        connect_links.consume(s, link.id, connection_id, app.clock())
    return connection_id


def connection_of(app: App, therapist_id: str, connection_id: int) -> ConnectionRow:
    row = None
    if 0 < connection_id < 2**31:  # an id from a URL or form: never past the column's range
        with app.sessions() as s:
            row = s.get(ConnectionRow, connection_id)
    if row is None or row.therapist_id != therapist_id:
        raise ConnectProblem(Problem("That calendar connection no longer exists."))
    return row


def connections(app: App, therapist_id: str) -> list[ConnectionRow]:
    with app.sessions() as s:
        return repo.connections(s, therapist_id)


# -- busy calendars --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BusyChoice:
    calendar: CalendarInfo
    counts: bool


def busy_choices(app: App, therapist_id: str, connection_id: int) -> list[BusyChoice]:
    """The account's calendars (syncd's own left out) and whether each counts as busy now."""
    row = connection_of(app, therapist_id, connection_id)
    connector = app.connector_for(row)
    try:
        reader = connector.busy_reader()
        if reader is None:
            return []
        listed = reader.calendars()
    except ConnectorError as exc:
        raise ConnectProblem(
            Problem("We could not read your list of calendars. Please try again.", str(exc))
        ) from None
    finally:
        connector.close()
    chosen = row.busy_calendars
    out = []
    for info in listed[:MAX_CALENDARS]:
        if info.is_syncd:
            continue
        counts = (info.ref in chosen) if chosen is not None else True
        out.append(BusyChoice(info, counts))
    return out


def choose_busy(app: App, therapist_id: str, connection_id: int, refs: list[str]) -> None:
    """Store the choice, each ref checked against the account's own list."""
    known = {c.calendar.ref for c in busy_choices(app, therapist_id, connection_id)}
    unknown = [r for r in refs if r not in known]
    if unknown or len(refs) > MAX_CALENDARS:
        raise ConnectProblem(Problem("Choose calendars from the list shown."))
    operations.select_calendars(app, therapist_id, connection_id, list(dict.fromkeys(refs)))


def disconnect(app: App, therapist_id: str, connection_id: int) -> int:
    """Remove syncd's entries (or its dedicated calendar) and forget the credentials."""
    connection_of(app, therapist_id, connection_id)
    try:
        return operations.disconnect(
            app, therapist_id, connection_id, reason="disconnected by the therapist"
        )
    except operations.OperationError as exc:
        raise ConnectProblem(
            Problem(
                "We could not remove the entries from your calendar just now, so nothing was "
                "disconnected. Please try again in a few minutes.",
                str(exc),
            )
        ) from None


# -- what will appear ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    what: str  # what kind of booking it stands for
    title: str
    when: str
    status: str  # Confirmed | Tentative
    location: str | None
    description: str
    url: str | None


def samples(app: App, therapist_id: str) -> list[Sample]:
    """Made-up bookings of a made-up client rendered exactly as the therapist's own will be
    (their zone, their privacy choices, the booking link), through the real projection."""
    now = app.clock()
    with app.sessions() as s:
        row = s.scalars(select(TherapistRow).where(TherapistRow.id == therapist_id)).first()
        if row is None:
            raise ConnectProblem(Problem("This link names no therapist."))
        t = therapist_from_row(row)
    zone = ZoneInfo(t.timezone)
    today = now.astimezone(zone).date()
    # Next week's Tuesday to Friday: ordinary working days, whatever today is.
    tuesday = today + timedelta(days=7 - today.weekday() + 1)

    def at(days: int, hour: int) -> datetime:
        return datetime.combine(tuesday + timedelta(days=days), time(hour), zone)

    client = d.Client("sample-client", "Alex Morgan")
    video = d.Location(d.LocationType.VIDEO)
    length = timedelta(minutes=t.slot_minutes or 50)

    def session(sid: str, start: datetime, status: d.SessionStatus) -> d.Session:
        return d.Session(
            sid, 1, t.id, client, d.SessionKind.FOLLOW_UP, start, start + length, video, status
        )

    confirmed = session("example-1", at(0, 10), d.SessionStatus.CONFIRMED)
    unconfirmed = session("example-2", at(1, 14), d.SessionStatus.UNCONFIRMED)
    moved = session("example-3", at(2, 9), d.SessionStatus.CONFIRMED)
    offer = d.Offer(
        "example-offer",
        1,
        moved.id,
        (d.Alternative(at(3, 11), at(3, 11) + length),),
        now,
        now + timedelta(hours=app.config.offers.hold_hours),
        d.OfferState.PENDING,
    )
    state = PlatformState(t, sessions=(confirmed, unconfirmed, moved), offers=(offer,))
    entries = project(state, now, session_url=app.config.platform.session_url or None)
    labels = {
        "session": "A confirmed session",
        "blocked": "A session while alternative times are offered",
        "hold": "An alternative time you offered, held for the client",
    }
    out = []
    for e in sorted(entries.values(), key=lambda e: e.start):
        what = labels[e.kind]
        if e.kind == "session" and e.status == "TENTATIVE":
            what = "A booking waiting for your confirmation"
        end = e.end.astimezone(zone)
        out.append(
            Sample(
                what=what,
                title=e.summary,
                when=f"{local_label(e.start, t.timezone)}–{end:%H:%M}",  # noqa: RUF001
                status="Tentative" if e.status == "TENTATIVE" else "Confirmed",
                location=e.location,
                description=e.description,
                url=e.url,
            )
        )
    return out

"""The Google half of the connect page: consent for the chosen mode, then (existing-calendar
mode) the calendar to write into, then the connection; reconnecting a connection whose grant was
revoked restores that same connection.

Seam for work in progress elsewhere: :func:`_consent_url` is the one place a connection mode
becomes Google's consent URL (and with it the scopes asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from connectors.base import CalendarInfo
from connectors.errors import ConnectorError
from connectors.google import GoogleConnector
from connectors.google.scopes import ConnectionMode, scopes_for
from syncd import connect_links, google_auth, pending_grants
from syncd.app import App
from syncd.caldav_presets import Problem
from syncd.connect_flow import ConnectProblem, connection_of
from syncd.errors import OperationError
from syncd.store.tables import ConnectLinkRow

MODES = ("dedicated", "existing")
RECONNECT = "reconnect"


def _consent_url(app: App, therapist_id: str, mode: str, calendar_id: str | None) -> str:
    """Google's consent URL for a connection mode: ``dedicated`` (syncd's own calendar),
    ``existing`` (a calendar of theirs, chosen after consent), or ``reconnect`` (the calendar
    of the connection being restored, ``calendar_id`` None for a dedicated one)."""
    if mode == "existing":
        # The calendar is picked after consent, but the scopes are those of writing into one.
        scope = list(scopes_for(ConnectionMode.EXISTING))
        return google_auth.authorization_url(app, therapist_id, scope=scope)
    return google_auth.authorization_url(app, therapist_id, calendar_id=calendar_id)


def start(app: App, link: connect_links.Link, mode: str, connection_id: int | None = None) -> str:
    """Begin a consent from ``link``: the URL to send the browser to."""
    connect_links.require_open(link, app.clock())
    calendar_id: str | None = None
    if mode == RECONNECT:
        if connection_id is None:
            raise ConnectProblem(Problem("Choose the calendar to reconnect."))
        row = connection_of(app, link.therapist_id, connection_id)
        if row.provider != "google":
            raise ConnectProblem(Problem("That calendar is not a Google calendar."))
        calendar_id = None if row.calendar_owned else row.calendar_url
    elif mode not in MODES:
        raise ConnectProblem(Problem("Choose where your sessions should go."))
    try:
        url = _consent_url(app, link.therapist_id, mode, calendar_id)
    except OperationError as exc:
        raise ConnectProblem(
            Problem("Google calendars cannot be connected here at the moment.", str(exc))
        ) from None
    state = parse_qs(urlsplit(url).query)["state"][0]
    with app.sessions.begin() as s:
        row_link = s.get(ConnectLinkRow, link.id)
        assert row_link is not None
        row_link.google_state, row_link.google_mode = state, mode
        replaced, row_link.pending_secret = row_link.pending_secret, None
    if replaced is not None:  # a consent given before on this link, its calendar never chosen
        pending_grants.discard(app, link.therapist_id, replaced)
    return url


@dataclass(frozen=True, slots=True)
class Finished:
    """Where a consent begun from a link ended: a connection, or (existing-calendar mode) a
    grant waiting for the calendar choice, or a problem to show."""

    link: connect_links.Link
    connection_id: int | None = None
    choose_calendar: bool = False
    problem: Problem | None = None


def finish(app: App, state: str, code: str, error: str | None) -> Finished | None:
    """Complete a consent if ``state`` was begun from a connect link (else None)."""
    if not state:
        return None
    with app.sessions() as s:
        row = s.scalars(select(ConnectLinkRow).where(ConnectLinkRow.google_state == state)).first()
        if row is None:
            return None
        link_id, mode = row.id, row.google_mode or "dedicated"
    link = connect_links.check_link(app, connect_links.app_signer(app).token(link_id))
    try:
        connect_links.require_open(link, app.clock())
    except connect_links.LinkError as exc:
        return Finished(link, problem=Problem(str(exc)))
    if error is not None or not code:
        words = (
            "You did not give access to your Google calendar, so nothing was connected."
            if error == "access_denied"
            else "Google did not complete the connection, so nothing was connected."
        )
        return Finished(link, problem=Problem(words + " You can try again.", error or ""))
    try:
        grant = google_auth.exchange_code(app, state, code)
        if mode == "existing":
            with app.sessions.begin() as s:
                pending = s.get(ConnectLinkRow, link.id)
                assert pending is not None
                pending.pending_secret = app.box.seal(grant.refresh_token)
            return Finished(link, choose_calendar=True)
        connection_id = google_auth.store_connection(app, grant, grant.calendar_id)
    except OperationError as exc:
        return Finished(
            link,
            problem=Problem("Google did not complete the connection. Please try again.", str(exc)),
        )
    with app.sessions.begin() as s:
        connect_links.consume(s, link.id, connection_id, app.clock())
    return Finished(link, connection_id=connection_id)


def _pending(app: App, link: connect_links.Link) -> google_auth.Grant:
    connect_links.require_open(link, app.clock())
    with app.sessions() as s:
        row = s.get(ConnectLinkRow, link.id)
        sealed = row.pending_secret if row is not None else None
        state = row.google_state if row is not None else None
    if sealed is None or state is None:
        raise ConnectProblem(Problem("Please start again by choosing Google."))
    return google_auth.Grant(state, link.therapist_id, None, app.box.open(sealed))


def _account_calendars(
    app: App, link: connect_links.Link
) -> tuple[list[CalendarInfo], list[CalendarInfo]]:
    """(every calendar of the account just granted, the ones syncd may write into), syncd's own
    dedicated calendar left out of both."""
    grant = _pending(app, link)
    connector = GoogleConnector(app.google_settings(grant.refresh_token, None))
    try:
        seen = [c for c in connector.calendars() if not c.is_syncd]
        return seen, [c for c in connector.writable_calendars() if not c.is_syncd]
    except ConnectorError as exc:
        raise ConnectProblem(
            Problem("We could not read your list of Google calendars. Please try again.", str(exc))
        ) from None
    finally:
        connector.close()


def writable_calendars(app: App, link: connect_links.Link) -> list[CalendarInfo]:
    """The calendars to choose the one to write into: those the account owns (Google's
    accessRole ``owner``). Calendars shared with the therapist, to read (a colleague's, public
    holidays) or even to edit, are never offered: the existing-calendar consent
    (calendar.events.owned) lets syncd write only into calendars the therapist owns."""
    return _account_calendars(app, link)[1]


def choose_calendar(app: App, link: connect_links.Link, calendar_id: str) -> int:
    """Store the connection writing into ``calendar_id`` (one of :func:`writable_calendars`);
    any other is refused with nothing stored, the grant kept for another choice."""
    seen, writable = _account_calendars(app, link)
    if calendar_id not in {c.ref for c in writable}:
        if calendar_id in {c.ref for c in seen}:
            raise ConnectProblem(
                Problem(
                    "That calendar is not yours (it is shared with you), so syncd cannot put "
                    "your sessions there. Choose one of your own calendars."
                )
            )
        raise ConnectProblem(Problem("Choose one of your calendars from the list."))
    grant = _pending(app, link)
    try:
        connection_id = google_auth.store_connection(app, grant, calendar_id)
    except OperationError as exc:
        raise ConnectProblem(
            Problem("We could not use that calendar. Please choose another.", str(exc))
        ) from None
    with app.sessions.begin() as s:
        connect_links.consume(s, link.id, connection_id, app.clock())
    return connection_id

"""The OAuth scopes syncd asks a therapist to grant, per connection mode.

Each mode asks for exactly the scopes that permit every Calendar API method that mode calls, by
the scopes the discovery document lists for each method, and no more
(``tests/test_google_scopes.py`` checks both against the document packaged with
google-api-python-client). Resource limits the discovery document cannot express are in the
scope descriptions: ``calendar.app.created`` reaches only calendars syncd created itself, and
``calendar.events.owned`` the events of calendars the therapist owns.
"""

from __future__ import annotations

import enum

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
APP_CREATED = SCOPE_PREFIX + "calendar.app.created"
EVENTS_OWNED = SCOPE_PREFIX + "calendar.events.owned"
FREEBUSY = SCOPE_PREFIX + "calendar.freebusy"
CALENDARLIST_READONLY = SCOPE_PREFIX + "calendar.calendarlist.readonly"


class ConnectionMode(enum.StrEnum):
    DEDICATED = "dedicated"  # syncd creates its own secondary calendar and writes only there
    EXISTING = "existing"  # syncd writes into a calendar the therapist already owns


# Every Calendar API method the connector calls in each mode (discovery ids without "calendar.").
CALLS: dict[ConnectionMode, frozenset[str]] = {
    ConnectionMode.DEDICATED: frozenset(
        {
            "calendarList.list",  # find the dedicated calendar again; list busy calendars
            "calendars.insert",  # create the dedicated calendar
            "calendarList.get",  # verify the calendar still exists
            "calendars.delete",  # disconnect: remove the dedicated calendar whole
            "events.list",
            "events.get",
            "events.insert",
            "events.update",
            "events.delete",
            "events.instances",  # reserved slots: exceptions the therapist made
            "events.watch",
            "channels.stop",
            "freebusy.query",  # the therapist's other calendars: busy time only
        }
    ),
    ConnectionMode.EXISTING: frozenset(
        {
            "calendarList.list",
            "calendarList.get",  # verify the chosen calendar (calendars.get would need more)
            "events.list",  # also busy time of the written calendar
            "events.get",
            "events.insert",
            "events.update",
            "events.delete",
            "events.instances",
            "events.watch",
            "channels.stop",
            "freebusy.query",
        }
    ),
}

# Why each scope is there (docs/google.md shows the same table to operators).
SCOPES: dict[ConnectionMode, dict[str, str]] = {
    ConnectionMode.DEDICATED: {
        APP_CREATED: "create syncd's own calendar and manage the events in it, nothing else",
        FREEBUSY: "read when the therapist is busy in their other calendars (times only)",
        CALENDARLIST_READONLY: "find syncd's calendar again and let the therapist pick busy "
        "calendars",
    },
    ConnectionMode.EXISTING: {
        EVENTS_OWNED: "write and read back syncd's events in the calendar the therapist chose",
        FREEBUSY: "read when the therapist is busy in their other calendars (times only)",
        CALENDARLIST_READONLY: "check the chosen calendar and let the therapist pick busy "
        "calendars",
    },
}


def mode_for(calendar_id: str | None) -> ConnectionMode:
    """A connection given an existing calendar id writes there; otherwise into its own."""
    return ConnectionMode.EXISTING if calendar_id else ConnectionMode.DEDICATED


def scopes_for(mode: ConnectionMode | str) -> tuple[str, ...]:
    """The scopes to request for ``mode``, in a stable order."""
    return tuple(sorted(SCOPES[ConnectionMode(mode)]))

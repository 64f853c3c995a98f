"""The scopes syncd requests per connection mode, checked against the Calendar v3 discovery
document packaged with google-api-python-client (each method lists the scopes that permit it)."""

from __future__ import annotations

import pytest

from connectors.google_scopes import CALLS, SCOPES, ConnectionMode, mode_for, scopes_for
from tests.google_standin import method_scopes


@pytest.mark.parametrize("mode", list(ConnectionMode))
def test_every_call_of_a_mode_is_permitted_by_its_scopes(mode: ConnectionMode) -> None:
    granted = set(scopes_for(mode))
    for call in sorted(CALLS[mode]):
        assert method_scopes(call) & granted, f"{mode}: nothing granted permits {call}"


@pytest.mark.parametrize("mode", list(ConnectionMode))
def test_no_scope_of_a_mode_is_unneeded(mode: ConnectionMode) -> None:
    granted = set(scopes_for(mode))
    for scope in sorted(granted):
        rest = granted - {scope}
        assert any(not method_scopes(call) & rest for call in CALLS[mode]), (
            f"{mode}: {scope} permits nothing the others do not"
        )


def test_the_modes_ask_for_no_broad_scope() -> None:
    broad = {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.events",
    }
    assert not broad & {s for mode in ConnectionMode for s in scopes_for(mode)}
    # Only the existing-calendar mode may touch events of calendars syncd did not create.
    assert "https://www.googleapis.com/auth/calendar.events.owned" not in scopes_for("dedicated")
    assert set(SCOPES) == set(ConnectionMode)


def test_the_mode_follows_the_calendar_choice() -> None:
    assert mode_for(None) is ConnectionMode.DEDICATED
    assert mode_for("primary") is ConnectionMode.EXISTING

"""The scopes syncd requests per connection mode, checked against the Calendar v3 discovery
document packaged with google-api-python-client (each method lists the scopes that permit it)."""

from __future__ import annotations

import pytest

from connectors.google.scopes import CALLS, SCOPES, ConnectionMode, mode_for, scopes_for
from tests.support.google_standin import method_scopes


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


def test_pacing_counts_every_batch_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each part of a batch counts toward Google's per-user limit ("Send batch requests"): after
    a batch of n parts the next request waits n intervals, not one."""
    import time

    from connectors.google import GoogleConnector, GoogleSettings

    clock = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    # The pacer reads the time module's functions when it runs, so patching the module is enough.
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "sleep", sleep)
    connector = GoogleConnector(
        GoogleSettings(refresh_token="r", client_id="c", client_secret="s", min_interval=0.1)
    )
    connector._api.pacer.wait(50)  # a batch of 50 parts
    connector._api.pacer.wait(1)
    connector._api.pacer.wait(1)
    assert slept == [5.0, 0.1]

"""The short soak (tests/soak.py): a seeded mixed workload through ``syncd ingest`` while the
real ``syncd run`` is SIGKILLed and restarted, with faults injected by proxies in front of
Radicale, Xandikos, the Google stand-in and the webhook receiver; afterwards every calendar
equals the projection of the final platform state and every notification was delivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import soak
from tests.caldav_servers import CalDAVServer
from tests.google_standin import GoogleStandIn


@pytest.mark.slow
def test_short_soak_converges_after_kills_and_faults(
    tmp_path: Path,
    radicale_server: CalDAVServer,
    xandikos_server: CalDAVServer,
    google_standin: GoogleStandIn,
) -> None:
    report = soak.run(
        tmp_path,
        [radicale_server, xandikos_server],
        google=google_standin,
        events=150,
        therapists=12,
        kills=5,
        seconds=75,
        seed=11,
    )
    print(report.summary())
    assert report.mismatches == []
    # how far the workload gets inside the time bound depends on the machine's load
    assert report.kills >= 1 and report.events >= 20
    assert report.targets == {"radicale": 4, "xandikos": 4, "google": 4}
    assert sum(report.faults.values()) > 0 and sum(report.passes.values()) > 0
    assert sum(report.notifications.values()) > 0

"""The short soak (tests/soak.py): a seeded mixed workload through ``syncd ingest`` while the
real ``syncd run`` is SIGKILLed and restarted, with 503s injected by a proxy, across Radicale and
Xandikos; afterwards every calendar equals the projection of the final platform state."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import soak
from tests.caldav_servers import CalDAVServer


@pytest.mark.slow
def test_short_soak_converges_after_kills_and_faults(
    tmp_path: Path, radicale_server: CalDAVServer, xandikos_server: CalDAVServer
) -> None:
    report = soak.run(
        tmp_path,
        [radicale_server, xandikos_server],
        events=150,
        therapists=10,
        kills=5,
        seconds=75,
        seed=11,
    )
    print(report.summary())
    assert report.mismatches == []
    # how far the workload gets inside the time bound depends on the machine's load
    assert report.kills >= 1 and report.events >= 20

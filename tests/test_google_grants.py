"""Google grants that end without a connection: a calendar refused on the callback stops
``syncd connect google --wait`` at once, and a grant left waiting for its calendar choice is
revoked at Google when dropped. Against the Google stand-in and its token bookkeeping."""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from queue import Empty
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from syncd import connect_links, erasure, pending_grants
from syncd.app import App
from syncd.store.tables import ConnectionRow, ConnectLinkRow, OAuthRequestRow
from tests import test_connect_page as page
from tests.conftest import write_config
from tests.support.caldav_servers import unused_port
from tests.support.google_standin import GoogleStandIn
from tests.support.proc import line_queue, syncd_cmd
from tests.test_connect_page import ANN, CLIENT_ID, CLIENT_SECRET, PRACTICE, through_google

google_world = page.google_world  # the connect page's Google world: its fixture

World = tuple[App, GoogleStandIn, TestClient]


def refreshes(g: GoogleStandIn, token: str) -> bool:
    """Whether Google still honours ``token`` (its token endpoint, as any client would ask)."""
    answer = httpx.post(
        g.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=5,
    )
    assert answer.status_code in (200, 400), answer.text
    return answer.status_code == 200


def abandon_consent(app: App, client: TestClient) -> tuple[connect_links.Link, str]:
    """Consent in existing-calendar mode from a new link and never choose the calendar: the
    link, and the refresh token syncd holds sealed meanwhile."""
    link = connect_links.create(app, "t-1")
    assert through_google(client, urlsplit(link.url).path, {"mode": "existing"}).status_code == 303
    return link, held_token(app, link)


def held_token(app: App, link: connect_links.Link) -> str:
    with app.sessions() as s:
        row = s.get_one(ConnectLinkRow, link.id)
        assert row.pending_secret is not None
        return app.box.open(row.pending_secret)


def expire(app: App, link: connect_links.Link) -> None:
    with app.sessions.begin() as s:
        s.get_one(ConnectLinkRow, link.id).expires_at = app.clock() - timedelta(seconds=1)


def test_connect_google_wait_stops_at_once_when_the_calendar_is_refused(
    google_world: World, tmp_path: Path
) -> None:
    app, g, client = google_world
    g.add_account(PRACTICE)
    calendar = g.add_calendar(PRACTICE, "Team rota")
    g.share_calendar(calendar, ANN, "writer")  # shared with Ann, not hers: refused
    g.consenting_account = ANN
    cfg = write_config(tmp_path / "syncd.toml", app.config)
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"} | {"PYTHONUNBUFFERED": "1"}
    args = ("connect", "google", "t-1", "--calendar", calendar, "--wait", "600")
    proc = subprocess.Popen(
        syncd_cmd(cfg, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        lines = line_queue(proc.stdout)
        url = ""
        while not url.startswith("http"):
            try:
                url = lines.get(timeout=60).strip()
            except Empty:
                pytest.fail("the CLI printed no authorization link within 60 s")
        consent = httpx.get(url, follow_redirects=False, timeout=10)
        back = urlsplit(consent.headers["location"])
        page = client.get(f"{back.path}?{back.query}")
        assert page.status_code == 400 and "is not owned by this account" in page.text
        # Well before its 600 s: the refusal is where the CLI looks.
        stderr = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: not connected: ") and "(accessRole writer)" in line
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 0
        [request] = s.scalars(select(OAuthRequestRow)).all()
        assert request.connection_id is None and request.error is not None
    assert g.calls["revoke"] == 1  # the grant that made nothing is not left live at Google


def test_an_abandoned_grant_is_revoked_at_google_when_its_link_expires(
    google_world: World,
) -> None:
    app, g, client = google_world
    g.consenting_account = ANN
    link, token = abandon_consent(app, client)
    assert refreshes(g, token)
    assert pending_grants.discard_expired(app) == 0  # its link is still open: kept
    assert held_token(app, link) == token
    expire(app, link)
    assert pending_grants.discard_expired(app) == 1
    assert not refreshes(g, token)
    with app.sessions() as s:
        assert s.get_one(ConnectLinkRow, link.id).pending_secret is None
    assert pending_grants.discard_expired(app) == 0


def test_consenting_again_on_the_same_link_revokes_the_grant_it_replaces(
    google_world: World,
) -> None:
    app, g, client = google_world
    g.consenting_account = ANN
    link, first = abandon_consent(app, client)
    assert through_google(client, urlsplit(link.url).path, {"mode": "existing"}).status_code == 303
    second = held_token(app, link)
    assert second != first and not refreshes(g, first) and refreshes(g, second)


def test_a_grant_is_not_revoked_while_the_therapist_has_a_google_connection(
    google_world: World,
) -> None:
    """Google may end the account's whole grant to syncd on a revocation: the working
    connection is not risked for an abandoned consent (dropped unrevoked instead)."""
    app, g, client = google_world
    g.consenting_account = ANN
    first = connect_links.create(app, "t-1")
    assert through_google(client, urlsplit(first.url).path, {"mode": "dedicated"}).status_code
    with app.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ConnectionRow)) == 1
    link, token = abandon_consent(app, client)
    expire(app, link)
    g.reset_counts()
    assert pending_grants.discard_expired(app) == 1
    assert g.calls["revoke"] == 0 and refreshes(g, token)
    with app.sessions() as s:
        assert s.get_one(ConnectLinkRow, link.id).pending_secret is None


def test_a_failed_revocation_does_not_stop_the_sweep(
    google_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    app, g, client = google_world
    g.consenting_account = ANN
    abandoned = [abandon_consent(app, client) for _ in range(2)]
    for link, _token in abandoned:
        expire(app, link)
    # The same deployment with Google's revoke endpoint not answering.
    dead = f"http://127.0.0.1:{unused_port()}/revoke"
    config = app.config.model_copy(
        update={"google": app.config.google.model_copy(update={"revoke_url": dead})}
    )
    down = App.open(config)
    try:
        with caplog.at_level(logging.WARNING, logger="syncd"):
            assert pending_grants.discard_expired(down) == 2
    finally:
        down.close()
    with app.sessions() as s:
        for link, _token in abandoned:
            assert s.get_one(ConnectLinkRow, link.id).pending_secret is None
    warnings = [r.getMessage() for r in caplog.records if "could not revoke" in r.getMessage()]
    assert len(warnings) == 2
    assert not any(token in caplog.text for _link, token in abandoned)
    # Still live at Google (nothing reached it), but no longer held by syncd.
    assert all(refreshes(g, token) for _link, token in abandoned)


def test_erasing_the_therapist_revokes_a_grant_left_waiting(google_world: World) -> None:
    app, g, client = google_world
    g.consenting_account = ANN
    link, token = abandon_consent(app, client)
    erasure.forget_therapist(app, "t-1")
    assert not refreshes(g, token)
    with app.sessions() as s:
        assert s.get(ConnectLinkRow, link.id) is None

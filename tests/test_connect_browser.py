"""The therapist's connect page in a real headless Chromium (Debian's, driven by Playwright) at
phone size (390 x 844), against a real ``syncd run``, a real Radicale, the Google stand-in and a
webhook receiver playing the platform: success, a wrong password, an unreachable server, an
expired link, a used link, a revoked consent, and reconnecting from the link that the
``calendar.disconnected`` notification carried. Every screen is saved under tests/artifacts/
and checked for sideways scrolling."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from syncd import auth
from syncd.app import App
from syncd.config import Config
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.store.tables import ConnectionRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, unused_port
from tests.support.calendar_view import read_calendar
from tests.support.google_standin import GoogleStandIn
from tests.support.proc import start_syncd, wait_for
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _chromium_or_skip, _free_port
from tests.test_outbox import SECRET, Receiver

ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = {"width": 390, "height": 844}
PASSWORD, NEW_PASSWORD = "first pw", "changed pw"
CLIENT_ID, CLIENT_SECRET = "syncd-client", "syncd-client-secret"
ANN = "ann@example.com"
TID = "t-anna-17"


@dataclass
class World:
    base: str
    admin: str
    cfg: Config
    radicale: EmbeddedRadicale
    google: GoogleStandIn
    receiver: Receiver
    log: Path

    def api(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin}"}
        return httpx.request(method, self.base + path, json=body, headers=headers, timeout=60)

    def link(self, days: float | None = None) -> str:
        body: dict[str, Any] = {"therapist_id": TID}
        if days is not None:
            body["days"] = days
        made = self.api("POST", "/v1/admin/connect-links", body)
        assert made.status_code == 201, made.text
        url: str = made.json()["url"]
        assert url.startswith(self.base + "/connect/")
        return url

    def resync(self) -> None:
        assert self.api("POST", "/v1/admin/resync", {"therapists": [TID]}).status_code == 200

    def connections(self) -> list[ConnectionRow]:
        app = App.open(self.cfg, migrate=False)
        try:
            with app.sessions() as s:
                return list(s.scalars(select(ConnectionRow).order_by(ConnectionRow.id)).all())
        finally:
            app.close()

    def secret_of(self, row: ConnectionRow) -> str:
        app = App.open(self.cfg, migrate=False)
        try:
            return app.box.open(row.secret)
        finally:
            app.close()

    def disconnections(self) -> list[dict[str, Any]]:
        return [
            h.message["data"]
            for h in list(self.receiver.hits)
            if h.message["type"] == "calendar.disconnected" and h.signature_ok
        ]


@pytest.fixture
def world(
    tmp_path: Path, google_standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    _chromium_or_skip()
    g = google_standin
    g.add_account(ANN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    g.consenting_account = ANN
    monkeypatch.setenv("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("SYNCD_WEBHOOK_SECRET", raising=False)
    receiver = Receiver(SECRET)
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with EmbeddedRadicale(tmp_path / "radicale", username="therapist", password=PASSWORD) as rad:
        cfg = make_config(
            tmp_path / "state",
            sync={"interval": 3600, "retry_base": 0.01, "retry_cap": 0.05},
            http={"port": port, "public_url": base},
            platform={
                "webhook_url": receiver.url,
                "webhook_secret_file": str(secret_file),
                "retry_base": 0.1,
                "retry_cap": 1,
                "poll_interval": 0.2,
                "session_url": "https://platform.example/sessions/{session_id}",
            },
            google={
                "client_id": CLIENT_ID,
                "api_url": g.root_url,
                "token_url": g.token_url,
                "auth_url": g.auth_url,
                "revoke_url": g.revoke_url,
                "timeout": 5,
                "min_request_interval": 0,
                "watch": False,
            },
        )
        app = App.open(cfg)
        try:
            ing = app.ingestor()
            assert ing.ingest(f.therapist(TID, privacy={"client_label": "initials"})).ok
            for i in range(2):
                assert ing.ingest(f.session(f"s-{i}", f.future(days=3 + i), therapist_id=TID)).ok
            with app.sessions.begin() as s:
                admin = auth.create(s, "platform", auth.Scope.ADMIN, app.clock())
        finally:
            app.close()
        config = write_config(tmp_path / "syncd.toml", cfg)
        log = tmp_path / "syncd.log"
        proc = start_syncd(config, "run", log=log)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"syncd exited: {log.read_text()}")
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(up, 30, "the daemon's HTTP service")
            yield World(base, admin, cfg, rad, g, receiver, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            receiver.close()


def snap(page: Any, name: str) -> None:
    """A full-page screenshot, and no sideways scrolling at phone width."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"connect-{name}.png"), full_page=True)
    wide, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert wide <= inner, f"{name}: the page scrolls sideways at {inner} px ({wide} px wide)"


@contextlib.contextmanager
def browser_session() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def phone(browser: Any) -> Any:
    return browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()


def fill_caldav(page: Any, address: str, password: str) -> None:
    page.get_by_label("Email address, domain or server address").fill(address)
    page.get_by_label("User name").fill("therapist")
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Connect").click()


def test_caldav_from_a_link_then_a_changed_password_and_reconnecting(world: World) -> None:
    from playwright.sync_api import expect

    with browser_session() as browser:
        page = phone(browser)
        url = world.link()
        page.goto(url)
        expect(page.get_by_role("heading", name="Connect your calendar")).to_be_visible()
        snap(page, "start")
        page.get_by_role("link", name="Other CalDAV calendar").click()
        snap(page, "caldav-form")

        fill_caldav(page, world.radicale.url, "not my password")
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("did not accept this user name and password")
        expect(page.get_by_label("Password", exact=True)).to_have_attribute("aria-invalid", "true")
        snap(page, "wrong-password")

        fill_caldav(page, f"http://127.0.0.1:{unused_port()}/", PASSWORD)
        expect(page.get_by_role("alert")).to_contain_text("We could not reach 127.0.0.1")
        snap(page, "unreachable")
        assert world.connections() == []  # nothing stored on failure

        fill_caldav(page, world.radicale.url, PASSWORD)
        expect(page.get_by_role("status")).to_contain_text("Connected")
        snap(page, "busy")
        page.get_by_role("button", name="Save and continue").click()
        expect(page.get_by_role("heading", name="You are all set")).to_be_visible()
        samples = page.locator("li.sample")
        expect(samples.first).to_contain_text("Therapy session · A.M.")
        expect(page.locator("ul.samples")).to_contain_text(
            "(unconfirmed — please confirm on the platform)"
        )
        snap(page, "done")
        [conn] = world.connections()
        calendar = conn.calendar_url
        assert calendar

        # The same link in another browser: used.
        stranger = phone(browser)
        stranger.goto(url)
        expect(stranger.get_by_role("heading", level=1)).to_have_text("This link was already used")
        snap(stranger, "used")

        # A link past its expiry.
        short = world.link(days=0.00002)  # under two seconds
        expires = datetime.now(UTC).timestamp() + 0.00002 * 86400
        wait_for(lambda: datetime.now(UTC).timestamp() > expires + 0.5, 30, "the link to expire")
        stranger.goto(short)
        expect(stranger.get_by_role("heading", level=1)).to_have_text("This link has expired")
        snap(stranger, "expired")

        # The daemon mirrors the sessions; then the therapist changes their password.
        server = CalDAVServer("radicale", world.radicale.url, "therapist", PASSWORD)
        wait_for(lambda: len(read_calendar(server, calendar)) == 2, 60, "the first mirror")
        (world.radicale.folder / "htpasswd").write_text(f"therapist:{NEW_PASSWORD}\n")
        world.resync()
        wait_for(world.disconnections, 60, "calendar.disconnected at the platform")
        world.resync()  # more passes: still one notification, no requests meanwhile
        [note] = world.disconnections()
        assert note["connection_id"] == conn.id and note["provider"] == "caldav"
        assert note["reconnect_url"].startswith(world.base + "/connect/")

        therapist = phone(browser)
        therapist.goto(note["reconnect_url"])
        expect(
            therapist.get_by_role("heading", name="A calendar needs reconnecting")
        ).to_be_visible()
        snap(therapist, "reconnect-start")
        therapist.get_by_role("link", name="Reconnect").click()
        therapist.get_by_label("Password", exact=True).fill(PASSWORD)  # the old one
        therapist.get_by_role("button", name="Reconnect").click()
        expect(therapist.get_by_role("alert")).to_contain_text("did not accept")
        snap(therapist, "reconnect-wrong")
        therapist.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        therapist.get_by_role("button", name="Reconnect").click()
        expect(therapist.get_by_role("status")).to_contain_text("Connected")
        therapist.get_by_role("button", name="Save and continue").click()
        expect(therapist.get_by_role("heading", name="You are all set")).to_be_visible()
        snap(therapist, "reconnected")

        [after] = world.connections()
        assert (after.id, after.calendar_url) == (conn.id, calendar)
        world.resync()
        wait_for(lambda: world.connections()[0].state == "ok", 60, "a good pass")
        server = CalDAVServer("radicale", world.radicale.url, "therapist", NEW_PASSWORD)
        assert len(read_calendar(server, calendar)) == 2  # the same entries, none twice
        assert len(world.disconnections()) == 1


def test_google_from_a_link_a_refusal_and_reconnecting_after_revocation(world: World) -> None:
    from playwright.sync_api import expect

    with browser_session() as browser:
        page = phone(browser)
        world.google.consenting_account = None  # first, the therapist declines
        page.goto(world.link())
        page.get_by_role("link", name="Google Calendar").click()
        expect(page.get_by_role("radio", name="A separate calendar")).to_be_checked()
        snap(page, "google-mode")
        page.get_by_role("button", name="Continue to Google").click()
        expect(page.get_by_role("alert")).to_contain_text("You did not give access")
        snap(page, "google-declined")

        world.google.consenting_account = ANN
        page.get_by_role("link", name="Try again").click()
        page.get_by_role("link", name="Google Calendar").click()
        page.get_by_role("button", name="Continue to Google").click()
        expect(page.get_by_role("status")).to_contain_text("Connected")
        expect(page.get_by_role("checkbox", name=ANN)).to_be_checked()
        snap(page, "google-busy")
        page.get_by_role("button", name="Save and continue").click()
        expect(page.get_by_role("heading", name="You are all set")).to_be_visible()
        expect(page.locator("section").filter(has_text="Changed your mind?")).to_contain_text(
            "the whole “Therapy sessions” calendar"
        )
        snap(page, "google-done")
        [conn] = world.connections()
        assert conn.provider == "google" and conn.calendar_owned
        calendar_id = urlsplit(conn.calendar_url or "").path.split("/calendars/")[1].strip("/")
        assert calendar_id in world.google.calendars(ANN)

        # Consent revoked in the Google account: one notification, and its link restores it.
        world.google.revoke(world.secret_of(conn))
        world.resync()
        wait_for(world.disconnections, 60, "calendar.disconnected at the platform")
        [note] = world.disconnections()
        assert note["provider"] == "google" and note["connection_id"] == conn.id
        again = phone(browser)
        again.goto(note["reconnect_url"])
        again.get_by_role("link", name="Reconnect Google Calendar").click()
        snap(again, "google-reconnect")
        again.get_by_role("button", name="Continue to Google").click()
        expect(again.get_by_role("status")).to_contain_text("Connected")
        [after] = world.connections()
        assert (after.id, after.calendar_url) == (conn.id, conn.calendar_url)
        world.resync()
        wait_for(lambda: world.connections()[0].state == "ok", 60, "a good pass")
        assert calendar_id in world.google.calendars(ANN)
        ours = [
            e
            for e in world.google.events(calendar_id)
            if (e.get("extendedProperties") or {}).get("private", {}).get("syncd") == "1"
        ]
        assert len(ours) == 2 and {e["source"]["url"] for e in ours} == {
            "https://platform.example/sessions/s-0",
            "https://platform.example/sessions/s-1",
        }

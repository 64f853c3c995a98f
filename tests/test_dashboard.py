"""The admin dashboard: sign-in, overview, search, resync preview → confirm, in a real headless
Chromium against a real ``syncd run`` and a real CalDAV server (Radicale); plus the session
cookie, CSRF and scope rules over plain HTTP."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from syncd import auth, operations
from syncd.app import App
from syncd.config import CalDAVConfig
from syncd.store.tables import SyncQueueRow
from syncd.web import dashboard
from syncd.web.app import build_app
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.http_daemon import NoDaemon
from tests.support.proc import start_syncd, wait_for

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TID = "t-anna-17"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config_sections(port: int) -> dict[str, dict[str, object]]:
    sections: dict[str, dict[str, object]] = {
        "sync": {"interval": 3600, "retry_base": 0.01, "retry_cap": 0.05},
        "http": {"port": port},
    }
    if "allow_private_hosts" in CalDAVConfig.model_fields:
        sections["caldav"] = {"allow_private_hosts": True}  # Radicale listens on 127.0.0.1
    return sections


def _offer(oid: str, session_id: str, alternatives: list[datetime]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return f.offer(
        oid,
        session_id,
        alternatives,
        sent_at=now - timedelta(hours=3),
        expires_at=now + timedelta(hours=21),
    )


@dataclass
class World:
    base: str
    admin_token: str
    read_token: str
    log: Path
    pid: int


def _populate(app: App, server: CalDAVServer) -> tuple[str, str]:
    """One connected therapist with a session and a pending offer whose next pass is
    tomorrow (so the preview has creates to show), a few others, and two tokens."""
    ing = app.ingestor()
    for tid in (TID, "t-ben-02", "t-cara-31"):
        assert ing.ingest(f.therapist(tid=tid, zone="Europe/London")).ok
    start = f.future(days=5)
    assert ing.ingest(f.session("s-9001", start, therapist_id=TID)).ok
    assert ing.ingest(f.session("s-9002", start + timedelta(days=1), therapist_id=TID)).ok
    alternatives = [start + timedelta(days=2), start + timedelta(days=2, hours=2)]
    assert ing.ingest(_offer("o-77", "s-9002", alternatives)).ok
    operations.connect_caldav(
        app, TID, url=server.url, username=server.username, password=server.password
    )
    now = app.clock()
    with app.sessions.begin() as s:
        for row in s.query(SyncQueueRow).all():
            row.due_at, row.full = now + timedelta(days=1), False
        admin = auth.create(s, "ops-admin", auth.Scope.ADMIN, now)
        read = auth.create(s, "ops-viewer", auth.Scope.READ, now)
    return admin, read


@pytest.fixture
def world(tmp_path: Path, radicale_server: CalDAVServer) -> Iterator[World]:
    port = _free_port()
    cfg = make_config(tmp_path / "state", **_config_sections(port))
    app = App.open(cfg)
    try:
        admin, read = _populate(app, radicale_server)
    finally:
        app.close()
    config = write_config(tmp_path / "syncd.toml", cfg)
    log = tmp_path / "syncd.log"
    proc = start_syncd(config, "run", log=log)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"syncd exited: {log.read_text()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 120, "the daemon's HTTP service")
        yield World(base, admin, read, log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _chromium_or_skip() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"chromium is not installed at {CHROMIUM} (see .ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_dashboard_in_chromium(world: World) -> None:
    _chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            page = context.new_page()

            # Signed out: the dashboard sends us to the sign-in form.
            page.goto(f"{world.base}/admin")
            assert page.url.endswith("/admin/login")
            page.fill("#token", "syncd_not-a-token")
            page.click("button[type=submit]")
            expect(page.get_by_role("alert")).to_contain_text("not valid")
            page.fill("#token", world.admin_token)
            page.click("button[type=submit]")
            expect(page.get_by_role("heading", name="Sync health")).to_be_visible()

            cookie = next(c for c in context.cookies() if c["name"] == dashboard.COOKIE)
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/admin"
            assert cookie["secure"] is False  # the public URL is http here
            assert world.admin_token not in cookie["value"]

            # All three therapists, then only the one searched for.
            rows = page.locator("#therapists tbody tr")
            expect(rows).to_have_count(3)
            page.fill("#q", "anna")
            page.click("form.search button")
            assert "q=anna" in page.url
            expect(rows).to_have_count(1)
            row = rows.first
            expect(row).to_contain_text(TID)
            expect(row).to_contain_text("Waiting for first pass")
            expect(row.locator("td[data-label='Pending holds']")).to_contain_text("1")
            for name in ("Jane", "Doe"):
                assert name not in page.content()

            # Resync: the preview plans creates and writes nothing.
            row.get_by_role("button", name="Resync…").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("preview")
            expect(page.locator(".lead")).to_contain_text("planned change")
            creates = page.locator("li.op-create")
            expect(creates.first).to_be_visible()
            assert creates.count() >= 2  # two sessions (one as its blocked slot) and the holds
            expect(page.locator("li.change").filter(has_text="session")).not_to_have_count(0)
            planned = creates.count()
            page.screenshot(path=str(ARTIFACTS / "dashboard-preview.png"), full_page=True)
            for name in ("Jane", "Doe"):
                assert name not in page.content()

            # Confirm: the pass applies it.
            page.get_by_role("button", name=f"Apply {planned} change").click()
            status = page.get_by_role("status")
            expect(status).to_contain_text(f"Applied {planned} change")
            page.screenshot(path=str(ARTIFACTS / "dashboard-result.png"), full_page=True)

            # The overview now shows the connection in step.
            page.goto(f"{world.base}/admin")
            expect(page.locator("#therapists tbody tr")).to_have_count(3)
            anna = page.locator("#therapists tbody tr").filter(has_text=TID)
            expect(anna).to_contain_text("OK")
            # The one daemon process is listed as a live replica, with its pid in its id.
            replica_rows = page.locator("#replicas tbody tr")
            expect(replica_rows).to_have_count(1)
            expect(replica_rows.first).to_contain_text("Alive")
            expect(replica_rows.first).to_contain_text(f":{world.pid}:")
            expect(page.locator(".stat").filter(has_text="running")).to_contain_text("1")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The detail page: connection, pending hold with its time left.
            anna.get_by_role("link", name=TID).click()
            expect(page.get_by_role("heading", level=1)).to_contain_text(TID)
            expect(page.locator("section").filter(has_text="Pending holds")).to_contain_text("o-77")
            page.screenshot(path=str(ARTIFACTS / "dashboard-therapist.png"), full_page=True)

            # A phone.
            page.set_viewport_size({"width": 375, "height": 812})
            page.goto(f"{world.base}/admin")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"the page scrolls sideways at 375 px ({width} px wide)"
            page.screenshot(path=str(ARTIFACTS / "dashboard-375.png"), full_page=True)

            # A POST without the CSRF token is refused, even with the session cookie.
            refused = context.request.post(
                f"{world.base}/admin/resync", form={"target": TID}, max_redirects=0
            )
            assert refused.status == 403
            wrong = context.request.post(
                f"{world.base}/admin/resync/preview",
                form={"target": TID, "csrf": "x" * 43},
                max_redirects=0,
            )
            assert wrong.status == 403

            # Sign out ends the session.
            page.get_by_role("button", name="Sign out").click()
            assert page.url.endswith("/admin/login")
            assert not [c for c in context.cookies() if c["name"] == dashboard.COOKIE]
            context.close()

            # A read-scope session sees the pages but cannot resync.
            viewer = browser.new_context(viewport={"width": 1280, "height": 860})
            page = viewer.new_page()
            page.goto(f"{world.base}/admin/login")
            page.fill("#token", world.read_token)
            page.click("button[type=submit]")
            expect(page.locator(".scope")).to_have_text("read")
            buttons = page.locator("form.resync-form button")
            expect(buttons.first).to_be_disabled()
            assert all(b.is_disabled() for b in buttons.all())
            csrf = page.locator("input[name=csrf]").first.get_attribute("value")
            assert csrf
            for path in ("/admin/resync/preview", "/admin/resync"):
                denied = viewer.request.post(
                    f"{world.base}{path}", form={"target": TID, "csrf": csrf}, max_redirects=0
                )
                assert denied.status == 403, path
                assert "admin scope" in denied.text()
            viewer.close()
        finally:
            browser.close()


# -- without a browser: the cookie's Secure flag, tampering, escaping -----------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, App]]:
    cfg = make_config(tmp_path / "state", http={"port": 0, "public_url": "https://sync.example"})
    app = App.open(cfg)
    web = build_app(app, NoDaemon(), dashboard.routes(app, NoDaemon()))
    with TestClient(web, base_url="https://testserver") as tc:
        yield tc, app
    app.close()


def _token(app: App, scope: auth.Scope, name: str = "t") -> str:
    with app.sessions.begin() as s:
        return auth.create(s, name, scope, app.clock())


def sign_in(tc: TestClient, token: str) -> httpx.Response:
    """Sign in as a browser does: fetch the form (its CSRF field and cookie), then post it."""
    form = tc.get("/admin/login")
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    signed: httpx.Response = tc.post(
        "/admin/login", data={"token": token, "csrf": csrf.group(1)}, follow_redirects=False
    )
    return signed


def test_cookie_is_secure_behind_https_and_revocation_ends_the_session(
    client: tuple[TestClient, App],
) -> None:
    tc, app = client
    token = _token(app, auth.Scope.ADMIN)
    r = sign_in(tc, token)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    header = next(
        c for c in r.headers.get_list("set-cookie") if c.startswith(f"{dashboard.COOKIE}=")
    ).lower()
    for flag in ("httponly", "samesite=strict", "secure", "path=/admin"):
        assert flag in header
    assert tc.get("/admin", follow_redirects=False).status_code == 200
    assert "content-security-policy" in tc.get("/admin").headers
    with app.sessions.begin() as s:
        auth.revoke(s, "t", app.clock())
    assert tc.get("/admin", follow_redirects=False).headers["location"] == "/admin/login"


def test_forged_cookie_and_unsigned_post_are_refused(client: tuple[TestClient, App]) -> None:
    tc, app = client
    token = _token(app, auth.Scope.READ)
    sign_in(tc, token)
    value = tc.cookies[dashboard.COOKIE]
    assert token not in value
    tc.cookies.clear()
    for forged in (value[:-1] + ("A" if value[-1] != "A" else "B"), "x" * 43, "%00" * 10):
        tc.cookies.set(dashboard.COOKIE, forged)
        assert tc.get("/admin", follow_redirects=False).status_code == 303
        assert tc.post("/admin/resync", data={"target": "*"}).status_code == 403
        assert tc.post("/admin/logout", data={}).status_code == 403


def test_search_and_ids_are_escaped(client: tuple[TestClient, App]) -> None:
    tc, app = client
    assert app.ingestor().ingest(f.therapist(tid="t-<b>x</b>")).ok
    sign_in(tc, _token(app, auth.Scope.READ))
    page = tc.get("/admin", params={"q": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    page = tc.get("/admin", params={"q": "<b>"}).text
    assert "t-&lt;b&gt;x&lt;/b&gt;" in page and "t-<b>x</b>" not in page

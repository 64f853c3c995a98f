"""Dashboard sessions stored server-side: signing out ends a copied cookie at once, the sign-in
form carries a CSRF token, sessions are listed and revoked from the CLI, expire after 8 hours,
and work across replicas sharing one database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from syncd import auth
from syncd.app import App
from syncd.store.tables import AdminSessionRow, Base
from syncd.web import dashboard
from syncd.web.app import build_app
from tests.conftest import make_config, write_config
from tests.support.http_daemon import NoDaemon
from tests.support.proc import run_syncd
from tests.test_dashboard import sign_in


def _client(app: App, address: str = "198.51.100.7") -> TestClient:
    web = build_app(app, NoDaemon(), dashboard.routes(app, NoDaemon()))
    return TestClient(web, base_url="https://testserver", client=(address, 50000))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    cfg = make_config(tmp_path / "state", http={"port": 0, "public_url": "https://sync.example"})
    application = App.open(cfg)
    yield application
    application.close()


def _token(app: App, name: str, scope: auth.Scope = auth.Scope.ADMIN) -> str:
    with app.sessions.begin() as s:
        return auth.create(s, name, scope, app.clock())


def _signed_in(tc: TestClient) -> bool:
    status: int = tc.get("/admin", follow_redirects=False).status_code
    return status == 200


def _csrf(tc: TestClient) -> str:
    page: str = tc.get("/admin").text
    marker = 'name="csrf" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def _sessions(app: App) -> int:
    with app.sessions() as s:
        return s.scalar(select(func.count()).select_from(AdminSessionRow)) or 0


def test_sign_out_ends_a_copied_cookie_at_once(app: App) -> None:
    """The cookie is only a handle: signing out deletes the session, so a copy of the cookie
    taken before (another browser, a stolen one) stops working with it."""
    token = _token(app, "ops")
    with _client(app) as tc, _client(app, "203.0.113.9") as thief:
        assert sign_in(tc, token).status_code == 303
        copied = tc.cookies[dashboard.COOKIE]
        thief.cookies.set(dashboard.COOKIE, copied)
        assert _signed_in(thief)  # the copy works while the session lives
        csrf = _csrf(tc)
        out = tc.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert not _signed_in(thief)
        assert thief.post("/admin/resync", data={"target": "*", "csrf": csrf}).status_code == 403
        assert thief.post("/admin/logout", data={"csrf": csrf}).status_code == 403
    assert _sessions(app) == 0


def test_only_a_hash_of_the_cookie_is_stored(app: App) -> None:
    token = _token(app, "ops")
    with _client(app) as tc:
        sign_in(tc, token)
        secret = tc.cookies[dashboard.COOKIE]
    with app.sessions() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                assert secret not in repr(tuple(row)), table.name
                assert token not in repr(tuple(row)), table.name


def test_sign_in_form_needs_its_csrf_token(app: App) -> None:
    """A cross-site page cannot sign a browser in (into the attacker's own session): the form's
    field must be the MAC of the nonce in this browser's SameSite cookie."""
    token = _token(app, "ops")
    with _client(app) as tc, _client(app) as other:
        bare = tc.post("/admin/login", data={"token": token}, follow_redirects=False)
        assert bare.status_code == 403
        assert "did not come from this dashboard" in bare.text
        # A field and nonce from two different forms do not pair.
        other.get("/admin/login")
        field = other.get("/admin/login").text.split('name="csrf" value="', 1)[1].split('"')[0]
        tc.get("/admin/login")
        mixed = tc.post(
            "/admin/login", data={"token": token, "csrf": field}, follow_redirects=False
        )
        assert mixed.status_code == 403
        # The field without its cookie (a cross-site post carries no SameSite cookie).
        tc.cookies.clear()
        lone = tc.post("/admin/login", data={"token": token, "csrf": field}, follow_redirects=False)
        assert lone.status_code == 403
        assert _sessions(app) == 0
        form_cookie = tc.get("/admin/login").headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", "secure", "path=/admin"):
            assert flag in form_cookie
        assert sign_in(tc, token).status_code == 303
        assert _signed_in(tc)
    assert _sessions(app) == 1


def test_sessions_expire_eight_hours_after_sign_in(app: App) -> None:
    token = _token(app, "ops")
    start = app.clock()
    with _client(app) as tc:
        sign_in(tc, token)
        app.clock = lambda: start + timedelta(hours=7, minutes=59)
        assert _signed_in(tc)  # activity does not extend it
        app.clock = lambda: start + timedelta(hours=8, seconds=1)
        assert not _signed_in(tc)


def test_sessions_are_listed_and_revoked_from_the_cli(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state")
    config = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    try:
        admin = _token(app, "ops-admin")
        viewer = _token(app, "ops-viewer", auth.Scope.READ)
        with (
            _client(app, "198.51.100.1") as one,
            _client(app, "198.51.100.2") as two,
            _client(app, "198.51.100.3") as three,
        ):
            for tc, token in ((one, admin), (two, admin), (three, viewer)):
                assert sign_in(tc, token).status_code == 303
            listed = run_syncd(config, "sessions", "list")
            assert listed.returncode == 0, listed.stderr
            lines = [ln for ln in listed.stdout.splitlines() if "198.51.100." in ln]
            assert len(lines) == 3, listed.stdout
            assert all(len(ln) <= 80 for ln in listed.stdout.splitlines())
            ids = {ln.split()[1]: ln for ln in lines}  # "│ 2 │ ops-admin │ admin │ …"
            first = next(i for i, ln in ids.items() if "198.51.100.1" in ln)
            assert "ops-admin" in ids[first] and "admin" in ids[first]
            assert not any(admin in ln or viewer in ln for ln in listed.stdout.splitlines())

            done = run_syncd(config, "sessions", "revoke", first)
            assert done.returncode == 0, done.stderr
            assert "ended 1 dashboard session" in done.stdout
            assert not _signed_in(one)
            assert _signed_in(two) and _signed_in(three)

            by_token = run_syncd(config, "sessions", "revoke", "--token", "ops-viewer")
            assert by_token.returncode == 0 and "ended 1" in by_token.stdout
            assert not _signed_in(three) and _signed_in(two)

            missing = run_syncd(config, "sessions", "revoke", "9999")
            assert missing.returncode == 1
            assert missing.stderr.startswith("error: ended 0 of 1 sessions")
            assert "Traceback" not in missing.stderr

            everyone = run_syncd(config, "sessions", "revoke", "--all")
            assert everyone.returncode == 0 and "ended 1" in everyone.stdout
            assert not _signed_in(two)
            empty = run_syncd(config, "sessions", "list")
            assert "no one is signed in" in empty.stdout
    finally:
        app.close()


@pytest.mark.postgres
def test_sessions_work_across_replicas(tmp_path: Path, pg_url: str) -> None:
    """Two daemons on one PostgreSQL database (and one secret key, as replicas share): a form
    fetched from one is accepted by the other, a session opened on one is valid on the other,
    and signing out on either ends it on both."""
    cfg = make_config(tmp_path / "state", pg_url)
    a, b = App.open(cfg), App.open(cfg)
    try:
        token = _token(a, "ops")
        with _client(a) as on_a, _client(b) as on_b:
            form = on_a.get("/admin/login")
            field = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            on_b.cookies.update(on_a.cookies)
            signed = on_b.post(
                "/admin/login", data={"token": token, "csrf": field}, follow_redirects=False
            )
            assert signed.status_code == 303
            on_a.cookies.set(dashboard.COOKIE, on_b.cookies[dashboard.COOKIE])
            assert _signed_in(on_a) and _signed_in(on_b)
            csrf = _csrf(on_a)
            assert on_a.post("/admin/logout", data={"csrf": csrf}).status_code == 200
            assert not _signed_in(on_b)
    finally:
        a.close()
        b.close()

"""The admin API (bearer tokens, scopes, resync), token-protected queries, the OpenAPI document
and the CalDAV SSRF guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.routing import Route

from syncd import auth, operations
from syncd.app import App
from syncd.daemon import Daemon
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow, MirrorRow
from syncd.web import app as web_app
from syncd.web import openapi
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.http_daemon import with_http_daemon

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin_app(tmp_path: Path) -> Iterator[App]:
    # No polling and no periodic pass within a test: only the API runs passes.
    cfg = make_config(tmp_path / "state", daemon={"poll_interval": 10}, sync={"interval": 3600})
    application = App.open(cfg)
    yield application
    application.close()


def tokens(app: App) -> tuple[str, str]:
    with app.sessions.begin() as s:
        read = auth.create(s, "viewer", auth.Scope.READ, app.clock())
        admin = auth.create(s, "operator", auth.Scope.ADMIN, app.clock())
    return read, admin


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_scopes(admin_app: App) -> None:
    read, admin = tokens(admin_app)
    assert admin_app.ingestor().ingest(f.therapist()).ok

    def check(_daemon: Daemon, url: str) -> tuple[str, dict[str, httpx.Response]]:
        with httpx.Client(base_url=url, timeout=10) as c:
            resync = {"therapists": ["t-1"], "dry_run": True}
            return _daemon.owner, {
                "none": c.get("/v1/admin/therapists"),
                "unknown": c.get("/v1/admin/therapists", headers=bearer("syncd_nope")),
                "basic": c.get("/v1/admin/therapists", headers={"Authorization": "Basic eDp5"}),
                "read": c.get("/v1/admin/therapists", headers=bearer(read)),
                "outbox": c.get("/v1/admin/outbox?limit=5", headers=bearer(read)),
                "replicas none": c.get("/v1/admin/replicas"),
                "replicas": c.get("/v1/admin/replicas", headers=bearer(read)),
                "bad limit": c.get("/v1/admin/outbox?limit=0", headers=bearer(read)),
                "post no token": c.post("/v1/admin/resync", json=resync),
                "post read": c.post("/v1/admin/resync", json=resync, headers=bearer(read)),
                "unknown therapist": c.post(
                    "/v1/admin/resync", json={"therapists": ["t-9"]}, headers=bearer(admin)
                ),
                "bad body": c.post("/v1/admin/resync", json={"full": 1}, headers=bearer(admin)),
                "availability none": c.get("/v1/therapists/t-1/availability"),
                "availability read": c.get("/v1/therapists/t-1/availability", headers=bearer(read)),
                "conflicts none": c.get("/v1/conflicts"),
                "conflicts read": c.get("/v1/conflicts", headers=bearer(read)),
            }

    owner, r = with_http_daemon(admin_app, check)
    for name in ("none", "unknown", "basic", "post no token", "availability none"):
        assert r[name].status_code == 401, name
        assert r[name].headers["www-authenticate"].startswith("Bearer")
    assert r["conflicts none"].status_code == 401
    assert r["post read"].status_code == 403
    assert "needs admin" in r["post read"].json()["error"]
    assert r["read"].status_code == 200
    rows = r["read"].json()["therapists"]
    assert [(x["therapist_id"], x["state"]) for x in rows] == [("t-1", "not connected")]
    assert r["outbox"].status_code == 200
    assert r["outbox"].json()["summary"] == {
        "pending": 0,
        "oldest_pending_created_at": None,
        "failing": 0,
    }
    assert r["bad limit"].status_code == 400
    assert r["replicas none"].status_code == 401
    [me] = r["replicas"].json()["replicas"]  # the daemon serving the request, alive
    assert me["id"] == owner and me["alive"] is True and me["leases"] == 0
    assert r["unknown therapist"].status_code == 404
    assert "t-9" in r["unknown therapist"].json()["error"]
    assert r["bad body"].status_code == 400
    assert r["availability read"].status_code == 200
    assert r["availability read"].json()["therapist_id"] == "t-1"
    assert r["conflicts read"].json() == {"conflicts": []}
    with admin_app.sessions() as s:
        used = {t.name: t.last_used_at for t in auth.listing(s)}
    assert used["viewer"] is not None


def test_dry_run_then_real_resync(admin_app: App, radicale_server: CalDAVServer) -> None:
    _read, admin = tokens(admin_app)
    assert admin_app.ingestor().ingest(f.therapist()).ok
    assert admin_app.ingestor().ingest(f.session("s-1", f.future(days=2))).ok
    operations.connect_caldav(
        admin_app,
        "t-1",
        url=radicale_server.url,
        username=radicale_server.username,
        password=radicale_server.password,
    )
    with admin_app.sessions() as s:
        cal = s.scalars(select(ConnectionRow.calendar_url)).one()
    assert cal

    def check(_daemon: Daemon, url: str) -> tuple[Any, dict[str, Any], Any]:
        with httpx.Client(base_url=url, timeout=30) as c:
            dry = c.post(
                "/v1/admin/resync",
                json={"therapists": ["t-1"], "dry_run": True},
                headers=bearer(admin),
            )
            assert dry.status_code == 200, dry.text
            after_dry = read_calendar(radicale_server, cal)
            with admin_app.sessions() as s:
                assert s.scalars(select(MirrorRow)).all() == []  # nothing written
            real = c.post("/v1/admin/resync", json={"all": True}, headers=bearer(admin))
            assert real.status_code == 200, real.text
            return dry.json(), real.json(), after_dry

    dry, real, after_dry = with_http_daemon(admin_app, check)
    assert dry["dry_run"] is True
    (result,) = dry["results"]
    assert result["therapist_id"] == "t-1" and result["errors"] == []
    (conn,) = result["connections"]
    assert conn["applied"] == 0
    assert [(a["op"], a["uid"]) for a in conn["actions"]] == [("create", uid_for("session", "s-1"))]
    assert conn["actions"][0]["description"].startswith("create")
    assert after_dry == {}

    assert real["dry_run"] is False
    (conn,) = real["results"][0]["connections"]
    assert conn["applied"] == 1 and conn["error"] is None
    assert set(read_calendar(radicale_server, cal)) == {uid_for("session", "s-1")}


def test_openapi_is_served_committed_and_complete(admin_app: App) -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())

    def check(_daemon: Daemon, url: str) -> httpx.Response:
        return httpx.get(url + "/openapi.json", timeout=10)

    served = with_http_daemon(admin_app, check)
    assert served.status_code == 200
    assert served.json() == committed == openapi.document()
    assert committed["openapi"].startswith("3.1")

    routes = web_app.build_app(admin_app, Daemon(admin_app)).routes
    json_routes = [
        r
        for r in routes
        if isinstance(r, Route)
        and (r.path.startswith("/v1/") or r.path in ("/healthz", "/readyz", "/openapi.json"))
    ]
    assert {r.path for r in json_routes} >= {
        "/v1/events",
        "/v1/admin/resync",
        "/v1/conflicts",
        "/v1/therapists/{id}/availability",
    }
    for route in json_routes:
        assert route.path in committed["paths"], route.path
        documented = set(committed["paths"][route.path])
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in documented, (method, route.path)


def test_caldav_urls_on_private_hosts_are_refused_by_default(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    strict = App.open(make_config(tmp_path / "strict", outbound={"allow_private_hosts": False}))
    try:
        assert strict.ingestor().ingest(f.therapist()).ok
        for url in (
            radicale_server.url,
            "http://localhost:1/",
            "http://10.1.2.3/",
            "http://[::1]/",
        ):
            with pytest.raises(operations.OperationError, match="allow_private_hosts") as err:
                operations.connect_caldav(strict, "t-1", url=url, username="u", password="p")
            assert "\n" not in str(err.value)
        with pytest.raises(operations.OperationError, match="http:// or https://"):
            operations.connect_caldav(
                strict, "t-1", url="file:///etc/x", username="u", password="p"
            )
        with strict.sessions() as s:
            assert s.scalars(select(ConnectionRow)).all() == []
    finally:
        strict.close()

    allowed = App.open(make_config(tmp_path / "allowed"))  # allow_private_hosts = true
    try:
        assert allowed.config.outbound.allow_private_hosts
        assert allowed.ingestor().ingest(f.therapist()).ok
        cid = operations.connect_caldav(
            allowed,
            "t-1",
            url=radicale_server.url,
            username=radicale_server.username,
            password=radicale_server.password,
        )
        assert cid
    finally:
        allowed.close()


def test_allow_private_hosts_defaults_to_false() -> None:
    from syncd.config import Config

    assert Config().outbound.allow_private_hosts is False
    assert Config().caldav.allow_private_hosts is False
    assert Config().egress.allow_private is False

"""Rate limits per client address on every credential check: dashboard sign-ins, bearer
tokens, feed tokens and ingest signatures. Past the limit every attempt, right or wrong, is a
429 with Retry-After until the window ends; counts live in the database, so replicas share
them; X-Forwarded-For is believed only from configured proxies."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from syncd import auth, feeds, outbox, ratelimit
from syncd.app import App
from syncd.daemon import Daemon
from syncd.store.tables import RateLimitRow, TherapistRow
from syncd.web.app import build_app
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.http_daemon import NoDaemon, with_http_daemon
from tests.test_dashboard import sign_in

SECRET = b"rate-limit-ingest-secret"
ATTACKER = "203.0.113.66"
BYSTANDER = "198.51.100.20"


def _client(app: App, address: str) -> TestClient:
    return TestClient(build_app(app, NoDaemon()), client=(address, 40000))


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
    limits = {"window": 600, "login": 3, "bearer": 4, "feed": 5, "signature": 4}
    application = App.open(make_config(tmp_path / "state", limits=limits))
    yield application
    application.close()


def _token(app: App, name: str = "ops", scope: auth.Scope = auth.Scope.ADMIN) -> str:
    with app.sessions.begin() as s:
        return auth.create(s, name, scope, app.clock())


def _refused(response: httpx.Response, window: int = 600) -> None:
    assert response.status_code == 429, response.text[:300]
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= window


def _later(app: App, seconds: float) -> None:
    now = app.clock()
    app.clock = lambda: now + timedelta(seconds=seconds)


def test_dashboard_sign_ins(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    token = _token(app)
    with _client(app, ATTACKER) as tc, _client(app, BYSTANDER) as other:
        for _ in range(3):
            assert sign_in(tc, "syncd_guess").status_code == 401
        # The right token is refused too: a guesser must not learn which guess was right.
        blocked = sign_in(tc, token)
        _refused(blocked)
        assert "Too many failed sign-ins" in blocked.text
        assert sign_in(other, token).status_code == 303  # another address is unaffected
        _later(app, 601)
        assert sign_in(tc, token).status_code == 303  # the next window starts afresh
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert f"3 failed dashboard sign-ins from {ATTACKER}" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_bearer_token_failures(app: App) -> None:
    token = _token(app, scope=auth.Scope.READ)
    with _client(app, ATTACKER) as tc, _client(app, BYSTANDER) as other:
        # No token at all is no guess, and does not count.
        for _ in range(6):
            assert tc.get("/v1/admin/therapists").status_code == 401
        for i in range(4):
            bad = {"Authorization": f"Bearer syncd_wrong{i}"}
            assert tc.get("/v1/conflicts", headers=bad).status_code == 401
        right = {"Authorization": f"Bearer {token}"}
        _refused(tc.get("/v1/admin/therapists", headers=right))
        _refused(tc.post("/v1/admin/resync", headers=right, json={"all": True}))
        assert other.get("/v1/admin/therapists", headers=right).status_code == 200


def test_feed_token_misses(app: App) -> None:
    assert app.ingestor().ingest(f.therapist()).ok
    url = feeds.feed_url(app, "t-1")
    path = urlsplit(url).path
    with _client(app, ATTACKER) as tc, _client(app, BYSTANDER) as other:
        assert tc.get(path).status_code == 200
        for i in range(5):
            assert tc.get(f"/feeds/guess{i}.ics").status_code == 404
        _refused(tc.get(path))
        assert other.get(path).status_code == 200


def _signed(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"Syncd-Signature": outbox.sign(secret, int(time.time()), body)}


def test_bad_ingest_signatures(app: App) -> None:
    body = json.dumps(f.therapist()).encode()
    with _client(app, ATTACKER) as tc, _client(app, BYSTANDER) as other:
        assert tc.post("/v1/events", content=body).status_code == 401  # unsigned: no guess
        for i in range(4):
            forged = _signed(body, b"guess-%d" % i)
            assert tc.post("/v1/events", content=body, headers=forged).status_code == 401
        _refused(tc.post("/v1/events", content=body, headers=_signed(body)))
        with app.sessions() as s:
            assert s.get(TherapistRow, "t-1") is None  # refused before anything was read
        applied = other.post("/v1/events", content=body, headers=_signed(body))
        assert applied.json()["results"][0]["result"] == "applied"


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    key = ratelimit.client_key
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:203.0.113.5") == key("203.0.113.5") == "203.0.113.5"
    assert key(None) == "unknown"
    assert len(key("x" * 500)) == 64


@pytest.mark.postgres
def test_limits_are_shared_by_replicas(tmp_path: Path, pg_url: str) -> None:
    """Two daemons on one PostgreSQL database: failures on either count toward one limit, and
    concurrent failures are each counted once (an atomic upsert, no lost update)."""
    cfg = make_config(tmp_path / "state", pg_url, limits={"bearer": 40})
    a, b = App.open(cfg), App.open(cfg)
    try:
        token = _token(a, scope=auth.Scope.READ)
        bad = {"Authorization": "Bearer syncd_wrong"}
        errors: list[BaseException] = []

        def fail(app: App, times: int) -> None:
            try:
                with _client(app, ATTACKER) as tc:
                    for _ in range(times):
                        assert tc.get("/v1/conflicts", headers=bad).status_code == 401
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=fail, args=(x, 10)) for x in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with a.sessions() as s:
            assert s.scalar(select(func.sum(RateLimitRow.failures))) == 40
        right = {"Authorization": f"Bearer {token}"}
        for replica in (a, b):
            with _client(replica, ATTACKER) as tc:
                _refused(tc.get("/v1/admin/therapists", headers=right))
    finally:
        a.close()
        b.close()


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(app: App) -> None:
    """Over the real server: by default a client cannot escape its limit by claiming another
    address in X-Forwarded-For (uvicorn alone would believe any local caller)."""

    def check(_daemon: Daemon, url: str) -> None:
        with httpx.Client(base_url=url, timeout=20) as client:
            for i in range(4):
                headers = {
                    "Authorization": "Bearer syncd_wrong",
                    "X-Forwarded-For": f"192.0.2.{i + 1}",
                }
                assert client.get("/v1/conflicts", headers=headers).status_code == 401
            claimed = {"Authorization": "Bearer syncd_wrong", "X-Forwarded-For": "192.0.2.99"}
            _refused(client.get("/v1/conflicts", headers=claimed))

    with_http_daemon(app, check, timeout=60)


def test_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path / "state",
        http={"port": 0, "trusted_proxies": ["10.0.0.0/8"]},
        limits={"bearer": 2},
    )
    app = App.open(cfg)
    try:
        bad = {"Authorization": "Bearer syncd_wrong"}
        with _client(app, "10.1.2.3") as proxy:
            for client in ("192.0.2.1", "192.0.2.2"):
                for _ in range(2):
                    hop = {**bad, "X-Forwarded-For": f"{client}, 10.9.9.9"}
                    assert proxy.get("/v1/conflicts", headers=hop).status_code == 401
            _refused(proxy.get("/v1/conflicts", headers={**bad, "X-Forwarded-For": "192.0.2.1"}))
            fresh = {**bad, "X-Forwarded-For": "192.0.2.3"}
            assert proxy.get("/v1/conflicts", headers=fresh).status_code == 401
        # From an address that is not a trusted proxy, the header is ignored.
        with _client(app, "203.0.113.1") as direct:
            for i in range(2):
                spoof = {**bad, "X-Forwarded-For": f"192.0.2.{50 + i}"}
                assert direct.get("/v1/conflicts", headers=spoof).status_code == 401
            _refused(direct.get("/v1/conflicts", headers={**bad, "X-Forwarded-For": "192.0.2.77"}))
        with app.sessions() as s:
            clients: Any = set(s.scalars(select(RateLimitRow.client)))
        assert clients == {"192.0.2.1", "192.0.2.2", "192.0.2.3", "203.0.113.1"}
    finally:
        app.close()


def test_ended_windows_are_purged(app: App) -> None:
    limiter = ratelimit.Limiter(app.sessions, app.config.limits, app.clock)
    limiter.failed(ratelimit.Kind.FEED, ATTACKER)
    with app.sessions.begin() as s:
        assert ratelimit.purge(s, app.clock(), app.config.limits.window) == 0
        assert ratelimit.purge(s, app.clock() + timedelta(seconds=1201), 600) == 1

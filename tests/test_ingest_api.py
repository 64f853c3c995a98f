"""POST /v1/events: signed platform events over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from syncd import operations, outbox
from syncd.app import App
from syncd.daemon import Daemon
from syncd.project import uid_for
from syncd.store.tables import ConnectionRow, InboundEventRow, SessionRow, TherapistRow
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.calendar_view import read_calendar
from tests.support.http_daemon import with_http_daemon
from tests.support.proc import wait_for

SECRET = b"ingest-secret-for-tests"


def body_of(events: Any) -> bytes:
    return json.dumps(events).encode()


def signed(body: bytes, secret: bytes = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return {"Syncd-Signature": outbox.sign(secret, stamp, body), "Content-Type": "application/json"}


def with_id(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {**event, "id": event_id}


def counts(app: App) -> tuple[int, int, int]:
    with app.sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(InboundEventRow)) or 0,
            s.scalar(select(func.count()).select_from(TherapistRow)) or 0,
            s.scalar(select(func.count()).select_from(SessionRow)) or 0,
        )


@pytest.fixture
def api_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
    # No periodic pass and no polling within a test: only daemon.wake() starts a pass.
    cfg = make_config(tmp_path / "state", daemon={"poll_interval": 10}, sync={"interval": 3600})
    application = App.open(cfg)
    yield application
    application.close()


def test_bad_signatures_are_401_and_store_nothing(api_app: App) -> None:
    body = body_of(f.therapist())
    good = signed(body)["Syncd-Signature"]
    mac = good.split("v1=")[1]
    cases = {
        "missing": ({}, "missing Syncd-Signature"),
        "malformed": ({"Syncd-Signature": "sha256=abc"}, "malformed"),
        "no v1": ({"Syncd-Signature": f"t={int(time.time())}"}, "malformed"),
        "bad hex": ({"Syncd-Signature": f"t={int(time.time())},v1=zz"}, "malformed"),
        "wrong key": (signed(body, b"another secret"), "does not match"),
        "other body": ({"Syncd-Signature": good.replace("t=", "t=1")}, "does not match"),
        "expired": (signed(body, at=time.time() - 301), "more than 300 s"),
        "future": (signed(body, at=time.time() + 400), "more than 300 s"),
    }
    assert mac

    def check(_daemon: Daemon, url: str) -> dict[str, httpx.Response]:
        with httpx.Client(base_url=url, timeout=10) as client:
            return {
                name: client.post("/v1/events", content=body, headers=headers)
                for name, (headers, _) in cases.items()
            }

    answers = with_http_daemon(api_app, check)
    for name, (_, message) in cases.items():
        r = answers[name]
        assert r.status_code == 401, name
        assert r.json()["status"] == 401
        assert message in r.json()["error"], (name, r.json())
    assert counts(api_app) == (0, 0, 0)


def test_unconfigured_secret_oversized_and_too_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNCD_INGEST_SECRET", raising=False)
    app = App.open(make_config(tmp_path / "state", api={"max_events": 2}))
    try:
        small = body_of(f.therapist())
        big = body_of([f.therapist(client_note="x" * (1 << 20))])
        many = body_of([f.therapist(f"t-{i}") for i in range(3)])

        def check(_daemon: Daemon, url: str) -> list[httpx.Response]:
            with httpx.Client(base_url=url, timeout=10) as client:
                unconfigured = client.post("/v1/events", content=small, headers=signed(small))
                monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
                return [
                    unconfigured,
                    client.post("/v1/events", content=big, headers=signed(big)),
                    client.post("/v1/events", content=many, headers=signed(many)),
                    client.post("/v1/events", content=b"{nope", headers=signed(b"{nope")),
                ]

        unconfigured, oversized, too_many, not_json = with_http_daemon(app, check)
        assert unconfigured.status_code == 503
        assert oversized.status_code == 413 and "larger than" in oversized.json()["error"]
        assert too_many.status_code == 400 and "at most 2 events" in too_many.json()["error"]
        assert not_json.status_code == 400 and "malformed JSON" in not_json.json()["error"]
        assert counts(app) == (0, 0, 0)
    finally:
        app.close()


def test_signed_batch_reaches_the_calendar_at_once_and_replays_are_duplicates(
    api_app: App, radicale_server: CalDAVServer
) -> None:
    assert api_app.ingestor().ingest(f.therapist()).ok
    operations.connect_caldav(
        api_app,
        "t-1",
        url=radicale_server.url,
        username=radicale_server.username,
        password=radicale_server.password,
    )
    with api_app.sessions() as s:
        cal = s.scalars(select(ConnectionRow.calendar_url)).one()
    assert cal
    batch = [
        with_id(f.session("s-1", f.future(days=3)), "evt-http-1"),
        with_id(f.session("s-2", f.future(days=3), therapist_id="t-nobody"), "evt-http-2"),
        with_id(f.session("s-3", f.future(days=4)), "evt-http-3"),
    ]
    body = body_of(batch)

    def check(_daemon: Daemon, url: str) -> tuple[httpx.Response, httpx.Response, Any]:
        with httpx.Client(base_url=url, timeout=10) as client:
            # Key rotation: a signature with a retired key next to the current one is accepted.
            old = signed(body, b"the retired key")["Syncd-Signature"].split(",")[1]
            headers = signed(body)
            headers["Syncd-Signature"] += "," + old
            first = client.post("/v1/events", content=body, headers=headers)
            # Only daemon.wake() can start this pass (no polling, no periodic pass).
            wait_for(
                lambda: (
                    {uid_for("session", "s-1"), uid_for("session", "s-3")}
                    <= set(read_calendar(radicale_server, cal))
                ),
                8,
                "the sessions to reach the calendar",
            )
            before = counts(api_app)
            replay = client.post("/v1/events", content=body, headers=signed(body))
            return first, replay, before

    first, replay, before = with_http_daemon(api_app, check)
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert [(r["id"], r["result"]) for r in results] == [
        ("evt-http-1", "applied"),
        ("evt-http-2", "refused"),
        ("evt-http-3", "applied"),
    ]
    assert results[0]["error"] is None and "t-nobody" in results[1]["error"]
    assert replay.status_code == 200
    assert [r["result"] for r in replay.json()["results"]] == ["duplicate", "refused", "duplicate"]
    assert counts(api_app) == before
    assert set(read_calendar(radicale_server, cal)) == {
        uid_for("session", "s-1"),
        uid_for("session", "s-3"),
    }


def test_a_single_event_object_is_accepted(api_app: App) -> None:
    body = body_of(with_id(f.therapist("t-solo"), "evt-solo"))

    def check(_daemon: Daemon, url: str) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=10) as client:
            return client.post("/v1/events", content=body, headers=signed(body))

    r = with_http_daemon(api_app, check)
    assert r.status_code == 200
    assert r.json() == {"results": [{"id": "evt-solo", "result": "applied", "error": None}]}
    assert counts(api_app) == (1, 1, 0)

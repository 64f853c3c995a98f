"""The outbox delivery worker: signed webhooks to a real local HTTP receiver, retries driven by an
injected clock (never by sleeping), restarts, replicas sharing one database (SQLite and
PostgreSQL), the daemon's job and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from syncd import delivery, outbox
from syncd.app import App
from syncd.cli import main
from syncd.config import PlatformConfig
from syncd.daemon import Daemon
from syncd.secrets import SecretError
from syncd.store import database
from syncd.store.tables import OutboxRow
from tests.conftest import LOOPBACK_OK, make_config, write_config

SECRET = b"whsec-test-5b1c0e"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Clock:
    """Time moves only when the test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- the platform's side: a real HTTP receiver that checks signatures --------------------------


@dataclass(frozen=True)
class Hit:
    event_id: str
    message: dict[str, Any]
    signed_at: int
    signature_ok: bool
    content_type: str


def verify(secret: bytes, header: str, body: bytes) -> tuple[int, bool]:
    """The platform's check, written independently of syncd's ``sign``."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return int(fields["t"]), hmac.compare_digest(expected, fields["v1"])


class Receiver:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.hits: list[Hit] = []
        self.script: list[tuple[int, dict[str, str]]] = []  # responses in order, then 200
        self.stall = threading.Event()  # set: hold every request until ``release``
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.stall.is_set():
                    receiver.release.wait(10)
                signed_at, ok = verify(receiver.secret, self.headers["Syncd-Signature"], body)
                message = json.loads(body)
                with receiver._lock:
                    receiver.hits.append(
                        Hit(
                            self.headers["Syncd-Event-Id"],
                            message,
                            signed_at,
                            ok,
                            self.headers["Content-Type"],
                        )
                    )
                    status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                self.send_response(status if ok else 401)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/syncd"

    def ids(self) -> list[str]:
        with self._lock:
            return [h.event_id for h in self.hits]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _no_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_WEBHOOK_SECRET", raising=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


OpenApp = Callable[..., App]


@pytest.fixture
def open_app(tmp_path: Path, db_url: str, receiver: Receiver, clock: Clock) -> Iterator[OpenApp]:
    """Opens Apps (a daemon, a restarted daemon, another replica) on one shared database."""
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    opened: list[App] = []

    def open_(**platform: object) -> App:
        values: dict[str, object] = {
            "webhook_url": receiver.url,
            "webhook_secret_file": str(secret_file),
        }
        values.update(platform)
        cfg = make_config(tmp_path / "state", db_url, platform=values)
        app = App.open(cfg, clock=clock)
        opened.append(app)
        return app

    yield open_
    for app in opened:
        app.close()


def notify(app: App, topic: str = "availability.changed", **data: Any) -> str:
    with app.sessions() as s:
        outbox.enqueue(s, topic, data or {"therapist_id": "t-1"}, app.clock())
        s.commit()
        row = s.scalars(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(1)).one()
        return row.event_id


def row_of(app: App, event_id: str) -> OutboxRow:
    with app.sessions() as s:
        return s.scalars(select(OutboxRow).where(OutboxRow.event_id == event_id)).one()


# -- pure parts -----------------------------------------------------------------------------------


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"e1"}'
    header = outbox.sign(b"k", 1700000000, body)
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify(b"k", header, body) == (1700000000, True)
    assert verify(b"other", header, body)[1] is False
    assert verify(b"k", header, body + b" ")[1] is False


def test_wire_format() -> None:
    created = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    body = outbox.wire_body("e1", "conflict.detected", created, {"therapist_id": "t-1", "n": 2})
    assert json.loads(body) == {
        "id": "e1",
        "type": "conflict.detected",
        "occurred_at": "2026-11-21T10:00:00Z",
        "data": {"therapist_id": "t-1", "n": 2},
    }


def test_retry_after_seconds_and_http_dates() -> None:
    now = T0
    assert outbox.parse_retry_after("120", now) == 120
    assert outbox.parse_retry_after(format_datetime(now + timedelta(seconds=90), True), now) == 90
    assert outbox.parse_retry_after(format_datetime(now - timedelta(seconds=9), True), now) == 0
    assert outbox.parse_retry_after("soon", now) is None
    assert outbox.parse_retry_after(None, now) is None


def test_backoff_is_capped_exponential_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(7)
    for attempts in range(0, 40):
        step = min(600.0, 2.0 * 2**attempts)
        delay = outbox.backoff(attempts, 2, 600, rng)
        assert step / 2 <= delay <= step
    assert outbox.backoff(0, 2, 600, rng, retry_after=3600) == 3600  # the platform knows best
    assert outbox.backoff(0, 2, 600, rng, retry_after=10**9) == outbox.MAX_RETRY_AFTER
    assert outbox.backoff(10**6, 2, 600, rng) <= 600


def test_unknown_topic_is_refused(sqlite_app: App) -> None:
    with sqlite_app.sessions() as s, pytest.raises(ValueError, match="unknown outbox topic"):
        outbox.enqueue(s, "session.moved", {}, T0)


# -- delivery -------------------------------------------------------------------------------------


def test_a_rolled_back_notification_is_never_sent(open_app: OpenApp, receiver: Receiver) -> None:
    app = open_app()
    with app.sessions() as s:
        outbox.enqueue(s, "availability.changed", {"therapist_id": "t-1"}, app.clock())
        s.flush()
        s.rollback()
    with app.deliverer() as d:
        assert d.deliver_due() == 0
    assert receiver.hits == []
    with app.sessions() as s:
        assert outbox.list_recent(s, 10) == []


def test_signed_and_delivered_once(open_app: OpenApp, receiver: Receiver, clock: Clock) -> None:
    app = open_app()
    event_id = notify(app, therapist_id="t-1", reason="session.moved")
    with app.deliverer() as d:
        assert d.deliver_due() == 1
        clock.advance(3600)
        assert d.deliver_due() == 0
    assert len(receiver.hits) == 1
    hit = receiver.hits[0]
    assert hit.signature_ok and hit.signed_at == int(T0.timestamp())
    assert hit.content_type == "application/json"
    assert hit.event_id == event_id and len(event_id) == 32
    assert hit.message == {
        "id": event_id,
        "type": "availability.changed",
        "occurred_at": "2026-11-23T09:00:00Z",
        "data": {"therapist_id": "t-1", "reason": "session.moved"},
    }
    row = row_of(app, event_id)
    assert row.delivered_at == T0 and row.attempts == 1 and row.last_status == 200
    assert row.lease_until is None and row.last_error is None
    with app.sessions() as s:
        assert outbox.pending_summary(s) == (0, None, 0)
        assert [e.state for e in outbox.list_recent(s, 10)] == ["delivered"]


def test_500_twice_then_200_is_delivered_on_the_third_attempt_across_a_restart(
    open_app: OpenApp, receiver: Receiver, clock: Clock
) -> None:
    receiver.script = [(500, {}), (500, {})]
    app = open_app()
    event_id = notify(app)
    with app.deliverer() as d:
        assert d.deliver_due() == 0
        first = row_of(app, event_id)
        assert (first.attempts, first.last_status, first.delivered_at) == (1, 500, None)
        assert first.last_error == "HTTP 500 Internal Server Error"
        assert first.lease_until is None and first.next_attempt_at is not None
        wait = (first.next_attempt_at - clock()).total_seconds()
        assert 1 <= wait <= 2  # retry_base 2 s, jittered into [1, 2]
        assert d.deliver_due() == 0  # not due yet: nothing sent
        assert len(receiver.hits) == 1
        clock.advance(wait + 0.001)
        assert d.deliver_due() == 0
        second = row_of(app, event_id)
        assert (second.attempts, second.last_status) == (2, 500)
        assert second.next_attempt_at is not None
        wait = (second.next_attempt_at - clock()).total_seconds()
        assert 2 <= wait <= 4
        with app.sessions() as s:
            summary = outbox.pending_summary(s)
        assert summary == (1, T0, 1)
    app.close()

    # The daemon restarts mid-retry: a new App and Deliverer on the same database.
    restarted = open_app()
    with restarted.deliverer() as d:
        assert d.deliver_due() == 0  # still backing off
        clock.advance(wait + 0.001)
        assert d.deliver_due() == 1
        clock.advance(3600)
        assert d.deliver_due() == 0
    assert receiver.ids() == [event_id] * 3
    assert all(h.signature_ok for h in receiver.hits)
    done = row_of(restarted, event_id)
    assert done.delivered_at is not None and done.attempts == 3 and done.last_status == 200


def test_429_retry_after_is_respected(open_app: OpenApp, receiver: Receiver, clock: Clock) -> None:
    receiver.script = [(429, {"Retry-After": "120"})]
    app = open_app()
    event_id = notify(app)
    with app.deliverer() as d:
        assert d.deliver_due() == 0
        row = row_of(app, event_id)
        assert row.last_status == 429 and row.next_attempt_at == T0 + timedelta(seconds=120)
        clock.advance(119)
        assert d.deliver_due() == 0
        assert len(receiver.hits) == 1
        clock.advance(1)
        assert d.deliver_due() == 1
    assert receiver.ids() == [event_id] * 2


def test_503_with_an_http_date_retry_after(
    open_app: OpenApp, receiver: Receiver, clock: Clock
) -> None:
    later = format_datetime(T0 + timedelta(seconds=900), usegmt=True)
    receiver.script = [(503, {"Retry-After": later})]
    app = open_app()
    event_id = notify(app)
    with app.deliverer() as d:
        d.deliver_due()
        assert row_of(app, event_id).next_attempt_at == T0 + timedelta(seconds=900)
        clock.advance(899)
        assert d.deliver_due() == 0
        clock.advance(1)
        assert d.deliver_due() == 1


def test_two_replicas_never_send_the_same_row_twice(
    open_app: OpenApp, receiver: Receiver, clock: Clock
) -> None:
    replicas = [open_app(batch=7), open_app(batch=7)]
    ids = {notify(replicas[0], therapist_id=f"t-{i}") for i in range(60)}
    deliverers = [r.deliverer() for r in replicas]
    start = threading.Barrier(len(deliverers))
    sent = [0] * len(deliverers)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sent[i] += deliverers[i].deliver_due()
                with replicas[i].sessions() as s:
                    if outbox.pending_summary(s).pending == 0:
                        return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(deliverers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for d in deliverers:
        d.close()
    assert not errors
    hits = receiver.ids()
    assert sorted(hits) == sorted(ids), "every notification exactly once"
    assert sum(sent) == 60


def test_a_dead_replicas_lease_expires_and_the_row_is_sent_then(
    open_app: OpenApp, receiver: Receiver, clock: Clock
) -> None:
    app = open_app()
    event_id = notify(app)
    # A replica claimed it and died before recording anything (it may or may not have sent it).
    with app.sessions() as s:
        s.execute(
            update(OutboxRow).values(lease_owner="dead", lease_until=T0 + timedelta(seconds=60))
        )
        s.commit()
    with app.deliverer() as d:
        assert d.deliver_due() == 0
        clock.advance(59)
        assert d.deliver_due() == 0
        assert receiver.hits == []
        clock.advance(2)
        assert d.deliver_due() == 1
    assert receiver.ids() == [event_id]


def test_without_a_webhook_url_nothing_is_sent_and_the_cli_lists_them(
    tmp_path: Path, receiver: Receiver, clock: Clock
) -> None:
    cfg = make_config(tmp_path / "state")
    assert cfg.platform.webhook_url == ""
    app = App.open(cfg, clock=clock)
    try:
        ids = [notify(app, "availability.changed"), notify(app, "conflict.detected")]
        with app.deliverer() as d:
            assert d.deliver_due() == 0
    finally:
        app.close()
    assert receiver.hits == []
    path = write_config(tmp_path / "syncd.toml", cfg)
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(path), "outbox"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for event_id in ids:
        assert event_id in result.stdout
    assert "availability.changed" in result.stdout and "conflict.detected" in result.stdout
    assert result.stdout.count("pending") == 2
    assert "notifications are kept, not sent" in result.stdout
    result = runner.invoke(main, ["--config", str(path), "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "outbox: 2 pending (oldest" in result.stdout and "0 failing" in result.stdout
    assert "no [platform] webhook_url" in result.stdout


def test_cli_shows_delivered_pending_and_failing(
    tmp_path: Path, receiver: Receiver, clock: Clock
) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET)
    cfg = make_config(
        tmp_path / "state",
        platform={"webhook_url": receiver.url, "webhook_secret_file": str(secret), "batch": 2},
    )
    app = App.open(cfg, clock=clock)
    try:
        receiver.script = [(200, {}), (502, {})]
        delivered, failing = notify(app), notify(app)
        with app.deliverer() as d:
            d.deliver_due()
        pending = notify(app, "offer.expired")
    finally:
        app.close()
    path = write_config(tmp_path / "syncd.toml", cfg)
    result = CliRunner().invoke(main, ["--config", str(path), "outbox", "--json"])
    assert result.exit_code == 0, result.output
    rows = {e["event_id"]: e for e in json.loads(result.stdout)}
    assert rows[delivered]["state"] == "delivered"
    assert rows[failing]["state"] == "failing" and rows[failing]["attempts"] == 1
    assert "HTTP 502 Bad Gateway" in rows[failing]["last_error"]
    assert rows[pending]["state"] == "pending" and rows[pending]["topic"] == "offer.expired"
    result = CliRunner().invoke(main, ["--config", str(path), "outbox"], env={"COLUMNS": "200"})
    lines = result.stdout.splitlines()
    assert any(delivered in ln and "delivered" in ln for ln in lines), lines
    assert any("failing (1), next" in ln and "HTTP 502 Bad Gateway" in ln for ln in lines), lines
    assert any(pending in ln and "offer.expired" in ln and "pending" in ln for ln in lines)
    result = CliRunner().invoke(main, ["--config", str(path), "status"], env={"COLUMNS": "200"})
    assert "outbox: 2 pending" in result.stdout and "1 failing" in result.stdout


# -- failures never escape ------------------------------------------------------------------------


def test_connection_errors_and_timeouts_are_recorded_and_retried(
    tmp_path: Path, receiver: Receiver, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    app = App.open(make_config(tmp_path / "state"), clock=clock)
    try:
        event_id = notify(app, therapist_id="t-1", client_name="Jane Doe")
        refused = PlatformConfig(webhook_url=f"http://127.0.0.1:{closed_port}/", timeout=2)
        with caplog.at_level(logging.DEBUG, logger="syncd.delivery"):
            with delivery.Deliverer(app.sessions, refused, SECRET, clock, egress=LOOPBACK_OK) as d:
                assert d.deliver_due() == 0
            row = row_of(app, event_id)
            assert row.attempts == 1 and row.last_status is None
            assert row.last_error is not None and row.last_error.startswith("ConnectError")

            clock.advance(3600)
            receiver.stall.set()  # the platform accepts the connection and never answers
            slow = PlatformConfig(webhook_url=receiver.url, timeout=0.3)
            with delivery.Deliverer(app.sessions, slow, SECRET, clock, egress=LOOPBACK_OK) as d:
                assert d.deliver_due() == 0
            receiver.release.set()
            row = row_of(app, event_id)
            assert row.attempts == 2 and row.last_error is not None
            assert row.last_error.startswith("ReadTimeout")
        assert event_id in caplog.text
        assert "Jane" not in caplog.text, "payloads never reach the log"
    finally:
        app.close()


def test_a_broken_client_or_database_never_raises(tmp_path: Path, clock: Clock) -> None:
    app = App.open(make_config(tmp_path / "state"), clock=clock)
    try:
        event_id = notify(app)
        cfg = PlatformConfig(webhook_url="http://platform.invalid/hook")

        def explode(_request: httpx.Request) -> httpx.Response:
            raise RuntimeError("bug in a transport")

        client = httpx.Client(transport=httpx.MockTransport(explode))
        with delivery.Deliverer(app.sessions, cfg, SECRET, clock, client) as d:
            assert d.deliver_due() == 0
        client.close()
        row = row_of(app, event_id)
        assert row.attempts == 1 and row.last_error == "RuntimeError: bug in a transport"

        missing = database.make_engine(f"sqlite:///{tmp_path / 'nowhere' / 'x' / 'db'}")
        missing.dispose()
        (tmp_path / "nowhere" / "x").rmdir()
        broken = database.session_factory(missing)
        with delivery.Deliverer(broken, cfg, SECRET, clock) as d:
            assert d.deliver_due() == 0
    finally:
        app.close()


def test_the_webhook_secret_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(tmp_path / "state", platform={"webhook_url": "https://platform.test/h"})
    app = App.open(cfg)
    try:
        with pytest.raises(SecretError, match=r"no webhook secret.*SYNCD_WEBHOOK_SECRET"):
            app.webhook_secret()
        with pytest.raises(SecretError):
            Daemon(app)
        monkeypatch.setenv("SYNCD_WEBHOOK_SECRET", "from-env\n")
        assert app.webhook_secret() == b"from-env"
    finally:
        app.close()
    secret = tmp_path / "webhook.secret"
    secret.write_text("from-file\n")
    monkeypatch.delenv("SYNCD_WEBHOOK_SECRET")
    platform = {"webhook_url": "https://platform.test/h", "webhook_secret_file": str(secret)}
    app = App.open(make_config(tmp_path / "state", platform=platform))
    try:
        assert app.webhook_secret() == b"from-file"
        secret.write_text("")
        with pytest.raises(SecretError, match="is empty"):
            app.webhook_secret()
    finally:
        app.close()


def test_config_section_defaults_and_validation(tmp_path: Path) -> None:
    p = PlatformConfig()
    assert (p.webhook_url, p.webhook_secret_file, p.timeout) == ("", None, 10)
    assert (p.retry_base, p.retry_cap, p.batch, p.poll_interval) == (2, 600, 50, 1.0)
    from syncd.config import ConfigError, load

    bad = tmp_path / "bad.toml"
    bad.write_text('[platform]\nwebhook_url = "ftp://x"\n')
    with pytest.raises(ConfigError, match=r"platform\.webhook_url"):
        load(bad, env={})
    cfg = load(None, env={"SYNCD_PLATFORM_WEBHOOK_URL": "https://p.test/h"})
    assert cfg.platform.webhook_url == "https://p.test/h"


# -- the daemon's job -----------------------------------------------------------------------------


def test_the_daemon_delivers_notifications(tmp_path: Path, receiver: Receiver) -> None:
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET)
    platform = {
        "webhook_url": receiver.url,
        "webhook_secret_file": str(secret),
        "poll_interval": 0.05,
    }
    app = App.open(make_config(tmp_path / "state", platform=platform))
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["daemon"] = daemon = Daemon(app)
        started.set()
        await daemon.serve()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        event_id = notify(app)
        deadline = time.monotonic() + 120
        while event_id not in receiver.ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.ids() == [event_id]
        assert receiver.hits[0].signature_ok
    finally:
        if "daemon" in box:
            box["loop"].call_soon_threadsafe(box["daemon"].stop)
        thread.join(30)
        app.close()
    assert not thread.is_alive()
    assert row_of(app, event_id).delivered_at is not None

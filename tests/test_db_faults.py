"""The database failing under a pass (issue 7, part 5): PostgreSQL connections killed mid-pass,
and a SQLite file locked by another writer. The pass fails or waits; the next one converges with
nothing written twice."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DBAPIError

from syncd import operations
from syncd.app import App
from syncd.store import database, repo
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, ProxiedRequest, ProxyReply
from tests.support.calendar_view import read_calendar

N_SESSIONS = 30
KILL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def populate(app: App, proxy: HTTPProxy, server: CalDAVServer) -> int:
    assert app.ingestor().ingest(f.therapist()).ok
    base = f.future(days=3, hour=8)
    for i in range(N_SESSIONS):
        start = base + timedelta(days=i // 8, hours=i % 8)
        assert app.ingestor().ingest(f.session(f"s-{i}", start)).ok
    return operations.connect_caldav(
        app, "t-1", url=proxy.url, username=server.username, password=server.password
    )


def creates(proxy: HTTPProxy) -> Counter[str]:
    with proxy._lock:
        return Counter(r.path for r in proxy.requests if r.method == "PUT")


def assert_converged(app: App, proxy: HTTPProxy, server: CalDAVServer, conn_id: int) -> None:
    desired = app.engine().desired("t-1")
    assert desired is not None and len(desired) == N_SESSIONS
    with app.sessions() as s:
        (conn,) = repo.connections(s, "t-1")
        mirror = repo.mirror(s, conn_id)
    assert conn.calendar_url
    via_proxy = CalDAVServer(server.kind, proxy.url, server.username, server.password)
    seen = read_calendar(via_proxy, conn.calendar_url)  # a duplicate UID fails the read
    assert {uid: str(ev.event["X-SYNCD-HASH"]) for uid, ev in seen.items()} == {
        uid: e.content_hash for uid, e in desired.items()
    }
    assert {uid: m.content_hash for uid, m in mirror.items()} == {
        uid: e.content_hash for uid, e in desired.items()
    }


def on_put(proxy: HTTPProxy, nth: set[int], act: Callable[[], None]) -> None:
    """Run ``act`` when the proxy forwards the n-th PUT, for each n in ``nth``."""
    seen = [0]
    lock = threading.Lock()

    def hook(req: ProxiedRequest) -> ProxyReply | None:
        if req.method == "PUT":
            with lock:
                seen[0] += 1
                fire = seen[0] in nth
            if fire:
                act()
        return None

    proxy.on_request = hook


@pytest.fixture
def pg_app(tmp_path: Path, pg_url: str) -> Iterator[App]:
    application = App.open(make_config(tmp_path / "state", pg_url))
    yield application
    application.close()


@pytest.mark.postgres
def test_postgres_connections_killed_mid_pass_converge_on_the_next_pass(
    pg_app: App,
    pg_url: str,
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
) -> None:
    proxy = http_proxy(radicale_server.url)
    conn_id = populate(pg_app, proxy, radicale_server)
    killer = create_engine(database.normalize_url(pg_url), isolation_level="AUTOCOMMIT")
    killed: list[int] = []

    def kill() -> None:
        with killer.connect() as c:
            killed.append(len(c.execute(text(KILL)).all()))

    on_put(proxy, {5, 15, 25}, kill)
    try:
        try:
            first = pg_app.engine().run_pass("t-1")
        except DBAPIError:
            pass  # the pass failed on a dead connection: the next one must repair
        else:
            # pool_pre_ping replaced the dead connections: the pass went on regardless.
            assert not first.failed, first
    finally:
        proxy.on_request = None
        killer.dispose()
    assert sum(killed) >= 1, "the test killed no database connection"
    second = pg_app.engine().run_pass("t-1")
    assert not second.failed, second
    assert_converged(pg_app, proxy, radicale_server, conn_id)
    put = creates(proxy)
    assert len(put) == N_SESSIONS and set(put.values()) == {1}, put
    third = pg_app.engine().run_pass("t-1")
    assert [a for c in third.connections for a in c.actions] == []


@pytest.mark.postgres
def test_postgres_connection_killed_inside_a_transaction_fails_the_pass_and_the_next_repairs(
    pg_app: App,
    pg_url: str,
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
) -> None:
    """The kill lands between a server write and the commit that records it: the pass fails on
    the dead connection, and the next one adopts the unrecorded write instead of duplicating it."""
    proxy = http_proxy(radicale_server.url)
    conn_id = populate(pg_app, proxy, radicale_server)
    killer = create_engine(database.normalize_url(pg_url), isolation_level="AUTOCOMMIT")
    armed = threading.Event()
    killed: list[int] = []

    def kill_before_statement(*_args: object) -> None:
        if armed.is_set() and not killed:
            with killer.connect() as c:
                killed.append(len(c.execute(text(KILL)).all()))

    on_put(proxy, {7}, armed.set)
    event.listen(pg_app.db, "before_cursor_execute", kill_before_statement)
    try:
        with pytest.raises(DBAPIError):
            pg_app.engine().run_pass("t-1")
    finally:
        event.remove(pg_app.db, "before_cursor_execute", kill_before_statement)
        proxy.on_request = None
        killer.dispose()
    assert killed and killed[0] >= 1
    second = pg_app.engine().run_pass("t-1")
    assert not second.failed, second
    assert_converged(pg_app, proxy, radicale_server, conn_id)
    with proxy._lock:
        created = Counter(
            r.path
            for r in proxy.requests
            if r.method == "PUT" and r.headers.get("If-None-Match") == "*"
        )
    # Each entry was created once; the one whose record was lost is adopted (AlreadyExists,
    # then an update), never written under a second name.
    assert len(created) == N_SESSIONS and set(created.values()) == {1}, created
    put = creates(proxy)
    assert len(put) == N_SESSIONS and sum(put.values()) <= N_SESSIONS + 1, put
    third = pg_app.engine().run_pass("t-1")
    assert [a for c in third.connections for a in c.actions] == []


def test_sqlite_locked_by_another_writer_waits_and_writes_each_entry_once(
    sqlite_app: App,
    radicale_server: CalDAVServer,
    http_proxy: Callable[[str], HTTPProxy],
) -> None:
    proxy = http_proxy(radicale_server.url)
    conn_id = populate(sqlite_app, proxy, radicale_server)
    path = sqlite_app.db.url.database
    assert path
    holder = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    released = threading.Event()

    def lock() -> None:
        holder.execute("BEGIN EXCLUSIVE")

        def release() -> None:
            time.sleep(1.5)
            holder.execute("COMMIT")
            released.set()

        threading.Thread(target=release, daemon=True).start()

    on_put(proxy, {5}, lock)
    started = time.monotonic()
    try:
        try:
            first = sqlite_app.engine().run_pass("t-1")
        except DBAPIError:
            first = None  # gave up waiting: the next pass must repair
        assert released.wait(10)
    finally:
        proxy.on_request = None
        holder.close()
    if first is not None:
        assert not first.failed, first
        assert time.monotonic() - started >= 1.5  # it waited for the lock (busy_timeout)
    second = sqlite_app.engine().run_pass("t-1")
    assert not second.failed, second
    assert_converged(sqlite_app, proxy, radicale_server, conn_id)
    put = creates(proxy)
    assert len(put) == N_SESSIONS and set(put.values()) == {1}, put

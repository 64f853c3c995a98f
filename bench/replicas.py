"""Section 7: throughput of 1, 2 and 4 replicas sharing one PostgreSQL database, mirroring
therapists into one Radicale.

Every run starts from the same seeded database (a PostgreSQL template copy: the platform state
and one CalDAV connection per therapist, nothing mirrored yet) and a fresh Radicale. All the work
is held back (``due_at`` far ahead) until every replica has registered, then released in one
transaction, so interpreter start-up is not counted; the clock stops when the mirror status
tables match the projection for every therapist. The reference is the 1-replica run of the same
invocation.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench.run import add
from syncd.app import App
from syncd.config import Config
from syncd.embedded_radicale import EmbeddedRadicale, free_port
from syncd.store import queue
from syncd.store.tables import SyncQueueRow
from tests.conftest import PG_URL, make_config, write_config
from tests.support.replicas_harness import (
    Replicas,
    connect_all,
    expected_entries,
    missing,
    scratch_database,
    seed,
    therapist_ids,
)

REPLICAS = (1, 2, 4)
TIMEOUT = 600.0


def _config(state: Path, url: str) -> Config:
    return make_config(
        state,
        url,
        daemon={"lease_seconds": 30, "workers": 4, "poll_interval": 0.5},
        sync={"interval": 3600},  # one pass per therapist: the initial mirror, nothing periodic
        http={"enabled": False},
    )


def _admin_sql(statement: str) -> None:
    admin_url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url.render_as_string(False), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(statement))
    finally:
        admin.dispose()


def _clone(template: str) -> str:
    """A copy of the seeded database (``CREATE DATABASE … TEMPLATE``), for one run."""
    name = f"syncd_b_{uuid.uuid4().hex[:10]}"
    _admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"')
    return make_url(template).set(database=name).render_as_string(False)


def _drop(url: str) -> None:
    _admin_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _run(n: int, template: str, tids: list[str], port: int, tmp: Path) -> float:
    url = _clone(template)
    try:
        with EmbeddedRadicale(tmp / f"radicale-{n}", port=port):
            app = App.open(_config(tmp / "state", url))
            try:
                expected = expected_entries(app, tids)
                config = write_config(tmp / f"syncd-{n}.toml", _config(tmp / "state", url))
                logs = tmp / f"logs-{n}"
                logs.mkdir()
                with Replicas(config, n, logs) as replicas:
                    replicas.owner_ids(app, timeout=60)
                    began = time.perf_counter()
                    with app.sessions() as s:
                        now = datetime.now(UTC)
                        for tid in tids:
                            queue.mark_due(s, tid, now)
                        s.commit()
                    deadline = began + TIMEOUT
                    while missing(app, expected):
                        if not replicas.alive():
                            raise RuntimeError("a replica exited during the run")
                        if time.perf_counter() > deadline:
                            raise TimeoutError(f"{n} replicas: not mirrored in {TIMEOUT:.0f} s")
                        time.sleep(0.1)
                    took = time.perf_counter() - began
            finally:
                app.close()
    finally:
        _drop(url)
    return took


def bench_replicas(tmp: Path, *, quick: bool) -> None:
    therapists, per = (40, 5) if quick else (200, 10)
    tids = therapist_ids(therapists)
    port = free_port()
    try:
        _admin_sql("SELECT 1")
    except OperationalError as exc:
        add("7 replicas", "skipped", "PostgreSQL not reachable", PG_URL, type(exc).__name__, None)
        return
    with scratch_database(PG_URL) as template:
        app = App.open(_config(tmp / "state", template))
        try:
            seed(app, tids, per)
            # Connections name the Radicale of each run by its (fixed) port.
            connect_all(app, tids, f"http://127.0.0.1:{port}/")
            with app.sessions() as s:
                # Held back until the replicas are up; released by mark_due in _run.
                far = datetime.now(UTC) + timedelta(days=365)
                s.execute(update(SyncQueueRow).values(due_at=far))
                s.commit()
        finally:
            app.close()  # a template must have no connections
        times = {n: _run(n, template, tids, port, tmp) for n in REPLICAS}
    entries = therapists * per
    one = times[1]
    load = os.getloadavg()[0]
    for n, took in times.items():
        add(
            "7 replicas (PostgreSQL, radicale)",
            f"{n} replica{'s' if n > 1 else ''}, {therapists} therapists x {per} sessions",
            f"{took:.1f} s: {therapists / took:.1f} passes/s, {entries / took:.0f} entries/s "
            f"({one / took:.2f}x)",
            f"1 replica {one:.1f} s in this run",
            f"no target; {os.cpu_count()} cores shared with Radicale and PostgreSQL, "
            f"load {load:.1f}",
            None,
        )

"""``syncd status`` and ``syncd outbox`` as an operator reads them: one line per connection in
80 columns, problems first-class, a therapist filter and JSON."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

from syncd import operations, outbox
from syncd.app import App
from syncd.replica import replica_id
from syncd.store import replicas
from syncd.store.tables import ReplicaRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, unused_port
from tests.support.http_daemon import NoDaemon
from tests.support.proc import syncd_cmd
from tests.test_dashboard import sign_in

LONG_ID = "t-0f9e2c1a-5b7d-4c3e-9a8b-7d6e5f4c3b2a-with-a-long-suffix"


def run80(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}
    env.pop("SYNCD_CONFIG", None)
    return subprocess.run(
        syncd_cmd(config, *args), capture_output=True, text=True, timeout=60, env=env
    )


def test_status_is_one_line_per_connection_in_80_columns(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    cfg = make_config(tmp_path / "state")
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    down = unused_port()
    try:
        for tid in ("t-ok", LONG_ID, "t-down", "t-alone"):
            assert app.ingestor().ingest(f.therapist(tid)).ok
        assert app.ingestor().ingest(f.session("s-1", f.future(days=2), therapist_id="t-ok")).ok
        server = radicale_server
        operations.connect_caldav(
            app, "t-ok", url=server.url, username=server.username, password=server.password
        )
        operations.connect_caldav(
            app, LONG_ID, url=server.url, username=server.username, password=server.password
        )
        operations.connect_caldav(
            app,
            "t-down",
            url=f"http://127.0.0.1:{down}/a/very/long/path/to/a/calendar/home/that/is/long/",
            username="u",
            password="p",
            verify=False,
        )
        results = operations.resync(app, ["t-ok", LONG_ID, "t-down"])
        assert [r.synced for r in results] == [True, True, False]
        with app.sessions() as s:
            replicas.register(s, f"{'a-very-long-host-name-' * 3}:4242:abcdef", app.clock())
    finally:
        app.close()

    out = run80(path, "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    header = lines[0].split()
    assert header[:3] == ["therapist", "calendar", "state"] and "entries" in header
    rows = lines[1:5]  # by therapist id
    firsts = [r.split()[0] for r in rows]
    assert firsts[1:] == ["t-alone", "t-down", "t-ok"], rows
    # The long id is cut with an ellipsis, never wrapped onto a second line.
    assert firsts[0].endswith("…") and LONG_ID.startswith(firsts[0][:-1]), rows
    assert rows[3].split()[:3] == ["t-ok", "caldav", "#1"] and " ok " in rows[3]
    assert "error (1)" in rows[2] and "not connected" in rows[1]
    assert "4 therapists, 3 connections, 1 with problems" in out.stdout
    assert "no heartbeat" in out.stdout or "alive" in out.stdout  # the replica table

    problems = run80(path, "status", "--problems")
    assert problems.returncode == 0
    plines = problems.stdout.splitlines()
    assert all(len(line) <= 80 for line in plines), problems.stdout
    assert plines[0].startswith("t-down · caldav #3 · error (1)")
    error = " ".join(" ".join(plines[1:]).split("4 therapists")[0].split())
    assert f"could not reach 127.0.0.1:{down}: connection refused" in error
    assert "t-ok" not in problems.stdout

    only = run80(path, "status", "t-down", "t-alone")
    assert [ln.split()[0] for ln in only.stdout.splitlines()[1:3]] == ["t-alone", "t-down"]
    assert "t-ok" not in only.stdout

    doc = json.loads(run80(path, "status", "--json").stdout)
    by_id = {c["therapist_id"]: c for c in doc["connections"]}
    assert set(by_id) == {"t-ok", LONG_ID, "t-down", "t-alone"}
    assert by_id["t-ok"]["entries"] == 1 and not by_id["t-ok"]["problem"]
    assert by_id["t-down"]["problem"] and by_id["t-down"]["last_error"].endswith("refused")
    assert doc["replicas"][0]["state"] in ("alive", "silent")
    assert doc["outbox"] == {"pending": 0, "failing": 0, "oldest_pending_created_at": None}
    only_problems = json.loads(run80(path, "status", "--json", "--problems").stdout)
    assert [c["therapist_id"] for c in only_problems["connections"]] == ["t-down"]


def test_outbox_names_the_therapist_in_80_columns(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state")
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    try:
        now = app.clock()
        with app.sessions.begin() as s:
            outbox.enqueue(s, "availability.changed", {"therapist_id": LONG_ID}, now)
            outbox.enqueue(s, "conflict.detected", {"therapist_id": "t-7", "conflict_id": 1}, now)
    finally:
        app.close()
    out = run80(path, "outbox")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), out.stdout
    assert "therapist" in lines[0]
    assert "t-7" in lines[1] and "conflict.detected" in lines[1] and "pending" in lines[1]
    assert "availability.changed" in lines[2] and "t-0f9e2c1a" in lines[2]


def test_replicas_whose_process_is_gone_are_not_alive(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "state")
    path = write_config(tmp_path / "syncd.toml", cfg)
    app = App.open(cfg)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = replica_id().split(":")[0]
    now = app.clock()
    try:
        with app.sessions() as s:
            replicas.register(s, f"{host}:{os.getpid()}:aaaaaa", now)  # this process: alive
            s.merge(
                ReplicaRow(
                    id=f"{host}:{gone.pid}:bbbbbb",
                    host=host,
                    pid=gone.pid,
                    version="0.1.0",
                    started_at=now,
                    seen_at=now,  # a fresh heartbeat, but the process has exited
                )
            )
            s.merge(
                ReplicaRow(
                    id="elsewhere:7:cccccc",
                    host="elsewhere",
                    pid=7,
                    version="0.1.0",
                    started_at=now - timedelta(hours=1),
                    seen_at=now - timedelta(minutes=10),
                )
            )
            s.commit()
        states = {r.id.split(":")[1]: r.state for r in operations.replica_overview(app)}
        assert states == {str(os.getpid()): "alive", str(gone.pid): "gone", "7": "silent"}
        from syncd.metrics import snapshot

        with app.sessions() as s:
            snap = snapshot(s, now, timedelta(seconds=60))
        assert snap.replicas == {"alive": 1, "stale": 1, "gone": 1}
    finally:
        app.close()
    out = run80(path, "status")
    assert "process gone" in out.stdout and "no heartbeat" in out.stdout
    assert all(len(line) <= 80 for line in out.stdout.splitlines()), out.stdout


def test_dashboard_and_api_show_a_replica_whose_process_is_gone(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from syncd import auth
    from syncd.web import admin_api, dashboard
    from syncd.web.app import build_app

    app = App.open(make_config(tmp_path / "state"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = replica_id().split(":")[0]
    now = app.clock()
    try:
        with app.sessions() as s:
            s.add(
                ReplicaRow(
                    id=f"{host}:{gone.pid}:dddddd",
                    host=host,
                    pid=gone.pid,
                    version="0.1.0",
                    started_at=now,
                    seen_at=now,
                )
            )
            s.commit()
        with app.sessions.begin() as s:
            token = auth.create(s, "ops", auth.Scope.ADMIN, now)
        daemon = NoDaemon()
        routes = dashboard.routes(app, daemon) + admin_api.routes(app, daemon)
        web = build_app(app, daemon, routes)
        with TestClient(web) as tc:
            api = tc.get("/v1/admin/replicas", headers={"Authorization": f"Bearer {token}"})
            [replica] = api.json()["replicas"]
            assert (replica["state"], replica["alive"]) == ("gone", False)
            assert sign_in(tc, token).status_code == 303
            page = tc.get("/admin").text
            assert "Process gone" in page and ">Alive<" not in page
    finally:
        app.close()

"""``syncd demo``: the whole daemon on embedded defaults, with a calendar server to look at.

Starts Radicale on a loopback port, a SQLite database in a state folder, loads a sample
therapist (syncd.demo_story), mirrors their sessions, then plays a short story so whoever
subscribed sees changes arrive. Ctrl-C stops everything.

Without ``--state-dir`` the folder is temporary: removed when the demo stops, and, if the demo
was killed before it could, by the next demo to start. With ``--state-dir`` everything is kept
(the database, the key, Radicale's port and password), so a second run serves the same calendar
at the same URL through the same connection, and skips the sample data it already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from cryptography.fernet import Fernet
from rich.console import Console
from sqlalchemy import select

from syncd import config as config_mod
from syncd import operations, private_files
from syncd.app import App
from syncd.daemon import Daemon
from syncd.demo_story import THERAPIST, USERNAME, ZONE, Story, sample_events, story_steps
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.project import local_label
from syncd.replica import process_gone
from syncd.store import queue, repo
from syncd.store.tables import ConnectionRow, MirrorRow, TherapistRow

TEMP_PREFIX = "syncd-demo-"
OWNER_FILE = "demo.owner"  # "<host> <pid>" of the demo using a temporary folder
SERVER_FILE = "demo-server.json"  # Radicale's port and password, kept for the next run


def _write_config(state: Path) -> Path:
    path = state / "syncd.toml"
    path.write_text(
        "# written by syncd demo\n"
        f"[daemon]\nstate_dir = {json.dumps(str(state))}\npoll_interval = 0.1\n\n"
        "[sync]\ninterval = 5\n\n"
        "[http]\nport = 0\n\n"
        "[outbound]\nallow_private_hosts = true\n"
    )
    key = state / "secret.key"
    if not key.exists():
        private_files.write_private(key, Fernet.generate_key())
    return path


def clean_abandoned(parent: Path | None = None) -> list[Path]:
    """Remove the temporary folders of demos that were killed (their process is gone), so a
    SIGKILLed demo leaves nothing behind for long. Only this user's folders, on this host."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    removed = []
    for folder in parent.glob(f"{TEMP_PREFIX}*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            host, pid = (folder / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if process_gone(host, int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def _state_dir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        private_files.private_dir(requested)
        yield requested
        return
    clean_abandoned()
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    (tmp / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _server(state: Path) -> EmbeddedRadicale:
    """Radicale on the port and with the password of the last run in this folder, when there
    was one and the port is still free."""
    saved: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((state / SERVER_FILE).read_text())
    password = str(saved.get("password") or secrets.token_urlsafe(12))
    port = saved.get("port")
    folder = state / "radicale"
    if isinstance(port, int):
        server = EmbeddedRadicale(folder, username=USERNAME, password=password, port=port)
        try:
            server.start()
            return server
        except RuntimeError:
            pass  # taken by something else meanwhile: any free port will do
    server = EmbeddedRadicale(folder, username=USERNAME, password=password)
    server.start()
    path = state / SERVER_FILE
    path.write_text(json.dumps({"port": server.port, "password": password}))
    path.chmod(0o600)
    return server


async def _in_sync(app: App, timeout: float = 30) -> bool:
    """Wait until the mirror status table holds exactly the desired entries."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    engine = app.engine()
    while loop.time() < deadline:
        desired = engine.desired(THERAPIST) or {}
        with app.sessions() as s:
            rows = s.execute(select(MirrorRow.uid, MirrorRow.content_hash)).all()
        if dict(rows) == {uid: e.content_hash for uid, e in desired.items()}:
            return True
        await asyncio.sleep(0.1)
    return False


def _connect(app: App, server: EmbeddedRadicale) -> None:
    """Connect the sample therapist to ``server``, or point the connection of an earlier run at
    it (same connection, same calendar, its mirror kept) when Radicale got another port."""
    password = server.password or ""
    with app.sessions.begin() as s:
        mine = select(ConnectionRow).where(ConnectionRow.therapist_id == THERAPIST)
        row = s.scalars(mine).first()
        if row is not None:
            old = urlsplit(row.url)
            new = urlsplit(server.url)
            if row.calendar_url:
                row.calendar_url = urlsplit(row.calendar_url)._replace(netloc=new.netloc).geturl()
            row.url = old._replace(netloc=new.netloc).geturl()
            row.secret = app.box.seal(password)
            row.state, row.failures, row.last_error = "new", 0, None
            queue.mark_due(s, THERAPIST, app.clock())
            return
    operations.connect_caldav(app, THERAPIST, url=server.url, username=USERNAME, password=password)


def run_demo(
    state_dir: Path | None, console: Console, step_delay: float = 3.0, hold_minutes: float = 3.0
) -> None:
    with _state_dir(state_dir) as state:
        config_path = _write_config(state)
        cfg = config_mod.load(config_path)
        console.print("[bold]syncd demo[/]: starting an embedded Radicale CalDAV server…")
        server = _server(state)
        try:
            app = App.open(cfg)
            try:
                asyncio.run(_play(app, server, console, config_path, step_delay, hold_minutes))
            finally:
                app.close()
        finally:
            server.stop()
    console.print("demo stopped")


async def _play(
    app: App,
    server: EmbeddedRadicale,
    console: Console,
    config_path: Path,
    step_delay: float,
    hold_minutes: float,
) -> None:
    daemon = Daemon(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    serving = asyncio.create_task(daemon.serve())

    story = Story(datetime.now(ZoneInfo(ZONE)).date())
    ingest = app.ingestor()
    now = datetime.now(UTC)
    with app.sessions() as s:
        again = s.get(TherapistRow, THERAPIST) is not None
    # Sent long enough ago that the default 24-hour hold runs out a few minutes from now.
    sent = now - timedelta(hours=app.config.offers.hold_hours) + timedelta(minutes=hold_minutes)
    if not again:
        for e in sample_events(story, sent):
            outcome = ingest.ingest(e)
            if not outcome.ok:
                console.print(f"[red]sample event refused: {outcome.error}[/]", highlight=False)
    await loop.run_in_executor(None, _connect, app, server)
    if not await _in_sync(app):
        console.print("[red]the first mirror did not complete; see the log above[/]")
    with app.sessions() as s:
        calendar = repo.connections(s, THERAPIST)[0].calendar_url
    if again:
        what = (
            f"  The sample data of an earlier run, for therapist {THERAPIST} ({ZONE}), kept in\n"
            f"  {config_path.parent}.\n"
        )
    else:
        what = (
            f"  Mirrored for therapist {THERAPIST} (time zone {ZONE}): 8 sessions, one blocked by\n"
            f"  a pending offer whose 3 held times are released at "
            f"{local_label(sent + timedelta(hours=app.config.offers.hold_hours), ZONE)},\n"
            f"  and a weekly reserved slot that skips the week its client has a session.\n"
        )
    console.print(
        "\n[bold green]Calendar ready.[/] Subscribe with any CalDAV client "
        "(Thunderbird, Apple Calendar, khal/vdirsyncer):\n"
        f"  CalDAV URL: {server.url}\n"
        f"  Calendar URL: {calendar}\n"
        f"  Username: {USERNAME}\n"
        f"  Password: {server.password}\n"
        f"{what}"
        f"Send your own events from another terminal:\n"
        f"  syncd --config {config_path} ingest events.jsonl\n"
        f"  syncd --config {config_path} status\n",
        highlight=False,
        soft_wrap=True,
    )
    if not again:
        for message, event in story_steps(story, now):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(serving), timeout=step_delay)
            if serving.done():
                break
            ingest.ingest(event)
            console.print(f"→ {message}", highlight=False, soft_wrap=True)
    if not serving.done():
        await _in_sync(app)
        console.print(
            "Story done. The holds of offer o-6 go by themselves when it expires; edit or delete "
            "any entry in your calendar and watch syncd restore it. Press Ctrl-C to stop."
            if not again
            else "Press Ctrl-C to stop.",
            highlight=False,
            soft_wrap=True,
        )
    await serving

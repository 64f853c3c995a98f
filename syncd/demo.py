"""``syncd demo``: the whole daemon on embedded defaults, with a calendar server to look at.

Starts Radicale on a free loopback port, a SQLite database in a state folder, loads a sample
therapist, mirrors their sessions, then plays a short story (a session moved, one cancelled) so
whoever subscribed sees changes arrive. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.fernet import Fernet
from rich.console import Console
from sqlalchemy import select

from syncd import config as config_mod
from syncd import operations
from syncd.app import App
from syncd.daemon import Daemon
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.store.tables import MirrorRow

ZONE = "Europe/London"
THERAPIST = "t-demo"
USERNAME = "therapist"


def _at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), ZoneInfo(ZONE)).astimezone(UTC)


class Story:
    """Sample platform events, numbered so every delivery has a fresh event id."""

    def __init__(self, today: date) -> None:
        self.today = today
        self._n = 0

    def _event(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        self._n += 1
        return {
            "id": f"demo-{self._n}",
            "type": type_,
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": data,
        }

    def therapist(self) -> dict[str, Any]:
        hours = [{"weekday": d, "start": "09:00", "end": "17:00"} for d in range(5)]
        return self._event(
            "therapist.upserted",
            {
                "id": THERAPIST,
                "version": 1,
                "display_name": "Dr Sam Example",
                "timezone": ZONE,
                "working_hours": hours,
                "slot_minutes": 50,
                "buffer_minutes": 10,
            },
        )

    def session(
        self, sid: str, version: int, day: int, hh: int, loc: dict[str, str], **extra: Any
    ) -> dict[str, Any]:
        start = _at(self.today + timedelta(days=day), hh)
        data = {
            "id": sid,
            "version": version,
            "therapist_id": THERAPIST,
            "client": {"id": f"c-{sid}", "name": "Jane Doe"},
            "kind": "follow_up",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=50)).isoformat(),
            "location": loc,
            "status": "confirmed",
        }
        data.update(extra)
        return self._event("session.upserted", data)


IN_PERSON = {"type": "in_person", "address": "10 Harley Street, London"}
VIDEO = {"type": "video"}
PHONE = {"type": "phone"}


def _write_config(state: Path) -> Path:
    path = state / "syncd.toml"
    path.write_text(
        "# written by syncd demo\n"
        f"[daemon]\nstate_dir = {json.dumps(str(state))}\npoll_interval = 0.1\n\n"
        "[sync]\ninterval = 5\n"
    )
    key = state / "secret.key"
    if not key.exists():
        key.write_bytes(Fernet.generate_key())
        key.chmod(0o600)
    return path


@contextlib.contextmanager
def _state_dir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    tmp = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def run_demo(state_dir: Path | None, console: Console, step_delay: float = 3.0) -> None:
    with _state_dir(state_dir) as state:
        config_path = _write_config(state)
        cfg = config_mod.load(config_path)
        password = secrets.token_urlsafe(12)
        radicale_dir = state / "radicale"
        radicale_dir.mkdir(exist_ok=True)
        console.print("[bold]syncd demo[/]: starting an embedded Radicale CalDAV server…")
        with EmbeddedRadicale(radicale_dir, username=USERNAME, password=password) as server:
            app = App.open(cfg)
            try:
                asyncio.run(_play(app, server, console, config_path, step_delay))
            finally:
                app.close()
    console.print("demo stopped")


async def _play(
    app: App, server: EmbeddedRadicale, console: Console, config_path: Path, step_delay: float
) -> None:
    daemon = Daemon(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    serving = asyncio.create_task(daemon.serve())

    story = Story(datetime.now(ZoneInfo(ZONE)).date())
    ingest = app.ingestor()
    events = [
        story.therapist(),
        story.session("s-1", 1, 1, 10, IN_PERSON),
        story.session("s-2", 1, 1, 14, VIDEO),
        story.session("s-3", 1, 2, 9, PHONE),
        story.session("s-4", 1, 3, 11, VIDEO, status="unconfirmed"),
        story.session("s-5", 1, 7, 10, IN_PERSON),
    ]
    for e in events:
        ingest.ingest(e)
    await loop.run_in_executor(
        None,
        lambda: operations.connect_caldav(
            app, THERAPIST, url=server.url, username=USERNAME, password=server.password or ""
        ),
    )
    if not await _in_sync(app):
        console.print("[red]the first mirror did not complete; see the log above[/]")
    with app.sessions() as s:
        from syncd.store import repo

        calendar = repo.connections(s, THERAPIST)[0].calendar_url
    console.print(
        "\n[bold green]Calendar ready.[/] Subscribe with any CalDAV client "
        "(Thunderbird, Apple Calendar, khal/vdirsyncer):\n"
        f"  CalDAV URL: {server.url}\n"
        f"  Calendar URL: {calendar}\n"
        f"  Username: {USERNAME}\n"
        f"  Password: {server.password}\n"
        f"  Mirrored: 5 sessions for therapist {THERAPIST} (time zone {ZONE})\n"
        f"Send your own events from another terminal:\n"
        f"  syncd --config {config_path} ingest events.jsonl\n"
        f"  syncd --config {config_path} status\n",
        highlight=False,
    )
    steps = [
        (
            "Session s-2 moved to the day after, 15:00 (client requested): updated in place",
            story.session(
                "s-2", 2, 2, 15, VIDEO, change={"reason": "client_requested", "by": "client"}
            ),
        ),
        (
            "Session s-3 cancelled by the client: removed from the calendar",
            story.session(
                "s-3",
                2,
                2,
                9,
                PHONE,
                status="cancelled",
                cancellation={"reason": "client_cancelled", "by": "client"},
            ),
        ),
        (
            "Session s-4 confirmed by the therapist: no longer tentative",
            story.session("s-4", 2, 3, 11, VIDEO),
        ),
    ]
    for message, event in steps:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(serving), timeout=step_delay)
        if serving.done():
            break
        ingest.ingest(event)
        console.print(f"→ {message}", highlight=False)
    if not serving.done():
        await _in_sync(app)
        console.print(
            "Story done: 4 sessions mirrored. Edit or delete them in your calendar "
            "and watch syncd restore them. Press Ctrl-C to stop.",
            highlight=False,
        )
    await serving

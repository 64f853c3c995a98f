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
from syncd import operations, private_files
from syncd.app import App
from syncd.daemon import Daemon
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.project import local_label
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
            "client": {"id": extra.pop("client_id", f"c-{sid}"), "name": "Jane Doe"},
            "kind": "follow_up",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=50)).isoformat(),
            "location": loc,
            "status": "confirmed",
        }
        data.update(extra)
        return self._event("session.upserted", data)

    def offer(
        self,
        oid: str,
        sid: str,
        version: int,
        slots: list[tuple[int, int]],
        *,
        sent_at: datetime,
        state: str = "pending",
        **extra: Any,
    ) -> dict[str, Any]:
        alternatives = []
        for day, hh in slots:
            start = _at(self.today + timedelta(days=day), hh)
            alternatives.append(
                {"start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat()}
            )
        data = {
            "id": oid,
            "version": version,
            "session_id": sid,
            "alternatives": alternatives,
            "sent_at": sent_at.isoformat(),
            "state": state,
        }
        data.update(extra)
        return self._event("offer.upserted", data)

    def reservation(self, rid: str, client_id: str, first: date, hh: int) -> dict[str, Any]:
        return self._event(
            "reserved_slot.upserted",
            {
                "id": rid,
                "version": 1,
                "therapist_id": THERAPIST,
                "client": {"id": client_id, "name": "John Roe"},
                "first_start_local": datetime.combine(first, time(hh)).isoformat(),
                "timezone": ZONE,
                "duration_minutes": 50,
                "rrule": "FREQ=WEEKLY",
                "state": "active",
            },
        )


IN_PERSON = {"type": "in_person", "address": "10 Harley Street, London"}
VIDEO = {"type": "video"}
PHONE = {"type": "phone"}


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


@contextlib.contextmanager
def _state_dir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        private_files.private_dir(requested)
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


def run_demo(
    state_dir: Path | None, console: Console, step_delay: float = 3.0, hold_minutes: float = 3.0
) -> None:
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
                asyncio.run(_play(app, server, console, config_path, step_delay, hold_minutes))
            finally:
                app.close()
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
    # Sent long enough ago that the default 24-hour hold runs out a few minutes from now.
    sent = now - timedelta(hours=app.config.offers.hold_hours) + timedelta(minutes=hold_minutes)
    next_week = story.today + timedelta(days=7 - story.today.weekday() + 1)  # a Tuesday
    events = [
        story.therapist(),
        story.session("s-1", 1, 1, 10, IN_PERSON),
        story.session("s-2", 1, 1, 14, VIDEO),
        story.session("s-3", 1, 2, 9, PHONE),
        story.session("s-4", 1, 3, 11, VIDEO, status="unconfirmed"),
        story.session("s-5", 1, 7, 10, IN_PERSON),
        story.session("s-6", 1, 4, 13, VIDEO),
        story.session("s-7", 1, 5, 9, IN_PERSON),
        story.session("s-8", 1, 5, 16, PHONE),
        story.reservation("r-1", "c-weekly", next_week, 8),
        story.session(
            "s-9", 1, (next_week - story.today).days + 7, 8, IN_PERSON, client_id="c-weekly"
        ),
        story.offer("o-6", "s-6", 1, [(6, 9), (6, 11), (6, 15)], sent_at=sent),
    ]
    for e in events:
        outcome = ingest.ingest(e)
        if not outcome.ok:
            console.print(f"[red]sample event refused: {outcome.error}[/]", highlight=False)
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
        f"  Mirrored for therapist {THERAPIST} (time zone {ZONE}): 8 sessions, one blocked by\n"
        f"  a pending offer whose 3 held times are released at "
        f"{local_label(sent + timedelta(hours=app.config.offers.hold_hours), ZONE)},\n"
        f"  and a weekly reserved slot that skips the week its client has a session.\n"
        f"Send your own events from another terminal:\n"
        f"  syncd --config {config_path} ingest events.jsonl\n"
        f"  syncd --config {config_path} status\n",
        highlight=False,
        soft_wrap=True,
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
        (
            "Offer for s-7 sent: two alternative times held, the original slot blocked",
            story.offer("o-7", "s-7", 1, [(8, 9), (8, 11)], sent_at=now),
        ),
        (
            "The client accepted the second alternative: s-7 moved in place, holds released",
            story.offer(
                "o-7",
                "s-7",
                2,
                [(8, 9), (8, 11)],
                sent_at=now,
                state="accepted",
                accepted_alternative=1,
                responded_at=datetime.now(UTC).isoformat(),
            ),
        ),
        (
            "Offer for s-8 rejected by the client: the session is cancelled and removed",
            story.offer(
                "o-8",
                "s-8",
                1,
                [(9, 9)],
                sent_at=now,
                state="rejected",
                responded_at=datetime.now(UTC).isoformat(),
            ),
        ),
    ]
    for message, event in steps:
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
            "any entry in your calendar and watch syncd restore it. Press Ctrl-C to stop.",
            highlight=False,
            soft_wrap=True,
        )
    await serving

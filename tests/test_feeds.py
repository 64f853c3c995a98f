"""ICS feeds: ``GET /feeds/<token>.ics`` serves exactly what the mirror would hold, privately and
cacheably; tokens are stored hashed, rotate, and unknown ones are 404. A real client
(vdirsyncer's ``http`` storage) reads the feed from a real ``syncd run``."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import icalendar
import pytest
from sqlalchemy import select

from syncd import feeds
from syncd.app import App
from syncd.operations import OperationError
from syncd.project import Entry, project
from syncd.store import repo
from syncd.store.tables import FeedTokenRow
from syncd.web.feeds_api import etag_matches
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.http_daemon import with_http_daemon
from tests.support.proc import jsonl, run_syncd, start_syncd, wait_for

T = TypeVar("T")
CLIENT_WORDS = ("Jane", "Doe", "Robert", "Roe")


def platform_events() -> list[dict[str, Any]]:
    """Sessions (one unconfirmed, one cancelled), a pending offer with two holds, and a reserved
    weekly slot, in a zone with DST; every client has a name the feed must not show."""
    start = f.future(days=7)
    alts = [start + timedelta(days=1, hours=h) for h in (0, 3)]
    return [
        f.therapist("t-1", zone="Europe/London"),
        f.session("s-1", start, client_name="Jane Doe"),
        f.session("s-2", start + timedelta(days=2), status="unconfirmed", client_name="Jane Doe"),
        f.session("s-3", start + timedelta(days=3), client_name="Jane Doe"),
        f.session(
            "s-3",
            start + timedelta(days=3),
            version=2,
            status="cancelled",
            client_name="Jane Doe",
            cancellation={"reason": "client_cancelled", "by": "client"},
        ),
        f.offer("o-1", "s-1", alts),
        f.event(
            "reserved_slot.upserted",
            {
                "id": "r-1",
                "version": 1,
                "therapist_id": "t-1",
                "client": {"id": "c-r", "name": "Robert Roe"},
                "first_start_local": (start + timedelta(days=10)).strftime("%Y-%m-%dT09:00:00"),
                "timezone": "Europe/London",
                "duration_minutes": 50,
                "rrule": "FREQ=WEEKLY",
                "state": "active",
            },
        ),
    ]


def mirrored(app: App) -> dict[str, Entry]:
    """What a connected calendar would be given for t-1: the projection, by UID."""
    with app.sessions() as s:
        state = repo.platform_state(s, "t-1")
    assert state is not None
    return project(state, app.clock())


def mirrored_uids(app: App) -> set[str]:
    return set(mirrored(app))


def feed_uids(body: str) -> set[str]:
    cal = icalendar.Calendar.from_ical(body)
    return {str(ev["UID"]) for ev in cal.walk("VEVENT")}


def seeded(app: App) -> App:
    outcomes = app.ingestor().ingest_many(platform_events())
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    return app


def with_http(app: App, check: Callable[[str], T], timeout: float = 15) -> T:
    """Run an in-process daemon and ``check(listen_url)`` on a worker thread (blocking HTTP),
    so the event loop keeps serving while the check runs."""
    return with_http_daemon(app, lambda _daemon, url: check(url), timeout)


def path_of(url: str) -> str:
    return urlsplit(url).path


# -- in process --------------------------------------------------------------------------------


def test_feed_serves_the_mirrored_entries_privately_with_etag(sqlite_app: App) -> None:
    app = seeded(sqlite_app)
    url = feeds.feed_url(app, "t-1")
    path = path_of(url)
    assert url.startswith(app.config.http.base_url + "/feeds/") and url.endswith(".ics")
    token = path.removeprefix("/feeds/").removesuffix(".ics")
    assert len(token) >= 43  # 256 bits, URL-safe base64
    with app.sessions() as s:
        stored = s.scalars(select(FeedTokenRow.token_hash)).all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]  # the hash, never the token
    expected = mirrored_uids(app)
    assert any(u.startswith("syncd-hold-") for u in expected)
    assert "syncd-session-s-3@syncd" not in expected  # cancelled: not mirrored, not in the feed

    def check(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            first = http.get(path)
            assert first.status_code == 200, first.text
            assert first.headers["content-type"] == "text/calendar; charset=utf-8"
            assert first.headers["cache-control"] == "private, max-age=300"
            etag = first.headers["etag"]
            assert etag == '"' + hashlib.sha256(first.content).hexdigest() + '"'
            body = first.text
            assert feed_uids(body) == expected
            cal = icalendar.Calendar.from_ical(body)
            assert [str(z["TZID"]) for z in cal.walk("VTIMEZONE")] == ["Europe/London"]
            assert str(cal["X-WR-CALNAME"]) == app.config.caldav.calendar_name
            assert "RRULE:FREQ=WEEKLY" in body
            for word in CLIENT_WORDS:
                assert word not in body
            assert all(str(ev["CLASS"]) == "PRIVATE" for ev in cal.walk("VEVENT"))

            again = http.get(path)  # nothing changed: byte for byte the same
            assert (again.content, again.headers["etag"]) == (first.content, etag)
            cached = http.get(path, headers={"If-None-Match": etag})
            assert cached.status_code == 304 and cached.content == b""
            assert cached.headers["etag"] == etag
            weak = http.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
            assert weak.status_code == 304
            stale = http.get(path, headers={"If-None-Match": '"not-it"'})
            assert stale.status_code == 200

            for guess in ("x" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), "a" * 500):
                miss = http.get(f"/feeds/{guess}.ics")
                assert miss.status_code == 404
                assert miss.json() == {"status": 404, "error": "Not Found"}
            assert http.get(f"/feeds/{token}").status_code == 404  # no .ics: no route

    with_http(app, check)


def test_feed_changes_with_the_platform_and_drops_cancelled_sessions(sqlite_app: App) -> None:
    app = seeded(sqlite_app)
    path = path_of(feeds.feed_url(app, "t-1"))

    def get(base: str) -> tuple[str, str]:
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.get(path)
            assert r.status_code == 200
            return r.text, r.headers["etag"]

    body1, etag1 = with_http(app, get)
    cancel = f.session(
        "s-2",
        f.future(days=9),
        version=2,
        status="cancelled",
        cancellation={"reason": "client_cancelled", "by": "client"},
    )
    assert app.ingestor().ingest(cancel).ok
    body2, etag2 = with_http(app, get)
    assert etag2 != etag1
    assert "syncd-session-s-2@syncd" in feed_uids(body1)
    assert feed_uids(body2) == mirrored_uids(app)
    assert "syncd-session-s-2@syncd" not in feed_uids(body2)


def test_feed_url_is_shown_once_and_rotation_invalidates(app: App) -> None:
    """On both databases (the ``app`` fixture runs on SQLite and PostgreSQL)."""
    seeded(app)
    first = feeds.feed_url(app, "t-1")
    with pytest.raises(feeds.FeedExists, match="--rotate"):
        feeds.feed_url(app, "t-1")
    second = feeds.feed_url(app, "t-1", rotate=True)
    assert second != first
    assert feeds.render_feed(app, path_of(first)[7:-4]) is None
    rendered = feeds.render_feed(app, path_of(second)[7:-4])
    assert rendered is not None and feed_uids(rendered[0]) == mirrored_uids(app)
    with pytest.raises(OperationError, match="unknown therapist"):
        feeds.feed_url(app, "t-nobody")


def test_empty_feed_is_a_valid_calendar(sqlite_app: App) -> None:
    assert sqlite_app.ingestor().ingest(f.therapist("t-2")).ok
    token = path_of(feeds.feed_url(sqlite_app, "t-2"))[7:-4]
    rendered = feeds.render_feed(sqlite_app, token)
    assert rendered is not None
    cal = icalendar.Calendar.from_ical(rendered[0])
    assert cal.walk("VEVENT") == [] and str(cal["VERSION"]) == "2.0"
    assert feeds.render_feed(sqlite_app, token) == rendered  # deterministic


def test_if_none_match_parsing() -> None:
    assert etag_matches('"a"', '"a"')
    assert etag_matches('W/"a"', '"a"')
    assert etag_matches('"b", "a"', '"a"')
    assert etag_matches("*", '"a"')
    assert not etag_matches('"b"', '"a"')
    assert not etag_matches(None, '"a"')
    assert not etag_matches("", '"a"')


# -- a real `syncd run`, the CLI and a real client ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def vdirsyncer_exe() -> str:
    exe = Path(sys.executable).parent / "vdirsyncer"
    found = str(exe) if exe.exists() else shutil.which("vdirsyncer")
    if found is None:
        pytest.fail("vdirsyncer is not installed (pip install -e '.[test]')")
    return found


def vdirsyncer_sync(url: str, work: Path, entries: dict[str, Entry]) -> set[str]:
    """Sync the feed into a fresh filesystem storage with vdirsyncer; the syncd UIDs it stored.

    vdirsyncer's ``http`` storage replaces every item's UID with a hash of the item (its
    ``_ignore_uids``, not configurable), so the stored items are mapped back to syncd's UIDs by
    ``X-SYNCD-HASH``: the content hash of the entry, which covers its UID."""
    shutil.rmtree(work, ignore_errors=True)
    local = work / "calendar"
    local.mkdir(parents=True)
    config = work / "config"
    config.write_text(
        f"""[general]
status_path = "{work / "status"}/"

[pair feed]
a = "feed_remote"
b = "feed_local"
collections = null

[storage feed_remote]
type = "http"
url = "{url}"

[storage feed_local]
type = "filesystem"
path = "{local}/"
fileext = ".ics"
"""
    )
    exe = vdirsyncer_exe()
    for step in ("discover", "sync"):
        done = subprocess.run(
            [exe, "--config", str(config), step],
            capture_output=True,
            text=True,
            timeout=60,
            input="y\n",
        )
        assert done.returncode == 0, f"vdirsyncer {step}: {done.stdout}\n{done.stderr}"
    by_hash = {e.content_hash: uid for uid, e in entries.items()}
    uids = []
    for item in sorted(local.glob("*.ics")):
        text = item.read_text()
        cal = icalendar.Calendar.from_ical(text)
        events = cal.walk("VEVENT")
        assert len(events) == 1 and cal.walk("VTIMEZONE"), text
        fingerprint = str(events[0]["X-SYNCD-HASH"])
        assert fingerprint in by_hash, f"vdirsyncer stored an entry syncd never made: {text}"
        uids.append(by_hash[fingerprint])
        for word in CLIENT_WORDS:
            assert word not in text
    assert len(uids) == len(set(uids)), "an entry stored twice"
    return set(uids)


def test_real_daemon_cli_rotation_and_vdirsyncer(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path / "state", http={"port": port})
    config = write_config(tmp_path / "syncd.toml", cfg)
    ingested = run_syncd(config, "ingest", "-", stdin=jsonl(platform_events()))
    assert ingested.returncode == 0, ingested.stderr

    created = run_syncd(config, "feed-url", "t-1")
    assert created.returncode == 0, created.stderr
    url = created.stdout.strip().splitlines()[-1]
    assert url.startswith(f"http://127.0.0.1:{port}/feeds/") and url.endswith(".ics")

    again = run_syncd(config, "feed-url", "t-1")
    assert again.returncode == 1
    assert "already has an ICS feed" in again.stderr and "--rotate" in again.stderr
    assert "/feeds/" not in again.stdout + again.stderr

    unknown = run_syncd(config, "feed-url", "t-nobody")
    assert unknown.returncode == 1 and "unknown therapist" in unknown.stderr

    app = App.open(cfg, migrate=False)
    try:
        entries = mirrored(app)
    finally:
        app.close()
    expected = set(entries)

    proc = start_syncd(config, "run", log=tmp_path / "run.log")
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                log = (tmp_path / "run.log").read_text()
                raise AssertionError(f"syncd run exited with {proc.returncode}:\n{log}")
            try:
                return httpx.get(base + "/healthz", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "syncd run to serve HTTP")
        assert httpx.get(url, timeout=10).status_code == 200

        assert vdirsyncer_sync(url, tmp_path / "vdir", entries) == expected

        rotated = run_syncd(config, "feed-url", "t-1", "--rotate")
        assert rotated.returncode == 0, rotated.stderr
        new_url = rotated.stdout.strip().splitlines()[-1]
        assert new_url != url and new_url.startswith(f"{base}/feeds/")
        assert httpx.get(url, timeout=10).status_code == 404
        fresh = httpx.get(new_url, timeout=10)
        assert fresh.status_code == 200 and feed_uids(fresh.text) == expected
        assert httpx.get(f"{base}/feeds/guessed-token.ics", timeout=10).status_code == 404

        # The client notices too: the old URL fails, the new one syncs the same entries.
        assert vdirsyncer_sync(new_url, tmp_path / "vdir2", entries) == expected
        with pytest.raises(AssertionError, match="vdirsyncer"):
            vdirsyncer_sync(url, tmp_path / "vdir3", entries)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Hostile input: Hypothesis-generated platform events against the ingestor, ``syncd ingest -``
and ``POST /v1/events``, and broken calendar data read back from a CalDAV server. Every payload
is refused with a one-line error (or a 4xx) or accepted as valid; never a traceback, a crash or
a 5xx; and refused input leaves the stored state unchanged."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from connectors.errors import ConnectorError
from syncd import operations, outbox, reconcile
from syncd.app import App
from syncd.daemon import Daemon
from syncd.ingest import Result
from syncd.store.tables import Base, BusyIntervalRow, ConnectionRow
from tests import factories as f
from tests.caldav_servers import CalDAVServer
from tests.calendar_view import raw_request
from tests.conftest import make_config, write_config
from tests.http_daemon import with_http_daemon
from tests.proc import jsonl, run_syncd

SECRET = b"hostile-ingest-secret"
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- payloads ------------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        "\x00",
        "a\x00b",
        "\ud800",
        "\udfff lone low surrogate",
        "\u202eRTL override\u202c",
        "\u200f\u05e9\u05dc\u05d5\u05dd",
        "\ufeffBOM",
        "e\u0301" * 50,
        "\U0001f600" * 100,
        "line\nbreak\r\n",
        "../../etc/passwd",
        "' OR 1=1; --",
        "x" * 5000,
    ]
)
HUGE = st.sampled_from([10_000, 1_000_000]).map(lambda n: "A" * n)
EXTREME_DATES = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59+14:00",
        "0001-01-01T00:00:00-12:00",
        "2026-02-30T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "2026-03-29T01:30:00",
        "10000-01-01T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "2026-01-01T10:00:00+25:00",
        "not a date",
        "",
        "1e308",
    ]
)
BAD_ZONES = st.sampled_from(
    [
        "",
        "Nowhere/City",
        "../../etc/localtime",
        "UTC\x00",
        "Europe/London ",
        "+05:00",
        "\ud800",
        "Etc/GMT+99",
        "/etc/passwd",
        "a" * 300,
        "EST5EDT",
        "posixrules",
        "Factory",
    ]
)
BAD_RRULES = st.sampled_from(
    [
        "",
        "FREQ=SECONDLY",
        "FREQ=SECONDLY;INTERVAL=1",
        "FREQ=YEARLY;BYMONTH=13",
        "FREQ=NONE",
        "FREQ=WEEKLY;COUNT=-1",
        "FREQ=WEEKLY;UNTIL=99999999T000000Z",
        "FREQ=DAILY;BYHOUR=25",
        "FREQ=WEEKLY;BYDAY=XX",
        "RRULE:FREQ=WEEKLY",
        "FREQ=WEEKLY\nFREQ=DAILY",
        "FREQ=MINUTELY;COUNT=1000000",
        "FREQ=WEEKLY;INTERVAL=0",
        "FREQ=MONTHLY;BYMONTHDAY=31;BYSETPOS=400",
        "x" * 500,
        "FREQ=WEEKLY;" * 40,
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
HOSTILE_LEAF = st.one_of(
    JSON_VALUES,
    ODD_TEXT,
    HUGE,
    EXTREME_DATES,
    BAD_ZONES,
    BAD_RRULES,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.just(float("1e308")),
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def valid_events() -> list[dict[str, Any]]:
    start = f.future(days=9)
    return [
        f.therapist(),
        f.session("s-h", start),
        f.event(
            "reserved_slot.upserted",
            {
                "id": "r-h",
                "version": 1,
                "therapist_id": "t-1",
                "client": {"id": "c-77", "name": "Jane Doe"},
                "first_start_local": "2027-03-02T10:00:00",
                "timezone": "Europe/London",
                "duration_minutes": 50,
                "rrule": "FREQ=WEEKLY;BYDAY=TU",
                "state": "active",
            },
        ),
    ]


class Raw(str):
    """A payload already in JSON text form (too deep for json.dumps to build)."""


def deep_text(depth: int) -> Raw:
    return Raw('{"id": ' * depth + "1" + "}" * depth if depth % 2 else "[" * depth + "]" * depth)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A valid event with one to three places replaced by something hostile."""
    event = copy.deepcopy(draw(st.sampled_from(valid_events())))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(event)[1:]))
        leaf = draw(st.one_of(HOSTILE_LEAF, st.integers(50, 400).map(nested)))
        target = event
        for key in where[:-1]:
            target = target[key]
        if draw(st.booleans()) or not isinstance(target, dict):
            target[where[-1]] = leaf
        else:
            del target[where[-1]]
    return event


PAYLOADS = st.one_of(mutated(), mutated(), JSON_VALUES, st.integers(100, 100_000).map(deep_text))


def row_counts(app: App) -> dict[str, int]:
    with app.sessions() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }


def to_json(payload: Any) -> str:
    # Lone surrogates go out as \ud800 escapes, as a hostile client would send them.
    return str(payload) if isinstance(payload, Raw) else json.dumps(payload)


# -- (a) the ingestor and ``syncd ingest -`` -------------------------------------------------


@SETTINGS
@given(payload=PAYLOADS, as_text=st.booleans())
def test_ingestor_refuses_or_accepts_never_raises(
    sqlite_app: App, payload: Any, as_text: bool
) -> None:
    ingestor = sqlite_app.ingestor()
    before = row_counts(sqlite_app)
    raw: Any = (
        to_json(payload)
        if as_text or not isinstance(payload, dict) or isinstance(payload, Raw)
        else payload
    )
    outcome = ingestor.ingest(raw)
    if outcome.result is Result.REFUSED:
        assert outcome.error and "\n" not in outcome.error and "Traceback" not in outcome.error
        assert row_counts(sqlite_app) == before
    else:
        assert outcome.result in (Result.APPLIED, Result.DUPLICATE, Result.STALE)


HOSTILE_LINES = [
    "{",
    "null",
    '"\\ud800"',
    deep_text(3001),
    to_json({**f.therapist(), "data": {**f.therapist()["data"], "timezone": "Nowhere/City"}}),
    to_json({**f.therapist(), "data": {**f.therapist()["data"], "id": "t-1\x00\u202e"}}),
    to_json({**f.therapist(), "data": {**f.therapist()["data"], "timezone": "\ud800"}}),
    to_json({**f.therapist(), "data": {**f.therapist()["data"], "timezone": "A" * 5000}}),
    to_json(f.session("s-1", datetime(9999, 12, 31, 23, 0, tzinfo=UTC) - timedelta(minutes=1))),
    to_json(f.session("s-2", datetime(1, 1, 1, 10, 0, tzinfo=UTC))),
    to_json({**f.therapist(), "data": {**f.therapist()["data"], "display_name": "A" * 900_000}}),
    "\x00\x01\x02",
]


def test_syncd_ingest_stdin_refuses_with_one_line_each(tmp_path: Path) -> None:
    config = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    stdin = jsonl([f.therapist()]) + "".join(line + "\n" for line in HOSTILE_LINES)
    done = run_syncd(config, "ingest", "-", stdin=stdin)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 1, done.stderr[-3000:]
    refused = [ln for ln in done.stderr.splitlines() if ln.startswith("line ")]
    assert len(refused) == len(done.stderr.splitlines()) >= len(HOSTILE_LINES) - 3
    assert all(len(ln) < 2000 for ln in refused)
    assert not any(ln.startswith("line 1:") for ln in refused)


# -- (b) POST /v1/events ---------------------------------------------------------------------


@pytest.fixture
def api_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
    cfg = make_config(tmp_path / "state", daemon={"poll_interval": 10}, sync={"interval": 3600})
    application = App.open(cfg)
    yield application
    application.close()


def test_http_ingest_never_5xx(api_app: App) -> None:
    def check(_daemon: Daemon, url: str) -> None:
        with httpx.Client(base_url=url, timeout=20) as client:

            @settings(SETTINGS, max_examples=50)
            @given(payload=st.one_of(PAYLOADS, st.lists(mutated(), min_size=1, max_size=5)))
            def post(payload: Any) -> None:
                body = to_json(payload).encode()
                if len(body) > 1024 * 1024:
                    body = body[: 1024 * 1024]  # over-size is its own test; keep it parseable-ish
                before = row_counts(api_app)
                stamp = int(time.time())
                headers = {
                    "Syncd-Signature": outbox.sign(SECRET, stamp, body),
                    "Content-Type": "application/json",
                }
                response = client.post("/v1/events", content=body, headers=headers)
                assert response.status_code < 500, response.text[:500]
                if response.status_code >= 400:
                    assert row_counts(api_app) == before
                    assert "error" in response.json()
                else:
                    assert "results" in response.json()

            post()
            # And one body over the limit: 413, not a crash.
            big = b'{"x": "' + b"A" * (1024 * 1024 + 10) + b'"}'
            stamp = int(time.time())
            r = client.post(
                "/v1/events",
                content=big,
                headers={"Syncd-Signature": outbox.sign(SECRET, stamp, big)},
            )
            assert r.status_code == 413

    with_http_daemon(api_app, check, timeout=60)


# -- hostile calendar data read back from a server -------------------------------------------


def _ics(uid: str, *lines: str) -> str:
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//hostile//EN",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            *lines,
            "END:VEVENT",
            "END:VCALENDAR",
        ]
    )
    return body + "\r\n"


def hostile_items(day: datetime) -> dict[str, str]:
    stamp = day.strftime("%Y%m%dT%H%M%SZ")
    later = (day + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    return {
        "broken": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:broken\r\nDTSTART:garbage"
        "\r\nSUMMARY;=:\r\n",
        "no-dtstart": _ics("no-dtstart", "SUMMARY:no start", f"DTEND:{later}"),
        "secondly": _ics("secondly", f"DTSTART:{stamp}", f"DTEND:{later}", "RRULE:FREQ=SECONDLY"),
        "bad-rrule": _ics("bad-rrule", f"DTSTART:{stamp}", f"DTEND:{later}", "RRULE:FREQ=NOPE;X"),
        "bad-zone": _ics(
            "bad-zone",
            "DTSTART;TZID=Nowhere/City:20300101T100000",
            "DTEND;TZID=Nowhere/City:20300101T110000",
        ),
        "year-1": _ics("year-1", "DTSTART:00010101T000000Z", "DTEND:00010101T010000Z"),
        "huge": _ics(
            "huge",
            f"DTSTART:{stamp}",
            f"DTEND:{later}",
            "DESCRIPTION:" + "\r\n ".join(["A" * 70] * 30_000),
        ),
    }


def test_hostile_calendar_items_are_skipped_not_fatal(
    sqlite_app: App, xandikos_server: CalDAVServer
) -> None:
    # Xandikos stores more of these than Radicale does (Radicale refuses most at PUT, and its
    # REPORT on a FREQ=SECONDLY event without end runs past any timeout).
    app, server = sqlite_app, xandikos_server
    assert app.ingestor().ingest(f.therapist(zone="Europe/London")).ok
    operations.connect_caldav(
        app, "t-1", url=server.url, username=server.username, password=server.password
    )
    with app.sessions() as s:
        conn = s.scalars(select(ConnectionRow)).one()
    cal = conn.calendar_url
    assert cal
    personal = cal.rstrip("/").rsplit("/", 1)[0] + "/personal/"
    assert raw_request(server, personal, "MKCALENDAR") in (200, 201)
    day = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    accepted: dict[str, list[str]] = {}
    for where in (cal, personal):
        for name, body in hostile_items(day).items():
            status = raw_request(
                server, f"{where}{name}.ics", "PUT", body, {"Content-Type": "text/calendar"}
            )
            if status in (200, 201, 204):
                accepted.setdefault(where, []).append(name)
    fine = _ics(
        "fine",
        f"DTSTART:{(day + timedelta(hours=3)).strftime('%Y%m%dT%H%M%SZ')}",
        f"DTEND:{(day + timedelta(hours=4)).strftime('%Y%m%dT%H%M%SZ')}",
    )
    assert raw_request(
        server, f"{personal}fine.ics", "PUT", fine, {"Content-Type": "text/calendar"}
    ) in (201, 204)
    assert accepted.get(personal) and accepted.get(cal), accepted

    # A pass over the syncd calendar holding the hostile items: no crash, the session written.
    assert app.ingestor().ingest(f.session("s-1", f.future(days=5))).ok
    report = app.engine().run_pass("t-1")
    assert not report.failed, [c.error for c in report.connections]
    assert report.connections

    # Busy time from the therapist's own calendar: the good event is read, the rest skipped.
    connector = app.connector_for(conn)
    now = datetime.now(UTC)
    refs = [c.ref for c in connector.calendars() if not c.is_syncd]  # type: ignore[attr-defined]
    assert any("personal" in r for r in refs)
    # Only typed errors, so the caller can report them (a server may choke on its own bad data).
    with contextlib.suppress(ConnectorError):
        connector.busy(
            now, now + timedelta(weeks=2), refs, reconcile.busy_options(app.config.availability)
        )
    ok = reconcile.refresh_busy(app.sessions, connector, conn, now, app.config.availability)
    with app.sessions() as s:
        starts = [b.start_at.replace(tzinfo=UTC) for b in s.scalars(select(BusyIntervalRow))]
        row = s.get(ConnectionRow, conn.id)
        assert row is not None
        error = row.busy_error
    if ok:
        # The good event is read, the hostile ones skipped.
        assert error is None and day + timedelta(hours=3) in starts
    else:
        # Xandikos answers 500 to a calendar-query over a calendar holding some of these: the
        # failure is recorded on the connection (and the last known busy time kept), no crash.
        assert error and "\n" not in error

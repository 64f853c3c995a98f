"""Hostile input: Hypothesis-generated platform events against the ingestor, ``syncd ingest -``
and ``POST /v1/events``, and broken calendar data read back from a CalDAV server. Every payload
is refused with a one-line error (or a 4xx) or accepted as valid; never a traceback, a crash or
a 5xx; and refused input leaves the stored state unchanged: the full contents of every table
are compared before and after, and over HTTP each event refused inside a 200 answer is checked
against a twin database that applies only the events the answer accepted.
Every other endpoint is fuzzed in tests/test_hostile_http.py."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from connectors.base import BusyOptions
from connectors.caldav import CalDAVConnector, CalDAVSettings, ServerMemory
from syncd import operations, outbox, reconcile
from syncd.app import App
from syncd.ingest import Result
from syncd.store.tables import Base, BusyIntervalRow, ConnectionRow
from tests.conftest import LOOPBACK_OK, make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, ProxiedRequest, ProxyReply
from tests.support.http_daemon import serving
from tests.support.proc import jsonl, run_syncd
from tests.test_connector_contract import raw_request

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


# What a request may change even when refused: a failed credential is counted (that is the
# point), and a valid token or session notes its last use.
ACCESS_TABLES = frozenset({"rate_limits"})
ACCESS_COLUMNS = frozenset({("api_tokens", "last_used_at"), ("admin_sessions", "last_seen_at")})

Snapshot = dict[str, list[tuple[Any, ...]]]


def snapshot(app: App, *, access: bool = True) -> Snapshot:
    """The full contents of every table, rows in primary-key order; ``access=False`` leaves out
    what records access itself (ACCESS_TABLES, ACCESS_COLUMNS)."""
    out: Snapshot = {}
    with app.sessions() as s:
        for table in Base.metadata.sorted_tables:
            if not access and table.name in ACCESS_TABLES:
                continue
            columns = [
                c for c in table.columns if access or (table.name, c.name) not in ACCESS_COLUMNS
            ]
            order = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in s.execute(select(*columns).order_by(*order))]
    return out


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
    before = snapshot(sqlite_app)
    raw: Any = (
        to_json(payload)
        if as_text or not isinstance(payload, dict)  # a Raw is text already
        else payload
    )
    outcome = ingestor.ingest(raw)
    if outcome.result is Result.REFUSED:
        assert outcome.error and "\n" not in outcome.error and "Traceback" not in outcome.error
        assert snapshot(sqlite_app) == before
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

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # both databases' clock: stamps must match


@pytest.fixture
def api_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
    cfg = make_config(tmp_path / "state", daemon={"poll_interval": 10}, sync={"interval": 3600})
    application = App.open(cfg, clock=lambda: NOW)
    yield application
    application.close()


@pytest.fixture
def twin(tmp_path: Path) -> Any:
    """A second database, fed only the events the HTTP answers accepted, by the ingestor."""
    application = App.open(make_config(tmp_path / "twin"), clock=lambda: NOW)
    yield application
    application.close()


HTTP_PAYLOADS = st.one_of(
    PAYLOADS,
    st.lists(st.one_of(mutated(), st.sampled_from(valid_events())), min_size=1, max_size=6),
)


def test_http_ingest_never_5xx_and_refused_events_change_nothing(api_app: App, twin: App) -> None:
    """Over the real server. After every answer the full contents of both databases must be
    equal: an event refused inside a 200 answer (per-event results) left no trace, and what the
    answer called applied, duplicate or stale is exactly what the ingestor makes of it."""
    with serving(api_app) as url, httpx.Client(base_url=url, timeout=30) as client:
        seen = {"refused inside 200": 0, "accepted": 0, "refused whole": 0}

        @settings(SETTINGS, max_examples=60)
        @given(payload=HTTP_PAYLOADS)
        def post(payload: Any) -> None:
            body = to_json(payload).encode()
            if len(body) > 1024 * 1024:
                body = body[: 1024 * 1024]  # over-size is its own test; keep it parseable-ish
            before = snapshot(api_app)
            headers = {
                "Syncd-Signature": outbox.sign(SECRET, int(NOW.timestamp()), body),
                "Content-Type": "application/json",
            }
            response = client.post("/v1/events", content=body, headers=headers)
            assert response.status_code < 500, response.text[:500]
            if response.status_code >= 400:
                assert "error" in response.json()
                seen["refused whole"] += 1
                assert snapshot(api_app) == before
                return
            results = response.json()["results"]
            events = payload if isinstance(payload, list) else [payload]
            assert len(results) == len(events)
            for event, result in zip(events, results, strict=True):
                if result["result"] == "refused":
                    seen["refused inside 200"] += 1
                    assert result["error"] and "\n" not in result["error"]
                    continue
                seen["accepted"] += 1
                replayed = twin.ingestor().ingest(event)
                assert replayed.result.value == result["result"], (event, result)
            assert snapshot(api_app) == snapshot(twin)

        post()
        # Each kind of answer was exercised, so the comparisons above meant something.
        assert all(n >= 3 for n in seen.values()), seen
        # And one body over the limit: 413, not a crash.
        big = b'{"x": "' + b"A" * (1024 * 1024 + 10) + b'"}'
        stamp = int(NOW.timestamp())
        r = client.post(
            "/v1/events", content=big, headers={"Syncd-Signature": outbox.sign(SECRET, stamp, big)}
        )
        assert r.status_code == 413


# -- hostile calendar data read back from a server -------------------------------------------

# In every hostile item that has room for it: what must never reach a log line.
PRIVATE = "Jane Secretperson"
# The hostile items busy time cannot use, whichever server stores them: they are skipped (and
# reported by href); the rest of hostile_items() are read like any event.
UNUSABLE = {"broken", "no-dtstart", "secondly", "bad-rrule"}


def _ics(uid: str, *lines: str) -> str:
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//hostile//EN",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            f"ATTENDEE;CN={PRIVATE}:mailto:jane@example.com",
            *lines,
            "END:VEVENT",
            "END:VCALENDAR",
        ]
    )
    return body + "\r\n"


def _utc(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ")


def _send(server: CalDAVServer, url: str, method: str, body: str = "") -> int:
    """A request as another client sends it (credentials from the start: Radicale answers a
    first, unauthenticated request only after a second's delay)."""
    headers = {"Content-Type": "text/calendar"} if body else {}
    status, _, _ = raw_request(server, method, urljoin(server.url, url), body.encode(), headers)
    return status


def hostile_items(day: datetime) -> dict[str, str]:
    stamp = _utc(day)
    later = _utc(day + timedelta(hours=1))
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
    sqlite_app: App, caldav_server: CalDAVServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Both servers fail to evaluate busy time over these items themselves: Xandikos answers
    500 to the REPORT (it evaluates items in name order and fails at bad-rrule.ics, before it
    would reach secondly.ics, whose expansion alone blocks it for minutes), Radicale keeps
    expanding secondly.ics past any timeout. The connector then reads the items one by one."""
    app, server = sqlite_app, caldav_server
    caplog.set_level(logging.INFO)
    assert app.ingestor().ingest(f.therapist(zone="Europe/London")).ok
    operations.connect_caldav(
        app, "t-1", url=server.url, username=server.username, password=server.password
    )
    with app.sessions() as s:
        conn = s.scalars(select(ConnectionRow)).one()
    cal = conn.calendar_url
    assert cal
    personal = cal.rstrip("/").rsplit("/", 1)[0] + "/personal/"
    assert _send(server, personal, "MKCALENDAR") in (200, 201)
    day = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    accepted: dict[str, list[str]] = {}
    for where in (cal, personal):
        for name, body in hostile_items(day).items():
            status = _send(server, f"{where}{name}.ics", "PUT", body)
            if status in (200, 201, 204):
                accepted.setdefault(where, []).append(name)
    fine = _ics(
        "fine",
        f"DTSTART:{_utc(day + timedelta(hours=3))}",
        f"DTEND:{_utc(day + timedelta(hours=4))}",
    )
    assert _send(server, f"{personal}fine.ics", "PUT", fine) in (201, 204)
    assert accepted.get(personal) and accepted.get(cal), accepted
    assert "secondly" in accepted[personal]  # the one that makes a server time out

    # Busy time from the therapist's own calendar: the good events are read, the hostile ones
    # skipped and reported, within the budget of one request (the [caldav] timeout).
    connector = app.connector_for(conn)
    assert isinstance(connector, CalDAVConnector)
    now = datetime.now(UTC)
    # Not timed here (timed tests flake on a shared machine): the connector enforces the budget
    # itself and answers Transient, so ``ok`` would be False, when the budget runs out.
    ok = reconcile.refresh_busy(app.sessions, connector, conn, now, app.config.availability)
    assert ok
    with app.sessions() as s:
        read = {
            (b.start_at.replace(tzinfo=UTC), b.remote_ref)
            for b in s.scalars(select(BusyIntervalRow))
        }
        row = s.get(ConnectionRow, conn.id)
        assert row is not None and row.busy_error is None
    path = urlsplit(personal).path
    assert read == {(day + timedelta(hours=3), f"{path}fine.ics"), (day, f"{path}huge.ics")}
    expected = {f"{path}{name}.ics" for name in accepted[personal] if name in UNUSABLE}
    assert set(connector.busy_skipped) == expected
    fallback = [r.getMessage() for r in caplog.records if "reading item by item" in r.message]
    assert len(fallback) == 1, fallback
    assert ("HTTP 500" if server.kind == "xandikos" else "ReadTimeout") in fallback[0]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("busy: skipped")]
    assert sorted(m.split()[2] for m in skipped) == sorted(expected)
    assert not any(PRIVATE in r.getMessage() for r in caplog.records)

    # A pass over the syncd calendar holding the hostile items: no crash, the session written,
    # and busy time read again, now without asking the server to evaluate the calendar.
    caplog.clear()
    assert app.ingestor().ingest(f.session("s-1", f.future(days=5))).ok
    report = app.engine().run_pass("t-1")
    assert not report.failed, [c.error for c in report.connections]
    assert report.connections
    assert not any("reading item by item" in r.message for r in caplog.records)


# -- the item-by-item busy read itself ---------------------------------------------------------

JUNE = (datetime(2027, 6, 7, tzinfo=UTC), datetime(2027, 6, 14, tzinfo=UTC))


def _june(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 6, day, hour, minute, tzinfo=UTC)


def test_busy_reads_item_by_item_when_the_server_fails_on_the_calendar(
    radicale_server: CalDAVServer, http_proxy: Callable[[str], HTTPProxy]
) -> None:
    """The fallback against a real server behind a proxy that fails the server-side queries
    (as Xandikos does on a broken item) and every multiget that includes one item."""
    proxy = http_proxy(radicale_server.url)
    memory = ServerMemory()  # shared by the connectors made here, as by those of one App

    def connector(**overrides: Any) -> CalDAVConnector:
        settings = CalDAVSettings(
            url=proxy.url,
            username=radicale_server.username,
            password=radicale_server.password,
            timeout=10.0,
            egress=LOOPBACK_OK,
            **overrides,
        )
        return CalDAVConnector(settings, memory)

    # The therapist's own calendar; the readers write into syncd's dedicated one.
    personal = connector(calendar_id="personal", calendar_name="Personal").ensure_calendar()
    items: dict[str, list[str]] = {
        "plain.ics": [f"DTSTART:{_utc(_june(8, 10))}", f"DTEND:{_utc(_june(8, 11))}"],
        "daily.ics": [
            f"DTSTART:{_utc(_june(9, 8))}",
            f"DTEND:{_utc(_june(9, 8, 30))}",
            "RRULE:FREQ=DAILY;COUNT=3",
        ],
        "tentative.ics": [
            f"DTSTART:{_utc(_june(10, 12))}",
            f"DTEND:{_utc(_june(10, 13))}",
            "STATUS:TENTATIVE",
        ],
        "transparent.ics": [
            f"DTSTART:{_utc(_june(10, 14))}",
            f"DTEND:{_utc(_june(10, 15))}",
            "TRANSP:TRANSPARENT",
        ],
        "syncd-session-x.ics": [
            f"DTSTART:{_utc(_june(10, 16))}",
            f"DTEND:{_utc(_june(10, 17))}",
            "X-SYNCD-KIND:session",
        ],
        # Within what may be expanded, but more occurrences than any real event has.
        "minutely.ics": [
            f"DTSTART:{_utc(_june(8, 0))}",
            f"DTEND:{_utc(_june(8, 0, 1))}",
            "RRULE:FREQ=MINUTELY",
        ],
        # Started before the window: stepping up to it would take millions of instants.
        "secondly.ics": [
            f"DTSTART:{_utc(_june(1, 0))}",
            f"DTEND:{_utc(_june(1, 0, 1))}",
            "RRULE:FREQ=SECONDLY",
        ],
        "poisoned.ics": [f"DTSTART:{_utc(_june(11, 9))}", f"DTEND:{_utc(_june(11, 10))}"],
    }
    # Enough for more than one multiget chunk.
    for i in range(55):
        start = _june(12, 0) + timedelta(minutes=10 * i)
        items[f"filler-{i:02d}.ics"] = [
            f"DTSTART:{_utc(start)}",
            f"DTEND:{_utc(start + timedelta(minutes=5))}",
        ]
    for name, lines in items.items():
        uid = name.removesuffix(".ics") + ("@syncd.test" if name.startswith("syncd-") else "")
        status = _send(radicale_server, personal + name, "PUT", _ics(uid, *lines))
        assert status == 201, (name, status)

    def fail(request: ProxiedRequest) -> ProxyReply | None:
        if request.method == "REPORT" and (
            b"free-busy-query" in request.body
            or b"calendar-query" in request.body
            or b"poisoned.ics" in request.body
        ):
            return ProxyReply(500, {"Content-Type": "text/plain"}, b"Internal Server Error")
        return None

    proxy.on_request = fail
    del proxy.requests[:]
    reader = connector()
    found = reader.busy(*JUNE, [personal], BusyOptions())

    path = urlsplit(personal).path
    expected = [
        (_june(8, 10), _june(8, 11), False, "plain.ics"),
        *[(_june(d, 8), _june(d, 8, 30), False, "daily.ics") for d in (9, 10, 11)],
        (_june(10, 12), _june(10, 13), True, "tentative.ics"),
        *[
            (
                _june(12, 0) + timedelta(minutes=10 * i),
                _june(12, 0) + timedelta(minutes=10 * i + 5),
                False,
                f"filler-{i:02d}.ics",
            )
            for i in range(55)
        ],
    ]
    assert [(b.start, b.end, b.tentative, b.ref) for b in found] == [
        (s, e, t, path + name) for s, e, t, name in sorted(expected)
    ]
    assert all(b.calendar == personal for b in found)
    assert sorted(reader.busy_skipped) == [
        path + n for n in ("minutely.ics", "poisoned.ics", "secondly.ics")
    ]
    assert reader.busy_skipped[path + "minutely.ics"].startswith("more than 2000 occurrences")
    assert reader.busy_skipped[path + "secondly.ics"] == "recurrence too dense to expand"
    assert reader.busy_skipped[path + "poisoned.ics"].startswith("the server fails to send it")

    reports = [r for r in proxy.requests if r.method == "REPORT"]
    assert b"free-busy-query" in reports[0].body
    assert not any(b"calendar-query" in r.body for r in reports)
    multigets = [r for r in reports if b"calendar-multiget" in r.body]
    assert all(r.body.count(b"<D:href>") <= 50 for r in multigets)
    assert proxy.methods()[:3] == ["REPORT", "PROPFIND", "REPORT"]

    # The next read of that calendar, by another connector, does not ask the server again; the
    # busy policy is the one of every provider (BusyOptions.counts).
    del proxy.requests[:]
    again = connector().busy(*JUNE, [personal], BusyOptions(tentative_busy=False))
    assert [b.ref for b in again] == [b.ref for b in found if not b.tentative]
    assert proxy.methods()[0] == "PROPFIND"
    assert not any(b"free-busy-query" in r.body for r in proxy.requests)

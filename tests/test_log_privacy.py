"""No client data and no credential in any log line, at any level, from any logger (issue 14,
deliverable 2): a real daemon in this process, logging at DEBUG as ``syncd --debug run`` does,
with a handler of the test's own on the root logger at DEBUG next to syncd's. Through it go
contract refusals, CalDAV failures (500s, a server quoting the entry back in a 400), and
database errors (a row the database refuses, on SQLite and PostgreSQL) for a client whose name
is a marker, with the first name opted into titles; then every captured line is searched.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from syncd import auth, google_auth, ingest, logs, operations, outbox
from syncd.app import App
from syncd.daemon import Daemon
from syncd.embedded_radicale import EmbeddedRadicale
from syncd.log_guard import safe_db_message, safe_traceback
from syncd.project import uid_for
from syncd.store import mapping
from syncd.store.tables import ConnectionRow
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, HTTPProxy, ProxiedRequest, ProxyReply
from tests.support.calendar_view import read_calendar
from tests.support.faults import Action, FaultProxy, Rule, first
from tests.support.google_standin.server import GoogleStandIn
from tests.support.http_daemon import with_http_daemon
from tests.support.proc import run_syncd, start_syncd, wait_for

CLIENT = "Zephyrine Quillfeather"
FIRST, LAST = CLIENT.split()
PASSWORD = "pw-Marker-5Qz"  # the therapist's CalDAV password
INGEST_SECRET = "ingest-Marker-8Kd"
FORBIDDEN = (FIRST, LAST, PASSWORD, INGEST_SECRET)


class Capture(logging.Handler):
    """Everything a handler at the root sees: the formatted line (tracebacks included) and the
    raw arguments, which a structured handler could print."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's own lock
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))


@pytest.fixture
def captured() -> Iterator[tuple[Capture, io.StringIO]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.setup_logging("DEBUG", stream=stream, json_lines=True)  # as `syncd --debug` does
    capture = Capture()
    root.addHandler(capture)
    yield capture, stream
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def marked_server(tmp_path: Path) -> Iterator[CalDAVServer]:
    with EmbeddedRadicale(tmp_path / "radicale", username="therapist", password=PASSWORD) as s:
        yield CalDAVServer("radicale", s.url, "therapist", PASSWORD)


def faults(proxy: HTTPProxy) -> dict[str, int]:
    """The first two writes fail with 500; the third gets a 400 whose body quotes the entry it
    was sent, as some servers do; then the server answers."""
    fired = {"500": 0, "400": 0}
    lock = threading.Lock()

    def on_request(request: ProxiedRequest) -> ProxyReply | None:
        if request.method != "PUT":
            return None
        with lock:
            if fired["500"] < 2:
                fired["500"] += 1
                return ProxyReply(500, {"Content-Type": "text/plain"}, b"Internal error")
            if fired["400"] < 1:
                fired["400"] += 1
                quoted = b"Rejected calendar data:\n" + request.body
                return ProxyReply(400, {"Content-Type": "text/plain"}, quoted)
        return None

    proxy.on_request = on_request
    return fired


def signed(body: bytes) -> dict[str, str]:
    stamp = int(time.time())
    return {
        "Syncd-Signature": outbox.sign(INGEST_SECRET.encode(), stamp, body),
        "Content-Type": "application/json",
    }


def refused_events() -> list[Any]:
    start = f.future(days=3)
    naive = f.session("s-naive", start, client_name=CLIENT)
    naive["data"]["start"] = naive["data"]["start"][:19]
    backwards = f.session("s-back", start, client_name=CLIENT, minutes=-30)
    bad_kind = f.session("s-kind", start, client_name=CLIENT, kind=CLIENT)
    long_name = f.session("s-long", start, client_name=CLIENT * 20)
    ghost = f.session("s-ghost", start, client_name=CLIENT, therapist_id="t-nobody")
    return [naive, backwards, bad_kind, long_name, ghost]


def test_no_client_name_or_credential_reaches_any_log_line(
    tmp_path: Path,
    db_url: str,
    marked_server: CalDAVServer,
    http_proxy: Any,
    captured: tuple[Capture, io.StringIO],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capture, stream = captured
    monkeypatch.setenv("SYNCD_INGEST_SECRET", INGEST_SECRET)
    cfg = make_config(tmp_path / "state", db_url, daemon={"poll_interval": 0.05})
    app = App.open(cfg)
    proxy = http_proxy(marked_server.url)
    try:
        therapist = f.therapist(privacy={"client_label": "first_name"})
        assert app.ingestor().ingest(therapist).ok
        operations.connect_caldav(
            app, "t-1", url=proxy.url, username="therapist", password=PASSWORD
        )
        with app.sessions() as s:
            calendar = s.scalars(select(ConnectionRow.calendar_url)).one()
        assert calendar
        with app.sessions.begin() as s:
            token = auth.create(s, "ops", auth.Scope.ADMIN, app.clock())
        fired = faults(proxy)
        via_proxy = CalDAVServer("radicale", proxy.url, "therapist", PASSWORD)

        # A row the database refuses: a NOT NULL column left empty, for one session only.
        original = mapping.session_to_row  # what syncd.ingest imported under that name

        def broken(session: Any, row: Any, now: Any) -> None:
            original(session, row, now)
            if session.id == "s-db":
                row.start_at = None

        monkeypatch.setattr(ingest, "session_to_row", broken)

        def check(_daemon: Daemon, url: str) -> dict[str, Any]:
            out: dict[str, Any] = {}

            def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
                # A connection of its own each: a failing request may leave its connection reset.
                return httpx.post(url + "/v1/events", content=body, headers=headers, timeout=30)

            def admin(token_text: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {token_text}"}
                return httpx.get(url + "/v1/admin/therapists", headers=headers, timeout=30)

            body = json.dumps(f.session("s-1", f.future(days=2), client_name=CLIENT)).encode()
            out["accepted"] = post(body, signed(body))
            body = json.dumps(refused_events()).encode()
            out["refused"] = post(body, signed(body))
            body = b'{"id": "e-x", "client": {"name": "' + CLIENT.encode() + b'"'
            out["malformed"] = post(body, signed(body))
            out["unsigned"] = post(body, {"Syncd-Signature": "t=1,v1=00"})
            body = json.dumps(f.session("s-db", f.future(days=4), client_name=CLIENT)).encode()
            try:
                out["db_error"] = post(body, signed(body))
            except httpx.TransportError as exc:  # the server gave up on the request
                out["db_error"] = exc
            out["admin"] = admin(token)
            out["bad_token"] = admin(token + "x")
            out["calendar"] = wait_for(
                lambda: (
                    (got := read_calendar(via_proxy, calendar))
                    and uid_for("session", "s-1") in got
                    and got
                ),
                60,
                "the session to reach the calendar through the faults",
            )
            return out

        out = with_http_daemon(app, check, timeout=60)
    finally:
        app.close()

    # The scenarios happened, or the search below would prove nothing.
    assert out["accepted"].status_code == 200, out["accepted"].text
    results = out["refused"].json()["results"]
    assert [r["result"] for r in results] == ["refused"] * 5, results
    assert out["malformed"].status_code == 400 and out["unsigned"].status_code == 401
    db_error = out["db_error"]
    assert isinstance(db_error, httpx.TransportError) or db_error.status_code >= 500
    assert out["admin"].status_code == 200 and out["bad_token"].status_code == 401
    title = str(out["calendar"][uid_for("session", "s-1")].event["SUMMARY"])
    assert FIRST in title, "the first name was opted in: it belongs in the calendar"
    assert fired == {"500": 2, "400": 1}
    text = "\n".join(capture.lines) + "\n" + stream.getvalue()
    assert "DEBUG syncd." in text, "nothing logged at DEBUG: the level was not in effect"
    assert "HTTP 400" in text, "the CalDAV failure was not logged"  # (500s retry silently)
    assert "IntegrityError" in text or "NotNullViolation" in text, "no database error logged"
    for secret in (*FORBIDDEN, token):
        leaks = [line for line in text.splitlines() if secret in line]
        assert not leaks, f"{secret!r} logged: {leaks[:3]}"


def test_database_errors_are_reduced_to_what_names_the_failure(db_url: str) -> None:
    """PostgreSQL quotes the refused row in DETAIL and a value in data-exception messages;
    SQLAlchemy appends the parameters unless hidden. None of it survives."""
    from sqlalchemy import text as sql
    from sqlalchemy.exc import DBAPIError

    from syncd.store import database

    engine = database.make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(sql("CREATE TABLE marker_t (id INTEGER NOT NULL, name TEXT, n INTEGER)"))
        errors: list[DBAPIError] = []
        for statement, params in (
            ("INSERT INTO marker_t (id, name) VALUES (NULL, :name)", {"name": CLIENT}),
            ("INSERT INTO marker_t (id, name, n) VALUES (1, 'x', :n)", {"n": CLIENT}),
        ):
            try:
                with engine.begin() as c:
                    c.execute(sql(statement), params)
            except DBAPIError as exc:
                errors.append(exc)
        assert errors, "no database error was provoked"
        for error in errors:
            # hide_parameters keeps the bound values out of SQLAlchemy's text; PostgreSQL's
            # own message still quotes the row (DETAIL) or the value, hence the reduction.
            assert "parameters hidden" in str(error)
            for shown in (safe_db_message(error), safe_traceback(error)):
                assert FIRST not in shown and "marker_t" in shown, shown
            if error.orig is not None and not isinstance(error.orig, sqlite3.Error):
                assert "SQLSTATE" in safe_db_message(error)
    finally:
        with engine.begin() as c:
            c.execute(sql("DROP TABLE IF EXISTS marker_t"))
        engine.dispose()


def test_library_debug_lines_are_capped_whatever_the_root_level(
    captured: tuple[Capture, io.StringIO],
) -> None:
    capture, stream = captured
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger("caldav.response").debug("response body: %s", CLIENT)
    logging.getLogger("some.new.library").info("unlisted library: %s", CLIENT)
    logging.debug("through the root logger, as caldav's collection module does: %s", CLIENT)
    logging.getLogger("syncd.engine").debug("own debug line")
    logging.getLogger("caldav").warning("a library warning stays")
    out = stream.getvalue()
    assert "own debug line" in out and "a library warning stays" in out
    assert CLIENT not in out
    captured_text = "\n".join(capture.lines)
    # The test's own root handler sees what any handler would: the named libraries and the
    # root-logger lines of library code are capped for every handler.
    assert "response body" not in captured_text and "through the root logger" not in captured_text


# -- issue 12, deliverable 6: a real `syncd --debug run` ------------------------------------------

CLIENT_ID, CLIENT_SECRET = "syncd-client-id", "client-secret-Marker-4Wv"
WEBHOOK_SECRET = "webhook-Marker-6Hn"
GOOGLE_ACCOUNT = "ann@example.com"


class Webhook:
    """The platform's webhook receiver: answers 500 to the first notification, then 204."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append(body)
                self.send_response(500 if len(hook.received) == 1 else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token_collector(proxy: HTTPProxy) -> list[str]:
    """Every OAuth token the (proxied) token endpoint hands out."""
    tokens: list[str] = []

    def on_response(request: ProxiedRequest, reply: ProxyReply) -> ProxyReply:
        if request.path.startswith("/token") and reply.status == 200:
            answer = json.loads(reply.body)
            tokens.extend(str(answer[k]) for k in ("access_token", "refresh_token") if k in answer)
        return reply

    proxy.on_response = on_response
    return tokens


def connect_google(app: App, g: GoogleStandIn, therapist: str) -> int:
    """The real OAuth flow, the consent screen answering at once (as in tests/test_google.py)."""
    g.consenting_account = GOOGLE_ACCOUNT
    link = google_auth.authorization_url(app, therapist, redirect_base="http://127.0.0.1:9")
    answer = httpx.get(link, follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    return google_auth.complete(app, query["state"][0], query["code"][0])


def listening_url(log: Path) -> str | None:
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line).get("message", "")
            if message.startswith("HTTP service listening on "):
                return str(message.split()[4])
    return None


def test_syncd_run_at_debug_logs_no_client_name_and_no_credential(
    tmp_path: Path,
    marked_server: CalDAVServer,
    fault_proxy: Callable[[str], FaultProxy],
    http_proxy: Callable[[str], HTTPProxy],
    google_standin: GoogleStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12.6: therapists who opted into first names, on CalDAV (Radicale behind a fault
    proxy: 500s beyond the retries) and Google (the stand-in, failing inserts), a refused event,
    a failing webhook, API calls with a good and a bad token; the daemon at --debug. Its whole
    log, and every CLI command's, holds no client name and no credential."""
    g = google_standin
    refresh = g.add_account(GOOGLE_ACCOUNT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    google_proxy = http_proxy(g.root_url)
    oauth_tokens = token_collector(google_proxy)
    caldav_proxy = fault_proxy(marked_server.url)
    webhook = Webhook()
    for name, value in (
        ("SYNCD_GOOGLE_CLIENT_SECRET", CLIENT_SECRET),
        ("SYNCD_INGEST_SECRET", INGEST_SECRET),
        ("SYNCD_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ):
        monkeypatch.setenv(name, value)
    cfg = make_config(
        tmp_path / "state",
        google={
            "client_id": CLIENT_ID,
            "api_url": google_proxy.url,
            "token_url": google_proxy.url + "token",
            "auth_url": g.auth_url,
            "revoke_url": google_proxy.url + "revoke",
            "timeout": 10,
            "min_request_interval": 0,
        },
        platform={"webhook_url": webhook.url, "retry_base": 0.2, "poll_interval": 0.2},
        sync={"retry_attempts": 2},
    )
    path = write_config(tmp_path / "syncd.toml", cfg)
    # Working every day, so each booking changes public availability and notifies the webhook.
    hours = [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)]
    first_name: dict[str, Any] = {"privacy": {"client_label": "first_name"}, "working_hours": hours}
    app = App.open(cfg)
    try:
        for tid in ("t-cal", "t-goo"):
            assert app.ingestor().ingest(f.therapist(tid, **first_name)).ok
        connect_google(app, g, "t-goo")
    finally:
        app.close()
    cli_logs: list[str] = []

    def cli(*args: str) -> str:
        done = run_syncd(path, "--debug", *args)
        cli_logs.append(done.stderr)
        assert done.returncode == 0, done.stderr
        return done.stdout

    password_file = tmp_path / "caldav-password"
    password_file.write_text(PASSWORD + "\n")
    cli("connect", "caldav", "t-cal", "--url", caldav_proxy.url, "--username", "therapist",
        "--password-file", str(password_file))  # fmt: skip
    api_token = cli("token", "create", "ops", "--scope", "admin").strip().splitlines()[-1]
    assert api_token.startswith("syncd_")
    # CalDAV: the first write reaches the server but its answer is cut off; the retry finds
    # the entry there (412) and reads it back to adopt it (a GET: the caldav library logs a
    # non-XML body at DEBUG, through the root logger); both attempts at the update that
    # follows get a 500, so the pass fails and says so. Google: inserts fail beyond the two
    # attempts of a pass.
    caldav_proxy.add(Rule(Action.TRUNCATE, method="PUT", schedule=first(1)))
    caldav_proxy.add(
        Rule(Action.STATUS, method="PUT", status=500, schedule=lambda n, _s: n in (2, 3))
    )
    g.inject("server_error", times=3, methods=("events.insert",))

    log = tmp_path / "run.log"
    proc = start_syncd(path, "--debug", "run", log=log)
    try:
        url = wait_for(lambda: listening_url(log), 60, "the HTTP service to start")
        events = [
            f.session("s-cal", f.future(days=2), therapist_id="t-cal", client_name=CLIENT),
            f.session("s-goo", f.future(days=2), therapist_id="t-goo", client_name=CLIENT),
        ]
        naive = f.session("s-bad", f.future(days=3), therapist_id="t-cal", client_name=CLIENT)
        naive["data"]["start"] = naive["data"]["start"][:19]
        body = json.dumps([*events, naive]).encode()
        answer = httpx.post(url + "/v1/events", content=body, headers=signed(body), timeout=30)
        results = [r["result"] for r in answer.json()["results"]]
        assert results == ["applied", "applied", "refused"], answer.text
        unsigned = httpx.post(url + "/v1/events", content=body, timeout=30)
        assert unsigned.status_code == 401
        for token, status in ((api_token, 200), (api_token[:-2] + "xx", 401)):
            got = httpx.get(
                url + "/v1/admin/therapists",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert got.status_code == status

        via_proxy = CalDAVServer("radicale", caldav_proxy.url, "therapist", PASSWORD)
        reader = App.open(cfg, migrate=False)
        try:
            with reader.sessions() as s:
                rows = s.execute(select(ConnectionRow.provider, ConnectionRow.calendar_url)).all()
            urls = {provider: str(url) for provider, url in rows}
        finally:
            reader.close()
        google_calendar = urlsplit(urls["google"]).path.split("/calendars/")[1].strip("/")

        def mirrored() -> bool:
            cal = read_calendar(via_proxy, urls["caldav"]).get(uid_for("session", "s-cal"))
            goo = [e for e in g.events(google_calendar) if FIRST in str(e.get("summary"))]
            return cal is not None and FIRST in str(cal.event["SUMMARY"]) and bool(goo)

        wait_for(mirrored, 180, "both sessions, titled with the first name, in both calendars")
        wait_for(lambda: len(webhook.received) >= 2, 60, "a notification, after a failed one")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        webhook.close()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert caldav_proxy.injected[Action.TRUNCATE] == 1
    assert caldav_proxy.injected[Action.STATUS] == 2
    assert "GET" in caldav_proxy.methods(), "the entry was never read back: proves less"
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(e["level"] == "DEBUG" for e in lines), "no DEBUG line: --debug was not in effect"
    messages = "\n".join(e["message"] for e in lines)
    assert "HTTP 500" in messages and "refused" in messages, "the failures were not logged"
    everything = text + "\n".join(cli_logs)
    secrets = {
        "first name": FIRST,
        "last name": LAST,
        "CalDAV password": PASSWORD,
        "refresh token": refresh,
        "client secret": CLIENT_SECRET,
        "ingest secret": INGEST_SECRET,
        "webhook secret": WEBHOOK_SECRET,
        "API token": api_token,
        **{f"OAuth token {i}": t for i, t in enumerate(oauth_tokens)},
    }
    assert len(oauth_tokens) >= 2, "the token endpoint was never used: proves nothing"
    for what, secret in secrets.items():
        leaks = [line for line in everything.splitlines() if secret in line]
        assert not leaks, f"the {what} is in the log: {leaks[:2]}"

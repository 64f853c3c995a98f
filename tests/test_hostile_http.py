"""Hostile HTTP: no input gets a 5xx, from any endpoint, and a refused request changes nothing.

First the cases an attack on the running daemon found (each answered 500 and logged a
traceback); then Hypothesis over every route the daemon serves: path parameters, query strings,
header values and bodies, with and without valid credentials, including Unicode digits, huge
integers, bad UTF-8 and deep nesting. All over the real server (uvicorn, as ``syncd run``
serves it). Each answer is under 500, a refusal leaves the full contents of every table as they
were (bar the failure counters and last-use stamps that record the attempt), and nothing is
logged at ERROR or with a traceback."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from syncd import auth, feeds, outbox
from syncd.app import App
from syncd.store.tables import ConnectionRow
from syncd.web.app import build_app
from syncd.web.ingest_api import SignatureError, parse_signature
from tests.conftest import make_config
from tests.support import factories as f
from tests.support.http_daemon import NoDaemon, serving
from tests.test_hostile_input import JSON_VALUES, PAYLOADS, SETTINGS, deep_text, snapshot, to_json

SECRET = b"hostile-http-secret"


def _refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SYNCD_INGEST_SECRET", SECRET.decode())
    # Limits far away: the fuzz must reach every check behind them (they have their own tests).
    limits = {k: 10**6 for k in ("login", "bearer", "feed", "signature")}
    application = App.open(make_config(tmp_path / "state", limits=limits))
    yield application
    application.close()


def _signed(body: bytes) -> dict[str, str]:
    return {
        "Syncd-Signature": outbox.sign(SECRET, int(time.time()), body),
        "Content-Type": "application/json",
    }


# -- the found cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, Any]
    body: bytes
    status: int
    message: str  # in the answer


HUGE_VERSION = json.dumps(f.therapist(version=10**26)).encode()
DIGITS_5000 = (
    b'{"id": "e-5000", "type": "therapist.upserted", "occurred_at": "2026-11-23T10:00:00Z", '
    b'"data": {"id": "t-1", "version": ' + b"9" * 5000 + b"}}"
)
CASES = [
    # A Unicode digit in the timestamp, without any credential: int() refused it.
    Case(
        "t=superscript", "POST", "/v1/events", {"Syncd-Signature": b"t=\xb2"}, b"{}", 401, "bad t="
    ),
    # A connection id past the 32-bit primary key: the database refused the query.
    Case(
        "push 20 digits", "POST", "/google/push/" + "9" * 20, {}, b"", 403, "unknown channel"
    ),  # Found by the fuzz below: Starlette's {id:int} ran int() on 5,000 digits in the router.
    Case("push 5000 digits", "POST", "/google/push/" + "9" * 5000, {}, b"", 403, "unknown channel"),
    Case("outbox limit=²", "GET", "/v1/admin/outbox?limit=%C2%B2", {}, b"", 400, "limit"),
]
SURROGATE_ID = b'{"id": "\\ud800", "type": "therapist.upserted", "occurred_at": "x", "data": {}}'
SIGNED = [
    # Validly signed: a version past any column, and an integer Python refuses to convert.
    (
        "version 10^26",
        HUGE_VERSION,
        200,
        "data.version: Input should be less than or equal to 9007199254740991",
    ),
    ("5000 digits", DIGITS_5000, 400, "Exceeds the limit (4300 digits)"),
    # Found by the fuzz below: the refused event's id was echoed as it came, and a lone
    # surrogate cannot be encoded in the JSON answer.
    ("surrogate id", SURROGATE_ID, 200, "id: text with a lone surrogate"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_found_cases_are_refused_in_one_line(
    app: App, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = dict(case.headers)
    if case.path.startswith("/v1/admin/"):
        with app.sessions.begin() as s:
            headers["Authorization"] = "Bearer " + auth.create(
                s, "ops", auth.Scope.READ, app.clock()
            )
    before = snapshot(app, access=False)
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        caplog.clear()
        r = client.request(case.method, case.path, headers=headers, content=case.body)
    assert r.status_code == case.status, r.text
    assert case.message in r.json()["error"]
    assert snapshot(app, access=False) == before
    _no_tracebacks(caplog)
    assert len(_refusal_lines(caplog)) == 1, _refusal_lines(caplog)


def test_signature_timestamps_are_ascii_digits_only() -> None:
    """Headers arrive as Latin-1, so only the superscripts reach the server over HTTP; the
    parser refuses every non-ASCII digit whatever the transport (int() would read
    Arabic-Indic digits as a number)."""
    for stamp in ("\u00b2", "\u0661\u0667\u0660\u0660", "\uff11\uff12"):
        with pytest.raises(SignatureError, match="bad t="):
            parse_signature(f"t={stamp},v1=" + "0" * 64)


@pytest.mark.parametrize(("name", "body", "status", "message"), SIGNED, ids=[c[0] for c in SIGNED])
def test_found_signed_cases_are_refused(
    app: App, name: str, body: bytes, status: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = snapshot(app, access=False)
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/v1/events", content=body, headers=_signed(body))
    assert r.status_code == status, r.text
    if status == 200:
        (result,) = r.json()["results"]
        assert result["result"] == "refused"
        assert result["error"].startswith(message), result
    else:
        assert message in r.json()["error"]
        assert len(_refusal_lines(caplog)) == 1, _refusal_lines(caplog)
    assert snapshot(app, access=False) == before
    _no_tracebacks(caplog)


# -- every endpoint ----------------------------------------------------------------------------

ODD = [
    "",
    "²",
    "١٢٣",
    "9" * 20,
    "9" * 5000,
    "-1",
    "0",
    "1e308",
    "NaN",
    "..",
    "../../etc/passwd",
    "t-1",
    "a" * 300,
    "\x00",
    "\ud800",
    "\u202e",
    "%",
    "%FF",
    "%ED%A0%80",
    "' OR 1=1; --",
    "<script>",
]
TEXT = st.one_of(
    st.sampled_from(ODD),
    st.text(max_size=40),
    st.integers(-(10**30), 10**30).map(str),
)


def _in_url(value: str) -> str:
    """A value as it may travel in a URL: percent-encoded (lone surrogates as their raw
    UTF-8-ish bytes, as a hostile client would send them), or as given when it already is."""
    if re.fullmatch(r"[A-Za-z0-9%._~-]*", value):
        return value
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


HEADER_NAMES = [
    "Authorization",
    "Syncd-Signature",
    "Cookie",
    "Content-Type",
    "If-None-Match",
    "X-Goog-Channel-Id",
    "X-Goog-Channel-Token",
    "X-Goog-Resource-State",
    "X-Forwarded-For",
    "Accept",
    "Content-Length",
]


def _header_value(raw: bytes) -> bytes:
    """What may travel in a header value: tab, printable ASCII and obs-text, no whitespace at
    either end (h11, the client's HTTP/1.1 library, refuses to send anything else)."""
    return bytes(c for c in raw if c == 9 or 32 <= c < 127 or c >= 128).strip(b" \t")


HEADER_BYTES = st.binary(max_size=200).map(_header_value)
HEADER_VALUES = st.one_of(
    st.sampled_from(ODD).map(lambda v: _header_value(v.encode("utf-8", "surrogatepass"))),
    HEADER_BYTES,
    st.sampled_from(
        [
            b"t=\xb2",
            b"t=1,v1=" + b"0" * 64,
            b"Bearer",
            b"Bearer syncd_",
            b"syncd_admin=x",
            b"multipart/form-data; boundary=x",
            b"application/x-www-form-urlencoded",
            b"*",
            b'W/"x"',
            b"9" * 40,
            b"-5",
        ]
    ),
)
BODIES = st.one_of(
    st.binary(max_size=3000),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    PAYLOADS.map(lambda p: to_json(p).encode("utf-8", "surrogatepass")),
    st.dictionaries(TEXT, TEXT, max_size=5).map(
        lambda d: urlencode(
            {
                k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                for k, v in d.items()
            }
        ).encode()
    ),
    st.sampled_from(
        [
            b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\nsyncd_x\r\n--x--\r\n',
            b"--x\r\nContent-Disposition: form-data\r\n\r\n",
            b'{"version": ' + b"9" * 5000 + b"}",
            b'{"therapists": ["' + b"a" * 5000 + b'"]}',
            b'{"all": true, "dry_run": "yes"}',
            b'{"all": 1e999}',
            str(deep_text(5000)).encode(),
        ]
    ),
)
PER_ENDPOINT = 25
QUERY_NAMES = ["limit", "from", "to", "q", "all", "therapist", "keep_calendar_entries", "state"]
REQUEST_PARTS = {
    "params": st.lists(TEXT, min_size=2, max_size=2),
    "query": st.dictionaries(st.sampled_from([*QUERY_NAMES, "code", "error"]), TEXT, max_size=3),
    "credential": st.sampled_from(
        ["none", "junk", "read", "admin", "session", "session+form", "signature"]
    ),
    "headers": st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=3),
    "body": BODIES,
}


@dataclass
class World:
    url: str
    read: str
    admin: str
    session: str
    feed: str


def _routes(app: App) -> list[tuple[str, str]]:
    """(method, path template) of every route the daemon serves."""
    out = []
    for route in build_app(app, NoDaemon()).routes:
        if isinstance(route, Route):
            out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif isinstance(route, Mount):
            out.append(("GET", route.path + "/{path}"))
    return out


def _populate(app: App) -> tuple[str, str, str]:
    ing = app.ingestor()
    assert ing.ingest(f.therapist("t-1")).ok
    assert ing.ingest(f.session("s-kept", f.future(days=4))).ok
    feed = feeds.feed_url(app, "t-1").rsplit("/feeds/", 1)[1].removesuffix(".ics")
    with app.sessions.begin() as s:
        read = auth.create(s, "viewer", auth.Scope.READ, app.clock())
        admin = auth.create(s, "ops", auth.Scope.ADMIN, app.clock())
        s.add(
            ConnectionRow(
                therapist_id="t-1",
                provider="google",
                url="",
                username="",
                secret=app.box.seal("refresh-token"),
                state="ok",
                failures=0,
                created_at=app.clock(),
                channel_id="chan-1",
                channel_token_hash="0" * 64,
            )
        )
    return read, admin, feed


def test_every_endpoint_never_5xx_and_refusals_change_nothing(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    read, admin, feed = _populate(app)
    endpoints = _routes(app)
    assert len(endpoints) >= 20, endpoints
    hits: Counter[str] = Counter()
    unchanged_checks = Counter[str]()

    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        with httpx.Client(base_url=url, timeout=30) as browser:
            form = browser.get("/admin/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            signed_in = browser.post("/admin/login", data={"token": admin, "csrf": csrf.group(1)})
            assert signed_in.status_code == 303
            session_cookie = browser.cookies["syncd_admin"]
            page = browser.get("/admin").text
            form_csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert form_csrf is not None

        def request(
            endpoint: tuple[str, str],
            params: list[str],
            query: dict[str, str],
            credential: str,
            headers: dict[str, bytes],
            body: bytes,
        ) -> None:
            method, template = endpoint
            values = iter(params)
            path = re.sub(r"\{[^}]+\}", lambda m: _in_url(next(values)), template)
            if template == "/feeds/{token}.ics" and credential == "read":
                path = f"/feeds/{feed}.ics"  # a real feed, with hostile headers
            if query:
                path += "?" + "&".join(f"{_in_url(k)}={_in_url(v)}" for k, v in query.items())
            sent: dict[str, Any] = {
                "none": {},
                "junk": {"Authorization": "Bearer syncd_junk", "Cookie": "syncd_admin=junk"},
                "read": {"Authorization": f"Bearer {read}"},
                "admin": {"Authorization": f"Bearer {admin}"},
                "session": {"Cookie": f"syncd_admin={session_cookie}"},
                "session+form": {"Cookie": f"syncd_admin={session_cookie}"},
                "signature": _signed(body),
            }[credential]
            if credential == "session+form" and template != "/admin/logout":
                # A dashboard form with the session's CSRF token and hostile fields.
                fields = dict(zip(("target", "full"), params, strict=True))
                body = _form({"csrf": form_csrf.group(1), **fields})
                sent["Content-Type"] = "application/x-www-form-urlencoded"
            merged: dict[str, Any] = {**sent, **headers}
            if "Content-Length" in merged:
                merged.pop("Content-Length")  # httpx frames the body; a lie would hang
            before = snapshot(app, access=False)
            response = client.request(method, path, headers=merged, content=body)
            hits[template] += 1
            assert response.status_code < 500, (method, path, response.text[:300])
            if response.status_code >= 300 or _refused_all(template, response):
                assert snapshot(app, access=False) == before, (method, path)
                unchanged_checks[template] += 1

        for endpoint in endpoints:  # each one fuzzed on its own, so none is left out
            fuzz = given(endpoint=st.just(endpoint), **REQUEST_PARTS)(request)
            settings(SETTINGS, max_examples=PER_ENDPOINT)(fuzz)()

    missing = {t for _, t in endpoints} - set(hits)
    assert not missing, missing
    # The state comparison ran on (nearly) every answer, for every endpoint.
    assert sum(unchanged_checks.values()) >= 0.9 * sum(hits.values()), unchanged_checks
    _no_tracebacks(caplog)


def _form(fields: dict[str, str]) -> bytes:
    return urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}).encode()


def _refused_all(template: str, response: httpx.Response) -> bool:
    """A 2xx that nonetheless changed nothing: events all refused, an erasure that found no
    one, and reads."""
    if template == "/v1/events":
        return all(r["result"] == "refused" for r in response.json()["results"])
    if template.startswith(("/v1/admin/clients/", "/v1/admin/therapists/{")):
        return response.json().get("found") is False
    return response.request.method == "GET"

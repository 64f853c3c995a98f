"""The shape of connectors/ and how syncd/ reaches them: the one Retry-After parser, providers
as packages of small parts that share code through connectors/common.py instead of copying
it, internal fallbacks outside the public error hierarchy, no process-wide caches, and
optional capabilities reached through the connector's accessors, never by provider name,
``getattr`` or a concrete class."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.base import BusyOptions
from connectors.caldav import CalDAVConnector, CalDAVSettings, ServerMemory
from connectors.caldav.errors import (
    Fallback,
    Op,
    QueryFailed,
    ReportUnsupported,
    SyncUnsupported,
    status_error,
    surfaced,
)
from connectors.common import MAX_RETRY_AFTER, busy_window, parse_retry_after
from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    ConnectorError,
    InvalidSyncToken,
    NotFound,
    ProtocolError,
    Transient,
)
from connectors.google import GoogleConnector, GoogleSettings
from connectors.google.errors import SequenceTooLow

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# -- Retry-After (RFC 9110 10.2.3) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        # The three HTTP-date forms a recipient must accept (RFC 9110 5.6.7), all UTC.
        ("Tue, 01 Jan 2030 12:01:30 GMT", 90.0),
        ("Tuesday, 01-Jan-30 12:01:30 GMT", 90.0),
        ("Tue Jan  1 12:01:30 2030", 90.0),
        # A date already past means now.
        ("Tue, 01 Jan 2030 11:00:00 GMT", 0.0),
    ],
)
def test_retry_after_is_delay_seconds_or_an_http_date(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "1.5", "-5", "+5", "1e3", "0x10", "٣"])
def test_retry_after_that_is_neither_form_is_ignored(value: str | None) -> None:
    """delay-seconds is 1*DIGIT: no fraction, sign, exponent or non-ASCII digit."""
    assert parse_retry_after(value, NOW) is None


@pytest.mark.parametrize(
    "value", ["86401", "9" * 400, "Fri, 01 Jan 2100 00:00:00 GMT", "Sat, 01 Jan 9999 00:00:00 GMT"]
)
def test_retry_after_is_capped_at_a_day(value: str) -> None:
    """A server's clock years ahead, or a typo, must not park a connection for good (nor
    overflow the date the engine computes from it)."""
    assert parse_retry_after(value, NOW) == MAX_RETRY_AFTER == 86_400.0


def test_both_providers_read_retry_after_alike() -> None:
    caldav = status_error(503, frozenset(), "Tue, 01 Jan 2030 12:01:30 GMT", Op.READ, "GET /")
    assert isinstance(caldav, Transient) and caldav.retry_after is not None
    assert 0 <= caldav.retry_after <= MAX_RETRY_AFTER
    unbounded = status_error(429, frozenset(), "9" * 50, Op.READ, "GET /")
    assert isinstance(unbounded, Transient) and unbounded.retry_after == MAX_RETRY_AFTER


def test_busy_window_refuses_a_single_ref_and_naive_times() -> None:
    with pytest.raises(TypeError):
        busy_window(NOW, NOW, "personal")
    with pytest.raises(ValueError, match="timezone-aware"):
        busy_window(NOW.replace(tzinfo=None), NOW, [])
    assert busy_window(NOW, NOW, []) is None


# -- CalDAV error translation, by operation family ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "op", "expected"),
    [
        (401, Op.SYNC, AuthFailed),
        (501, Op.SYNC, SyncUnsupported),
        (412, Op.SYNC, InvalidSyncToken),
        (403, Op.SYNC_INITIAL, SyncUnsupported),
        (403, Op.SYNC, AuthFailed),
        (400, Op.FREEBUSY, ReportUnsupported),
        (500, Op.BUSY_QUERY, QueryFailed),
        (503, Op.BUSY_QUERY, Transient),
        (412, Op.CREATE, AlreadyExists),
        (404, Op.READ, NotFound),
        (418, Op.WRITE, ProtocolError),
    ],
)
def test_each_status_means_what_its_operation_family_says(
    status: int, op: Op, expected: type[Exception]
) -> None:
    assert type(status_error(status, frozenset(), None, op, "REQ")) is expected


def test_internal_fallbacks_are_not_public_errors_and_never_leave_as_themselves() -> None:
    for fallback in (SyncUnsupported, ReportUnsupported, QueryFailed, SequenceTooLow):
        assert not issubclass(fallback, ConnectorError), fallback
    with pytest.raises(Transient), surfaced():
        raise QueryFailed("REPORT /cal/: HTTP 500")
    with pytest.raises(ProtocolError), surfaced():
        raise SyncUnsupported("REPORT /cal/: HTTP 501")
    assert issubclass(QueryFailed, Fallback)


# -- capabilities --------------------------------------------------------------------------------


def test_each_connector_states_its_capabilities() -> None:
    caldav = CalDAVConnector(CalDAVSettings(url="https://dav.test/", username="u", password="p"))
    assert caldav.busy_reader() is caldav and caldav.calendar_owner() is caldav
    assert caldav.batch_writer() is None
    assert caldav.change_watcher() is None and caldav.access_revoker() is None
    google = GoogleConnector(GoogleSettings(refresh_token="r", client_id="c", client_secret="s"))
    for accessor in (
        google.busy_reader,
        google.batch_writer,
        google.calendar_owner,
        google.change_watcher,
        google.access_revoker,
    ):
        assert accessor() is google
    caldav.close()
    google.close()


def test_capabilities_are_not_probed_by_isinstance() -> None:
    """The capability protocols are not runtime-checkable: a capability is what the
    connector's accessor answers, not whatever happens to have a method of that name."""
    caldav = CalDAVConnector(CalDAVSettings(url="https://dav.test/", username="u", password="p"))
    from connectors.base import BusyReader

    with pytest.raises(TypeError):
        isinstance(caldav, BusyReader)  # type: ignore[misc]  # the misuse under test
    caldav.close()
    assert callable(BusyOptions().counts)


def _module_trees(folder: str) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted((ROOT / folder).rglob("*.py"))]


# Modules whose job is one provider's own flow: the factory that builds a connector from the
# stored provider, and the connect pages and flows (a password form or an OAuth consent).
PROVIDER_FLOWS = {
    "syncd/app.py",
    "syncd/connect_flow.py",
    "syncd/connect_google.py",
    "syncd/web/connect_base.py",
    "syncd/web/connect_page.py",
}
CONCRETE = {"GoogleConnector", "CalDAVConnector"}
CAPABILITIES = {"BusyReader", "BatchWriter", "CalendarOwner", "ChangeWatcher", "AccessRevoker"}


def _findings(path: Path, tree: ast.Module) -> list[str]:
    where = path.relative_to(ROOT).as_posix()
    found: list[str] = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Compare) and where not in PROVIDER_FLOWS:
            sides = [node.left, *node.comparators]
            on_row = any(
                isinstance(s, ast.Attribute)
                and s.attr == "provider"
                and not (isinstance(s.value, ast.Name) and s.value.id[:1].isupper())
                for s in sides
            )
            if on_row and any(
                isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides
            ):
                found.append(f"{line}: a branch on the provider's name")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ast.unparse(a) for a in node.args]
            if node.func.id in ("getattr", "hasattr") and args and "connector" in args[0]:
                found.append(f"{line}: {node.func.id}() on a connector")
            if node.func.id == "isinstance" and len(node.args) == 2:
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if named & (CONCRETE | CAPABILITIES):
                    found.append(f"{line}: isinstance() against {sorted(named)}")
    return found


def test_syncd_reaches_capabilities_through_the_accessors_only() -> None:
    """No ``row.provider == "google"`` branch outside the provider's own flows, no
    ``getattr(connector, ...)``, no isinstance() against a concrete connector or a capability:
    ask ``connector.busy_reader()``, ``batch_writer()``, ``calendar_owner()``,
    ``change_watcher()`` or ``access_revoker()`` (connectors/README.md)."""
    findings = [f for path, tree in _module_trees("syncd") for f in _findings(path, tree)]
    assert findings == []


def test_the_check_finds_what_it_forbids() -> None:
    bad = ast.parse(
        "if row.provider == 'google': pass\n"
        "f = getattr(connector, 'delete_calendar', None)\n"
        "assert isinstance(connector, GoogleConnector)\n"
        "ok = ConnectionRow.provider == 'google'\n"
    )
    found = _findings(ROOT / "syncd" / "example.py", bad)
    assert [f.split(": ", 1)[1] for f in found] == [
        "a branch on the provider's name",
        "getattr() on a connector",
        "isinstance() against ['GoogleConnector']",
    ]


# -- the packages --------------------------------------------------------------------------------


def test_no_connector_module_is_over_400_lines() -> None:
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
        for p in (ROOT / "connectors").rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_providers_do_not_import_each_other() -> None:
    for provider, other in (("caldav", "google"), ("google", "caldav")):
        for path, tree in _module_trees(f"connectors/{provider}"):
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.startswith(f"connectors.{other}"), path


def test_no_module_keeps_a_process_wide_cache() -> None:
    """A module-level name bound to an empty container is filled at run time: state shared
    by every connector of the process. Such state belongs to the connector, or to an object
    passed in (``ServerMemory``)."""
    empty = ("set()", "{}", "[]", "dict()", "list()")
    caches = []
    for path, tree in _module_trees("connectors"):
        for node in tree.body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if value is not None and ast.unparse(value) in empty:
                caches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert caches == []


def test_server_memory_is_shared_only_where_passed_in() -> None:
    settings = CalDAVSettings(url="https://dav.test/", username="u", password="p")
    shared = ServerMemory()
    shared.learn_basic(("https://dav.test", "u"))
    assert not ServerMemory().wants_basic(("https://dav.test", "u"))
    shared.read_itemwise_for(("u", "https://dav.test/cal/"), 3600)
    assert shared.reads_itemwise(("u", "https://dav.test/cal/"))
    assert not shared.reads_itemwise(("u", "https://dav.test/other/"))
    CalDAVConnector(settings, shared).close()

"""What keeps client data out of every log line, whichever logger writes it and at any level.

syncd's own lines carry ids only (see :mod:`syncd.logs`). The rest of the process is libraries,
and some of them write what syncd must never keep: the caldav library logs whole response
bodies at DEBUG (through its logger, and through the root logger with module-level
``logging.debug``), HTTP libraries log URLs and headers, and a database error's text can quote
the row it failed on (PostgreSQL's ``DETAIL: Failing row contains (…)``). So, for the whole
process:

- **Library loggers are capped** at WARNING (or the configured level, if higher), whatever
  the root level: ``--debug`` shows syncd's own debugging, never a library's.
- **Records a library writes through the root logger** below WARNING are dropped (a filter on
  the root logger: such records are created there, so it sees every one of them).
- **Database errors are reduced**, in every record, to what names the failure without quoting
  data: the exception class, SQLSTATE, constraint, and the SQL statement (never its parameters,
  which the engines also hide with ``hide_parameters``).
- :class:`OwnRecordsFilter` on syncd's handler is the catch-all for libraries not named here.
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy.exc import StatementError

CAP: Final = logging.WARNING

# Third-party loggers (and their children) that may carry request or response content, SQL,
# URLs with tokens, or headers below WARNING.
LIBRARIES: Final = (
    "alembic",
    "apscheduler",
    "asyncio",
    "caldav",
    "charset_normalizer",
    "google",
    "google_auth_httplib2",
    "googleapiclient",
    "h11",
    "h2",
    "hpack",
    "httpcore",
    "httplib2",
    "httpx",
    "icalendar",
    "multipart",
    "niquests",
    "psycopg",
    "python_multipart",
    "radicale",
    "recurring_ical_events",
    "sqlalchemy",
    "starlette",
    "tzlocal",
    "urllib3",
    "urllib3_future",
    "uvicorn",
    "xandikos",
)

# Loggers that are syncd's own: everything else counts as a library.
OWN: Final = ("syncd", "connectors")
_OWN_DIRS: Final = tuple(
    str(Path(__file__).resolve().parent.parent / name) for name in ("syncd", "connectors")
)


def _is_own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN)


class OwnRecordsFilter(logging.Filter):
    """For syncd's handler: any library's record below the cap is dropped, named here or not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= CAP or _is_own(record.name):
            return True
        return record.name == "root" and _own_code(record)


def _own_code(record: logging.LogRecord) -> bool:
    return str(Path(record.pathname).resolve()).startswith(_OWN_DIRS)


class _LibraryRootRecords(logging.Filter):
    """On the root logger: drops the records libraries create there with module-level
    ``logging.debug()``/``info()`` (the caldav library does), which no logger level can cap."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= CAP or _own_code(record)


# -- database errors -------------------------------------------------------------------------------

# SQLSTATE classes whose primary message may quote a value (22: data exception, "invalid input
# syntax for type integer: "…"").
_QUOTING_CLASSES: Final = ("22",)


def _db_error(exc: BaseException) -> bool:
    if isinstance(exc, StatementError | sqlite3.Error):
        return True
    return type(exc).__module__.split(".", 1)[0] == "psycopg"


def safe_db_message(exc: BaseException) -> str:
    """A database error as one line that names the failure without quoting data."""
    if isinstance(exc, StatementError):
        inner = exc.orig if exc.orig is not None else None
        text = f"({_qualname(inner)}) {safe_db_message(inner)}" if inner is not None else ""
        statement = " ".join(str(exc.statement or "").split())[:300]
        return f"{text} [SQL: {statement}]".strip()
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    if sqlstate or diag is not None:
        parts = []
        primary = getattr(diag, "message_primary", None) if diag is not None else None
        if primary and not str(sqlstate or "").startswith(_QUOTING_CLASSES):
            parts.append(str(primary))
        if sqlstate:
            parts.append(f"SQLSTATE {sqlstate}")
        for what in ("table_name", "column_name", "constraint_name"):
            value = getattr(diag, what, None) if diag is not None else None
            if value:
                parts.append(f"{what.split('_')[0]} {value}")
        return "; ".join(parts)
    # Client-side errors (no server involved: connection failures, a locked SQLite file) name
    # the connection, never a row. First line only: later lines are server detail.
    return (str(exc).strip().splitlines() or [""])[0]


def _qualname(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    return chain


def safe_traceback(exc: BaseException) -> str:
    """Like ``traceback.format_exception``, with database errors' messages made safe."""
    parts: list[str] = []
    for i, each in enumerate(reversed(_chain(exc))):
        if i:
            parts.append("\nwhich led to:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(each.__traceback__))
        message = safe_db_message(each) if _db_error(each) else str(each)
        parts.append(f"{_qualname(each)}: {message}\n")
    return "".join(parts).rstrip("\n")


def _scrub(record: logging.LogRecord) -> None:
    if isinstance(record.msg, BaseException) and _db_error(record.msg):
        record.msg = f"{type(record.msg).__name__}: {safe_db_message(record.msg)}"
    if isinstance(record.args, tuple) and any(
        isinstance(a, BaseException) and _db_error(a) for a in record.args
    ):
        record.args = tuple(
            f"{type(a).__name__}: {safe_db_message(a)}"
            if isinstance(a, BaseException) and _db_error(a)
            else a
            for a in record.args
        )
    exc_info = record.exc_info
    if exc_info and exc_info[1] is not None and any(_db_error(e) for e in _chain(exc_info[1])):
        # Formatters print exc_text when exc_info is gone; every stock formatter does.
        record.exc_text = safe_traceback(exc_info[1])
        record.exc_info = None


def _scrubbing(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _scrub(record)
        return record

    make.syncd_scrubbing = True  # type: ignore[attr-defined]
    return make


# -- installing ------------------------------------------------------------------------------------


def install(level: int | str | None = None) -> None:
    """Apply the guards to this process (idempotent). ``level``: the configured level (the
    root logger's when None); libraries stay at WARNING or above it."""
    root = logging.getLogger()
    threshold = logging.getLevelName(level) if isinstance(level, str) else level
    cap = max(CAP, int(threshold) if threshold is not None else root.level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(cap)
    if not any(isinstance(f, _LibraryRootRecords) for f in root.filters):
        root.addFilter(_LibraryRootRecords())
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "syncd_scrubbing", False):
        logging.setLogRecordFactory(_scrubbing(factory))

"""Logging setup. Log lines carry ids only: client names and contact data never reach a log.

One event per line: JSON (``time``, ``level``, ``logger``, ``message`` and the context fields)
when stderr is not a terminal, human-readable on a terminal. Under systemd (``JOURNAL_STREAM``
set) no timestamp of our own: journald adds it. Context fields (therapist, connection, pass)
come from ``contextvars`` set with ``log_context`` around each pass and each connection. A filter
redacts anything that looks like a secret, as defence in depth.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from connectors.base import current_pass
from syncd import log_guard

# The context of the current pass / connection, copied into every record.
CONTEXT_FIELDS = ("therapist", "connection", "pass_id")
_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "syncd_log_context", default=()
)

_SECRETS = (
    # Authorization headers and the like: "Bearer abc.def"
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    # Our API tokens (syncd.auth.PREFIX + token_urlsafe)
    (re.compile(r"\bsyncd_[A-Za-z0-9_-]{8,}"), "syncd_[redacted]"),
    # user:password@ in URLs
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1[redacted]@"),
    # password=..., secret: ..., token=... in free text or query strings
    (
        re.compile(
            r"(?i)\b((?:pass(?:word|wd)?|secret|client_secret|access_token|refresh_token|api_key)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;]+"
        ),
        r"\1[redacted]",
    ),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def new_pass_id() -> str:
    """A short id that ties together the log lines of one pass."""
    return uuid.uuid4().hex[:12]


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` (None values are skipped) to every log record emitted inside the block,
    in this thread / task only."""
    merged = dict(_context.get())
    merged.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def pass_context(therapist_id: str) -> Iterator[str]:
    """One pass: a new pass id in its log records and, as ``X-Syncd-Pass``, on its requests to
    calendar servers, so a server's access log can be matched with syncd's."""
    pass_id = new_pass_id()
    tag = current_pass.set(pass_id)
    try:
        with log_context(therapist=therapist_id, pass_id=pass_id):
            yield pass_id
    finally:
        current_pass.reset(tag)


def current_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current context onto the record and redacts secrets from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.syncd_context = current_context()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the formatter to report
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def _extras(record: logging.LogRecord) -> dict[str, str]:
    ctx: dict[str, str] = getattr(record, "syncd_context", None) or current_context()
    return ctx


class JsonFormatter(logging.Formatter):
    def __init__(self, *, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {}
        if self.timestamps:
            event["time"] = (
                datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            ).replace("+00:00", "Z")
        event["level"] = record.levelname
        event["logger"] = record.name
        event["message"] = redact(record.getMessage())
        event.update(_extras(record))
        if record.exc_info:
            event["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            event["exception"] = redact(record.exc_text)
        if record.stack_info:
            event["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(event, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    def __init__(self, *, timestamps: bool = True) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        if timestamps:
            fmt = "%(asctime)s " + fmt
        super().__init__(fmt, "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = _extras(record)
        if ctx:
            first, nl, rest = line.partition("\n")
            tags = " ".join(f"{k}={v}" for k, v in ctx.items())
            line = f"{first} [{tags}]{nl}{rest}"
        return redact(line)


def setup_logging(
    level: str, *, stream: IO[str] | None = None, json_lines: bool | None = None
) -> None:
    """Log to ``stream`` (stderr): JSON lines unless it is a terminal (``json_lines`` forces
    either), without timestamps under journald."""
    out = stream if stream is not None else sys.stderr
    if json_lines is None:
        isatty = getattr(out, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    timestamps = not os.environ.get("JOURNAL_STREAM")
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        JsonFormatter(timestamps=timestamps)
        if json_lines
        else HumanFormatter(timestamps=timestamps)
    )
    handler.addFilter(ContextFilter())
    handler.addFilter(log_guard.OwnRecordsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries never log below WARNING here, whatever the level: their DEBUG lines carry
    # request and response bodies (see syncd.log_guard).
    log_guard.install(level)

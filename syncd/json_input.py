"""Reading JSON from outside (platform events, admin API bodies): every way ``json`` refuses
input as one error type, and error text kept to one printable line."""

from __future__ import annotations

import json
from typing import Any


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped: what a sender put in
    a field or value never splits a log line or an error message."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class JSONError(ValueError):
    """A body that is not JSON syntax syncd accepts; ``str()`` is the one line to answer."""


def parse_json(raw: str | bytes) -> Any:
    """``json.loads`` with every way it refuses input as one error type: bad syntax, bad UTF-8,
    nesting beyond the recursion limit, and integers of more than 4,300 digits (Python refuses
    those with a plain ValueError, as a guard against quadratic-time conversion)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise JSONError("malformed JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the digit limit
        raise JSONError(f"malformed JSON ({one_line(str(exc))[:300]})") from None

"""Small helpers of the Google Calendar stand-in: ids, RFC 3339 times, patch merging and the
``fields`` partial-response selector."""

from __future__ import annotations

import copy
import re
import secrets
from datetime import UTC, datetime
from typing import Any, TypeVar

# Event ids: "characters allowed in the ID are those used in base32hex encoding, i.e. lowercase
# letters a-v and digits 0-9 ... the length of the ID must be between 5 and 1024 characters"
# (events resource reference, field ``id``).
BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")

JSON = dict[str, Any]


def base32hex_id(length: int = 26) -> str:
    return "".join(secrets.choice(BASE32HEX) for _ in range(length))


def now_utc() -> datetime:
    return datetime.now(UTC)


def rfc3339(dt: datetime) -> str:
    """Google's timestamp form: UTC, milliseconds, ``Z`` (e.g. ``2026-11-22T03:27:57.123Z``)."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time *with* an offset (``Z`` or ``+hh:mm``); ValueError otherwise."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError(f"no time zone offset in {value!r}")
    return dt


T = TypeVar("T")


def deep_copy(value: T) -> T:
    return copy.deepcopy(value)


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """Patch semantics of Google APIs: fields given replace, sub-objects are merged recursively,
    arrays are replaced whole, and ``null`` removes a field."""
    result = deep_copy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        elif isinstance(value, dict):
            result[key] = merge_patch({}, value)
        else:
            result[key] = deep_copy(value)
    return result


# --- partial responses: ``fields=items(id,etag),nextPageToken`` -------------------------------

FieldTree = dict[str, "FieldTree | None"]


def parse_fields(spec: str) -> FieldTree:
    """Parse the ``fields`` selector syntax (``a,b/c,d(e,f)``) into a tree; None means "all"."""
    pos = 0

    def add(tree: FieldTree, parts: list[str], sub: FieldTree | None) -> None:
        node = tree
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                if sub is None or node.get(part, {}) is None:
                    node[part] = None
                else:
                    existing = node.get(part) or {}
                    existing.update(sub)
                    node[part] = existing
                return
            if part in node and node[part] is None:
                return
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            node = child

    def parse_list() -> FieldTree:
        nonlocal pos
        tree: FieldTree = {}
        while pos < len(spec):
            start = pos
            while pos < len(spec) and spec[pos] not in ",()":
                pos += 1
            path = spec[start:pos].strip()
            sub: FieldTree | None = None
            if pos < len(spec) and spec[pos] == "(":
                pos += 1
                sub = parse_list()
                if pos >= len(spec) or spec[pos] != ")":
                    raise ValueError("unbalanced parentheses in fields")
                pos += 1
            parts = [p for p in path.split("/") if p]
            if parts:
                add(tree, parts, sub)
            if pos < len(spec) and spec[pos] == ",":
                pos += 1
                continue
            if pos < len(spec) and spec[pos] == ")":
                return tree
        return tree

    tree = parse_list()
    if pos != len(spec):
        raise ValueError("unbalanced parentheses in fields")
    return tree


def apply_fields(tree: FieldTree | None, value: Any) -> Any:
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [apply_fields(tree, item) for item in value]
    if isinstance(value, dict):
        return {k: apply_fields(sub, value[k]) for k, sub in tree.items() if k in value}
    return value

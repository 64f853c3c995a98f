"""An in-memory calendar that keeps the connector contract: tests/test_plan.py's ``FakeCalendar``
(the CalDAV write semantics and RFC 6578 sync tokens) plus the two rules a real CalDAV server
adds, so that it passes the conn-only part of tests/test_connector_contract.py
(tests/test_memory_calendar_contract.py): a resource name is one path segment, and a UID lives
in one resource only (CalDAV ``no-uid-conflict``)."""

from __future__ import annotations

import re

from connectors.base import RemoteItem
from connectors.errors import AlreadyExists, ProtocolError
from tests.test_plan import FakeCalendar

_UID = re.compile(r"^UID:(.*?)\r?$", re.MULTILINE)


def uid_of(body: str) -> str | None:
    found = _UID.search(body)
    return found.group(1).strip() if found else None


class MemoryCalendar(FakeCalendar):
    def href_for(self, name: str) -> str:
        if not name or "/" in name:
            raise ProtocolError(f"not a resource name: {name!r}")
        return super().href_for(name)

    def _uid_taken(self, href: str, body: str) -> str | None:
        uid = uid_of(body)
        if uid is None:
            return None
        for other, (_etag, other_body) in self.items.items():
            if other != href and uid_of(other_body) == uid:
                return other
        return None

    def create(self, name: str, body: str) -> RemoteItem:
        href = self.href_for(name)
        if href not in self.items and (other := self._uid_taken(href, body)) is not None:
            raise AlreadyExists(f"{href}: its UID is already in {other}")
        return super().create(name, body)

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        current = self.items.get(href)
        if current is not None and current[0] == etag and (other := self._uid_taken(href, body)):
            raise AlreadyExists(f"{href}: its UID is already in {other}")
        return super().update(href, body, etag)

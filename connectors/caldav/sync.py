"""CalDAV change detection: RFC 6578 sync-collection where the server offers it, otherwise an
ETag listing (PROPFIND, Depth 1) every time.

Whether sync-collection works is learnt from the server's answer (never from its name) by the
first listing, then fixed for the connector. A server that truncates its reply (507) is
followed from the token it gave, for at most ``MAX_SYNC_PAGES`` pages.
"""

from __future__ import annotations

import logging
from typing import Final
from xml.sax.saxutils import escape

from connectors.base import Changes
from connectors.caldav.discovery import Calendars
from connectors.caldav.errors import Op, SyncUnsupported
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import (
    PROPFIND_BODY,
    SYNC_BODY,
    Member,
    parse_multistatus,
)
from connectors.errors import InvalidSyncToken, NotFound, ProtocolError

log = logging.getLogger(__name__)

# A server that keeps truncating its sync-collection reply would otherwise loop forever.
MAX_SYNC_PAGES: Final = 1000


class ChangeListing:
    """``changes()`` of one calendar."""

    def __init__(self, transport: Transport, calendars: Calendars) -> None:
        self._transport = transport
        self._calendars = calendars
        # None until the server has shown whether sync-collection works; then fixed.
        self.sync_supported: bool | None = None

    def changes(self, token: str | None) -> Changes:
        calendar = self._calendars.url()
        try:
            if token is not None and self.sync_supported is not False:
                try:
                    return self._sync(calendar, token)
                except InvalidSyncToken as exc:
                    log.info("sync token for %s refused (%s); full listing", calendar, exc)
                except SyncUnsupported as exc:
                    log.info("sync-collection refused by %s (%s); full listing", calendar, exc)
            return self._full_listing(calendar)
        except NotFound:
            # The calendar itself is gone; let the next ensure_calendar() look again.
            self._calendars.forget()
            raise

    def _full_listing(self, calendar: str) -> Changes:
        if self.sync_supported is not False:
            try:
                changes = self._sync(calendar, "")
            except SyncUnsupported as exc:
                log.info("sync-collection unsupported by %s (%s); using PROPFIND", calendar, exc)
            else:
                self.sync_supported = True
                return changes
        changes = self._propfind_listing(calendar)
        self.sync_supported = False
        return changes

    def _sync(self, calendar: str, token: str) -> Changes:
        """sync-collection REPORT from ``token`` ("" for everything), following truncation."""
        full = token == ""
        op = Op.SYNC_INITIAL if full else Op.SYNC
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for page in range(MAX_SYNC_PAGES):
            try:
                body = SYNC_BODY.format(token=escape(token))
                response = self._transport.report(calendar, op, body, depth="0")
            except InvalidSyncToken as exc:
                if page == 0:
                    raise
                raise ProtocolError(f"server refused the sync token it just issued: {exc}") from exc
            result = parse_multistatus(response.tree, f"REPORT {calendar}")
            truncated = False
            for member in result.members:
                if member.status == 507:
                    # RFC 6578 3.6: the reply was cut short; continue from its token.
                    truncated = True
                elif self._is_calendar_or_child_collection(member):
                    continue
                elif member.status in (404, 410):
                    changed.pop(member.href, None)
                    if not full:
                        deleted.add(member.href)
                elif member.status in (None, 200):
                    changed[member.href] = member.etag or ""
                    deleted.discard(member.href)
            if not truncated:
                return Changes(
                    full=full, changed=changed, deleted=frozenset(deleted), token=result.sync_token
                )
            if not result.sync_token or result.sync_token == token:
                raise ProtocolError(f"REPORT {calendar}: truncated reply without a new sync token")
            token = result.sync_token
            op = Op.SYNC
        raise ProtocolError(f"REPORT {calendar}: still truncated after {MAX_SYNC_PAGES} pages")

    def _propfind_listing(self, calendar: str) -> Changes:
        response = self._transport.propfind(calendar, PROPFIND_BODY, depth="1")
        result = parse_multistatus(response.tree, f"PROPFIND {calendar}")
        changed = {
            member.href: member.etag or ""
            for member in result.members
            if member.status in (None, 200)
            and not member.is_collection
            and not self._is_calendar_or_child_collection(member)
        }
        return Changes(full=True, changed=changed, token=None)

    def _is_calendar_or_child_collection(self, member: Member) -> bool:
        return member.href.endswith("/") or member.href == self._calendars.path.rstrip("/")

"""CalDAV single resources: read, and conditional writes with ETags.

ETags are kept exactly as the server sent them, quotes and ``W/`` included, from the ``ETag``
header or the ``getetag`` property (which agree on every server tested), so they can be sent
back verbatim in ``If-Match``. Bodies are sent byte for byte as given (no CRLF rewriting, no
SEQUENCE bump). Servers may re-serialise what they store: Radicale and Xandikos both reorder
properties, so a body read back equals the one written line for line, and byte for byte only
once it is in the server's own form.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

from caldav.lib.python_utilities import WireBytes

from connectors.base import FetchedItem, RemoteItem
from connectors.caldav.discovery import Calendars
from connectors.caldav.errors import Op, translated
from connectors.caldav.hrefs import check_name, member_url
from connectors.caldav.transport import Transport
from connectors.caldav.webdav import (
    ICS_CONTENT_TYPE,
    PROPFIND_BODY,
    XML_HEADERS,
    body_text,
    parse_multistatus,
)
from connectors.errors import ConnectorError, NotFound, PreconditionFailed, ProtocolError


class Resources:
    """The resources of the connector's calendar."""

    def __init__(self, transport: Transport, calendars: Calendars) -> None:
        self._transport = transport
        self._calendars = calendars

    def href_for(self, name: str) -> str:
        check_name(name)
        self._calendars.url()
        return self._calendars.path + name

    def get(self, href: str) -> FetchedItem:
        response = self._transport.request("GET", self._url(href), Op.READ, ok=(200,))
        etag = response.headers.get("ETag")
        if etag is None:
            etag = self._etag_of(href)
        return FetchedItem(href=href, etag=etag, body=body_text(response))

    def create(self, name: str, body: str) -> RemoteItem:
        href = self.href_for(name)
        response = self._transport.request(
            "PUT",
            self._calendars.url() + quote(name, safe=""),
            Op.CREATE,
            body=WireBytes(body.encode("utf-8")),
            headers={"If-None-Match": "*", "Content-Type": ICS_CONTENT_TYPE},
            ok=(200, 201, 204),
        )
        return RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def update(self, href: str, body: str, etag: str) -> RemoteItem:
        try:
            response = self._transport.request(
                "PUT",
                self._url(href),
                Op.WRITE,
                body=WireBytes(body.encode("utf-8")),
                headers={"If-Match": etag, "Content-Type": ICS_CONTENT_TYPE},
                ok=(200, 201, 204),
            )
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise
        return RemoteItem(href=href, etag=self._etag_after_write(href, response))

    def delete(self, href: str, etag: str | None) -> None:
        headers = {"If-Match": etag} if etag is not None else {}
        try:
            self._transport.request(
                "DELETE", self._url(href), Op.WRITE, headers=headers, ok=(200, 202, 204)
            )
        except PreconditionFailed:
            self._raise_if_absent(href)
            raise

    def delete_calendar(self) -> bool:
        """Delete the whole calendar collection, then check: False when the server
        acknowledged the DELETE but still has the calendar."""
        url = self._calendars.ensure()
        with contextlib.suppress(NotFound):
            self._transport.request("DELETE", url, Op.WRITE, ok=(200, 202, 204))
        with translated(Op.READ, "delete_calendar"):
            gone = self._calendars.kind_of(url) is None
        if gone:
            self._calendars.forget()
        return gone

    def _url(self, href: str) -> str:
        calendar = self._calendars.url()
        return member_url(calendar, self._calendars.path, href)

    def _etag_after_write(self, href: str, response: Any) -> str:
        etag = response.headers.get("ETag")
        if etag:
            return str(etag)
        # RFC 4791 5.3.4: a server that altered the body on storage sends no ETag; the
        # stored resource's ETag is one PROPFIND away, without downloading the body.
        return self._etag_of(href)

    def _etag_of(self, href: str) -> str:
        url = self._url(href)
        response = self._transport.request(
            "PROPFIND",
            url,
            Op.READ,
            body=PROPFIND_BODY,
            headers={"Depth": "0", **XML_HEADERS},
            ok=(207,),
        )
        for member in parse_multistatus(response.tree, f"PROPFIND {url}").members:
            if member.status in (404, 410):
                raise NotFound(f"PROPFIND {url}: HTTP {member.status}")
            if member.etag:
                return member.etag
        raise ProtocolError(f"PROPFIND {url}: server reports no getetag")

    def _raise_if_absent(self, href: str) -> None:
        """Tell "gone" from "changed" after a 412: servers answer If-Match on a missing
        resource with 412 (RFC 9110 13.1.1), but the engine must recreate, not merge."""
        try:
            kind = self._calendars.kind_of(self._url(href))
        except ConnectorError:
            return
        if kind is None:
            raise NotFound(f"{href} does not exist")

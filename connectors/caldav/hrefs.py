"""CalDAV hrefs and URLs.

An href is the *percent-decoded path* of a resource (``/alice/syncd/a b@c.ics``): servers
disagree on how to encode the same path (Radicale sends ``%40`` for ``@``, Xandikos sends ``@``),
so decoding is the only form that ``create()`` can predict and that stays equal to what
``changes()`` reports for the same resource. When a request is made, the part below the
calendar is re-encoded and appended to the calendar URL exactly as the server spelled it. (A
name containing an encoded ``/`` cannot be represented; servers do not produce those.)
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from connectors.errors import ProtocolError


def href_path(text: str) -> str:
    """The decoded path of an href or URL as a server wrote it."""
    return unquote(urlsplit(text.strip()).path)


def with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def quote_path(path: str) -> str:
    return quote(path, safe="/")


def check_name(name: str) -> None:
    """A resource name is one path segment."""
    if not name or "/" in name or name in (".", ".."):
        raise ProtocolError(f"invalid resource name {name!r}")


def member_url(calendar_url: str, calendar_path: str, href: str) -> str:
    """The URL to request for ``href`` (a decoded path, or a URL) in the calendar at
    ``calendar_url``, whose decoded path is ``calendar_path``."""
    path = urlsplit(href).path if "://" in href else href
    if not path.startswith("/"):
        raise ProtocolError(f"href {href!r} is not an absolute path")
    if path.startswith(calendar_path):
        # Keep the calendar's own spelling from the server and encode only the name.
        return calendar_url + quote_path(path[len(calendar_path) :])
    parts = urlsplit(calendar_url)
    return f"{parts.scheme}://{parts.netloc}{quote_path(path)}"

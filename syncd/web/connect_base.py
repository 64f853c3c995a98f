"""What every page of the therapist's connect page shares: security headers, the cookie that
lets the browser which used a link finish its steps, rendering, and checking the link of a
request (see :mod:`syncd.web.connect_page`)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from syncd import (
    caldav_discovery,
    caldav_presets,
    connect_links,
)
from syncd.app import App
from syncd.caldav_presets import Problem
from syncd.connect_links import Link, LinkError
from syncd.store.tables import ConnectionRow
from syncd.web.host import Host

T = TypeVar("T")
HERE = Path(__file__).parent
COOKIE = "syncd_connect"
_SESSION_PURPOSE = b"syncd connect sessions v1"


def _security_headers(app: App) -> dict[str, str]:
    # The Google button is a form whose answer redirects to Google's consent screen; CSP's
    # form-action covers redirects after a submission, so Google's origin is named too.
    auth = urlsplit(app.config.google.auth_url)
    google = f" {auth.scheme}://{auth.netloc}" if auth.netloc else ""
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; "
            f"form-action 'self'{google}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class _Sessions:
    """``<link id>.<expiry>.<mac>`` cookies: which used link this browser may finish."""

    def __init__(self, app: App) -> None:
        self._key = app.box.derive(_SESSION_PURPOSE)
        self._app = app

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def dump(self, link_id: str) -> str:
        minutes = self._app.config.connect.session_minutes
        expires = int(self._app.clock().timestamp() + minutes * 60)
        body = f"{link_id}.{expires}"
        return f"{body}.{self._mac(body)}"

    def allows(self, value: str | None, link_id: str) -> bool:
        if not value or len(value) > 300 or value.count(".") != 2:
            return False
        found, expires, mac = value.split(".")
        body = f"{found}.{expires}"
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return False
        return (
            found == link_id and expires.isdigit() and int(expires) > self._app.clock().timestamp()
        )


def connection_label(row: ConnectionRow) -> str:
    if row.provider == "google":
        return "Google Calendar"
    for preset in caldav_presets.PRESETS.values():
        if preset.server_url and row.url.startswith(preset.server_url):
            return f"{preset.name} ({row.username})"
    host = urlsplit(row.url).hostname or row.url
    return f"{host} ({row.username})"


class ConnectPageBase:
    """The pages of one daemon (or test client); ``dns`` replaces the system resolver."""

    def __init__(
        self,
        app: App,
        daemon: Host | None,
        *,
        dns: caldav_discovery.DnsResolver | None = None,
    ) -> None:
        self.app = app
        self.daemon = daemon
        self.dns = dns or caldav_discovery.DnsPythonResolver(
            timeout=min(app.config.caldav.timeout, 5)
        )
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.headers = _security_headers(app)
        self.sessions = _Sessions(app)
        self.secure = app.config.http.public_url.startswith("https://")

    # -- helpers --------------------------------------------------------------------------------

    async def off_loop(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kw)
        )

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("problem", None)
        body = self.env.get_template(f"connect/{name}").render(**context)
        return HTMLResponse(body, status_code=status, headers=self.headers)

    def message(self, title: str, text: str, status: int, again: str | None = None) -> Response:
        return self.render("message.html", status, title=title, message=text, again=again)

    def problem(
        self, title: str, problem: Problem, status: int, again: str | None = None
    ) -> Response:
        return self.render(
            "message.html", status, title=title, message="", problem=problem, again=again
        )

    def link_refused(self, exc: LinkError) -> Response:
        titles = {
            "invalid": "This link does not work",
            "expired": "This link has expired",
            "used": "This link was already used",
        }
        return self.message(titles[exc.kind], str(exc), 404 if exc.kind == "invalid" else 410)

    @staticmethod
    def base(link: Link) -> str:
        return f"{connect_links.PATH_PREFIX}{link.token}"

    def redirect(self, url: str, link_id: str | None = None) -> Response:
        response = RedirectResponse(url, status_code=303, headers=self.headers)
        if link_id is not None:
            response.set_cookie(
                COOKIE,
                self.sessions.dump(link_id),
                max_age=int(self.app.config.connect.session_minutes * 60),
                path=connect_links.PATH_PREFIX,
                secure=self.secure,
                httponly=True,
                samesite="lax",
            )
        return response

    def wake(self) -> None:
        if self.daemon is not None:
            self.daemon.wake()

    async def access(self, request: Request, *, after_use: bool = False) -> Link | Response:
        """The link of this request, if it may do this: open, or (``after_use``) used by
        this browser within its session."""
        try:
            link = await self.off_loop(
                connect_links.check_link, self.app, request.path_params["token"]
            )
            if (
                after_use
                and link.used_at is not None
                and self.sessions.allows(request.cookies.get(COOKIE), link.id)
            ):
                return link
            connect_links.require_open(link, self.app.clock())
        except LinkError as exc:
            return self.link_refused(exc)
        return link

    @staticmethod
    async def form_of(request: Request, fields: int = 50) -> Any:
        return await request.form(max_files=0, max_fields=fields)

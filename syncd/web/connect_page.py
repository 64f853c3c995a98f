"""The therapist's connect page, ``/connect/<signed link>``: plain HTML forms, no JavaScript,
the dashboard's stylesheet, phone first. What each step does is :mod:`syncd.connect_flow` and
:mod:`syncd.connect_google`; this module is the HTTP around them.

Access: an open link (unused, unexpired) may do everything. Using it (a connection made or
restored) hands the browser a signed cookie for that link alone (``HttpOnly``,
``SameSite=Lax`` so it survives the redirect back from Google, ``Path=/connect/``, ``Secure``
behind https) with which it may finish the remaining steps (busy calendars, the confirmation,
disconnecting) for ``[connect] session_minutes``; anyone else opening the link is told it was
used. The link itself is the credential, so it never leaves this page: ``Referrer-Policy:
no-referrer``, ``Cache-Control: no-store``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from syncd import caldav_presets, connect_flow, connect_google, connect_links
from syncd.app import App
from syncd.connect_flow import ConnectProblem
from syncd.connect_links import Link, LinkError
from syncd.engine import ConnectionState
from syncd.project import local_label
from syncd.store.tables import ConnectionRow, TherapistRow
from syncd.web.connect_base import HERE, ConnectPageBase, connection_label
from syncd.web.host import Host


class ConnectPage(ConnectPageBase):
    """The routes of the connect page, one method per step."""

    # -- landing ------------------------------------------------------------------------------

    def start_context(self, link: Link) -> dict[str, Any]:
        with self.app.sessions() as s:
            therapist = s.get(TherapistRow, link.therapist_id)
            assert therapist is not None
        rows = connect_flow.connections(self.app, link.therapist_id)
        views = [{"id": r.id, "provider": r.provider, "label": connection_label(r)} for r in rows]
        broken_states = (ConnectionState.NEEDS_REAUTH, ConnectionState.AUTH_FAILED)
        broken = [v for v, r in zip(views, rows, strict=True) if r.state in broken_states]
        healthy = [v for v, r in zip(views, rows, strict=True) if r.state not in broken_states]
        return {
            "therapist": therapist,
            "broken": broken,
            "healthy": healthy,
            "presets": list(caldav_presets.PRESETS.values()),
            "google": bool(self.app.config.google.client_id),
            "base": self.base(link),
            "expires": local_label(link.expires_at, therapist.timezone),
        }

    async def start(self, request: Request) -> Response:
        link = await self.access(request, after_use=True)
        if isinstance(link, Response):
            return link
        if link.used_at is not None:
            return self.redirect(f"{self.base(link)}/done")
        return self.render("start.html", **await self.off_loop(self.start_context, link))

    # -- Google -------------------------------------------------------------------------------

    def google_context(self, link: Link) -> dict[str, Any]:
        return {"base": self.base(link), "calendar_name": self.app.config.google.calendar_name}

    async def google_form(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        return self.render("google.html", **self.google_context(link))

    async def google_start(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        form = await self.form_of(request)
        mode, connection = str(form.get("mode", "")), str(form.get("connection", ""))
        try:
            url = await self.off_loop(
                connect_google.start,
                self.app,
                link,
                mode,
                int(connection) if connection.isdigit() else None,
            )
        except ConnectProblem as exc:
            return self.render("google.html", 400, problem=exc.problem, **self.google_context(link))
        except LinkError as exc:
            return self.link_refused(exc)
        return RedirectResponse(url, status_code=303, headers=self.headers)

    def google_done(self, state: str, code: str, error: str | None) -> Response | None:
        finished = connect_google.finish(self.app, state, code, error)
        if finished is None:
            return None
        link = finished.link
        if finished.problem is not None:
            again = self.base(link) if link.used_at is None else None
            return self.problem("Not connected", finished.problem, 400, again)
        if finished.choose_calendar:
            return self.redirect(f"{self.base(link)}/google/calendar")
        return self.redirect(f"{self.base(link)}/calendars", link.id)

    async def google_calendar_form(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        try:
            calendars = await self.off_loop(connect_google.writable_calendars, self.app, link)
        except ConnectProblem as exc:
            return self.problem("Not connected", exc.problem, 400)
        return self.render("google_calendar.html", base=self.base(link), calendars=calendars)

    async def google_calendar_choose(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        form = await self.form_of(request)
        try:
            await self.off_loop(
                connect_google.choose_calendar, self.app, link, str(form.get("calendar", ""))
            )
        except ConnectProblem as exc:
            calendars = await self.off_loop(connect_google.writable_calendars, self.app, link)
            return self.render(
                "google_calendar.html",
                400,
                base=self.base(link),
                calendars=calendars,
                problem=exc.problem,
            )
        return self.redirect(f"{self.base(link)}/calendars", link.id)

    # -- CalDAV -------------------------------------------------------------------------------

    def caldav_page(
        self,
        link: Link,
        preset: caldav_presets.Preset,
        form: dict[str, str],
        reconnect: ConnectionRow | None = None,
        status: int = 200,
        problem: caldav_presets.Problem | None = None,
    ) -> Response:
        """The CalDAV form: a new connection with ``preset``, or the new password of
        ``reconnect`` (an existing connection), shown again with ``problem`` after a failure."""
        if reconnect is None:
            action, label = f"{self.base(link)}/caldav/{preset.key}", ""
        else:
            action, label = (
                f"{self.base(link)}/reconnect/{reconnect.id}",
                connection_label(reconnect),
            )
        return self.render(
            "caldav.html",
            status,
            preset=preset,
            base=self.base(link),
            form=form,
            action=action,
            reconnect=reconnect,
            reconnect_label=label,
            problem=problem,
        )

    async def preset_access(
        self, request: Request
    ) -> tuple[Link, caldav_presets.Preset] | Response:
        """The open link and the CalDAV provider a request names, or the page saying why not."""
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        preset = caldav_presets.PRESETS.get(request.path_params["preset"])
        if preset is None:
            return self.message("Not found", "There is no such calendar provider here.", 404)
        return link, preset

    async def caldav_form(self, request: Request) -> Response:
        found = await self.preset_access(request)
        if isinstance(found, Response):
            return found
        link, preset = found
        return self.caldav_page(link, preset, {"address": "", "username": ""})

    async def caldav_connect(self, request: Request) -> Response:
        found = await self.preset_access(request)
        if isinstance(found, Response):
            return found
        link, preset = found
        form = await self.form_of(request)
        address, username = str(form.get("address", "")), str(form.get("username", ""))
        try:
            await self.off_loop(
                connect_flow.connect_caldav,
                self.app,
                link,
                preset.key,
                address=address,
                username=username,
                password=str(form.get("password", "")),
                dns=self.dns,
            )
        except ConnectProblem as exc:
            form_back = {"address": address[:2000], "username": username[:200]}
            return self.caldav_page(link, preset, form_back, status=400, problem=exc.problem)
        except LinkError as exc:
            return self.link_refused(exc)
        self.wake()
        return self.redirect(f"{self.base(link)}/calendars", link.id)

    # -- reconnect ------------------------------------------------------------------------------

    async def reconnect_form(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        try:
            row = await self.off_loop(
                connect_flow.connection_of, self.app, link.therapist_id, request.path_params["cid"]
            )
        except ConnectProblem as exc:
            return self.problem("Not found", exc.problem, 404)
        if row.provider == "google":
            return self.render(
                "reconnect_google.html",
                base=self.base(link),
                connection_id=row.id,
                label=connection_label(row),
            )
        form = {"address": "", "username": row.username}
        return self.caldav_page(link, connect_flow.preset_of(row.url), form, row)

    async def reconnect(self, request: Request) -> Response:
        link = await self.access(request)
        if isinstance(link, Response):
            return link
        cid: int = request.path_params["cid"]
        form = await self.form_of(request)
        try:
            await self.off_loop(
                connect_flow.reconnect_caldav, self.app, link, cid, str(form.get("password", ""))
            )
        except ConnectProblem as exc:
            row = await self.off_loop(connect_flow.connection_of, self.app, link.therapist_id, cid)
            form = {"address": "", "username": row.username}
            preset = connect_flow.preset_of(row.url)
            return self.caldav_page(link, preset, form, row, 400, exc.problem)
        except LinkError as exc:
            return self.link_refused(exc)
        self.wake()
        return self.redirect(f"{self.base(link)}/calendars", link.id)

    # -- after connecting -----------------------------------------------------------------------

    async def busy_form(self, request: Request) -> Response:
        link = await self.access(request, after_use=True)
        if isinstance(link, Response):
            return link
        if link.connection_id is None:
            return self.redirect(self.base(link))
        try:
            choices = await self.off_loop(
                connect_flow.busy_choices, self.app, link.therapist_id, link.connection_id
            )
        except ConnectProblem as exc:
            return self.render(
                "busy.html", 502, base=self.base(link), choices=[], problem=exc.problem
            )
        return self.render("busy.html", base=self.base(link), choices=choices)

    async def busy_choose(self, request: Request) -> Response:
        link = await self.access(request, after_use=True)
        if isinstance(link, Response):
            return link
        if link.connection_id is None:
            return self.redirect(self.base(link))
        form = await self.form_of(request, connect_flow.MAX_CALENDARS + 5)
        refs = [str(v) for v in form.getlist("busy")]
        try:
            await self.off_loop(
                connect_flow.choose_busy, self.app, link.therapist_id, link.connection_id, refs
            )
        except ConnectProblem as exc:
            return self.render(
                "busy.html", 400, base=self.base(link), choices=[], problem=exc.problem
            )
        self.wake()
        return self.redirect(f"{self.base(link)}/done")

    def done_context(self, link: Link, connection_id: int) -> dict[str, Any]:
        row = connect_flow.connection_of(self.app, link.therapist_id, connection_id)
        name = (
            self.app.config.google.calendar_name
            if row.provider == "google"
            else self.app.config.caldav.calendar_name
        )
        return {
            "base": self.base(link),
            "label": connection_label(row),
            "samples": connect_flow.samples(self.app, link.therapist_id),
            "owned": row.calendar_owned,
            "calendar_name": name,
            "connection_id": row.id,
        }

    async def done(self, request: Request) -> Response:
        link = await self.access(request, after_use=True)
        if isinstance(link, Response):
            return link
        if link.connection_id is None:
            return self.redirect(self.base(link))
        try:
            context = await self.off_loop(self.done_context, link, link.connection_id)
        except ConnectProblem as exc:
            return self.problem("Not connected", exc.problem, 410)
        return self.render("done.html", **context)

    async def disconnect(self, request: Request) -> Response:
        link = await self.access(request, after_use=True)
        if isinstance(link, Response):
            return link
        form = await self.form_of(request)
        raw = str(form.get("connection", ""))
        cid = int(raw) if raw.isdigit() else -1
        if link.used_at is not None and cid != link.connection_id:
            return self.message(
                "Not allowed", "This page can only disconnect the calendar it connected.", 403
            )
        try:
            await self.off_loop(connect_flow.disconnect, self.app, link.therapist_id, cid)
        except ConnectProblem as exc:
            return self.problem("Not disconnected", exc.problem, 400)
        return self.message(
            "Disconnected",
            "Your calendar is disconnected: the entries we added are removed and your sign-in "
            "is forgotten. You can close this page.",
            200,
        )

    # -- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        prefix = connect_links.PATH_PREFIX.rstrip("/")
        static = StaticFiles(directory=HERE / "static")
        return [
            Mount(f"{prefix}/static", static, name="connect-static"),
            Route(f"{prefix}/{{token}}", self.start, methods=["GET"]),
            Route(f"{prefix}/{{token}}/google", self.google_form, methods=["GET"]),
            Route(f"{prefix}/{{token}}/google", self.google_start, methods=["POST"]),
            Route(
                f"{prefix}/{{token}}/google/calendar", self.google_calendar_form, methods=["GET"]
            ),
            Route(
                f"{prefix}/{{token}}/google/calendar",
                self.google_calendar_choose,
                methods=["POST"],
            ),
            Route(f"{prefix}/{{token}}/caldav/{{preset}}", self.caldav_form, methods=["GET"]),
            Route(f"{prefix}/{{token}}/caldav/{{preset}}", self.caldav_connect, methods=["POST"]),
            Route(
                f"{prefix}/{{token}}/reconnect/{{cid:int}}", self.reconnect_form, methods=["GET"]
            ),
            Route(f"{prefix}/{{token}}/reconnect/{{cid:int}}", self.reconnect, methods=["POST"]),
            Route(f"{prefix}/{{token}}/calendars", self.busy_form, methods=["GET"]),
            Route(f"{prefix}/{{token}}/calendars", self.busy_choose, methods=["POST"]),
            Route(f"{prefix}/{{token}}/done", self.done, methods=["GET"]),
            Route(f"{prefix}/{{token}}/disconnect", self.disconnect, methods=["POST"]),
        ]


def google_callback(app: App, state: str, code: str, error: str | None) -> Response | None:
    """Finishes, at Google's redirect, a consent begun from a connect link."""
    return ConnectPage(app, None).google_done(state, code, error)


def routes(app: App, daemon: Host) -> list[BaseRoute]:
    return ConnectPage(app, daemon).routes()

"""The admin dashboard at ``/admin``: every therapist's sync health, pending holds, conflicts,
drift repairs and the outbox backlog, and a manual resync (dry-run preview, then confirm).

Sign-in takes an API token (``syncd token create``, scope ``read`` or ``admin``) through a form
with a CSRF token, and hands back a session cookie (``HttpOnly``, ``SameSite=Strict``,
``Path=/admin``, ``Secure`` when the public URL is https) holding a random secret. Sessions live
in the database (``syncd.store.admin_sessions``), so they survive a restart, work across
replicas, and end at once everywhere when signed out, revoked (``syncd sessions revoke``) or
when their token is revoked. Failed sign-ins are rate-limited per client address. Forms that
change anything carry a per-session CSRF token, compared in constant time.

What the pages show is built by :mod:`syncd.web.queries` as the objects of :mod:`syncd.web.views`
(ids only, never a client's name); sessions and CSRF checks are :mod:`syncd.web.security`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from syncd import connect_links, operations
from syncd.app import App
from syncd.ratelimit import Kind
from syncd.store.admin_sessions import TTL as SESSION_TTL
from syncd.store.admin_sessions import SignedIn
from syncd.store.tables import ConnectionRow
from syncd.web import security
from syncd.web.host import Host
from syncd.web.queries import gather
from syncd.web.security import LOGIN_COOKIE, SESSION_COOKIE, off_loop
from syncd.web.views import ALL, HERE, make_templates, resync_view

COOKIE = SESSION_COOKIE

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    login_csrf = security.LoginCsrf(security.session_key(app))
    templates = make_templates(app.clock)
    cookie_flags = security.session_cookie_flags(app)

    def page(
        request: Request,
        name: str,
        context: dict[str, Any],
        status: int = 200,
        session: SignedIn | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        context = {"session": session, "now": app.clock(), **context}
        return templates.TemplateResponse(
            request,
            name,
            context,
            status_code=status,
            headers={**SECURITY_HEADERS, **(headers or {})},
        )

    async def signed_in(request: Request) -> SignedIn | None:
        return await off_loop(security.load_session, app, request.cookies.get(COOKIE))

    def to_login() -> Response:
        return RedirectResponse("/admin/login", status_code=303, headers=SECURITY_HEADERS)

    def forbidden(request: Request, why: str, session: SignedIn | None) -> Response:
        return page(request, "error.html", {"title": "Forbidden", "message": why}, 403, session)

    async def checked_form(
        request: Request,
    ) -> tuple[SignedIn | None, Any, Response | None]:
        """The session and form of a state-changing POST, or the 403 that refuses it."""
        session = await signed_in(request)
        form = await request.form()
        if session is None:
            return None, form, forbidden(request, "Sign in first.", None)
        if not security.csrf_matches(session, form.get("csrf")):
            return (
                session,
                form,
                forbidden(
                    request, "The form expired or did not come from this dashboard.", session
                ),
            )
        return session, form, None

    # -- sign-in ----------------------------------------------------------------------------

    def login_page(
        request: Request, error: str | None, status: int = 200, wait: int | None = None
    ) -> Response:
        """The sign-in form with a fresh CSRF pair (nonce in a cookie, its MAC in the form)."""
        nonce, field = login_csrf.issue()
        headers = {"Retry-After": str(wait)} if wait is not None else None
        response = page(
            request, "login.html", {"error": error, "csrf": field}, status, headers=headers
        )
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, **cookie_flags)
        return response

    async def login_form(request: Request) -> Response:
        if await signed_in(request) is not None:
            return RedirectResponse("/admin", status_code=303, headers=SECURITY_HEADERS)
        return login_page(request, None)

    async def login(request: Request) -> Response:
        wait = await security.refused_for(request, app, Kind.LOGIN)
        if wait is not None:
            message = f"Too many failed sign-ins from this address. Try again in {wait} s."
            return login_page(request, message, 429, wait)
        form = await request.form()
        if not login_csrf.check(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            message = "The sign-in form expired or did not come from this dashboard; try again."
            return login_page(request, message, 403)
        token = form.get("token")
        client = security.client_address(request)
        started = (
            await off_loop(security.start_session, app, token.strip(), client)
            if isinstance(token, str) and token.strip()
            else None
        )
        if started is None:
            if isinstance(token, str) and token.strip():
                await security.count_failure(request, app, Kind.LOGIN)
            return login_page(request, "That token is not valid.", 401)
        secret, _session = started
        response = RedirectResponse("/admin", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE, secret, max_age=int(SESSION_TTL.total_seconds()), **cookie_flags
        )
        response.delete_cookie(LOGIN_COOKIE, **cookie_flags)
        return response

    async def logout(request: Request) -> Response:
        session, _form, refused = await checked_form(request)
        if refused is not None:
            return refused
        assert session is not None
        await off_loop(security.end_session, app, session.id)
        response = to_login()
        response.delete_cookie(COOKIE, **cookie_flags)
        return response

    # -- pages ------------------------------------------------------------------------------

    async def overview(request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_login()
        search = request.query_params.get("q", "")[:200]
        data = await off_loop(gather, app, app.clock(), search=search)
        context = {"data": data, "q": search, "lease_seconds": app.config.daemon.lease_seconds}
        return page(request, "overview.html", context, session=session)

    async def therapist(request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_login()
        tid = request.path_params["id"]
        data = await off_loop(gather, app, app.clock(), only=tid)
        if not data.therapists:
            message = f"There is no therapist {tid}."
            context: dict[str, Any] = {"title": "Not found", "message": message}
            return page(request, "error.html", context, 404, session)
        conflicts = await off_loop(operations.conflicts, app, therapist_id=tid)
        context = {"t": data.therapists[0], "conflicts": conflicts, "backlog": data.backlog}
        return page(request, "therapist.html", context, session=session)

    # -- resync -----------------------------------------------------------------------------

    def targets(form: Any) -> tuple[str, list[str]]:
        target = form.get("target")
        if not isinstance(target, str) or not target or len(target) > 200:
            raise operations.OperationError("no therapist chosen")
        if target == ALL:
            return target, operations.all_therapist_ids(app)
        return target, [target]

    async def run_resync(request: Request, *, dry_run: bool) -> Response:
        session, form, refused = await checked_form(request)
        if refused is not None:
            return refused
        assert session is not None
        if not session.can_act:
            return forbidden(request, "Resync needs a token with admin scope.", session)
        full = form.get("full") == "1"
        try:
            target, ids = await off_loop(targets, form)
            results = await off_loop(operations.resync, app, ids, full=full, dry_run=dry_run)
        except operations.OperationError as exc:
            context: dict[str, Any] = {"title": "Cannot resync", "message": str(exc)}
            return page(request, "error.html", context, 400, session)
        views = [resync_view(r) for r in results]
        context = {"target": target, "full": full, "results": views}
        name = "preview.html" if dry_run else "result.html"
        return page(request, name, context, session=session)

    async def preview(request: Request) -> Response:
        return await run_resync(request, dry_run=True)

    def new_reconnect_link(tid: str, cid: int) -> None:
        with app.sessions.begin() as s:
            row = s.get(ConnectionRow, cid) if 0 < cid < 2**31 else None
            if row is None or row.therapist_id != tid:
                raise operations.OperationError(f"therapist {tid} has no connection {cid}")
            signer = connect_links.app_signer(app)
            connect_links.issue(s, app.config, signer, tid, app.clock(), for_connection_id=cid)

    async def reconnect_link(request: Request) -> Response:
        session, _form, refused = await checked_form(request)
        if refused is not None:
            return refused
        assert session is not None
        if not session.can_act:
            return forbidden(request, "A reconnect link needs a token with admin scope.", session)
        tid, cid = request.path_params["id"], request.path_params["cid"]
        try:
            await off_loop(new_reconnect_link, tid, cid)
        except operations.OperationError as exc:
            context: dict[str, Any] = {"title": "No link made", "message": str(exc)}
            return page(request, "error.html", context, 404, session)
        return RedirectResponse(
            f"/admin/therapists/{tid}#connection-{cid}", status_code=303, headers=SECURITY_HEADERS
        )

    async def apply(request: Request) -> Response:
        return await run_resync(request, dry_run=False)

    routes: Sequence[BaseRoute] = [
        Route("/admin", overview, methods=["GET"]),
        Route("/admin/login", login_form, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/logout", logout, methods=["POST"]),
        Route("/admin/therapists/{id}", therapist, methods=["GET"]),
        Route("/admin/resync/preview", preview, methods=["POST"]),
        Route(
            "/admin/therapists/{id}/connections/{cid:int}/reconnect-link",
            reconnect_link,
            methods=["POST"],
        ),
        Route("/admin/resync", apply, methods=["POST"]),
        Mount("/admin/static", StaticFiles(directory=HERE / "static"), name="admin-static"),
    ]
    return list(routes)

"""The admin dashboard at ``/admin``: every therapist's sync health, pending holds, conflicts,
drift repairs and the outbox backlog, and a manual resync (dry-run preview, then confirm).

Sign-in takes an API token (``syncd token create``, scope ``read`` or ``admin``) through a form
with a CSRF token, and hands back a session cookie (``HttpOnly``, ``SameSite=Strict``,
``Path=/admin``, ``Secure`` when the public URL is https) holding a random secret. Sessions live
in the database (``syncd.store.admin_sessions``), so they survive a restart, work across
replicas, and end at once everywhere when signed out, revoked (``syncd sessions revoke``) or
when their token is revoked. Failed sign-ins are rate-limited per client address. Forms that
change anything carry a per-session CSRF token, compared in constant time.

Only ids are shown: never a client's name (the dashboard has no need for one), and the planned
changes of a resync are described by kind, entity id and time, not by their calendar title
(which may carry a client's initials when the therapist opted in).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from syncd import connect_links, operations, outbox
from syncd.app import App
from syncd.engine import PassReport
from syncd.plan import Action
from syncd.ratelimit import Kind
from syncd.status import busy_state
from syncd.store import replicas, repo
from syncd.store.admin_sessions import TTL as SESSION_TTL
from syncd.store.admin_sessions import SignedIn
from syncd.store.tables import (
    ConflictRow,
    ConnectionRow,
    DriftRow,
    MirrorRow,
    OfferRow,
    SyncQueueRow,
    TherapistRow,
)
from syncd.web import security
from syncd.web.host import Host
from syncd.web.security import LOGIN_COOKIE, SESSION_COOKIE, off_loop

HERE = Path(__file__).parent
COOKIE = SESSION_COOKIE
DRIFT_WINDOW = timedelta(days=7)
ALL = "*"  # the resync target that means every therapist

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


# -- what the pages show ------------------------------------------------------------------------


@dataclass(slots=True)
class ConnectionView:
    id: int
    provider: str
    state: str  # ok | syncing | lagging | error | reauth | new
    stored_state: str
    last_success_at: datetime | None
    last_error: str | None
    failures: int
    entries: int
    busy_state: str  # fresh | stale | flagged | -
    busy_as_of: datetime | None
    busy_error: str | None = None
    # Needs re-auth: the open reconnect link sent to the therapist (shown to admin scope only).
    reconnect: connect_links.Link | None = None


@dataclass(slots=True)
class HoldView:
    offer_id: str
    session_id: str
    alternatives: int
    expires_at: datetime
    left: timedelta


@dataclass(slots=True)
class DriftView:
    connection_id: int
    uid: str
    kind: str
    detected_at: datetime


@dataclass(slots=True)
class TherapistView:
    id: str
    display_name: str
    timezone: str
    active: bool
    due_at: datetime | None
    connections: list[ConnectionView] = field(default_factory=list)
    holds: list[HoldView] = field(default_factory=list)
    open_conflicts: int = 0
    drift: list[DriftView] = field(default_factory=list)
    held_by: str | None = None  # the replica running this therapist's pass right now

    @property
    def state(self) -> str:
        """The worst state among the connections (``none`` without any)."""
        if not self.connections:
            return "none"
        order = ["reauth", "error", "lagging", "syncing", "new", "ok"]
        return min((c.state for c in self.connections), key=order.index)


@dataclass(slots=True)
class Overview:
    now: datetime
    therapists: list[TherapistView]
    total: int
    backlog: outbox.OutboxSummary
    replicas: list[replicas.ReplicaInfo] = field(default_factory=list)

    @property
    def replicas_alive(self) -> int:
        return sum(1 for r in self.replicas if r.alive)

    @property
    def attention(self) -> int:
        return sum(1 for t in self.therapists if t.state in ("reauth", "error", "lagging"))

    @property
    def holds(self) -> int:
        return sum(len(t.holds) for t in self.therapists)

    @property
    def conflicts(self) -> int:
        return sum(t.open_conflicts for t in self.therapists)


KIND_LABELS = {
    "session": "Session",
    "hold": "Held time (pending offer)",
    "blocked": "Original slot, blocked (pending offer)",
    "reserved": "Reserved recurring slot",
    "orphan": "Entry syncd no longer needs",
}

STATE_LABELS = {
    "ok": "OK",
    "syncing": "Syncing",
    "lagging": "Lagging",
    "error": "Error",
    "reauth": "Needs re-auth",
    "new": "Waiting for first pass",
    "none": "Not connected",
}


def _connection_state(c: ConnectionRow, q: SyncQueueRow | None, now: datetime, app: App) -> str:
    if c.state in ("needs_reauth", "auth_failed"):
        return "reauth"
    if c.state == "error":
        return "error"
    if q is not None and q.lease_owner and q.lease_until is not None and q.lease_until > now:
        return "syncing"
    overdue = timedelta(seconds=max(2 * app.config.daemon.lease_seconds, 60))
    if q is not None and q.due_at is not None and now - q.due_at > overdue:
        return "lagging"
    if c.last_success_at is None:
        return "new"
    old = timedelta(seconds=max(3 * app.config.sync.interval, 300))
    if now - c.last_success_at > old:
        return "lagging"
    return "ok"


def gather(app: App, now: datetime, *, search: str = "", only: str | None = None) -> Overview:
    """Every therapist (whose id or name contains ``search``), or the one named ``only``."""
    stale_after = app.config.availability.stale_after
    with app.sessions() as s:
        query = select(TherapistRow).order_by(TherapistRow.id)
        if only is not None:
            query = query.where(TherapistRow.id == only)
        therapists = list(s.scalars(query).all())
        total = (
            len(therapists)
            if only is not None
            else int(s.scalar(select(func.count()).select_from(TherapistRow)) or 0)
        )
        needle = search.strip().casefold()
        if needle:
            therapists = [
                t
                for t in therapists
                if needle in t.id.casefold() or needle in t.display_name.casefold()
            ]
        ids = [t.id for t in therapists]
        queue_rows = {
            q.therapist_id: q
            for q in s.scalars(select(SyncQueueRow).where(SyncQueueRow.therapist_id.in_(ids)))
        }
        entries = dict(
            s.execute(
                select(MirrorRow.connection_id, func.count()).group_by(MirrorRow.connection_id)
            ).all()
        )
        conflicts = dict(
            s.execute(
                select(ConflictRow.therapist_id, func.count())
                .where(ConflictRow.resolved_at.is_(None))
                .where(ConflictRow.therapist_id.in_(ids))
                .group_by(ConflictRow.therapist_id)
            ).all()
        )
        holds: dict[str, list[HoldView]] = {}
        for o in s.scalars(
            select(OfferRow)
            .where(OfferRow.state == "pending", OfferRow.released_at.is_(None))
            .where(OfferRow.therapist_id.in_(ids))
            .order_by(OfferRow.expires_at)
        ):
            holds.setdefault(o.therapist_id, []).append(
                HoldView(o.id, o.session_id, len(o.alternatives), o.expires_at, o.expires_at - now)
            )
        drift: dict[str, list[DriftView]] = {}
        for row, tid in s.execute(
            select(DriftRow, ConnectionRow.therapist_id)
            .join(ConnectionRow, ConnectionRow.id == DriftRow.connection_id)
            .where(ConnectionRow.therapist_id.in_(ids))
            .where(DriftRow.detected_at > now - DRIFT_WINDOW)
            .order_by(DriftRow.detected_at.desc())
        ).all():
            drift.setdefault(tid, []).append(
                DriftView(row.connection_id, row.uid, row.kind, row.detected_at)
            )
        conns = {t.id: repo.connections(s, t.id) for t in therapists}
        reconnects = connect_links.open_reconnect_links(
            s,
            app.config,
            connect_links.app_signer(app),
            [
                c.id
                for cs in conns.values()
                for c in cs
                if c.state in ("needs_reauth", "auth_failed")
            ],
            now,
        )
        views: list[TherapistView] = []
        for t in therapists:
            q = queue_rows.get(t.id)
            view = TherapistView(
                t.id,
                t.display_name,
                t.timezone,
                t.active,
                q.due_at if q else None,
                holds=holds.get(t.id, []),
                open_conflicts=int(conflicts.get(t.id, 0)),
                drift=drift.get(t.id, []),
                held_by=(
                    q.lease_owner
                    if q and q.lease_owner and q.lease_until and q.lease_until > now
                    else None
                ),
            )
            for c in conns[t.id]:
                view.connections.append(
                    ConnectionView(
                        c.id,
                        c.provider,
                        _connection_state(c, q, now, app),
                        c.state,
                        c.last_success_at,
                        c.last_error,
                        c.failures,
                        int(entries.get(c.id, 0)),
                        busy_state(c, now, stale_after),
                        c.busy_fetched_at,
                        c.busy_error,
                        reconnects.get(c.id),
                    )
                )
            views.append(view)
        backlog = outbox.pending_summary(s)
        alive_within = timedelta(seconds=app.config.daemon.lease_seconds)
        registry = replicas.overview(s, now, alive_within)
    return Overview(now, views, total, backlog, registry)


@dataclass(slots=True)
class PlannedChange:
    op: str
    kind: str
    uid: str
    start: datetime | None
    end: datetime | None
    zone: str | None
    drift: str | None


def planned(action: Action) -> PlannedChange:
    """An action described without its calendar title (which may name a client)."""
    e = action.entry
    return PlannedChange(
        action.op.value,
        e.kind if e else "orphan",
        action.uid or action.href or "?",
        e.start if e else None,
        e.end if e else None,
        e.timezone if e else None,
        action.drift.value if action.drift else None,
    )


@dataclass(slots=True)
class ResyncView:
    therapist_id: str
    busy: bool
    connections: list[tuple[int, list[PlannedChange], int, str | None]]  # id, plan, applied, error

    @property
    def planned(self) -> int:
        return sum(len(actions) for _, actions, _, _ in self.connections)

    @property
    def applied(self) -> int:
        return sum(n for _, _, n, _ in self.connections)

    @property
    def errors(self) -> int:
        return sum(1 for *_, err in self.connections if err)


def resync_view(result: operations.ResyncResult) -> ResyncView:
    report: PassReport | None = result.report
    conns = [
        (
            c.connection_id,
            [planned(a) for a in c.actions],
            c.applied,
            c.error,
        )
        for c in (report.connections if report else [])
    ]
    return ResyncView(result.therapist_id, result.busy, conns)


# -- formatting -------------------------------------------------------------------------------


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def make_templates(clock: Callable[[], datetime]) -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )

    def ago(when: datetime | None) -> str:
        if when is None:
            return "never"
        delta = clock() - when
        if abs(delta.total_seconds()) < 10:
            return "just now"
        return f"in {_span(delta)}" if delta.total_seconds() < 0 else f"{_span(delta)} ago"

    def utc(when: datetime | None) -> str:
        return "—" if when is None else when.strftime("%Y-%m-%d %H:%M UTC")

    def local(when: datetime | None, zone: str | None) -> str:
        if when is None:
            return "—"
        if not zone:
            return utc(when)
        return when.astimezone(ZoneInfo(zone)).strftime("%a %d %b %H:%M ") + zone

    env.filters.update(ago=ago, utc=utc, local=local, span=_span)
    env.globals.update(labels=STATE_LABELS, kinds=KIND_LABELS, ALL=ALL)
    return Jinja2Templates(env=env)


# -- routes -----------------------------------------------------------------------------------


def routes(app: App, _daemon: Host) -> list[BaseRoute]:
    login_csrf = security.LoginCsrf(security.session_key(app))
    templates = make_templates(app.clock)
    secure = app.config.http.public_url.startswith("https://")
    cookie_flags: dict[str, Any] = {
        "path": "/admin",
        "secure": secure,
        "httponly": True,
        "samesite": "strict",
    }

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
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode("utf-8", "replace"), session.csrf.encode()
        ):
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

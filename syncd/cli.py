"""The ``syncd`` command line. Errors print one line and exit non-zero; never a traceback."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncd import config as config_mod
from syncd.app import App
from syncd.logs import setup_logging

console = Console()


class CliError(click.ClickException):
    def show(self, file: Any = None) -> None:
        # Plain echo: one line, never wrapped to the terminal width.
        click.echo(f"error: {self.message}", err=True)


class Group(click.Group):
    """Turns every expected failure into one line; unexpected ones too, with a pointer to logs."""

    def invoke(self, ctx: click.Context) -> Any:
        from connectors.errors import ConnectorError
        from syncd.config import ConfigError
        from syncd.operations import OperationError
        from syncd.secrets import SecretError

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (ConfigError, OperationError, SecretError, ConnectorError) as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise CliError(f"{type(exc).__name__}: {exc} (run with --debug for details)") from None


def _config(ctx: click.Context) -> config_mod.Config:
    cfg: config_mod.Config = ctx.obj["config"]
    return cfg


def _app(ctx: click.Context) -> App:
    if "app" not in ctx.obj:
        ctx.obj["app"] = App.open(_config(ctx))
        ctx.call_on_close(ctx.obj["app"].close)
    app: App = ctx.obj["app"]
    return app


@click.group(cls=Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SYNCD_CONFIG",
    help="TOML configuration file (also $SYNCD_CONFIG). Without it, embedded defaults.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="syncd")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """syncd mirrors a therapy booking platform into therapists' calendars."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise CliError(str(exc)) from None
    ctx.obj["config"] = cfg
    ctx.obj["config_path"] = config_path  # re-read by `run` on SIGHUP
    setup_logging("DEBUG" if debug else cfg.logging.level)


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    from syncd.daemon import Daemon

    if problem := config_mod.google_push_problem(_config(ctx)):
        raise CliError(problem)
    app = _app(ctx)
    daemon = Daemon(app, config_path=ctx.obj.get("config_path"))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)  # systemctl reload
        await daemon.serve()

    asyncio.run(serve())


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the demo's database and calendars here (default: a temporary folder).",
)
@click.option("--step-delay", type=float, default=3.0, hidden=True)
@click.option(
    "--hold-minutes",
    type=float,
    default=3.0,
    help="Minutes until the sample pending offer expires and its holds are released.",
)
@click.pass_context
def demo(
    ctx: click.Context, state_dir: Path | None, step_delay: float, hold_minutes: float
) -> None:
    """Start syncd with an embedded Radicale and sample data; subscribe and watch."""
    from syncd.demo import run_demo

    run_demo(state_dir, console, step_delay=step_delay, hold_minutes=hold_minutes)


@main.command()
@click.argument("file", type=click.File("rb"))
@click.pass_context
def ingest(ctx: click.Context, file: Any) -> None:
    """Apply platform events from FILE (JSON lines; - for stdin)."""
    app = _app(ctx)
    ingestor = app.ingestor()
    counts: dict[str, int] = {}
    refused = 0
    for lineno, line in enumerate(file, start=1):
        if not line.strip():
            continue
        outcome = ingestor.ingest(line)
        counts[outcome.result.value] = counts.get(outcome.result.value, 0) + 1
        if not outcome.ok:
            refused += 1
            click.echo(
                f"line {lineno}: event {outcome.event_id or '?'} refused: {outcome.error}",
                err=True,
            )
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no events"
    console.print(summary, highlight=False)
    if refused:
        sys.exit(1)


@main.group()
def connect() -> None:
    """Connect a therapist's calendar account."""


@connect.command("caldav")
@click.argument("therapist")
@click.option("--url", required=True, help="CalDAV server URL (the account's root or principal).")
@click.option("--username", required=True)
@click.option(
    "--password-file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the (app) password; never pass secrets on the command line.",
)
@click.option(
    "--calendar",
    "calendar_url",
    default=None,
    help="Use this existing calendar instead of creating a dedicated one.",
)
@click.pass_context
def connect_caldav(
    ctx: click.Context,
    therapist: str,
    url: str,
    username: str,
    password_file: Path,
    calendar_url: str | None,
) -> None:
    """Connect THERAPIST to a CalDAV account (checked before it is stored)."""
    from syncd import operations
    from syncd.secrets import read_secret_file

    app = _app(ctx)
    password = read_secret_file(password_file)
    cid = operations.connect_caldav(
        app, therapist, url=url, username=username, password=password, calendar_url=calendar_url
    )
    console.print(f"connected {therapist} to {url} (connection {cid}); a full sync is queued")


@connect.command("google")
@click.argument("therapist")
@click.option(
    "--calendar",
    "calendar_id",
    default=None,
    help="Write into this existing calendar (its id) instead of a dedicated one.",
)
@click.option(
    "--wait",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Wait this long for the therapist to complete the authorization.",
)
@click.pass_context
def connect_google(
    ctx: click.Context, therapist: str, calendar_id: str | None, wait: float
) -> None:
    """Print the link THERAPIST opens to connect a Google calendar (served by `syncd run`)."""
    import time

    from syncd import google_link
    from syncd.store.tables import OAuthRequestRow

    app = _app(ctx)
    url = google_link.authorization_url(app, therapist, calendar_id=calendar_id)
    console.print("Open this link (or send it to the therapist); it is valid for 24 hours:")
    click.echo(url)
    if wait <= 0:
        return
    state = url.split("state=", 1)[1].split("&", 1)[0]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with app.sessions() as s:
            row = s.get(OAuthRequestRow, state)
            if row is not None and row.connection_id is not None:
                console.print(f"connected: connection {row.connection_id}; a full sync is queued")
                return
        time.sleep(1)
    raise CliError(f"not authorized within {wait:.0f}s (the link stays valid)")


@main.command()
@click.argument("therapist")
@click.argument("connection", type=int)
@click.option(
    "--keep-events",
    is_flag=True,
    help="Leave syncd's entries in the calendar; only forget the connection.",
)
@click.pass_context
def disconnect(ctx: click.Context, therapist: str, connection: int, keep_events: bool) -> None:
    """Remove syncd's entries from CONNECTION of THERAPIST and forget it."""
    from syncd import operations

    app = _app(ctx)
    removed = operations.disconnect(app, therapist, connection, keep_events=keep_events)
    kept = " (entries kept)" if keep_events else f"; {removed} entries removed"
    console.print(f"disconnected connection {connection} of {therapist}{kept}")


@main.command()
@click.argument("therapists", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every therapist.")
@click.option("--full", is_flag=True, help="List the whole calendar instead of using sync tokens.")
@click.option("--dry-run", is_flag=True, help="Print the planned changes; change nothing.")
@click.pass_context
def resync(
    ctx: click.Context, therapists: tuple[str, ...], all_: bool, full: bool, dry_run: bool
) -> None:
    """Sync THERAPISTS (or --all) now."""
    from syncd import operations

    if not therapists and not all_:
        raise CliError("name one or more therapists, or --all")
    app = _app(ctx)
    ids = operations.all_therapist_ids(app) if all_ else list(therapists)
    failed = 0
    with _progress(len(ids), "dry run" if dry_run else "resync") as advance:

        def show(result: operations.ResyncResult) -> None:
            nonlocal failed
            advance()
            if result.busy:
                console.print(f"{result.therapist_id}: busy (a pass is running); skipped")
                return
            report = result.report
            assert report is not None
            if not report.connections:
                console.print(f"{result.therapist_id}: no calendar connected")
            for c in report.connections:
                head = f"{result.therapist_id} / connection {c.connection_id}"
                if c.error:
                    failed += 1
                    console.print(f"[red]{head}: {c.error}[/]", highlight=False)
                    continue
                verb = "would apply" if dry_run else "applied"
                console.print(f"{head}: {verb} {len(c.actions)} change(s)", highlight=False)
                if dry_run:
                    for a in c.actions:
                        console.print("   " + a.describe(), highlight=False, markup=False)

        operations.resync(app, ids, full=full, dry_run=dry_run, progress=show)
    if failed:
        sys.exit(1)


@contextmanager
def _progress(total: int, label: str) -> Iterator[Any]:
    if total <= 1 or not console.is_terminal:
        yield lambda: None
        return
    with Progress(
        TextColumn(f"{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    secs = int((now - when).total_seconds())
    if secs < 0:
        return f"in {-secs}s"
    if secs < 120:
        return f"{secs}s ago"
    if secs < 7200:
        return f"{secs // 60}m ago"
    return f"{secs // 3600}h ago"


def _busy_cell(state: str, as_of: datetime | None, now: datetime) -> str:
    colour = {"fresh": "green", "stale": "yellow", "flagged": "red"}.get(state)
    if colour is None:
        return "-"
    return f"[{colour}]{state}[/] {_ago(as_of, now)}"


def _problems(r: Any, now: datetime) -> str:
    from rich.markup import escape

    parts = []
    if r.paused_until is not None:
        parts.append(f"[yellow]paused until {r.paused_until:%Y-%m-%d %H:%M} UTC[/]")
    if r.last_error:
        parts.append(escape(r.last_error))
    if r.busy_error:
        parts.append(f"busy time: {escape(r.busy_error)}")
    return "; ".join(parts)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """A table of every therapist and connection."""
    from rich.markup import escape

    from syncd import operations

    app = _app(ctx)
    rows = operations.status(app)
    now = app.clock()
    table = Table(title="syncd status")
    table.add_column("therapist", no_wrap=True)
    table.add_column("calendar", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for col in ("entries", "last success", "next pass", "drift"):
        table.add_column(col, justify="right")
    table.add_column("busy time", no_wrap=True)
    table.add_column("last error", overflow="fold")
    colours = {
        "ok": "green",
        "error": "red",
        "auth_failed": "red",
        "needs_reauth": "red",
        "new": "yellow",
    }
    for r in rows:
        colour = colours.get(r.state, "white")
        state = r.state if not r.failures else f"{r.state} (failures: {r.failures})"
        table.add_row(
            r.therapist_id,
            f"{r.provider} #{r.connection_id}" if r.connection_id else "-",
            f"[{colour}]{state}[/]",
            str(r.entries),
            _ago(r.last_success_at, now),
            f"running on {escape(r.held_by)}"
            if r.held_by
            else _ago(r.due_at, now)
            if r.due_at
            else "-",
            str(r.drift),
            _busy_cell(r.busy_state, r.busy_as_of, now),
            _problems(r, now),
        )
    console.print(table)
    if not rows:
        console.print("no therapists yet: ingest some events (syncd ingest FILE)")
    console.print(_outbox_line(app, now), highlight=False, markup=False)
    _print_replicas(app, now)


def _print_replicas(app: App, now: datetime) -> None:
    from rich.markup import escape

    from syncd import operations

    found = operations.replica_overview(app)
    if not found:
        console.print("replicas: no daemon has registered on this database")
        return
    table = Table(title="replicas")
    table.add_column("replica", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for col in ("started", "last heartbeat", "passes running"):
        table.add_column(col, justify="right")
    for r in found:
        table.add_row(
            escape(r.id),
            r.version,
            "[green]alive[/]" if r.alive else "[yellow]no heartbeat[/]",
            _ago(r.started_at, now),
            _ago(r.seen_at, now),
            str(r.leases),
        )
    console.print(table)


def _outbox_line(app: App, now: datetime) -> str:
    from syncd import outbox

    with app.sessions() as s:
        summary = outbox.pending_summary(s)
    if not summary.pending:
        return "outbox: nothing pending"
    oldest = _ago(summary.oldest_pending_created_at, now)
    line = f"outbox: {summary.pending} pending (oldest {oldest}), {summary.failing} failing"
    if not app.config.platform.webhook_url:
        line += " - not sent: no [platform] webhook_url"
    return line


@main.command("outbox")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.pass_context
def outbox_cmd(ctx: click.Context, limit: int) -> None:
    """Recent notifications to the platform and their delivery state."""
    from rich.markup import escape

    from syncd import outbox

    app = _app(ctx)
    now = app.clock()
    with app.sessions() as s:
        entries = outbox.list_recent(s, limit)
    table = Table(title="syncd outbox")
    table.add_column("id", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("created", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("last error", overflow="fold")
    colours = {"delivered": "green", "pending": "yellow", "failing": "red"}
    for e in entries:
        if e.state == "delivered":
            state = f"delivered {_ago(e.delivered_at, now)}"
        elif e.state == "failing":
            due = e.next_attempt_at
            retry = _ago(due, now) if due is not None and due > now else "now"
            plural = "" if e.attempts == 1 else "s"
            state = f"failing ({e.attempts} attempt{plural}, next try {retry})"
        else:
            state = "pending"
        table.add_row(
            e.event_id,
            e.topic,
            _ago(e.created_at, now),
            f"[{colours[e.state]}]{state}[/]",
            "" if e.state == "delivered" else escape(e.last_error or ""),
        )
    console.print(table)
    if not entries:
        console.print("no notifications yet")
    elif not app.config.platform.webhook_url:
        console.print("no [platform] webhook_url: notifications are kept, not sent", markup=False)


def _instant(value: str, zone: str, field: str) -> datetime:
    """A date (local midnight in ``zone``) or an ISO-8601 instant (offset required)."""
    from datetime import date
    from zoneinfo import ZoneInfo

    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone))
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{field}: {value!r} is not a date (YYYY-MM-DD) or an instant") from None
    if parsed.tzinfo is None:
        raise CliError(f"{field}: {value!r} needs an offset (or give a date)")
    return parsed


@main.command()
@click.argument("therapist")
@click.option("--from", "from_", default=None, help="Date or ISO instant (default: now).")
@click.option("--to", "to", default=None, help="Date or ISO instant (default: 7 days later).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def availability(
    ctx: click.Context, therapist: str, from_: str | None, to: str | None, as_json: bool
) -> None:
    """Bookable slots of THERAPIST, with how fresh each source of busy time is."""
    import json as json_mod
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from syncd import operations
    from syncd.store import repo

    app = _app(ctx)
    with app.sessions() as s:
        state = repo.platform_state(s, therapist)
    if state is None:
        raise CliError(f"unknown therapist {therapist!r}")
    zone = state.therapist.timezone
    start = _instant(from_, zone, "--from") if from_ else app.clock()
    end = _instant(to, zone, "--to") if to else start + timedelta(days=7)
    view = operations.availability_for(app, therapist, start, end)
    if as_json:
        from syncd.web.queries import availability_json

        click.echo(json_mod.dumps(availability_json(view), indent=2))
        return
    local = ZoneInfo(zone)
    table = Table(title=f"{therapist}: {len(view.slots)} bookable slots ({zone})")
    table.add_column("day")
    table.add_column("slots")
    days: dict[str, list[str]] = {}
    for slot in view.slots:
        start_local = slot.start.astimezone(local)
        days.setdefault(f"{start_local:%a %Y-%m-%d}", []).append(f"{start_local:%H:%M}")
    for day, times in days.items():
        table.add_row(day, " ".join(times))
    console.print(table)
    now = app.clock()
    for src in view.sources:
        when = _ago(src.as_of, now)
        flag = " [red](stale)[/]" if src.stale else ""
        console.print(f"  {src.source}: as of {when}{flag}", highlight=False)


@main.command()
@click.argument("therapist", required=False)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved conflicts.")
@click.pass_context
def conflicts(ctx: click.Context, therapist: str | None, include_resolved: bool) -> None:
    """Clashes between the therapists' own busy time and what is booked."""
    from syncd import operations

    app = _app(ctx)
    rows = operations.conflicts(app, therapist_id=therapist, include_resolved=include_resolved)
    table = Table(title="conflicts")
    for col in ("id", "therapist", "booked", "overlap (UTC)", "calendar", "detected", "state"):
        table.add_column(col)
    now = app.clock()
    for r in rows:
        table.add_row(
            str(r.id),
            r.therapist_id,
            f"{r.entity_kind} {r.entity_id}",
            f"{r.start_at:%Y-%m-%d %H:%M}-{r.end_at:%H:%M}",
            f"#{r.connection_id} {r.calendar_ref}",
            _ago(r.detected_at, now),
            "resolved" if r.resolved_at else "[red]open[/]",
        )
    console.print(table)
    if not rows:
        console.print("no open conflicts" if not include_resolved else "no conflicts")


@main.command()
@click.argument("therapist")
@click.option("--connection", type=int, default=None, help="The connection to change.")
@click.option(
    "--select",
    "selected",
    multiple=True,
    metavar="CALENDAR",
    help="Count this calendar (repeatable); replaces the current choice.",
)
@click.option(
    "--default",
    "use_default",
    is_flag=True,
    help="Back to the default: every calendar but syncd's own.",
)
@click.pass_context
def calendars(
    ctx: click.Context,
    therapist: str,
    connection: int | None,
    selected: tuple[str, ...],
    use_default: bool,
) -> None:
    """List THERAPIST's calendars and which count as busy time; --select/--default change it."""
    from syncd import operations

    app = _app(ctx)
    if selected or use_default:
        if connection is None:
            raise CliError("--connection is needed to change the selection")
        operations.select_calendars(
            app, therapist, connection, None if use_default else list(selected)
        )
    table = Table(title=f"{therapist}: calendars")
    for col in ("conn", "calendar", "name", "counts as busy"):
        table.add_column(col)
    for c in operations.calendars(app, therapist):
        note = " (syncd's own)" if c.calendar.is_syncd else ""
        table.add_row(
            str(c.connection_id),
            c.calendar.ref,
            c.calendar.name + note,
            "[green]yes[/]" if c.counts else "no",
        )
    console.print(table)


@main.group()
def token() -> None:
    """Admin API and dashboard tokens (scopes: read, admin)."""


@token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "admin"]), default="read", show_default=True)
@click.pass_context
def token_create(ctx: click.Context, name: str, scope: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from syncd import auth

    app = _app(ctx)
    try:
        with app.sessions.begin() as s:
            secret = auth.create(s, name, auth.Scope(scope), app.clock())
    except auth.TokenError as exc:
        raise CliError(str(exc)) from None
    console.print(f"token {name!r} ({scope}); store it now, it is not shown again:")
    click.echo(secret)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Tokens by name, scope and last use (never the tokens themselves)."""
    from syncd import auth

    app = _app(ctx)
    now = app.clock()
    table = Table(title="API tokens")
    for col in ("name", "scope", "created", "last used", "state"):
        table.add_column(col)
    with app.sessions() as s:
        for row in auth.listing(s):
            table.add_row(
                row.name,
                row.scope,
                _ago(row.created_at, now),
                _ago(row.last_used_at, now),
                "revoked" if row.revoked_at else "[green]active[/]",
            )
    console.print(table)


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token at once."""
    from syncd import auth

    app = _app(ctx)
    with app.sessions.begin() as s:
        if not auth.revoke(s, name, app.clock()):
            raise CliError(f"no active token named {name!r}")
    console.print(f"token {name!r} revoked")


@main.command("feed-url")
@click.argument("therapist")
@click.option("--rotate", is_flag=True, help="Issue a new URL; the old one stops working.")
@click.pass_context
def feed_url(ctx: click.Context, therapist: str, rotate: bool) -> None:
    """Print the therapist's ICS feed URL: made on first use and shown once (only a hash is
    stored); later, --rotate replaces it."""
    from syncd import feeds

    app = _app(ctx)
    try:
        url = feeds.feed_url(app, therapist, rotate=rotate)
    except feeds.FeedExists as exc:
        raise CliError(str(exc)) from None
    what = "new URL (any earlier one no longer works)" if rotate else "URL"
    console.print(f"ICS feed {what} for {therapist!r}; keep it private, it is not shown again:")
    click.echo(url)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Apply all database migrations (also done on every start)."""
    from syncd.store import database

    cfg = _config(ctx)
    engine = database.make_engine(cfg.database_url)
    try:
        database.upgrade(engine)
    finally:
        engine.dispose()
    console.print(f"database at {engine.url.render_as_string()} is up to date")


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print the effective values."""
    cfg = _config(ctx)
    if problem := config_mod.google_push_problem(cfg):
        raise CliError(problem)
    console.print_json(cfg.model_dump_json())
    console.print("configuration is valid")


from syncd.cli_connect_link import connect_link  # noqa: E402 - its own module, attached here

main.add_command(connect_link)
from syncd import cli_privacy as _cli_privacy  # noqa: E402, F401 - registers forget, sessions

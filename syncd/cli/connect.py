"""Connecting calendars: ``connect caldav|google``, ``disconnect``, ``calendars``, ``feed-url``."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli.common import CliError, console, state


@click.group()
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

    password = read_secret_file(password_file)
    app = state(ctx).app()
    cid = operations.connect_caldav(
        app, therapist, url=url, username=username, password=password, calendar_url=calendar_url
    )
    console().print(f"connected {therapist} to {url} (connection {cid}); a full sync is queued")


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

    from syncd import google_auth
    from syncd.store.tables import OAuthRequestRow

    app = state(ctx).app()
    url = google_auth.authorization_url(app, therapist, calendar_id=calendar_id)
    console().print("Open this link (or send it to the therapist); it is valid for 24 hours:")
    click.echo(url)
    if wait <= 0:
        return
    oauth_state = url.split("state=", 1)[1].split("&", 1)[0]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with app.sessions() as s:
            row = s.get(OAuthRequestRow, oauth_state)
            if row is not None and row.connection_id is not None:
                console().print(f"connected: connection {row.connection_id}; a full sync is queued")
                return
            if row is not None and row.error is not None:
                # Refused on the callback (a calendar not the therapist's own, ...): no use
                # waiting on, the link is used up.
                raise CliError(f"not connected: {row.error}")
        time.sleep(1)
    raise CliError(f"not authorized within {wait:.0f}s (the link stays valid)")


@click.command()
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

    app = state(ctx).app()
    removed = operations.disconnect(app, therapist, connection, keep_events=keep_events)
    kept = " (entries kept)" if keep_events else f"; {removed} entries removed"
    console().print(f"disconnected connection {connection} of {therapist}{kept}")


@click.command()
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
    from rich.table import Table

    from syncd import operations

    app = state(ctx).app()
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
    console().print(table)


@click.command("feed-url")
@click.argument("therapist")
@click.option("--rotate", is_flag=True, help="Issue a new URL; the old one stops working.")
@click.pass_context
def feed_url(ctx: click.Context, therapist: str, rotate: bool) -> None:
    """Print the therapist's ICS feed URL: made on first use and shown once (only a hash is
    stored); later, --rotate replaces it."""
    from syncd import feeds

    app = state(ctx).app()
    url = feeds.feed_url(app, therapist, rotate=rotate)
    what = "new URL (any earlier one no longer works)" if rotate else "URL"
    console().print(f"ICS feed {what} for {therapist!r}; keep it private, it is not shown again:")
    click.echo(url)

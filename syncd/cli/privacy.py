"""``syncd forget client|therapist`` (erasure on request) and ``syncd sessions list|revoke``
(dashboard sign-ins)."""

from __future__ import annotations

import click

from syncd.cli.common import CliError, ago, console, state


@click.group()
def forget() -> None:
    """Erase a client's or a therapist's data (UK GDPR right to erasure)."""


def _confirm(what: str, yes: bool) -> None:
    if not yes:
        click.confirm(
            f"Erase everything syncd holds about {what}? This cannot be undone", abort=True
        )


def _report(what: str, erased: object, calendar_name: str) -> None:
    from syncd.erasure import Erased

    assert isinstance(erased, Erased)
    if not erased.found and not erased.connections:
        console().print(f"nothing stored about {what}", highlight=False)
        return
    parts = [
        f"{erased.sessions} sessions",
        f"{erased.offers} offers",
        f"{erased.reserved_slots} reserved slots",
        f"{erased.history} stored event bodies",
        f"{erased.notifications} notifications",
    ]
    if erased.connections:
        parts.append(f"{erased.connections} calendar connections")
    console().print(f"erased {what}: " + ", ".join(parts), highlight=False)
    if erased.calendar_entries:
        console().print(
            f"removed {erased.calendar_entries} entries from calendars", highlight=False
        )
    if erased.pending_calendars:
        names = ", ".join(erased.pending_calendars)
        console().print(
            f"the calendars of {names} are cleaned by the daemon's next pass (busy or failing now)",
            highlight=False,
        )
    for cid in erased.calendars_left:
        console().print(
            f"connection {cid} needed re-authorisation: syncd's entries may remain in that "
            f'calendar; ask the therapist to delete the calendar "{calendar_name}"',
            highlight=False,
        )


@forget.command("client")
@click.argument("client_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def forget_client(ctx: click.Context, client_id: str, yes: bool) -> None:
    """Erase CLIENT_ID's sessions, reservations, offers, history and notifications, and remove
    their entries from the therapists' calendars."""
    from syncd import erasure

    app = state(ctx).app()
    _confirm(f"client {client_id}", yes)
    erased = erasure.forget_client(app, client_id)
    _report(f"client {client_id}", erased, app.config.caldav.calendar_name)


@forget.command("therapist")
@click.argument("therapist_id")
@click.option(
    "--keep-calendar-entries",
    is_flag=True,
    help="Erase even if a calendar cannot be reached, leaving syncd's entries in it.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def forget_therapist(
    ctx: click.Context, therapist_id: str, keep_calendar_entries: bool, yes: bool
) -> None:
    """Remove syncd's entries from THERAPIST_ID's calendars, disconnect them, then erase the
    therapist and all their sessions, clients' bookings, history and notifications."""
    from syncd import erasure

    app = state(ctx).app()
    _confirm(f"therapist {therapist_id} and all their sessions", yes)
    erased = erasure.forget_therapist(
        app, therapist_id, keep_calendar_entries=keep_calendar_entries
    )
    _report(f"therapist {therapist_id}", erased, app.config.caldav.calendar_name)


@click.group()
def sessions() -> None:
    """Dashboard sessions: who is signed in, and signing them out."""


@sessions.command("list")
@click.pass_context
def sessions_list(ctx: click.Context) -> None:
    """Signed-in dashboard sessions, newest first."""
    from syncd.store import admin_sessions

    app = state(ctx).app()
    now = app.clock()
    with app.sessions() as s:
        found = admin_sessions.listing(s, now)
    from rich.table import Table

    table = Table(title="dashboard sessions")
    for col in ("id", "token", "scope", "from", "signed in", "seen", "expires"):
        table.add_column(col, no_wrap=col not in ("token", "from"), overflow="fold")
    for row in found:
        left = int((row.expires_at - now).total_seconds()) // 60
        table.add_row(
            str(row.id),
            row.token,
            row.scope,
            row.client,
            ago(row.created_at, now),
            ago(row.last_seen_at, now),
            f"in {left // 60}h{left % 60:02d}m",
        )
    console().print(table)
    if not found:
        console().print("no one is signed in")


@sessions.command("revoke")
@click.argument("ids", nargs=-1, type=int)
@click.option("--token", "token_name", default=None, help="Every session of this API token.")
@click.option("--all", "every", is_flag=True, help="Every session.")
@click.pass_context
def sessions_revoke(
    ctx: click.Context, ids: tuple[int, ...], token_name: str | None, every: bool
) -> None:
    """Sign out the sessions IDS (see `syncd sessions list`) at once, on every replica."""
    from syncd.store import admin_sessions

    if sum((bool(ids), token_name is not None, every)) != 1:
        raise CliError("name session ids, or --token NAME, or --all (one of them)")
    app = state(ctx).app()
    with app.sessions.begin() as s:
        ended = admin_sessions.revoke(s, list(ids), token=token_name, every=every)
    if ids and ended < len(set(ids)):
        raise CliError(f"ended {ended} of {len(set(ids))} sessions; the others do not exist")
    console().print(f"ended {ended} dashboard session{'' if ended == 1 else 's'}")

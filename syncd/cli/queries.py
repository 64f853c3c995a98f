"""``syncd conflicts`` and ``syncd availability``: what the platform is told, asked directly."""

from __future__ import annotations

from datetime import datetime

import click

from syncd.cli.common import CliError, ago, console, state


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


@click.command()
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

    from rich.table import Table

    from syncd import operations
    from syncd.store import repo

    app = state(ctx).app()
    with app.sessions() as s:
        found = repo.platform_state(s, therapist)
    if found is None:
        raise CliError(f"unknown therapist {therapist!r}")
    zone = found.therapist.timezone
    start = _instant(from_, zone, "--from") if from_ else app.clock()
    end = _instant(to, zone, "--to") if to else start + timedelta(days=7)
    view = operations.availability_for(app, therapist, start, end)
    if as_json:
        from syncd.web.read_api import availability_json

        click.echo(json_mod.dumps(availability_json(view), indent=2))
        return
    local = ZoneInfo(zone)
    table = Table(title=f"{therapist}: {len(view.slots)} bookable slots ({zone})")
    table.add_column("day", no_wrap=True)
    table.add_column("slots")
    days: dict[str, list[str]] = {}
    for slot in view.slots:
        start_local = slot.start.astimezone(local)
        days.setdefault(f"{start_local:%a %Y-%m-%d}", []).append(f"{start_local:%H:%M}")
    for day, times in days.items():
        table.add_row(day, " ".join(times))
    out = console()
    out.print(table)
    now = app.clock()
    for src in view.sources:
        when = ago(src.as_of, now)
        flag = " [red](stale)[/]" if src.stale else ""
        out.print(f"  {src.source}: as of {when}{flag}", highlight=False)


@click.command()
@click.argument("therapist", required=False)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved conflicts.")
@click.pass_context
def conflicts(ctx: click.Context, therapist: str | None, include_resolved: bool) -> None:
    """Clashes between the therapists' own busy time and what is booked."""
    from rich.markup import escape
    from rich.table import Table

    from syncd.status import conflicts as find

    app = state(ctx).app()
    rows = find(app, therapist_id=therapist, include_resolved=include_resolved)
    out = console()
    if not rows:
        out.print("no open conflicts" if not include_resolved else "no conflicts")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("id", "therapist", "booked", "overlap (UTC)", "calendar", "found", "state"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    now = app.clock()
    for r in rows:
        table.add_row(
            str(r.id),
            escape(r.therapist_id),
            escape(f"{r.entity_kind} {r.entity_id}"),
            f"{r.start_at:%Y-%m-%d %H:%M}-{r.end_at:%H:%M}",
            escape(f"#{r.connection_id} {r.calendar_ref}"),
            ago(r.detected_at, now),
            "resolved" if r.resolved_at else "[red]open[/]",
        )
    out.print(table)

"""``syncd status`` (one line per connection) and ``syncd outbox`` (notifications)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from syncd.cli.common import CliError, ago, console, state

if TYPE_CHECKING:
    from rich.table import Table

    from syncd.app import App
    from syncd.outbox import OutboxSummary
    from syncd.status import StatusRow
    from syncd.store.replicas import ReplicaInfo

_BAD_STATES = {"error", "auth_failed", "needs_reauth"}
_COLOURS = {
    "ok": "green",
    "error": "red",
    "auth_failed": "red",
    "needs_reauth": "red",
    "new": "yellow",
    "alive": "green",
    "silent": "yellow",
    "gone": "red",
}


def problem(r: StatusRow) -> bool:
    """Needs a person's attention: a failing or refused connection, or stale busy time."""
    return (
        r.state in _BAD_STATES
        or r.failures > 0
        or r.busy_state in ("stale", "flagged")
        or bool(r.connection_id and r.last_error)
        or r.paused_until is not None
        or r.busy_error is not None
    )


class _Lines:
    """Rows of cells (rich markup) laid out one line each in the console's width: every column
    as wide as its widest cell, except one (``flex``) that takes what is left and is cut with
    an ellipsis. Better than letting the table squeeze every column: ids and states stay whole
    and only the free text (a therapist id or an error) is shortened."""

    def __init__(self, *columns: tuple[str, str], flex: int) -> None:
        self.columns = columns
        self.flex = flex
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def render(self, width: int) -> Table:
        from rich.table import Table
        from rich.text import Text

        natural = [
            max([len(name), *(Text.from_markup(r[i]).cell_len for r in self.rows)])
            for i, (name, _) in enumerate(self.columns)
        ]
        gaps = len(self.columns) - 1
        others = [i for i in range(len(self.columns)) if i != self.flex]
        least = max(8, len(self.columns[self.flex][0]))
        # Too wide even with the free-text column at its least: narrow the widest of the others.
        while sum(natural[i] for i in others) + gaps + least > width:
            widest = max(others, key=lambda i: natural[i])
            if natural[widest] <= max(4, len(self.columns[widest][0])):
                break
            natural[widest] -= 1
        fixed = sum(natural[i] for i in others)
        natural[self.flex] = max(least, min(natural[self.flex], width - fixed - gaps))
        table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
        for i, (name, justify) in enumerate(self.columns):
            table.add_column(
                name,
                justify="right" if justify == ">" else "left",
                no_wrap=True,
                overflow="ellipsis",
                width=natural[i],
            )
        for row in self.rows:
            table.add_row(*row)
        return table


def _state_cell(r: StatusRow) -> str:
    colour = _COLOURS.get(r.state, "default")
    failures = f" ({r.failures})" if r.failures else ""
    return f"[{colour}]{r.state}{failures}[/]"


def _busy_cell(r: StatusRow, now: datetime) -> str:
    colour = {"fresh": "green", "stale": "yellow", "flagged": "red"}.get(r.busy_state)
    if colour is None:
        return "-"
    return f"[{colour}]{r.busy_state}[/] {ago(r.busy_as_of, now).removesuffix(' ago')}"


def _next_cell(r: StatusRow, now: datetime) -> str:
    if r.held_by:
        return "running"
    if r.due_at is None:
        return "-"
    if r.due_at <= now:  # no daemon has taken it yet
        return ago(r.due_at, now).replace(" ago", " late")
    return ago(r.due_at, now)


def _row_json(r: StatusRow) -> dict[str, Any]:
    out = asdict(r)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    out["problem"] = problem(r)
    return out


def _replica_json(r: ReplicaInfo) -> dict[str, Any]:
    out = asdict(r)
    out["started_at"] = r.started_at.isoformat()
    out["seen_at"] = r.seen_at.isoformat()
    return out


@click.command()
@click.argument("therapists", nargs=-1)
@click.option("--problems", is_flag=True, help="Only connections that need attention, and why.")
@click.option("--json", "as_json", is_flag=True, help="Everything, machine-readable, untruncated.")
@click.pass_context
def status(ctx: click.Context, therapists: tuple[str, ...], problems: bool, as_json: bool) -> None:
    """One line per therapist's connection (all, or THERAPISTS), then the outbox and the
    replicas. --problems lists only what needs attention, with the error."""
    from syncd import outbox
    from syncd import status as queries

    app = state(ctx).app()
    rows = queries.status(app)
    now = app.clock()
    if therapists:
        known = {r.therapist_id for r in rows}
        if missing := [t for t in therapists if t not in known]:
            raise CliError(f"unknown therapist {missing[0]!r}")
        rows = [r for r in rows if r.therapist_id in therapists]
    shown = [r for r in rows if problem(r)] if problems else rows
    found = queries.replica_overview(app)
    with app.sessions() as s:
        pending = outbox.pending_summary(s)
    if as_json:
        doc = {
            "connections": [_row_json(r) for r in shown],
            "outbox": {
                "pending": pending.pending,
                "failing": pending.failing,
                "oldest_pending_created_at": pending.oldest_pending_created_at.isoformat()
                if pending.oldest_pending_created_at
                else None,
            },
            "replicas": [_replica_json(r) for r in found],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    out = console()
    if problems:
        _print_problems(shown, now)
    elif shown:
        _print_connections(shown, now)
    out.print(_summary(rows, therapists, problems), highlight=False, markup=False)
    out.print(_outbox_line(app, pending, now), highlight=False, markup=False)
    _print_replicas(found, now)


def _print_problems(shown: list[StatusRow], now: datetime) -> None:
    """Each problem whole: a line naming the connection, then the error wrapped beneath it."""
    import textwrap

    from rich.markup import escape

    out = console()
    for r in shown:
        busy = f"busy time {r.busy_state}" if r.busy_state in ("stale", "flagged") else ""
        head = (
            f"{escape(r.therapist_id)} · {r.provider} #{r.connection_id} · {_state_cell(r)}"
            f" · last ok {ago(r.last_success_at, now)}"
        )
        out.print(head, highlight=False, no_wrap=True, overflow="ellipsis")
        reasons = []
        if r.paused_until is not None:
            reasons.append(f"paused until {r.paused_until:%Y-%m-%d %H:%M} UTC (the provider asked)")
        if r.last_error:
            reasons.append(r.last_error)
        if r.busy_error:
            reasons.append(f"busy time: {r.busy_error}")
        elif busy:
            reasons.append(busy)
        for why in reasons or ["failing"]:
            for line in textwrap.wrap(why, width=max(20, out.width - 2)):
                out.print("  " + escape(line), highlight=False)


def _print_connections(shown: list[StatusRow], now: datetime) -> None:
    from rich.markup import escape

    table = _Lines(
        ("therapist", "<"),
        ("calendar", "<"),
        ("state", "<"),
        ("last ok", ">"),
        ("next", ">"),
        ("entries", ">"),
        ("drift", ">"),
        ("busy time", "<"),
        flex=0,
    )
    for r in shown:
        table.add_row(
            escape(r.therapist_id),
            f"{r.provider} #{r.connection_id}" if r.connection_id else "-",
            _state_cell(r),
            ago(r.last_success_at, now),
            _next_cell(r, now),
            str(r.entries),
            str(r.drift),
            _busy_cell(r, now),
        )
    out = console()
    out.print(table.render(out.width))


def _summary(rows: list[StatusRow], therapists: tuple[str, ...], problems: bool) -> str:
    if not rows:
        if therapists:
            return "no connections"
        return "no therapists yet: ingest some events (syncd ingest FILE)"
    people = len({r.therapist_id for r in rows})
    conns = sum(1 for r in rows if r.connection_id)
    bad = sum(1 for r in rows if problem(r))
    line = f"{_count(people, 'therapist')}, {_count(conns, 'connection')}"
    if not bad:
        return line + ", no problems"
    hint = "" if problems else " (see syncd status --problems)"
    return line + f", {bad} with problems{hint}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _outbox_line(app: App, summary: OutboxSummary, now: datetime) -> str:
    if not summary.pending:
        return "outbox: nothing pending"
    oldest = ago(summary.oldest_pending_created_at, now)
    line = f"outbox: {summary.pending} pending (oldest {oldest}), {summary.failing} failing"
    if not app.config.platform.webhook_url:
        line += " - not sent: no [platform] webhook_url"
    return line


def _print_replicas(found: list[ReplicaInfo], now: datetime) -> None:
    from rich.markup import escape

    out = console()
    if not found:
        out.print("replicas: no daemon has registered on this database")
        return
    table = _Lines(
        ("replica", "<"),
        ("state", "<"),
        ("version", "<"),
        ("started", ">"),
        ("heartbeat", ">"),
        ("passes", ">"),
        flex=0,
    )
    labels = {"alive": "alive", "silent": "no heartbeat", "gone": "process gone"}
    for r in found:
        colour = _COLOURS.get(r.state, "default")
        table.add_row(
            escape(r.id),
            f"[{colour}]{labels.get(r.state, r.state)}[/]",
            escape(r.version),
            ago(r.started_at, now),
            ago(r.seen_at, now),
            str(r.leases),
        )
    out.print(table.render(out.width))


@click.command("outbox")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable, with event ids.")
@click.pass_context
def outbox(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent notifications to the platform, whom they are about, and their delivery state."""
    from rich.markup import escape

    from syncd import outbox as outbox_mod

    app = state(ctx).app()
    now = app.clock()
    with app.sessions() as s:
        entries = outbox_mod.list_recent(s, limit)
    if as_json:
        doc = [
            {**asdict(e), "state": e.state}
            | {k: v.isoformat() for k, v in asdict(e).items() if isinstance(v, datetime)}
            for e in entries
        ]
        click.echo(json.dumps(doc, indent=2))
        return
    out = console()
    if not entries:
        out.print("no notifications yet")
        return
    table = _Lines(
        ("created", ">"),
        ("type", "<"),
        ("therapist", "<"),
        ("state", "<"),
        ("last error, else id", "<"),
        flex=4,
    )
    colours = {"delivered": "green", "pending": "yellow", "failing": "red"}
    for e in entries:
        if e.state == "delivered":
            what = f"delivered {ago(e.delivered_at, now)}"
        elif e.state == "failing":
            due = e.next_attempt_at
            retry = ago(due, now) if due is not None and due > now else "now"
            what = f"failing ({e.attempts}), next {retry}"
        else:
            what = "pending"
        table.add_row(
            ago(e.created_at, now),
            e.topic,
            escape(e.therapist_id or "-"),
            f"[{colours[e.state]}]{what}[/]",
            escape(e.last_error if e.last_error and e.state != "delivered" else e.event_id),
        )
    out.print(table.render(out.width))
    if not app.config.platform.webhook_url:
        out.print("no [platform] webhook_url: notifications are kept, not sent", markup=False)

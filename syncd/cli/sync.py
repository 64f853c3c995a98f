"""``syncd ingest`` (platform events from a file) and ``syncd resync`` (passes now)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import click

from syncd.cli.common import EXIT_BUSY, Busy, CliError, console, state

if TYPE_CHECKING:
    from syncd.operations import ResyncResult


@click.command()
@click.argument("file", type=click.File("rb"))
@click.pass_context
def ingest(ctx: click.Context, file: IO[bytes]) -> None:
    """Apply platform events from FILE (JSON lines; - for stdin)."""
    app = state(ctx).app(create=True)  # the first thing done on a new install
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
    console().print(summary, highlight=False)
    if refused:
        sys.exit(1)


@click.command()
@click.argument("therapists", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every therapist.")
@click.option("--full", is_flag=True, help="List the whole calendar instead of using sync tokens.")
@click.option("--dry-run", is_flag=True, help="Print the planned changes; change nothing.")
@click.option(
    "--wait",
    "wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="How long to wait for a pass that is running (default: two lease periods).",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help=f"Skip therapists whose pass is running now; exit {EXIT_BUSY} if any was skipped.",
)
@click.pass_context
def resync(
    ctx: click.Context,
    therapists: tuple[str, ...],
    all_: bool,
    full: bool,
    dry_run: bool,
    wait: float | None,
    no_wait: bool,
) -> None:
    """Sync THERAPISTS (or --all) now.

    A pass that a live daemon is running is waited for; a pass left behind by a process that
    is gone is taken over at once. Exit 0 only when every therapist was synced: 1 when a
    calendar failed, 75 when a running pass kept a therapist busy (try again)."""
    from syncd import operations

    if not therapists and not all_:
        raise CliError("name one or more therapists, or --all")
    if no_wait and wait is not None:
        raise CliError("give --wait or --no-wait, not both")
    app = state(ctx).app()
    ids = operations.all_therapist_ids(app) if all_ else list(therapists)
    if not ids:
        console().print("no therapists yet: nothing to sync")
        return
    limit = 0.0 if no_wait else (wait if wait is not None else 2 * app.config.daemon.lease_seconds)
    out = console()
    failed = busy = 0

    def waiting(tid: str, holder: str, left: float) -> None:
        click.echo(f"{tid}: a pass is running ({holder}); waiting up to {left:.0f}s…", err=True)

    with _progress(len(ids), "dry run" if dry_run else "resync") as advance:

        def show(result: ResyncResult) -> None:
            nonlocal failed, busy
            advance()
            tid = result.therapist_id
            if result.busy:
                busy += 1
                why = "still running after the wait" if limit else "running"
                out.print(f"{tid}: not synced: a pass is {why} ({result.held_by})", markup=False)
                return
            if result.took_over:
                out.print(f"{tid}: took over from {result.held_by} (it had stopped)", markup=False)
            report = result.report
            assert report is not None
            if not report.connections:
                out.print(f"{tid}: no calendar connected")
            for c in report.connections:
                head = f"{tid} / connection {c.connection_id}"
                if c.error:
                    failed += 1
                    out.print(f"[red]{head}: {c.error}[/]", highlight=False)
                    continue
                verb = "would apply" if dry_run else "applied"
                out.print(f"{head}: {verb} {len(c.actions)} change(s)", highlight=False)
                if dry_run:
                    for a in c.actions:
                        out.print("   " + a.describe(), highlight=False, markup=False)

        operations.resync(
            app, ids, full=full, dry_run=dry_run, progress=show, wait=limit, waiting=waiting
        )
    if failed:
        raise CliError(f"{failed} connection(s) failed to sync (see above)")
    if busy:
        hint = "" if limit else ", or leave out --no-wait"
        raise Busy(f"{busy} therapist(s) not synced: a pass was running; try again{hint}")


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[], Any]]:
    out = console()
    if total <= 1 or not out.is_terminal:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)

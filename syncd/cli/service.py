"""``syncd run`` (the daemon) and ``syncd demo``."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli.common import CliError, console, state


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP reloads the configuration."""
    import asyncio
    import signal

    from syncd.app import App
    from syncd.config import google_push_problem
    from syncd.daemon import Daemon

    st = state(ctx)
    if problem := google_push_problem(st.config()):
        raise CliError(problem)
    # The daemon is the one command that may generate the secret key (with a warning).
    app = App.open(st.config())
    ctx.call_on_close(app.close)
    daemon = Daemon(app, config_path=st.config_path())

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)  # systemctl reload
        await daemon.serve()

    asyncio.run(serve())


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the demo's database and calendars here and reuse them on the next run "
    "(default: a temporary folder, removed when the demo stops).",
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
    from syncd.logs import setup_logging

    # The demo writes its own configuration; --config and /etc/syncd are not read.
    setup_logging("DEBUG" if state(ctx).debug else "INFO")
    run_demo(state_dir, console(), step_delay=step_delay, hold_minutes=hold_minutes)

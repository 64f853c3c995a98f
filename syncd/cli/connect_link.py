"""``syncd connect-link THERAPIST``: a link the therapist opens to connect their own calendar."""

from __future__ import annotations

import click

from syncd.cli.common import console, state


@click.command("connect-link")
@click.argument("therapist")
@click.option(
    "--days",
    type=click.FloatRange(min=0, max=90, min_open=True),
    default=None,
    help="How long the link stays valid (default: [connect] link_days, 7).",
)
@click.pass_context
def connect_link(ctx: click.Context, therapist: str, days: float | None) -> None:
    """Print a single-use link THERAPIST opens to connect (or reconnect) their calendar."""
    from syncd import connect_links
    from syncd.project import local_label

    app = state(ctx).app()
    config = app.config
    link = connect_links.create(app, therapist, days=days)
    if not config.http.public_url:
        click.echo(
            "warning: [http] public_url is not set, so the link points at this machine's own "
            "address; set it to the address therapists reach syncd at",
            err=True,
        )
    expires = local_label(link.expires_at, "UTC")
    console().print(
        f"Send this link to {therapist}; it works once, until {expires} UTC (keep it private):"
    )
    click.echo(link.url)

"""``syncd token create|list|revoke``: admin API and dashboard tokens."""

from __future__ import annotations

import click

from syncd.cli.common import CliError, ago, console, state


@click.group()
def token() -> None:
    """Admin API and dashboard tokens (scopes: read, admin)."""


@token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "admin"]), default="read", show_default=True)
@click.pass_context
def token_create(ctx: click.Context, name: str, scope: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from syncd import auth

    app = state(ctx).app()
    with app.sessions.begin() as s:
        secret = auth.create(s, name, auth.Scope(scope), app.clock())
    console().print(f"token {name!r} ({scope}); store it now, it is not shown again:")
    click.echo(secret)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Tokens by name, scope and last use (never the tokens themselves)."""
    from rich.table import Table

    from syncd import auth

    app = state(ctx).app()
    now = app.clock()
    table = Table(title="API tokens")
    for col in ("name", "scope", "created", "last used", "state"):
        table.add_column(col)
    with app.sessions() as s:
        for row in auth.listing(s):
            table.add_row(
                row.name,
                row.scope,
                ago(row.created_at, now),
                ago(row.last_used_at, now),
                "revoked" if row.revoked_at else "[green]active[/]",
            )
    console().print(table)


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token at once."""
    from syncd import auth

    app = state(ctx).app()
    with app.sessions.begin() as s:
        if not auth.revoke(s, name, app.clock()):
            raise CliError(f"no active token named {name!r}")
    console().print(f"token {name!r} revoked")

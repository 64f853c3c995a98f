"""``syncd db upgrade`` and ``syncd check-config``."""

from __future__ import annotations

from pathlib import Path

import click

from syncd.cli.common import CliError, console, state


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create the database or apply its migrations (also done on every start)."""
    from syncd.store import database

    cfg = state(ctx).config()
    database.check_owner(cfg.database_url)
    engine = database.make_engine(cfg.database_url)
    try:
        database.upgrade(engine)
    finally:
        engine.dispose()
    console().print(f"database at {database.where(cfg.database_url)} is up to date")


@click.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration, print the effective values, and check that the database
    answers (without creating anything)."""
    from syncd.config import google_push_problem

    st = state(ctx)
    cfg = st.config()
    if problem := google_push_problem(cfg):
        raise CliError(problem)
    out = console()
    out.print_json(cfg.model_dump_json())
    out.print(st.source(), highlight=False, markup=False, soft_wrap=True)
    ok, line = _database_line(cfg.database_url)
    out.print(f"database: {line}", highlight=False, markup=False, soft_wrap=True)
    out.print(
        f"secret key: {_key_line(cfg.key_file)}", highlight=False, markup=False, soft_wrap=True
    )
    if not ok:
        raise CliError(f"the configuration is valid but its database does not answer: {line}")
    out.print("configuration is valid")


def _database_line(url: str) -> tuple[bool, str]:
    """(usable, what was found): connects, reads the schema revision, creates nothing."""
    from syncd.cli.errors import message_for
    from syncd.store import database

    where = database.where(url)
    try:
        database.check_owner(url)
    except database.WrongUser as exc:
        return False, str(exc)
    engine = database.make_engine(url, create=False)
    try:
        if engine.url.get_backend_name() == "sqlite":
            path = Path(engine.url.database or "")
            if not path.exists():
                parent = next((p for p in path.parents if p.exists()), None)
                if parent is None or not parent.is_dir():
                    return False, f"SQLite {where}: no folder to create it in"
                return True, f"SQLite {where}: not created yet (the first start or `db upgrade`)"
            kind = "SQLite"
        else:
            kind = "PostgreSQL"
        try:
            current, heads = database.revisions(engine)
        except Exception as exc:
            return False, message_for(exc, url)
        if not current:
            schema = "no syncd tables yet (`syncd db upgrade` or the first start creates them)"
        elif current == heads:
            schema = f"schema up to date ({', '.join(sorted(current))})"
        else:
            schema = (
                f"schema {', '.join(sorted(current))}, this syncd needs "
                f"{', '.join(sorted(heads))} (`syncd db upgrade`)"
            )
        return True, f"{kind} {where}: connected, {schema}"
    finally:
        engine.dispose()


def _key_line(key_file: Path) -> str:
    import os

    from syncd import secrets

    if os.environ.get(secrets.KEY_ENV):
        return f"from ${secrets.KEY_ENV}"
    if creds := os.environ.get("CREDENTIALS_DIRECTORY"):
        cred = Path(creds) / secrets.CREDENTIAL_NAME
        if cred.exists():
            return f"the systemd credential {cred}"
    if key_file.exists():
        return f"{key_file}"
    return f"none yet ({secrets.key_sources(key_file)}); `syncd run` generates {key_file}"

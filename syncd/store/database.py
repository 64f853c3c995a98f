"""Engine creation and migrations. SQLite gets WAL and a busy timeout so the daemon and a CLI
command can share the file; PostgreSQL uses psycopg 3."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from syncd import private_files

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and route them to psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_database(database: Path, create: bool) -> Callable[..., None]:
    def before_connect(*_args: Any) -> None:
        # 0600 before SQLite opens it: SQLite would create it 0644, and gives its WAL and SHM
        # files the database's own mode. Returning None lets the connection go ahead; when the
        # file cannot be made, SQLite's own error says why.
        with contextlib.suppress(OSError):
            if create:
                private_files.private_file(database)
            private_files.tighten_sqlite(database)

    return before_connect


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``; ``create=False`` never makes a folder or a file for SQLite
    (read-only commands must not leave anything behind where they looked)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        on_disk = bool(path) and path != ":memory:" and not str(path).startswith("file:")
        engine = create_engine(url, connect_args={"timeout": 10}, hide_parameters=True)
        if on_disk:
            database = Path(str(path))
            if create and not database.parent.exists():
                private_files.private_dir(database.parent)
            event.listen(engine, "do_connect", _private_database(database, create))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # hide_parameters: an error's text (logged, stored as a connection's last error) names the
    # statement, never the values bound to it, which can be a client's name.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        connect_args={"connect_timeout": 10},
        hide_parameters=True,
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command  # Alembic is only loaded to migrate

    command.upgrade(alembic_config(engine), revision)


_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*(.+)$", re.M)


def schema_heads() -> set[str]:
    """The migration revisions this code expects, read from the migration files without
    loading Alembic (a read-only command checks them on every run; a test keeps this equal to
    Alembic's own answer)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for key, value in _REVISION.findall(path.read_text()):
            found = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (revisions if key == "revision" else parents).update(found)
    return revisions - parents


def revisions(engine: Engine) -> tuple[set[str], set[str]]:
    """(the database's current migration revisions, the revisions this code expects)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set(), schema_heads()
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        current = {str(v) for v in found}
    return current, schema_heads()


def where(url: str) -> str:
    """The database for messages: a SQLite file's path, or PostgreSQL's host:port/name (never a
    password)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database or ":memory:")
    host = parsed.host or "the local socket"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{host}{port}/{parsed.database or ''}"


class WrongUser(Exception):
    """Root about to open a SQLite database that belongs to another user (the service's)."""


def check_owner(url: str) -> None:
    """Refuse to let root open a SQLite database owned by someone else: SQLite would create its
    -wal/-shm files (and a new database's folder) owned by root, and the service, running as
    its own user, could then no longer write to it. Run the command as that user instead."""
    import os

    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or os.geteuid() != 0:
        return
    path = Path(parsed.database)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    owner = existing.stat().st_uid
    if owner != 0:
        import pwd

        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise WrongUser(
            f"{existing} belongs to user {name}: run this as that user (sudo -u {name} syncd …), "
            "so the database stays writable by the service"
        )


class MissingDatabase(Exception):
    """A read-only command found no syncd database; the message says where and what to do."""


def check_existing(engine: Engine, source: str) -> None:
    """Refuse to read a database that is not there or not at this code's schema, with one line
    naming where it looked (``source`` says which configuration chose it) and what to do."""
    here = where(engine.url.render_as_string(hide_password=False))
    if engine.url.get_backend_name() == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise MissingDatabase(
                f"no syncd database at {here} ({source}): give the service's configuration "
                "with --config (or run as its user), or create one with `syncd db upgrade`"
            )
    current, heads = revisions(engine)
    if not current:
        raise MissingDatabase(
            f"the database at {here} ({source}) has no syncd tables: "
            "run `syncd db upgrade` to create them"
        )
    if current != heads:
        raise MissingDatabase(
            f"the database at {here} is at schema {', '.join(sorted(current))}, this syncd needs "
            f"{', '.join(sorted(heads))}: run `syncd db upgrade` (the service does it on start)"
        )


def describe_error(exc: BaseException, url: str) -> str | None:
    """One plain line for a database error (SQLAlchemy wrapping psycopg or sqlite3), or None
    when ``exc`` is not one. This is the one place those libraries' messages are translated."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if not isinstance(exc, SQLAlchemyError):
        return None
    here = where(url)
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(original).strip()
    first = text.splitlines()[0] if text else type(original).__name__
    low = text.lower()
    if "connection refused" in low:
        return f"could not reach the database at {here}: connection refused"
    if "timeout expired" in low or "timed out" in low:
        return f"could not reach the database at {here}: timed out"
    if "could not translate host name" in low or "name or service not known" in low:
        return f"could not reach the database at {here}: the host name does not resolve"
    if "password authentication failed" in low or "no password supplied" in low:
        return f"the database at {here} refused the login: {first.split('failed: ')[-1]}"
    if "does not exist" in low and "database" in low:
        return f"the database server answered: {first.split('failed: ')[-1]} ({here})"
    if "unable to open database file" in low:
        return f"cannot open the SQLite database {here} (missing folder or no permission)"
    if "readonly database" in low:
        return f"cannot write the SQLite database {here}: run as the user that owns it"
    if "database is locked" in low:
        return f"the SQLite database {here} stayed locked by another process; try again"
    return f"database error ({here}): {' '.join(first.split())}"

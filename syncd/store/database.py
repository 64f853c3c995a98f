"""Engine creation and migrations. SQLite gets WAL and a busy timeout so the daemon and a CLI
command can share the file; PostgreSQL uses psycopg 3."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from syncd import private_files

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


def _private_database(database: Path) -> Callable[..., None]:
    def before_connect(*_args: Any) -> None:
        # 0600 before SQLite opens it: SQLite would create it 0644, and gives its WAL and SHM
        # files the database's own mode. Returning None lets the connection go ahead; when the
        # file cannot be made, SQLite's own error says why.
        with contextlib.suppress(OSError):
            private_files.private_file(database)
            private_files.tighten_sqlite(database)

    return before_connect


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        on_disk = bool(path) and path != ":memory:" and not str(path).startswith("file:")
        engine = create_engine(url, connect_args={"timeout": 10}, hide_parameters=True)
        if on_disk:
            database = Path(str(path))
            if not database.parent.exists():
                private_files.private_dir(database.parent)
            event.listen(engine, "do_connect", _private_database(database))
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
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)

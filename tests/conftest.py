"""Shared fixtures: both databases, a configured App, and the real CalDAV servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connectors.egress import EgressPolicy
from syncd import private_files
from syncd.app import App
from syncd.config import Config, load
from tests.support.caldav_servers import (  # noqa: F401 - fixtures
    CalDAVServer,
    caldav_server,
    http_proxy,
    radicale_server,
    xandikos_server,
)
from tests.support.faults import fault_proxy  # noqa: F401 - a fixture
from tests.support.google_standin.fixtures import google_standin  # noqa: F401 - a fixture

# For connectors and senders made directly in tests: their servers listen on loopback.
LOOPBACK_OK = EgressPolicy(allow_private=True)

# Lists tests that took over a minute without a reason written beside them
# (tests/support/slow_report.py).
pytest_plugins = ["tests.support.slow_report"]

PG_URL = os.environ.get("SYNCD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin_url() -> str:
    return make_url(PG_URL).set(drivername="postgresql+psycopg").render_as_string(False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards. In CI a missing server fails."""
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"syncd_t_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    url = make_url(PG_URL).set(database=name).render_as_string(False)
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'syncd.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def make_config(state: Path, db: str | None = None, /, **sections: Mapping[str, object]) -> Config:
    """A test configuration under ``state``; ``sections`` (by section name) override its values.
    ``db`` is positional only, so that no section can be taken for it."""
    key = state / "secret.key"
    if not key.exists():
        private_files.private_dir(state)
        private_files.write_private(key, Fernet.generate_key())  # as syncd itself writes keys
    data: dict[str, dict[str, object]] = {
        "daemon": {"state_dir": str(state), "poll_interval": 0.05},
        "database": {"url": db or f"sqlite:///{state / 'syncd.db'}"},
        "sync": {"retry_base": 0.01, "retry_cap": 0.05},
        "caldav": {"timeout": 10},
        "outbound": {"allow_private_hosts": True},  # the test servers listen on loopback
        "http": {"port": 0},  # any free port: daemons in tests never clash
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Config.model_validate(data)


def write_config(path: Path, cfg: Config) -> Path:
    lines = []
    for section, values in cfg.model_dump(mode="json").items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            if v is None:
                continue
            lines.append(
                f"{k} = {v!r}".replace("'", '"')
                if isinstance(v, str)
                else f"{k} = {str(v).lower() if isinstance(v, bool) else v}"
            )
        lines.append("")
    path.write_text("\n".join(lines))
    assert load(path, env={}) == cfg
    return path


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[App]:
    application = App.open(make_config(tmp_path / "state", db_url))
    yield application
    application.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[App]:
    application = App.open(make_config(tmp_path / "state"))
    yield application
    application.close()

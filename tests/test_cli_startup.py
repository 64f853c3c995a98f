"""The CLI answers at once (it imports only what a command uses), every registered command
loads, and commands find the service's secret key the way the service does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from syncd.cli import main
from syncd.cli.main import COMMANDS, load_command
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.proc import jsonl

HEAVY = ("sqlalchemy", "alembic", "caldav", "googleapiclient", "starlette", "uvicorn", "pydantic")

# Runs the CLI in a fresh interpreter and reports which heavy libraries it imported.
PROBE = """
import json, sys
from syncd.cli import main
try:
    main(sys.argv[1:], prog_name="syncd")
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.readline())))
print(json.dumps(heavy), file=sys.stderr)
"""


def imported(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        input=json.dumps(HEAVY) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    heavy: list[str] = json.loads(out.stderr.strip().splitlines()[-1])
    return heavy


@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["status", "--help"], ["resync", "--help"]]
)
def test_version_and_help_load_no_database_web_or_calendar_library(args: list[str]) -> None:
    assert imported(*args) == []


def test_the_probe_sees_heavy_imports(tmp_path: Path) -> None:
    """The check above can fail: a command that does open a database shows up in it."""
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    assert {"sqlalchemy", "pydantic"} <= set(imported("--config", str(cfg), "status"))


def test_version_comes_from_the_package() -> None:
    from syncd import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"syncd, version {__version__}\n"


def test_every_registered_command_loads_and_has_help() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        command = load_command(name)
        assert command.name == name
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and result.output.startswith("Usage: "), name
    listed = runner.invoke(main, ["--help"]).output
    assert all(f"  {name} " in listed for name in COMMANDS)


def test_a_command_uses_the_services_credential_and_never_generates_a_key(
    tmp_path: Path, radicale_server: CalDAVServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "syncd.toml", make_config(state))
    (state / "secret.key").unlink()  # the service keeps its key as a systemd credential
    runner = CliRunner()
    ingest = ["--config", str(cfg), "ingest", "-"]
    assert runner.invoke(main, ingest, input=jsonl([f.therapist()])).exit_code == 0
    pw = tmp_path / "pw"
    pw.write_text(radicale_server.password)
    connect = [
        "--config",
        str(cfg),
        "connect",
        "caldav",
        "t-1",
        "--url",
        radicale_server.url,
        "--username",
        radicale_server.username,
        "--password-file",
        str(pw),
    ]
    monkeypatch.delenv("SYNCD_SECRET_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    refused = runner.invoke(main, connect)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: no secret key (looked at $SYNCD_SECRET_KEY, ")
    assert f"$CREDENTIALS_DIRECTORY/syncd-secret-key, {state / 'secret.key'})" in refused.stderr
    assert not (state / "secret.key").exists()

    key = Fernet.generate_key()
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "syncd-secret-key").write_bytes(key + b"\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    result = runner.invoke(main, connect)
    assert result.exit_code == 0, result.stderr
    assert not (state / "secret.key").exists()
    check = runner.invoke(main, ["--config", str(cfg), "check-config"])
    assert f"secret key: the systemd credential {creds / 'syncd-secret-key'}" in check.stdout
    # What was stored is sealed with the credential's key: the service can read it.
    from sqlalchemy import select

    from syncd.app import App
    from syncd.config import load
    from syncd.secrets import SecretBox
    from syncd.store.tables import ConnectionRow

    app = App.open(load(cfg), migrate=False, create_key=False)
    try:
        with app.sessions() as s:
            sealed = s.scalars(select(ConnectionRow.secret)).one()
    finally:
        app.close()
    assert SecretBox(key).open(sealed) == radicale_server.password


def test_schema_heads_read_without_alembic_are_alembics() -> None:
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from syncd.store import database

    engine = create_engine("sqlite://")
    heads = ScriptDirectory.from_config(database.alembic_config(engine)).get_heads()
    assert database.schema_heads() == set(heads) and len(heads) == 1

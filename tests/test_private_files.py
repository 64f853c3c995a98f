"""Private files (issue 14, deliverable 6): outside systemd, whatever the umask, the state
directory is 0700 and the database, its WAL and SHM files and the key file are 0600; ones left
readable by an older version are tightened."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from syncd.app import App
from syncd.config import Config
from syncd.secrets import load_or_create_key
from tests.conftest import write_config
from tests.support import factories as f
from tests.support.proc import jsonl


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask there is, as a careless shell or service manager might leave it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def config(state: Path, **sections: dict[str, object]) -> Config:
    """A configuration that leaves every file to syncd (unlike tests.conftest.make_config,
    which writes the key file itself)."""
    data: dict[str, dict[str, object]] = {
        "daemon": {"state_dir": str(state)},
        "http": {"port": 0},
    }
    data.update(sections)
    return Config.model_validate(data)


def test_a_new_state_directory_database_wal_and_key_are_private(
    tmp_path: Path, open_umask: None
) -> None:
    state = tmp_path / "fresh" / "state"
    app = App.open(config(state))
    try:
        assert app.ingestor().ingest(f.therapist()).ok
        with app.db.connect() as c:  # a reader keeps the WAL and SHM files in place
            c.execute(text("SELECT count(*) FROM therapists")).scalar()
            database = state / "syncd.db"
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert all(p.exists() for p in files), sorted(p.name for p in state.iterdir())
            assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o600" for p in files}
        assert oct(mode(state)) == "0o700"
        assert oct(mode(state / "secret.key")) == "0o600"
        # Nothing else syncd created is open to others either.
        for path in state.iterdir():
            assert not mode(path) & 0o077, (path, oct(mode(path)))
    finally:
        app.close()


def test_a_key_file_and_database_elsewhere_are_private_too(
    tmp_path: Path, open_umask: None
) -> None:
    keys, data = tmp_path / "keys", tmp_path / "data"
    cfg = config(
        tmp_path / "state",
        security={"key_file": str(keys / "syncd.key")},
        database={"url": f"sqlite:///{data / 'sync.db'}"},
    )
    app = App.open(cfg)
    app.close()
    assert oct(mode(keys)) == "0o700" and oct(mode(keys / "syncd.key")) == "0o600"
    assert oct(mode(data)) == "0o700" and oct(mode(data / "sync.db")) == "0o600"


def test_files_left_open_by_an_older_version_are_tightened_with_a_warning(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    App.open(config(state)).close()
    for path, loose in (
        (state, 0o755),
        (state / "syncd.db", 0o644),
        (state / "secret.key", 0o644),
    ):
        path.chmod(loose)
    Path(f"{state / 'syncd.db'}-wal").write_bytes(b"")
    Path(f"{state / 'syncd.db'}-wal").chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="syncd.private_files"):
        App.open(config(state)).close()
    assert oct(mode(state)) == "0o700"
    assert oct(mode(state / "syncd.db")) == "0o600"
    assert oct(mode(state / "secret.key")) == "0o600"
    wal = Path(f"{state / 'syncd.db'}-wal")
    assert not wal.exists() or oct(mode(wal)) == "0o600"
    assert "was readable by others" in caplog.text


def test_a_shared_directory_is_left_alone_and_named(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with caplog.at_level(logging.WARNING, logger="syncd.private_files"):
        App.open(config(shared)).close()
    assert oct(mode(shared)) == "0o1777"
    assert "shared directory" in caplog.text
    assert oct(mode(shared / "syncd.db")) == "0o600"
    assert oct(mode(shared / "secret.key")) == "0o600"


def test_the_cli_run_by_hand_with_umask_000_leaves_nothing_readable(tmp_path: Path) -> None:
    """A real ``syncd`` process, started the way an operator would outside systemd."""
    state = tmp_path / "state"
    path = write_config(tmp_path / "syncd.toml", config(state))
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_CONFIG", "SYNCD_SECRET_KEY")}
    # `syncd run` is the one command that generates the key; the others read it (issue 16).
    commands = (
        (["db", "upgrade"], None),
        (["ingest", "-"], jsonl([f.therapist()])),
        (["token", "create", "ops"], None),
    )
    key = state / "secret.key"
    for args, stdin in commands:
        if args[0] == "token":
            # As `syncd run` would have left it: generated under umask 000 by syncd itself.
            old = os.umask(0)
            try:
                load_or_create_key(key)
            finally:
                os.umask(old)
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            preexec_fn=lambda: os.umask(0),
        )
        assert done.returncode == 0, done.stderr
    assert oct(mode(state)) == "0o700"
    created = sorted(p.name for p in state.iterdir())
    assert "syncd.db" in created and "secret.key" in created, created
    for name in created:
        assert oct(mode(state / name)) == "0o600", (name, oct(mode(state / name)))

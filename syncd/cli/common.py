"""What every command module shares: the per-invocation state (configuration and database,
both opened on first use), the one-line error, the console and small formatters.

Nothing here imports more than click at module level: `syncd --help` and `syncd --version`
import every command module, and must answer without loading the database or HTTP stacks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from syncd.app import App
    from syncd.config import Config

# Exit codes besides 0 (done) and 1 (failed), stable for scripts.
EXIT_BUSY = 75  # EX_TEMPFAIL: a live pass held a therapist and it was not synced; try again


class CliError(click.ClickException):
    """An expected failure: ``error: <one line>`` on stderr and a non-zero exit."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: IO[Any] | None = None) -> None:
        # Plain echo: one line, never wrapped to the terminal width.
        click.echo(f"error: {self.message}", err=True)


class Busy(CliError):
    """Nothing failed, but a running pass kept some work from being done: try again."""

    exit_code = EXIT_BUSY


@functools.cache
def console() -> Console:
    from rich.console import Console

    return Console()


@dataclass
class State:
    """``ctx.obj``: what the root options said, and what was opened from them."""

    given_config: Path | None
    config_origin: str  # "--config", "$SYNCD_CONFIG" or "" (not given)
    debug: bool
    _config: Config | None = None
    _config_path: Path | None = None
    _app: App | None = None
    _closers: list[Any] = field(default_factory=list)

    def config_path(self) -> Path | None:
        """The file the configuration came from (None: embedded defaults)."""
        self.config()
        return self._config_path

    def config(self) -> Config:
        if self._config is None:
            from syncd import config as config_mod
            from syncd.logs import setup_logging

            path = config_mod.find(self.given_config)
            try:
                cfg = config_mod.load(path)
            except config_mod.ConfigError as exc:
                raise CliError(str(exc)) from None
            self._config, self._config_path = cfg, path
            setup_logging("DEBUG" if self.debug else cfg.logging.level)
        return self._config

    def source(self) -> str:
        """Which configuration chose the database, for messages that say where they looked."""
        path = self.config_path()
        if path is None:
            return "no configuration file: embedded defaults"
        how = f" from {self.config_origin}" if self.config_origin else ""
        return f"configuration {path}{how}"

    def app(self, *, create: bool = False) -> App:
        """The database (and, when first needed, the secret key), which must already exist at
        this code's schema: a command run with the wrong configuration says in one line where it
        looked and what to do, and leaves nothing behind (no folder, database or key). Only
        commands that start from nothing (``ingest``) pass ``create`` to make and migrate it."""
        if self._app is None:
            from syncd.app import App
            from syncd.store import database

            cfg = self.config()
            if create:
                app = App.open(cfg, create_key=False)
            else:
                app = App.open(cfg, migrate=False, create_key=False)
                try:
                    database.check_existing(app.db, self.source())
                except database.MissingDatabase as exc:
                    app.close()
                    raise CliError(str(exc)) from None
                except BaseException:
                    app.close()
                    raise
            self._app = app
            click.get_current_context().call_on_close(app.close)
        return self._app


def state(ctx: click.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    secs = int((now - when).total_seconds())
    if secs < 0:
        return f"in {_span(-secs)}"
    return f"{_span(secs)} ago"


def _span(secs: int) -> str:
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"

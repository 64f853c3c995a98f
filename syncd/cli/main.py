"""The ``syncd`` root command: global options, the registry of commands, and errors as one line.

Commands live in modules by what they are about and are registered in ``COMMANDS`` below, one
line each (``"name": "module:attribute"``). A module is imported only when one of its commands
runs (or ``--help`` lists them), so ``syncd --version`` imports click and nothing else of note.
"""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from syncd import __version__
from syncd.cli.common import CliError, State

# Every command, in the order `syncd --help` lists them. Add a command with one line here.
COMMANDS: dict[str, str] = {
    "run": "syncd.cli.service:run",
    "demo": "syncd.cli.service:demo",
    "ingest": "syncd.cli.sync:ingest",
    "resync": "syncd.cli.sync:resync",
    "status": "syncd.cli.status:status",
    "outbox": "syncd.cli.status:outbox",
    "conflicts": "syncd.cli.queries:conflicts",
    "availability": "syncd.cli.queries:availability",
    "connect": "syncd.cli.connect:connect",
    "connect-link": "syncd.cli.connect_link:connect_link",
    "disconnect": "syncd.cli.connect:disconnect",
    "calendars": "syncd.cli.connect:calendars",
    "feed-url": "syncd.cli.connect:feed_url",
    "token": "syncd.cli.tokens:token",
    "sessions": "syncd.cli.privacy:sessions",
    "forget": "syncd.cli.privacy:forget",
    "db": "syncd.cli.admin:db",
    "check-config": "syncd.cli.admin:check_config",
}


def load_command(name: str) -> click.Command:
    module, _, attribute = COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command) or command.name != name:
        raise RuntimeError(f"COMMANDS[{name!r}] is not the command {name!r}")
    return command


# click >= 8.2 shows a group's help through this usage error when it is given no arguments.
_NO_ARGS: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


class UsageLine(CliError):
    """A command line that does not parse, in one line (click's own is four)."""

    exit_code = 2

    @classmethod
    def of(cls, exc: click.UsageError) -> UsageLine:
        where = exc.ctx.command_path if exc.ctx is not None else "syncd"
        return cls(f"{exc.format_message().rstrip('.')} (see {where} --help)")


class Group(click.Group):
    """Loads commands from ``COMMANDS`` on demand; every failure becomes one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _NO_ARGS:
            raise  # `syncd` alone: the help, as usual
        except click.UsageError as exc:
            raise UsageLine.of(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _NO_ARGS:
            raise
        except click.UsageError as exc:
            raise UsageLine.of(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from syncd.cli.errors import message_for

            obj = ctx.obj
            debug = isinstance(obj, State) and obj.debug
            if debug:
                traceback.print_exc()
            url = obj._config.database_url if isinstance(obj, State) and obj._config else None
            raise CliError(message_for(exc, url)) from None


@click.group(cls=Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="SYNCD_CONFIG",
    help="TOML configuration file (also $SYNCD_CONFIG). Default: /etc/syncd/syncd.toml when it "
    "exists, else embedded defaults.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="syncd")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, debug: bool) -> None:
    """syncd mirrors a therapy booking platform into therapists' calendars."""
    source = ctx.get_parameter_source("config_path")
    origin = {ParameterSource.COMMANDLINE: "--config", ParameterSource.ENVIRONMENT: "$SYNCD_CONFIG"}
    # The configuration is read when a command first needs it, so `syncd X --help` never does.
    ctx.obj = State(config_path, origin.get(source, "") if source else "", debug)

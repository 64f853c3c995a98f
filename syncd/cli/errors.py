"""Every failure of a command as one line in plain words. The libraries' own errors are
translated where they are raised (connectors.errors, store.database); this module only picks the
translation for what reached the top, and never imports a library just to recognise its error."""

from __future__ import annotations

import sys

# Exceptions whose message is already the one line an operator should read, by module: only
# modules already imported can have raised them.
_OURS = {
    "syncd.config": ("ConfigError",),
    "syncd.errors": ("OperationError",),
    "syncd.secrets": ("SecretError",),
    "syncd.store.database": ("MissingDatabase", "WrongUser"),
    "syncd.feeds": ("FeedExists",),
    "syncd.auth": ("TokenError",),
    "syncd.app": ("UnknownProvider",),
    "connectors.errors": ("ConnectorError",),
}


def _ours(exc: BaseException) -> bool:
    for module, names in _OURS.items():
        mod = sys.modules.get(module)
        if mod is None:
            continue
        if any(isinstance(exc, getattr(mod, n, ())) for n in names):
            return True
    return False


def one_line(text: str) -> str:
    return " ".join(text.split())


def message_for(exc: BaseException, database_url: str | None) -> str:
    """The line shown for ``exc``; ``database_url`` names the database in database errors."""
    if _ours(exc):
        return one_line(str(exc))
    if "sqlalchemy" in sys.modules and database_url:
        from syncd.store.database import describe_error

        if (text := describe_error(exc, database_url)) is not None:
            return one_line(text)
    if isinstance(exc, OSError):
        from connectors.errors import unreachable

        if (text := unreachable(exc)) is not None:
            return text
        if exc.strerror:
            where = f": {exc.filename}" if exc.filename else ""
            return one_line(f"{exc.strerror}{where}")
    detail = one_line(str(exc))[:200]
    return (
        f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} "
        "(run with --debug for the details)"
    )

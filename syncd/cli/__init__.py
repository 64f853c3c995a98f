"""The ``syncd`` command line (see :mod:`syncd.cli.main` for how commands are registered)."""

from syncd.cli.main import main

__all__ = ["main"]

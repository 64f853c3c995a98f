"""What the HTTP routes may ask of the daemon that serves them, as an interface: the routes are
built by :mod:`syncd.web.app` for a :class:`syncd.daemon.Daemon`, which imports them, so they
name only this (and tests hand them a small stand-in)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from syncd.app import App
    from syncd.metrics import Metrics


class Host(Protocol):
    @property
    def stopping(self) -> bool:
        """The daemon is shutting down (``/readyz`` says so)."""
        ...

    @property
    def scheduler_running(self) -> bool: ...

    @property
    def metrics(self) -> Metrics:
        """The daemon's own Prometheus registry (``/metrics``)."""
        ...

    def wake(self) -> None:
        """Look for due work now: a change arrived that a pass should act on."""
        ...


# Builds a feature's routes for one daemon (see syncd.web.app.FEATURES).
RouteFactory = Callable[["App", Host], Sequence[BaseRoute]]

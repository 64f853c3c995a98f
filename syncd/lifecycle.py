"""The daemon's life under a service manager: the systemd watchdog and configuration reload.

Reload (SIGHUP, ``systemctl reload syncd``) re-reads the configuration file and applies, without
dropping any work, the options listed in ``RUNTIME``; every other option keeps its running
value, and a change to one of them is logged as needing a restart. A configuration that does not
load (bad TOML, an invalid value) is logged and the running one is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from syncd import config as config_mod
from syncd import log_guard, retry
from syncd.notify import Notifier

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from syncd.app import App
    from syncd.engine import Engine
    from syncd.web.server import WebServer

log = logging.getLogger(__name__)

# Options (``section.option``; ``section.*`` for all of a section) applied by a reload.
RUNTIME: frozenset[str] = frozenset(
    {
        "logging.level",
        "daemon.poll_interval",
        "daemon.lease_seconds",
        "daemon.shutdown_timeout",
        "sync.*",
        "offers.sweep_interval",
    }
)


def _runtime(option: str) -> bool:
    return option in RUNTIME or f"{option.split('.')[0]}.*" in RUNTIME


def changed_options(old: config_mod.Config, new: config_mod.Config) -> list[str]:
    """``section.option`` of every option whose value differs."""
    a, b = old.model_dump(), new.model_dump()
    return [
        f"{section}.{option}"
        for section, values in b.items()
        for option, value in values.items()
        if a[section].get(option) != value
    ]


def merge(old: config_mod.Config, new: config_mod.Config) -> tuple[config_mod.Config, list[str]]:
    """``old`` with the runtime options of ``new``, and the options that still need a restart."""
    changed = changed_options(old, new)
    updates: dict[str, dict[str, Any]] = {}
    for option in changed:
        if _runtime(option):
            section, name = option.split(".", 1)
            updates.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    sections = {
        section: getattr(old, section).model_copy(update=values)
        for section, values in updates.items()
    }
    return old.model_copy(update=sections), [o for o in changed if not _runtime(o)]


def apply_logging_level(level: str) -> None:
    logging.getLogger().setLevel(level)
    log_guard.install(level)


class Service(Protocol):
    """The daemon, as the life cycle it owns sees it (an interface, so the two modules do not
    import each other)."""

    @property
    def app(self) -> App: ...

    @property
    def owner(self) -> str: ...

    @property
    def web(self) -> WebServer | None: ...

    @property
    def scheduler(self) -> AsyncIOScheduler | None: ...

    @property
    def engine(self) -> Engine: ...


class Lifecycle:
    """Owned by one :class:`~syncd.daemon.Daemon`: sd_notify, the watchdog task and reload."""

    def __init__(self, daemon: Service, config_path: Path | None, notifier: Notifier) -> None:
        self.daemon = daemon
        self.config_path = config_path
        self.notifier = notifier
        self._watchdog: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[bool] | None = None
        self._stopping = False

    def ready(self) -> None:
        """Start-up is done: tell systemd, and start pinging its watchdog from this loop."""
        web = self.daemon.web
        where = f", HTTP on {web.listen_url}" if web is not None else ""
        self.notifier.ready(f"serving as {self.daemon.owner}{where}")
        interval = self.notifier.watchdog_interval()
        if interval is not None and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._ping(interval), name="sd-watchdog"
            )

    async def _ping(self, interval: float) -> None:
        # On the daemon's own event loop: when the loop is stuck the pings stop and systemd
        # kills and restarts the service (WatchdogSec=).
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping("stopping: finishing running passes")

    async def close(self) -> None:
        for task in (self._watchdog, self._reloading):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.notifier.close()

    def request_reload(self) -> None:
        """The SIGHUP handler: reload on the loop, one reload at a time."""
        if self._stopping:
            return
        if self._reloading is not None and not self._reloading.done():
            log.info("reload already in progress")
            return
        self._reloading = asyncio.get_running_loop().create_task(self.reload(), name="reload")

    async def reload(self) -> bool:
        """Re-read the configuration and apply its runtime options; False when it was kept."""
        self.notifier.reloading()
        try:
            ok = await self._reload()
        finally:
            if not self._stopping:
                self.notifier.ready("serving (configuration reloaded)")
        return ok

    def _reschedule(self, old: config_mod.Config, new: config_mod.Config) -> None:
        """New intervals for the scheduler's periodic jobs (the next run moves accordingly)."""
        scheduler = self.daemon.scheduler
        if scheduler is None:
            return
        jobs = {
            "poll": (old.daemon.poll_interval, new.daemon.poll_interval),
            "heartbeat": (
                max(1.0, old.daemon.lease_seconds / 3),
                max(1.0, new.daemon.lease_seconds / 3),
            ),
            "expiry-sweep": (old.offers.sweep_interval, new.offers.sweep_interval),
        }
        for job_id, (before, after) in jobs.items():
            if before != after and scheduler.get_job(job_id) is not None:
                scheduler.reschedule_job(job_id, trigger="interval", seconds=after)

    async def _reload(self) -> bool:
        path = self.config_path
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, config_mod.load, path)
        except config_mod.ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        except Exception:
            log.exception("reload failed, keeping the running configuration")
            return False
        app = self.daemon.app
        old = app.config
        merged, restart = merge(old, new)
        applied = changed_options(old, merged)
        app.config = merged
        if merged.logging.level != old.logging.level:
            apply_logging_level(merged.logging.level)
        if merged.sync != old.sync:
            s = merged.sync
            # Read by the engine at every external call: the next retry uses the new policy.
            policy = retry.RetryPolicy(s.retry_attempts, s.retry_base, s.retry_cap)
            self.daemon.engine.policy = policy
        self._reschedule(old, merged)
        source = str(path) if path is not None else "defaults and environment"
        log.info(
            "configuration reloaded from %s: %s",
            source,
            "applied " + ", ".join(applied) if applied else "no runtime option changed",
        )
        if restart:
            log.warning("changed options that need a restart to apply: %s", ", ".join(restart))
        return True

"""Waking every replica when work is written anywhere: PostgreSQL ``LISTEN/NOTIFY``.

The database stays the only truth about what is due; a notification carries no data, it only
says "look now" so a replica does not wait for its next poll. ``NOTIFY`` is transactional, so
the wake-up reaches the listeners when (and only if) the transaction that wrote the work commits.
On SQLite (a single process) there is nothing to tell and ``announce`` does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

WORK = "syncd_work"  # a therapist became due (ingest, expiry, resync, Google push)
OFFERS = "syncd_offers"  # a pending offer was stored: its expiry may be the next one
CHANNELS = (WORK, OFFERS)


def announce(s: Session, channel: str) -> None:
    """Queue a wake-up on ``channel``, delivered when ``s`` commits. PostgreSQL folds repeated
    identical notifications of one transaction into one."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_notify(channel, "")))


def conninfo(url: URL) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """A thread holding one dedicated connection that ``LISTEN``s on :data:`CHANNELS` and calls
    ``on_notify(channel)`` for each notification. It reconnects with capped backoff; while it is
    disconnected the daemon's periodic poll still finds all work, only later."""

    def __init__(
        self,
        url: URL,
        on_notify: Callable[[str], None],
        *,
        connect_timeout: float = 5.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._conninfo = conninfo(url)
        self._on_notify = on_notify
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self.connected = threading.Event()
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg  # here: a CLI command on SQLite never loads the PostgreSQL driver

        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "LISTEN connection lost (%s); polling only, reconnecting in %.1fs",
                    type(exc).__name__,
                    backoff,
                )
            finally:
                self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(self._max_backoff, backoff * 2)

    def _listen(self) -> None:
        import psycopg

        # TCP keepalives: a peer that vanished without a FIN is noticed within about a minute.
        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as conn:
            for channel in CHANNELS:
                conn.execute(f"LISTEN {channel}")
            self.connected.set()
            # A short timeout so stop() is noticed; a notification ends the wait at once.
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    self.received += 1
                    self._on_notify(note.channel)

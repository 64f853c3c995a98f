"""The sd_notify protocol (systemd's ``Type=notify`` services), with the standard library only.

systemd passes ``NOTIFY_SOCKET``: a path of an ``AF_UNIX`` datagram socket, or an abstract one
when it starts with ``@``. Each notification is one datagram of ``KEY=VALUE`` lines
(``READY=1``, ``WATCHDOG=1``, ``STATUS=…``, ``RELOADING=1``, ``STOPPING=1``). Without
``NOTIFY_SOCKET`` (not under systemd) every call is a no-op. Sending never blocks and never
raises: a failure is logged, because notifications must not take the daemon down.

``WATCHDOG_USEC`` (``WatchdogSec=``) asks for a ``WATCHDOG=1`` at least that often; we ping every
half of it. ``WATCHDOG_PID``, when set, names the process meant to ping; another process ignores
it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # an abstract socket: a leading NUL byte
    if value.startswith("/"):
        return value
    return None  # vsock:… and relative paths are not supported


class Notifier:
    """Sends sd_notify messages to ``address`` (None: a no-op notifier)."""

    def __init__(self, address: str | bytes | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        address = _address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%s is not supported; not notifying systemd", raw)
        return cls(address, watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; True when it was sent (False without a socket)."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", lines[0] if lines else "", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload`` expects."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), None when off."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec

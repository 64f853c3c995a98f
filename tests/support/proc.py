"""Driving real ``syncd`` processes in system tests: start, wait for a condition (bounded),
signal, and collect output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Queue
from typing import IO, TypeVar

T = TypeVar("T")


def line_queue(stream: IO[str]) -> Queue[str]:
    """The lines of ``stream`` as a daemon thread reads them, so a test can wait on output with
    a deadline (``get(timeout=...)``) instead of blocking on a read."""
    lines: Queue[str] = Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, name="line-queue", daemon=True).start()
    return lines


def syncd_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", "--config", str(config), *args]


def run_syncd(
    config: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        syncd_cmd(config, *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def start_syncd(config: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        syncd_cmd(config, *args), stdout=out, stderr=subprocess.STDOUT, env=_env()
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SYNCD_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def jsonl(events: list[dict[str, object]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

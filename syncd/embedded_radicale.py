"""A throw-away Radicale CalDAV server in a subprocess, for ``syncd demo`` and the test suite.

Radicale runs as ``python -m radicale`` with a config file generated inside ``folder``, so it
never reads the machine's or the user's own Radicale configuration, and everything it stores
(collections, htpasswd file, log) stays in that folder.

It dies with its parent, however the parent ends (SIGKILL included): its stdin is a pipe whose
only writer is the parent, and a thread in the child exits when that pipe reaches end of file,
which the kernel makes happen when the parent's last descriptor closes. Unlike
``PR_SET_PDEATHSIG`` this is portable and does not fire when merely the starting thread ends.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from syncd import private_files

__all__ = ["EmbeddedRadicale", "free_port"]

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_STDERR_TAIL = 4000
# A port picked by binding to 0 can be taken by someone else before Radicale binds it; a couple
# of fresh ports make that race harmless when the caller did not ask for a specific port.
_PORT_ATTEMPTS = 3


# The child: watch stdin, then run Radicale exactly as ``python -m radicale`` does.
_WATCHED = """
import os, runpy, sys, threading

def watch():
    while os.read(0, 512):
        pass
    os._exit(0)  # the parent is gone

threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv = ["radicale", *sys.argv[1:]]
runpy.run_module("radicale", run_name="__main__", alter_sys=True)
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR as the server itself uses it: only a listener, not TIME_WAIT leftovers, counts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmbeddedRadicale:
    """Radicale on a loopback port with filesystem storage under ``folder``.

    With ``username`` and ``password`` it requires HTTP Basic auth against an htpasswd file
    (``plain`` encryption) written into ``folder``; without them anyone may connect.
    """

    def __init__(
        self,
        folder: Path,
        username: str | None = None,
        password: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if username is not None and (":" in username or "\n" in username):
            raise ValueError("username must not contain ':' or a newline")
        if password is not None and "\n" in password:
            raise ValueError("password must not contain a newline")
        self.folder = Path(folder)
        self.username = username
        self.password = password
        self.host = host
        self._requested_port = port
        self.port: int = port or 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this start's output begins in the (appended) log

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.folder / "radicale.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once it answers HTTP; RuntimeError if it does not."""
        if self._process is not None:
            raise RuntimeError("EmbeddedRadicale is already started")
        self.folder.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(attempts):
            self.port = self._requested_port or free_port(self.host)
            # Otherwise whoever holds the port would answer the readiness probe for us.
            if _port_in_use(self.host, self.port):
                if self._requested_port:
                    raise RuntimeError(f"port {self.port} on {self.host} is already in use")
                continue
            process = self._spawn()
            try:
                self._wait_ready(_START_TIMEOUT)
                return
            except RuntimeError:
                exited = process.poll() is not None
                tail = self._stderr_tail()
                self._terminate()
                in_use = "address already in use" in tail.lower()
                if exited and in_use and attempt + 1 < attempts:
                    continue
                raise
        raise RuntimeError(f"no free port for Radicale on {self.host} after {attempts} attempts")

    def stop(self) -> None:
        """Terminate the server and wait for it (killing it if it does not exit in time)."""
        self._terminate()

    def _write_config(self) -> Path:
        storage = self.folder / "collections"
        storage.mkdir(exist_ok=True)
        lines = [
            "[server]",
            f"hosts = {_url_host(self.host)}:{self.port}",
            "[storage]",
            f"filesystem_folder = {storage}",
            "[web]",
            "type = none",
            "[logging]",
            "level = warning",
            "[rights]",
            "type = owner_only" if self.username is not None else "type = authenticated",
            "[auth]",
            # Radicale sleeps ~1 s before every 401, including the unauthenticated first request
            # a client makes before it learns the auth scheme; a local test server needs no
            # brute-force protection.
            "delay = 0",
        ]
        if self.username is not None and self.password is not None:
            htpasswd = self.folder / "htpasswd"
            htpasswd.unlink(missing_ok=True)
            private_files.write_private(htpasswd, f"{self.username}:{self.password}\n".encode())
            lines += [
                "type = htpasswd",
                f"htpasswd_filename = {htpasswd}",
                "htpasswd_encryption = plain",
            ]
        else:
            lines.append("type = none")
        config = self.folder / "radicale.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    def _spawn(self) -> subprocess.Popen[bytes]:
        config = self._write_config()
        env = dict(os.environ)
        # An inherited RADICALE_CONFIG would be merged into ours.
        env.pop("RADICALE_CONFIG", None)
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHED, "--config", str(config)],
            stdin=subprocess.PIPE,  # kept open, never written: see the module's docstring
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            env=env,
        )
        return self._process

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise RuntimeError(
                    f"Radicale exited with code {code} during start-up:\n{self._stderr_tail()}"
                )
            if self._answers_http():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Radicale did not answer on {self.url} within {timeout:.0f} s:\n"
                    f"{self._stderr_tail()}"
                )
            time.sleep(0.05)

    def _answers_http(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("OPTIONS", "/")
            conn.getresponse().read()
        except OSError:
            return False
        finally:
            conn.close()
        # Any status, 401 included, means the server is up.
        return True

    def _stderr_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                data = log.read()
        except OSError:
            return "(no log)"
        return data[-_STDERR_TAIL:].decode("utf-8", errors="replace")

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, _STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    try:
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    finally:
        if process.stdin is not None:
            process.stdin.close()

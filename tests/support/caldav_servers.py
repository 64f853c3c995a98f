"""Real CalDAV servers on loopback for the tests: Radicale and Xandikos from PyPI.

Fixtures (import them into conftest.py or a test module):

- ``radicale_server``: Radicale with htpasswd auth, fresh storage per test.
- ``xandikos_server``: Xandikos (no auth: any username/password is accepted), fresh per test.
- ``caldav_server``: parametrized over both, so a test using it runs once per server.
- ``http_proxy``: a factory for :class:`HTTPProxy`, a recording and fault-injecting reverse
  proxy to put in front of one of those servers (the server behind it is still the real one).

Servers are function-scoped: Radicale answers ~0.2 s after start, Xandikos ~0.5 s, cheap enough
for a fresh, independent server per test. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pytest

from syncd.embedded_radicale import EmbeddedRadicale, free_port, terminate

__all__ = [
    "CalDAVServer",
    "HTTPProxy",
    "ProxiedRequest",
    "ProxyReply",
    "XandikosProcess",
    "caldav_server",
    "http_proxy",
    "radicale_server",
    "unused_port",
    "xandikos_server",
]

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class CalDAVServer:
    """How to reach a running test server. ``url`` is its root, ending in ``/``."""

    kind: str
    url: str
    username: str
    password: str


class XandikosProcess:
    """``python -m xandikos serve`` on a free loopback port, data under ``folder``."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.host = host
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.folder / "xandikos.log"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xandikos",
                "serve",
                "--defaults",
                "-d",
                str(self.folder / "data"),
                "--state-dir",
                str(self.folder / "state"),
                "-l",
                self.host,
                "-p",
                str(self.port),
                "--no-detect-systemd",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        try:
            _wait_for_http(self.host, self.port, self._process, self.log_path, "Xandikos")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, _STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


def _log_tail(path: Path) -> str:
    try:
        return path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"


def _wait_for_http(
    host: str, port: int, process: subprocess.Popen[bytes], log: Path, name: str
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{_log_tail(log)}")
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("OPTIONS", "/")
            conn.getresponse().read()
            return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not answering on port {port}:\n{_log_tail(log)}")
        time.sleep(0.05)


@pytest.fixture
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalDAVServer]:
    folder = tmp_path_factory.mktemp("radicale")
    with EmbeddedRadicale(folder, username="therapist", password="s3cret pw") as server:
        yield CalDAVServer("radicale", server.url, "therapist", "s3cret pw")


@pytest.fixture
def xandikos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalDAVServer]:
    server = XandikosProcess(tmp_path_factory.mktemp("xandikos"))
    server.start()
    try:
        yield CalDAVServer("xandikos", server.url, "user", "unused")
    finally:
        server.stop()


@pytest.fixture(params=["radicale", "xandikos"])
def caldav_server(request: pytest.FixtureRequest) -> CalDAVServer:
    server: CalDAVServer = request.getfixturevalue(f"{request.param}_server")
    return server


# -- a reverse proxy for fault injection ---------------------------------------------------------


@dataclass
class ProxiedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ProxyReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


# Called before forwarding: a ProxyReply answers in place of the server, None forwards.
RequestHook = Callable[[ProxiedRequest], ProxyReply | None]
# Called with the server's reply: returns the reply to send on (possibly modified).
ResponseHook = Callable[[ProxiedRequest, ProxyReply], ProxyReply]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
}


class HTTPProxy:
    """Forwards every request to ``upstream`` (a real server), recording it in ``requests``;
    ``on_request`` / ``on_response`` hooks can answer instead or alter the reply."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.requests: list[ProxiedRequest] = []
        self.on_request: RequestHook | None = None
        self.on_response: ResponseHook | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, every reply would
            # wait for the client's delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                # BaseHTTPRequestHandler dispatches on do_<METHOD>; WebDAV has too many methods.
                try:
                    self.raw_requestline = self.rfile.readline(65537)
                    if not self.raw_requestline:
                        self.close_connection = True
                        return
                    if not self.parse_request():
                        return
                    proxy._serve(self)
                    self.wfile.flush()
                except (TimeoutError, ConnectionError):
                    self.close_connection = True

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def methods(self) -> list[str]:
        with self._lock:
            return [r.method for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=_STOP_TIMEOUT)

    def _receive(self, handler: http.server.BaseHTTPRequestHandler) -> ProxiedRequest:
        """Read one request off the wire and record it."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = ProxiedRequest(
            method=handler.command,
            path=handler.path,
            headers={k: v for k, v in handler.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        return request

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        request = self._receive(handler)
        reply = self.on_request(request) if self.on_request else None
        if reply is None:
            reply = self._forward(request)
            if self.on_response:
                reply = self.on_response(request, reply)
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)

    def _forward(self, request: ProxiedRequest) -> ProxyReply:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=10)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            conn.request(request.method, request.path, body=request.body, headers=headers)
            response = conn.getresponse()
            return ProxyReply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()


@pytest.fixture
def http_proxy() -> Iterator[Callable[[str], HTTPProxy]]:
    """Factory: ``http_proxy(server.url)`` gives a running proxy, closed at teardown."""
    proxies: list[HTTPProxy] = []

    def make(upstream: str) -> HTTPProxy:
        proxy = HTTPProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def unused_port() -> int:
    """A loopback port with nothing listening (for "server is down" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port

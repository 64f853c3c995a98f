"""The daemon's HTTP service: health checks, JSON errors, the body limit, the route registry,
its life cycle with the daemon (in process and as a real `syncd run`), and its config."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from syncd import config as config_mod
from syncd.app import App
from syncd.daemon import Daemon
from syncd.web import app as web_app
from syncd.web.host import Host, RouteFactory
from syncd.web.server import WebServerError
from tests.conftest import make_config, write_config
from tests.support.proc import start_syncd, wait_for

T = TypeVar("T")


@contextlib.asynccontextmanager
async def serving(app: App, timeout: float = 120) -> AsyncIterator[Daemon]:
    """An in-process daemon whose HTTP service is listening; stopped cleanly on exit."""
    daemon = Daemon(app)
    task = asyncio.create_task(daemon.serve())
    deadline = asyncio.get_running_loop().time() + timeout
    while daemon.web is None or not daemon.web.running:
        if task.done():
            await task  # raises what stopped it
            raise AssertionError("the daemon stopped before its HTTP service started")
        assert asyncio.get_running_loop().time() < deadline, "HTTP service did not start"
        await asyncio.sleep(0.01)
    try:
        yield daemon
    finally:
        daemon.stop()
        await task


def with_daemon(app: App, check: Callable[[Daemon, httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with serving(app) as daemon:
            assert daemon.web is not None
            async with httpx.AsyncClient(base_url=daemon.web.listen_url, timeout=60) as client:
                return await check(daemon, client)

    return asyncio.run(main())


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> list[RouteFactory]:
    """An empty route registry for the test (feature modules' own routes stay out)."""
    factories: list[RouteFactory] = []
    monkeypatch.setattr(web_app, "_factories", factories)
    return factories


def echo_routes(app: App, daemon: Host) -> list[BaseRoute]:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"bytes": len(body), "same_daemon": request.app.state.daemon is daemon})

    async def boom(_request: Request) -> Response:
        raise RuntimeError("secret detail")

    return [Route("/echo", echo, methods=["POST"]), Route("/boom", boom, methods=["GET"])]


def test_health_and_readiness(app: App) -> None:
    async def check(daemon: Daemon, client: httpx.AsyncClient) -> None:
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert (await client.head("/healthz")).status_code == 200

    with_daemon(app, check)


def test_readyz_is_503_when_the_database_fails(sqlite_app: App, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    broken = create_engine(f"sqlite:///{tmp_path / 'file' / 'x.db'}")  # cannot be opened
    web = web_app.build_app(replace(sqlite_app, db=broken), Daemon(sqlite_app), [])

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as client:
            assert (await client.get("/healthz")).status_code == 200
            return await client.get("/readyz")

    try:
        r = asyncio.run(main())
    finally:
        broken.dispose()
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    # The daemon was never started, so its scheduler is named too.
    assert body["reasons"][0] == "the database failed the check (OperationalError)"


def test_readyz_times_out_and_shares_one_stuck_probe(
    sqlite_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_app, "READY_TIMEOUT", 0.2)
    release = threading.Event()
    calls: list[int] = []
    returned: list[int] = []

    def hung(self: Any) -> None:
        calls.append(1)
        release.wait(120)
        returned.append(1)

    monkeypatch.setattr(web_app._DatabaseProbe, "_select_one", hung)

    async def check(daemon: Daemon, client: httpx.AsyncClient) -> None:
        first, second = await asyncio.gather(client.get("/readyz"), client.get("/readyz"))
        third = await client.get("/readyz")
        # Every answer came while the probe was still stuck: none waited for the database.
        assert returned == []
        for r in (first, second, third):
            assert r.status_code == 503
            assert r.json()["reason"] == "the database did not answer within 0.2 s"
        assert calls == [1]  # one blocked thread, not one per request
        release.set()
        await asyncio.sleep(0.1)
        monkeypatch.undo()
        ok = await client.get("/readyz")
        assert ok.status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # liveness never waits on it

    try:
        with_daemon(sqlite_app, check)
    finally:
        release.set()


def test_errors_are_json(sqlite_app: App, registry: list[RouteFactory]) -> None:
    web_app.register_routes(echo_routes)

    async def check(daemon: Daemon, client: httpx.AsyncClient) -> None:
        missing = await client.get("/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"
        assert missing.json() == {"status": 404, "error": "Not Found"}
        wrong = await client.post("/healthz")
        assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
        assert wrong.json() == {"status": 405, "error": "Method Not Allowed"}
        crash = await client.get("/boom")
        assert crash.status_code == 500
        assert crash.json() == {"status": 500, "error": "Internal Server Error"}
        assert "secret detail" not in crash.text and "Traceback" not in crash.text
        assert (await client.get("/healthz")).status_code == 200  # still serving

    with_daemon(sqlite_app, check)


def test_body_limit(sqlite_app: App, registry: list[RouteFactory]) -> None:
    web_app.register_routes(echo_routes)
    limit = web_app.MAX_BODY
    assert limit == 1024 * 1024

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 65536):
            yield b"x" * 65536
        yield b"x" * (total % 65536)

    async def check(daemon: Daemon, client: httpx.AsyncClient) -> None:
        fits = await client.post("/echo", content=b"x" * limit)
        assert fits.json() == {"bytes": limit, "same_daemon": True}
        declared = await client.post("/echo", content=b"x" * (limit + 1))
        assert declared.status_code == 413
        assert declared.json() == {
            "status": 413,
            "error": f"request body larger than {limit} bytes",
        }

        async def streamed(total: int) -> AsyncIterator[bytes]:
            for chunk in chunks(total):
                yield chunk

        # No Content-Length (chunked): cut off as the stream crosses the limit.
        chunked = await client.post("/echo", content=streamed(limit + 65536))
        assert chunked.status_code == 413 and chunked.json()["status"] == 413
        ok = await client.post("/echo", content=streamed(1000))
        assert ok.json()["bytes"] == 1000

    with_daemon(sqlite_app, check)


def test_registered_routes_are_served(sqlite_app: App, registry: list[RouteFactory]) -> None:
    seen: list[tuple[App, Host]] = []

    @web_app.register_routes
    def feature(app: App, daemon: Host) -> list[BaseRoute]:
        seen.append((app, daemon))

        async def poke(request: Request) -> Response:
            daemon.wake()
            return JSONResponse({"connection": request.path_params["connection"]}, 202)

        return [Route("/feature/push/{connection}", poke, methods=["POST"])]

    web_app.register_routes(feature)  # twice: still once
    assert registry == [feature]

    async def check(daemon: Daemon, client: httpx.AsyncClient) -> None:
        assert seen == [(sqlite_app, daemon)]
        r = await client.post("/feature/push/c-1")
        assert (r.status_code, r.json()) == (202, {"connection": "c-1"})

    with_daemon(sqlite_app, check)


def test_a_route_registered_twice_is_refused(sqlite_app: App, registry: list[RouteFactory]) -> None:
    async def other(_request: Request) -> Response:
        return JSONResponse({})

    daemon = Daemon(sqlite_app)
    with pytest.raises(ValueError, match="GET /healthz is registered twice"):
        web_app.build_app(sqlite_app, daemon, [Route("/healthz", other)])


def test_the_server_stops_with_the_daemon_and_leaves_signals_alone(sqlite_app: App) -> None:
    signals = (signal.SIGTERM, signal.SIGINT)

    async def main() -> str:
        before = {sig: signal.getsignal(sig) for sig in signals}  # asyncio.run's own SIGINT
        async with serving(sqlite_app) as daemon:
            assert daemon.web is not None
            url = daemon.web.listen_url
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/healthz")).status_code == 200
            # uvicorn would swap in its own handlers while serving; the daemon's host owns both.
            assert {sig: signal.getsignal(sig) for sig in signals} == before
        assert not daemon.web.running
        assert {sig: signal.getsignal(sig) for sig in signals} == before
        return url

    url = asyncio.run(main())
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=5)


def test_urls_and_disabled(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "a", http={"public_url": "https://syncd.example.com/"})
    app = App.open(cfg)
    try:

        async def check(daemon: Daemon, _client: httpx.AsyncClient) -> None:
            assert daemon.web is not None
            port = daemon.web.bound_port
            assert port > 0 and daemon.web.listen_url == f"http://127.0.0.1:{port}"
            assert daemon.web.base_url == "https://syncd.example.com"

        with_daemon(app, check)
    finally:
        app.close()

    off = App.open(make_config(tmp_path / "b", http={"enabled": False}))
    try:
        daemon = Daemon(off)

        async def main() -> None:
            task = asyncio.create_task(daemon.serve())
            await asyncio.sleep(0.3)
            assert daemon.web is None
            daemon.stop()
            await task

        asyncio.run(main())
    finally:
        off.close()


def test_a_taken_port_stops_the_daemon_with_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App.open(make_config(tmp_path / "s", http={"port": port}))
        try:
            with pytest.raises(WebServerError) as info:
                asyncio.run(asyncio.wait_for(Daemon(app).serve(), 10))
        finally:
            app.close()
    message = str(info.value)
    assert isinstance(info.value, config_mod.ConfigError)  # the CLI prints it as one line
    assert message.startswith(f"the HTTP server cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in message.lower()


def test_http_config(tmp_path: Path) -> None:
    cfg = config_mod.load(None, env={})
    assert cfg.http.model_dump() == {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 8470,
        "public_url": "",
        "trusted_proxies": [],
    }
    env = {"SYNCD_HTTP_PORT": "9000", "SYNCD_HTTP_ENABLED": "false"}
    cfg = config_mod.load(None, env=env)
    assert (cfg.http.port, cfg.http.enabled) == (9000, False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\npublic_url = "syncd.example.com"\n')
    with pytest.raises(config_mod.ConfigError, match=r"\[http.public_url\] .*http:// or https://"):
        config_mod.load(bad, env={})
    with pytest.raises(config_mod.ConfigError, match=r"SYNCD_HTTP_PORT: \[http.port\]"):
        config_mod.load(None, env={"SYNCD_HTTP_PORT": "70000"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_syncd_run_serves_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(
        tmp_path / "syncd.toml", make_config(tmp_path / "state", http={"port": port})
    )
    log = tmp_path / "run.log"
    proc = start_syncd(path, "run", log=log)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                body: object = httpx.get(f"{url}/healthz", timeout=2).json()
                return body == {"status": "ok"}
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                return False

        wait_for(healthy, 120, "GET /healthz on syncd run")
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        assert f"HTTP service listening on {url}" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    assert "Traceback" not in log.read_text()

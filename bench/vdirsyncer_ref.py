"""vdirsyncer as the second reference for bulk CalDAV writes and the quiet pass (DESIGN.md §7:
writing N events must "beat vdirsyncer doing the same job").

vdirsyncer gets the job syncd's engine gets in ``bench_bulk``: the same rendered bodies, as
``.ics`` files in a folder (its ``filesystem`` storage), synced one way into a fresh collection on
a fresh server of the same kind (its ``caldav`` storage), run as the real command line in a
subprocess. It is bracketed like the engine: a bare PUT loop of the same bodies before and after
it (each into a fresh collection), so vdirsyncer writes into a server holding N entries, exactly
where the engine writes in ``bench_bulk`` (both servers slow as they fill), and the mean of the
two loops is its reference. The verdict compares the two tools each against its own bare loop.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bench.run import BULK, QUIET, _app, _auth, _ingest, _sessions, add, bare_put_loop, server
from syncd import ical
from tests.support import factories as f
from tests.support.caldav_servers import HTTPProxy


def command() -> list[str]:
    script = Path(sys.executable).parent / "vdirsyncer"
    if script.exists():
        return [str(script)]
    found = shutil.which("vdirsyncer")
    if found:
        return [found]
    raise RuntimeError("vdirsyncer is not installed: pip install -e '.[test,bench]'")


def rendered_bodies(tmp: Path, n: int) -> list[tuple[str, str]]:
    """The bodies ``bench_bulk`` writes: the same sessions, projected and rendered by syncd."""
    app = _app(tmp)
    try:
        assert app.ingestor().ingest(f.therapist("t-1")).ok
        _ingest(app, _sessions("t-1", n))
        desired = app.engine().desired("t-1") or {}
        now = datetime.now(UTC)
        return [(e.name, ical.render(e, now)) for e in desired.values()]
    finally:
        app.close()


def write_config(work: Path, folder: Path, collection_url: str, user: str, password: str) -> Path:
    config = work / "config"
    config.write_text(
        f"""[general]
status_path = "{work / "status"}/"

[pair bench]
a = "bench_local"
b = "bench_remote"
collections = null

[storage bench_local]
type = "filesystem"
path = "{folder}/"
fileext = ".ics"

[storage bench_remote]
type = "caldav"
url = "{collection_url}"
username = "{user}"
password = "{password}"
"""
    )
    return config


def vdirsyncer(config: Path, step: str, timeout: float = 3600) -> float:
    """Run one vdirsyncer command; its wall time (interpreter start included, see startup())."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [*command(), "--config", str(config), step],
        capture_output=True,
        text=True,
        timeout=timeout,
        input="y\n",  # discover asks before creating anything; nothing should need creating
        check=False,
    )
    took = time.perf_counter() - t0
    if done.returncode != 0 or "error:" in done.stderr.lower():
        raise RuntimeError(f"vdirsyncer {step}: {(done.stdout + done.stderr)[-300:]}")
    return took


def startup() -> float:
    """What the command costs before it does any syncing: interpreter, imports, CLI."""
    t0 = time.perf_counter()
    subprocess.run([*command(), "--version"], capture_output=True, check=True, timeout=60)
    return time.perf_counter() - t0


def _mkcalendar(url: str, user: str, password: str, collection: str) -> None:
    bare_put_loop(url, user, password, collection, [])


def stored(url: str, user: str, password: str, collection: str) -> int:
    """How many calendar objects the server lists in the collection (PROPFIND, Depth 1)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=60)
    try:
        conn.request(
            "PROPFIND",
            collection,
            body=b'<propfind xmlns="DAV:"><prop><getetag/></prop></propfind>',
            headers={
                "Authorization": _auth(user, password),
                "Depth": "1",
                "Content-Type": "application/xml; charset=utf-8",
            },
        )
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 207, r.status
    finally:
        conn.close()
    return body.count(".ics</")


def bench_vdirsyncer(kind: str, n: int, tmp: Path, quiet: bool) -> None:
    bodies = rendered_bodies(tmp / "render", n)
    folder = tmp / "vdir"
    folder.mkdir()
    for name, body in bodies:
        (folder / name).write_text(body, encoding="utf-8")
    with server(kind, tmp / "srv") as (url, user, password):
        home = "/therapist/" if kind == "radicale" else "/user/calendars/"
        before = bare_put_loop(url, user, password, home + "bench-bare-1/", bodies)
        collection = home + "bench-vdir/"
        _mkcalendar(url, user, password, collection)
        work = tmp / "work"
        work.mkdir()
        config = write_config(work, folder, url.rstrip("/") + collection, user, password)
        vdirsyncer(config, "discover")
        took = vdirsyncer(config, "sync")
        after = bare_put_loop(url, user, password, home + "bench-bare-2/", bodies)
        start = startup()
        if quiet:
            # The no-change sync through the recording proxy. vdirsyncer's item status holds
            # hrefs (paths) and etags, so pointing the pair at the proxy changes no item; it
            # insists on a new discover for the changed config, which is not counted.
            proxy = HTTPProxy(url)
            try:
                proxied = write_config(
                    work, folder, proxy.url.rstrip("/") + collection, user, password
                )
                vdirsyncer(proxied, "discover")
                with proxy._lock:
                    proxy.requests.clear()
                again = vdirsyncer(proxied, "sync")
                methods = proxy.methods()
            finally:
                proxy.close()
        written = stored(url, user, password, collection)
    assert written == n, written
    bare = (before + after) / 2
    mine = BULK.get((kind, n))
    # The engine ran on another, identically prepared server at another moment of a shared
    # machine, so each tool is judged against the bare loop of its own run; raw times beside.
    versus = (
        f"syncd engine pass {mine[0]:.2f} s ({mine[0] / mine[1]:.2f}x its bare loop; "
        f"raw {mine[0] / took:.2f}x vdirsyncer)"
        if mine is not None
        else "syncd engine pass not run"
    )
    add(
        f"2 bulk CalDAV ({kind})",
        f"vdirsyncer sync, {n} creates",
        f"{took:.2f} s ({took / bare:.2f}x bare; {start:.2f} s of it is start-up)",
        f"bare PUT loop {bare:.2f} s (before {before:.2f}, after {after:.2f}); {versus}",
        "syncd < vdirsyncer (each x its bare)",
        None if mine is None else mine[0] / mine[1] < took / bare,
    )
    if quiet:
        ours = QUIET.get(kind)
        add(
            f"3 quiet pass ({kind})",
            f"vdirsyncer no-change sync, {n} items",
            f"{len(methods)} request(s) ({','.join(methods)}), {again * 1000:.0f} ms",
            (
                f"syncd quiet pass ({ours[2]} mirrored) {ours[0]} request(s), "
                f"{ours[1] * 1000:.1f} ms; vdirsyncer start-up {start * 1000:.0f} ms"
                if ours is not None
                else f"vdirsyncer start-up {start * 1000:.0f} ms"
            ),
            "-",
            None,
        )

"""systemd integration: the sd_notify protocol spoken by a real ``syncd run`` to a NOTIFY_SOCKET
of our own, reload on SIGHUP, and the unit file checked by ``systemd-analyze``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import config as config_mod
from syncd.lifecycle import merge
from syncd.notify import Notifier
from tests.conftest import make_config, write_config
from tests.support.proc import start_syncd

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "syncd.service"


class NotifyListener:
    """A bound AF_UNIX datagram socket collecting sd_notify messages (one dict per datagram)."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, timeout: float, proc: subprocess.Popen[bytes]) -> dict[str, str]:
        """The next message carrying ``key`` (earlier ones are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(min(left, 0.5))
            if msg is not None and key in msg:
                return msg
            if msg is None and proc.poll() is not None:
                raise AssertionError(f"syncd exited ({proc.returncode}) before sending {key}")
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages}")


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "abstract":
        name = f"syncd-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    else:
        path = tmp_path / "notify.sock"
        if len(str(path)) > 100:  # sun_path holds 108 bytes
            path = Path(tempfile.mkdtemp(prefix="sdn")) / "notify.sock"
        sock.bind(str(path))
        value = str(path)
    yield NotifyListener(sock, value)
    sock.close()


def test_sd_notify_protocol(
    listener: NotifyListener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(tmp_path / "state")
    config = write_config(tmp_path / "syncd.toml", cfg)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    log = tmp_path / "syncd.log"
    proc = start_syncd(config, "run", log=log)
    try:
        ready = listener.wait_for("READY", 60, proc)
        assert ready["READY"] == "1"
        assert ready.get("STATUS", "").startswith("serving")
        for _ in range(3):
            assert listener.wait_for("WATCHDOG", 60, proc)["WATCHDOG"] == "1"

        # A reload applies the runtime options and says so.
        write_config(
            config,
            make_config(tmp_path / "state", logging={"level": "DEBUG"}, sync={"interval": 5}),
        )
        proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING", 60, proc)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        listener.wait_for("READY", 60, proc)
        text = log.read_text()
        assert "configuration reloaded" in text
        assert "logging.level" in text and "sync.interval" in text

        # A broken file on reload is logged and the running configuration kept.
        config.write_text("[sync\ninterval = ")
        proc.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING", 60, proc)
        listener.wait_for("READY", 60, proc)
        assert "reload failed, keeping the running configuration" in log.read_text()
        assert listener.wait_for("WATCHDOG", 60, proc)  # still alive and pinging

        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", 60, proc)
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_notifier_from_env(tmp_path: Path) -> None:
    assert not Notifier.from_env({}).enabled
    assert Notifier.from_env({}).send("READY=1") is False  # a no-op outside systemd
    assert Notifier.from_env({"NOTIFY_SOCKET": "@x"}).address == b"\0x"
    half = Notifier.from_env({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "30000000"})
    assert half.watchdog_interval() == 15.0
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(mine).watchdog_interval() == 0.5
    other = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_interval() is None
    assert Notifier.from_env({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    # Nobody listening: logged, not raised.
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert gone.send("READY=1") is False


def test_reload_merges_only_runtime_options(tmp_path: Path) -> None:
    old = make_config(tmp_path / "state")
    new = make_config(
        tmp_path / "state",
        logging={"level": "WARNING"},
        sync={"interval": 7},
        daemon={"workers": 9},
        http={"port": 9999},
    )
    merged, restart = merge(old, new)
    assert merged.logging.level == "WARNING" and merged.sync.interval == 7
    assert merged.daemon.workers == old.daemon.workers and merged.http.port == 0
    assert sorted(restart) == ["daemon.workers", "http.port"]
    assert isinstance(merged, config_mod.Config)


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (CI installs Debian's systemd package)")
        pytest.skip("systemd-analyze is not installed")
    return tool


def _testable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose Exec*= binaries exist here: ``verify`` checks that they are
    executable, and syncd's own /usr/bin/syncd is not installed on a test machine. Missing ones
    are replaced by a stub script; nothing else in the unit changes."""
    stub = tmp_path / "bin" / "syncd"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    lines = []
    for line in UNIT.read_text().splitlines():
        m = re.match(r"^(Exec\w+=)([-@:+!]*)(\S+)(.*)$", line)
        if m and not os.access(m.group(3), os.X_OK):
            line = f"{m.group(1)}{m.group(2)}{stub}{m.group(4)}"
        lines.append(line)
    copy = tmp_path / "unit" / "syncd.service"
    copy.parent.mkdir()
    copy.write_text("\n".join(lines) + "\n")
    return copy


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    tool = _analyze()
    unit = _testable_unit(tmp_path)
    out = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout + out.stderr == "", out.stdout + out.stderr
    assert out.returncode == 0


def test_unit_security_exposure(tmp_path: Path) -> None:
    tool = _analyze()
    unit = _testable_unit(tmp_path)
    out = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0, out.stdout

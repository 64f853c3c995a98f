"""Installing syncd as a newcomer would: the README's commands on the system's own Python in a
clean environment, and the wheel from ``python -m build``.

The two slow tests each create a fresh virtualenv and install every dependency into it (from
the package index configured for pip on this machine), which takes a minute or two: that is
what they test. Each stops the demo as soon as it has printed its calendar's credentials.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from queue import Empty

import pytest

from syncd import __version__
from tests.support.proc import line_queue

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian 12's own 3.11, marked externally managed
INSTALL_TIMEOUT = 900


def readme_commands() -> tuple[str, str]:
    """(the quick-start demo command, the test command) as the README shows them."""
    blocks = [
        b.strip() for b in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    ]
    demo = next(b for b in blocks if b.endswith("syncd demo"))
    test = next(b for b in blocks if b.endswith("&& pytest"))
    return demo, test


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    _demo, test = readme_commands()
    m = re.search(r'^TEST_CMD="(.*)"$', (ROOT / ".ci" / "run").read_text(), re.M)
    assert m and m.group(1) == test
    assert 'eval "$TEST_CMD"' in (ROOT / ".ci" / "run").read_text()


def test_the_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "syncd.__version__" }' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M)
    from importlib.metadata import version

    assert version("syncd") == __version__


def system_python() -> Path:
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} is not on this machine")
    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys, venv; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.stdout.strip() != "True":
        pytest.skip(f"{SYSTEM_PYTHON} is older than 3.11 or has no venv module")
    return SYSTEM_PYTHON


def clean_env(home: Path) -> dict[str, str]:
    """What `env -i PATH=/usr/bin:/bin HOME=…` leaves: no virtualenv, no PYTHONPATH, no pip
    settings from the environment (pip's configuration files still apply)."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def source_copy(dest: Path) -> Path:
    """The working tree without build products, caches and virtualenvs."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "venv",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            ".hypothesis",
            "artifacts",
        ),
    )
    return dest


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def run_until(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    text: str,
    timeout: float,
    *,
    via_shell: bool = False,
) -> str:
    """Start ``argv`` in its own process group, wait until it prints ``text``, stop it with
    SIGINT (Ctrl-C) and return everything it printed; it must exit 0. ``via_shell``: argv is a
    shell running the command, and Ctrl-C goes to the command (a shell that is not
    interactive would die of the SIGINT itself rather than report its child's exit)."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = line_queue(proc.stdout)
    seen: list[str] = []
    try:
        while not any(text in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=timeout))
            except Empty:
                raise AssertionError(f"no {text!r} in {timeout}s:\n{''.join(seen)}") from None
        for pid in children(proc.pid) if via_shell else [proc.pid]:
            os.kill(pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    while not lines.empty():
        seen.append(lines.get())
    return "".join(seen)


@pytest.mark.slow
def test_readme_quick_start_on_the_system_python_in_a_clean_environment(tmp_path: Path) -> None:
    python = system_python()
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)
    src = source_copy(tmp_path / "syncd")
    refused = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if "No module named pip" not in refused.stderr:
        # Why the README says "virtualenv": the system's pip refuses (PEP 668).
        assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr
    demo, _test = readme_commands()
    assert demo.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install .")
    printed = run_until(
        ["/bin/sh", "-c", demo.replace("python3 -m venv", f"{python} -m venv", 1)],
        env,
        src,
        "Password: ",
        INSTALL_TIMEOUT,
        via_shell=True,
    )
    assert "Calendar ready" in printed and "demo stopped" in printed, printed
    assert "Traceback" not in printed
    venv_python = (src / ".venv" / "bin" / "python").resolve()
    assert venv_python == python.resolve()


@pytest.mark.slow
def test_the_wheel_builds_installs_and_runs_the_demo(tmp_path: Path) -> None:
    python = system_python()
    src = source_copy(tmp_path / "syncd")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = list(dist.glob("*.whl"))
    assert wheel.name == f"syncd-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "syncd/schema/platform-events.schema.json",
        "syncd/migrations/env.py",
        "syncd/web/templates/overview.html",
        "syncd/py.typed",
        "connectors/py.typed",
        "syncd/cli/main.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)

    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(home)
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], env=env, check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    syncd = venv / "bin" / "syncd"
    version = subprocess.run([str(syncd), "--version"], env=env, capture_output=True, text=True)
    assert version.stdout == f"syncd, version {__version__}\n"
    printed = run_until([str(syncd), "demo"], env, tmp_path, "Password: ", 300)
    assert "Calendar ready" in printed and "Traceback" not in printed, printed

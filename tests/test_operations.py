"""The operator's setup holds together: the unit, the example configuration, the
``syncd-admin`` helper and docs/operations.md agree with each other and with the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from syncd import config as config_mod
from syncd import secrets
from syncd.app import GOOGLE_CREDENTIAL, App
from syncd.cli.main import COMMANDS
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer
from tests.support.proc import jsonl, run_syncd

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "syncd.service"
ADMIN = ROOT / "systemd" / "syncd-admin"
EXAMPLE = ROOT / "config" / "syncd.example.toml"
OPERATIONS = ROOT / "docs" / "operations.md"


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.M)


def admin_default(var: str) -> str:
    m = re.search(rf"^{var}=\$\{{{var}:-(.*)\}}$", ADMIN.read_text(), re.M)
    assert m, var
    return m.group(1)


def test_unit_and_example_configuration_agree() -> None:
    [state] = unit_values("StateDirectory")
    [conf] = unit_values("ConfigurationDirectory")
    example = config_mod.load(EXAMPLE, env={})
    assert example.daemon.state_dir == Path("/var/lib") / state
    assert Path("/etc") / conf / "syncd.toml" == config_mod.SYSTEM_CONFIG
    for line in unit_values("ExecStart") + unit_values("ExecStartPre"):
        binary, *args = line.split()
        assert args[:2] == ["--config", str(config_mod.SYSTEM_CONFIG)], line
        assert binary == admin_default("SYNCD_BIN")
    assert unit_values("User") == [admin_default("SYNCD_USER")] == unit_values("Group")
    assert unit_values("DynamicUser") == []  # `sudo -u syncd syncd …` needs a real user


def test_syncd_admin_loads_the_credentials_commands_read() -> None:
    subprocess.run(["sh", "-n", str(ADMIN)], check=True)
    m = re.search(r'^CREDENTIALS="(.*)"$', ADMIN.read_text(), re.M)
    assert m
    wanted = set(m.group(1).split())
    assert wanted == {secrets.CREDENTIAL_NAME, GOOGLE_CREDENTIAL}
    assert wanted <= set(unit_values("LoadCredentialEncrypted"))
    assert os.access(ADMIN, os.X_OK)


# Stands in for systemd-run: decrypting is systemd's business, so the "encrypted" credentials
# are plain files here, handed to the command in $CREDENTIALS_DIRECTORY as systemd would, in
# an environment as bare as a transient unit's. Records its arguments.
FAKE_SYSTEMD_RUN = """#!{python}
import os, shutil, sys, tempfile
with open(os.environ["RECORD"], "w") as out:
    out.write("\\n".join(sys.argv[1:]))
args, creds = sys.argv[1:], tempfile.mkdtemp()
while args and args[0].startswith("-"):
    opt = args.pop(0)
    if opt == "-p":
        prop = args.pop(0)
        if prop.startswith("LoadCredentialEncrypted="):
            name, path = prop.split("=", 1)[1].split(":", 1)
            shutil.copy(path, os.path.join(creds, name))
env = {{"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": creds, "HOME": creds}}
os.execve(args[0], args, env)
"""


def test_syncd_admin_runs_a_command_with_the_services_credentials(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    bin_dir, store = tmp_path / "bin", tmp_path / "credstore.encrypted"
    bin_dir.mkdir()
    store.mkdir()
    fake = bin_dir / "systemd-run"
    fake.write_text(FAKE_SYSTEMD_RUN.format(python=sys.executable))
    fake.chmod(0o755)
    key = Fernet.generate_key()
    (store / secrets.CREDENTIAL_NAME).write_bytes(key)
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "syncd.toml", make_config(state))
    (state / "secret.key").unlink()  # the key exists only as the service's credential
    assert run_syncd(cfg, "ingest", "-", stdin=jsonl([f.therapist()])).returncode == 0
    (tmp_path / "pw").write_text(radicale_server.password)
    syncd = shutil.which("syncd", path=str(Path(sys.executable).parent))
    assert syncd
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SYNCD_BIN": syncd,
        "CREDSTORE": str(store),
        "RECORD": str(tmp_path / "args"),
    }
    out = subprocess.run(
        [
            str(ADMIN),
            *("--config", str(cfg), "connect", "caldav", "t-1"),
            *("--url", radicale_server.url, "--username", radicale_server.username),
            *("--password-file", "pw"),  # relative: the helper keeps the current folder
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "connected t-1" in out.stdout
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:5] == ["--quiet", "--wait", "--collect", "--pipe", "--same-dir"]
    assert "User=syncd" in args and "Group=syncd" in args
    assert f"LoadCredentialEncrypted=syncd-secret-key:{store}/syncd-secret-key" in args
    assert not any("google" in a for a in args)  # absent from the store: not asked for
    assert not (state / "secret.key").exists()
    app = App.open(config_mod.load(cfg, env={}), migrate=False, create_key=False)
    try:
        from sqlalchemy import select

        from syncd.store.tables import ConnectionRow

        with app.sessions() as s:
            sealed = s.scalars(select(ConnectionRow.secret)).one()
    finally:
        app.close()
    assert secrets.SecretBox(key).open(sealed) == radicale_server.password


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the files to another user")
def test_root_is_sent_to_the_services_user_for_its_sqlite_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "syncd.toml", make_config(state))
    assert run_syncd(cfg, "ingest", "-", stdin=jsonl([f.therapist()])).returncode == 0
    nobody = 65534
    for path in [state, *state.iterdir()]:
        os.chown(path, nobody, nobody)
    before = sorted(p.name for p in state.iterdir())
    for args in (["status"], ["db", "upgrade"], ["resync", "--all"], ["run"]):
        out = run_syncd(cfg, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        line = out.stderr.strip()
        assert line.startswith(f"error: {state / 'syncd.db'} belongs to user "), line
        assert "run this as that user (sudo -u " in line
    assert sorted(p.name for p in state.iterdir()) == before
    assert all(p.stat().st_uid == nobody for p in state.iterdir())


def command_lines(text: str) -> list[list[str]]:
    """Every syncd invocation in the document's shell blocks, as argv after the program."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for raw in block.replace("\\\n", " ").splitlines():
            words = raw.split("#", 1)[0].split()
            programs = [
                i
                for i, w in enumerate(words)
                if (w in ("syncd", "syncd-admin") or w.endswith(("/bin/syncd", "bin/syncd-admin")))
                and (i == 0 or words[i - 1] not in ("-u", "-o", "-g"))
            ]
            if programs and words[programs[-1] + 1 :]:
                found.append(words[programs[-1] + 1 :])
    return found


def test_operations_guide_covers_the_operators_first_day() -> None:
    text = OPERATIONS.read_text()
    for topic in (
        "Debian 12",
        "adduser --system",
        "/opt/syncd",
        "/etc/syncd/syncd.toml",
        "systemd-creds encrypt",
        "db upgrade",
        "Caddy",
        "nginx",
        "sqlite3",
        ".backup",
        "pg_dump",
        "replicas",
        "syncd-alerts.yml",
        "syncd-dashboard.json",
        "journalctl -u syncd",
        "syncd-admin",
        "sudo -u syncd syncd",
    ):
        assert topic in text, topic
    commands = command_lines(text)
    assert len(commands) >= 10
    for argv in commands:
        words = [w for w in argv if not w.startswith("-")]
        if argv and argv[0] == "--config":
            words = words[1:]
        assert words and words[0] in COMMANDS, argv

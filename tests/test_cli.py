"""The command line: one-line errors, status table, resync dry run, config commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from tests.conftest import make_config, write_config
from tests.support import factories as f
from tests.support.caldav_servers import CalDAVServer, unused_port
from tests.support.proc import jsonl, run_syncd


def cli(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    assert run_syncd(cfg, "ingest", "-", stdin=jsonl([f.therapist()])).returncode == 0
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    down = unused_port()
    connect = ["connect", "caldav", "--username", "u", "--password-file", str(pw), "--url"]
    cases = [
        (["resync"], "name one or more therapists"),
        (["resync", "t-nobody"], "unknown therapist"),
        (["status", "t-nobody"], "unknown therapist"),
        ([*connect, "http://127.0.0.1:9/", "t-nobody"], "unknown therapist"),
        (
            [*connect, "http://127.0.0.1:9/", "t-1", "--password-file", str(tmp_path / "missing")],
            "cannot read secret file",
        ),
        # A library's error, translated: not the HTTP library's repr of its connection pool.
        ([*connect, f"http://127.0.0.1:{down}/", "t-1"], f"could not reach 127.0.0.1:{down}: "),
    ]
    for args, needle in cases:
        out = run_syncd(cfg, *args)
        assert out.returncode != 0, args
        line = one_error_line(out.stderr)
        assert needle in line, (args, line)
        assert "0x" not in line and "HTTPConnectionPool" not in line, line
    line = one_error_line(run_syncd(cfg, *connect, f"http://127.0.0.1:{down}/", "t-1").stderr)
    assert line.endswith("connection refused"), line


def test_database_errors_are_plain_and_the_detail_is_behind_debug(tmp_path: Path) -> None:
    port = unused_port()
    cfg = write_config(
        tmp_path / "syncd.toml",
        make_config(tmp_path / "state", f"postgresql://postgres@127.0.0.1:{port}/syncd"),
    )
    out = run_syncd(cfg, "status")
    line = one_error_line(out.stderr)
    where = f"127.0.0.1:{port}/syncd"
    assert line == f"error: could not reach the database at {where}: connection refused"
    debug = run_syncd(cfg, "--debug", "status")
    assert "Traceback" in debug.stderr and "psycopg" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nworkers = 'many'\n")
    out = run_syncd(bad, "check-config")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "daemon.workers" in out.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[daemon]\nworkerz = 2\n")
    out = run_syncd(unknown, "check-config")
    assert out.returncode != 0 and "daemon.workerz" in out.stderr
    out = run_syncd(tmp_path / "nope.toml", "status")
    assert out.returncode != 0 and "does not exist" in out.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://x", "unsupported database 'mysql'"),
        ("nonsense", "not a database URL"),
        ("sqlite://", "in-memory"),
    ],
)
def test_check_config_refuses_database_urls_that_cannot_work(
    tmp_path: Path, url: str, why: str
) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    code, _out, err = cli(path, "check-config")
    assert code != 0
    line = one_error_line(err)
    assert "[database.url]" in line and why in line, line


def test_check_config_connects_to_the_database_and_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "syncd.toml", make_config(state))
    (state / "secret.key").unlink()
    code, out, _ = cli(cfg, "check-config")
    assert code == 0 and "configuration is valid" in out
    assert f"database: SQLite {state / 'syncd.db'}: not created yet" in out
    assert "secret key: none yet" in out
    assert sorted(p.name for p in state.iterdir()) == []  # looked, created nothing
    code, out, _ = cli(cfg, "db", "upgrade")
    assert code == 0 and "up to date" in out
    code, out, _ = cli(cfg, "check-config")
    assert code == 0 and "connected, schema up to date" in out
    port = unused_port()
    down = write_config(
        tmp_path / "down.toml", make_config(state, f"postgresql://postgres@127.0.0.1:{port}/x")
    )
    code, out, err = cli(down, "check-config")
    assert code == 1
    assert f"database: could not reach the database at 127.0.0.1:{port}/x" in out
    assert "connection refused" in one_error_line(err)


@pytest.mark.postgres
def test_check_config_says_it_reached_postgresql(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state", pg_url))
    code, out, _ = cli(cfg, "check-config")
    assert code == 0 and "PostgreSQL 127.0.0.1:5432/" in out and "connected, no syncd tables" in out
    assert cli(cfg, "db", "upgrade")[0] == 0
    code, out, _ = cli(cfg, "check-config")
    assert code == 0 and "connected, schema up to date" in out


COMMANDS_ON_A_DATABASE = [
    ["status"],
    ["status", "--json"],
    ["outbox"],
    ["conflicts"],
    ["availability", "t-1"],
    ["token", "list"],
    ["token", "create", "ops"],
    ["resync", "--all"],
    ["feed-url", "t-1"],
    ["disconnect", "t-1", "1"],
    ["calendars", "t-1"],
    ["connect", "google", "t-1"],
]


def test_commands_never_create_a_database_or_a_key_where_they_looked(tmp_path: Path) -> None:
    state = tmp_path / "not-the-service-state"
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{state}"\n')
    for args in COMMANDS_ON_A_DATABASE:
        code, out, err = cli(cfg, *args)
        assert code == 1, (args, out, err)
        line = one_error_line(err)
        assert f"no syncd database at {state / 'syncd.db'} (configuration {cfg}" in line, line
        assert "syncd db upgrade" in line and "--config" in line
        assert not state.exists(), args


def test_system_configuration_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd import config as config_mod

    (tmp_path / "etc").mkdir()
    system = write_config(tmp_path / "etc" / "syncd.toml", make_config(tmp_path / "service"))
    other = write_config(tmp_path / "other.toml", make_config(tmp_path / "other"))
    monkeypatch.setattr(config_mod, "SYSTEM_CONFIG", system)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", "-"], input=jsonl([f.therapist("t-sys")])).exit_code == 0
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0 and "t-sys" in result.stdout
    result = runner.invoke(main, ["check-config"])
    assert f"configuration {system}\n" in result.stdout  # no --config, no $SYNCD_CONFIG
    # $SYNCD_CONFIG beats the system file, --config beats both.
    result = runner.invoke(main, ["status"], env={"SYNCD_CONFIG": str(other)})
    assert result.exit_code == 1 and f"(configuration {other} from $SYNCD_CONFIG)" in result.stderr
    result = runner.invoke(main, ["--config", str(system), "status"], env={"SYNCD_CONFIG": "x"})
    assert result.exit_code == 0 and "t-sys" in result.stdout
    # Without the system file: embedded defaults (which the message says).
    monkeypatch.setattr(config_mod, "SYSTEM_CONFIG", tmp_path / "absent.toml")
    monkeypatch.setenv("SYNCD_DAEMON_STATE_DIR", str(tmp_path / "defaults"))
    result = runner.invoke(main, ["status"])
    assert "(no configuration file: embedded defaults)" in result.stderr
    assert not (tmp_path / "defaults").exists()


def test_check_config_db_upgrade_and_status(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    code, out, _ = cli(cfg, "check-config")
    assert code == 0 and "configuration is valid" in out
    code, out, _ = cli(cfg, "db", "upgrade")
    assert code == 0 and "up to date" in out
    code, _, _ = cli(cfg, "ingest", "-", stdin=jsonl([f.therapist()]))
    assert code == 0
    code, out, _ = cli(cfg, "status")
    assert code == 0 and "t-1" in out and "not connected" in out


def test_resync_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, radicale_server: CalDAVServer
) -> None:
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    pw = tmp_path / "pw"
    pw.write_text(radicale_server.password)
    cli(cfg, "ingest", "-", stdin=jsonl([f.therapist(), f.session("s-1", f.future(days=3))]))
    code, out, err = cli(
        cfg,
        "connect",
        "caldav",
        "t-1",
        "--url",
        radicale_server.url,
        "--username",
        radicale_server.username,
        "--password-file",
        str(pw),
    )
    assert code == 0, err
    code, out, _ = cli(cfg, "resync", "t-1", "--dry-run")
    assert code == 0 and "would apply 1 change" in out and "create" in out
    code, out, _ = cli(cfg, "resync", "t-1", "--dry-run")
    assert "would apply 1 change" in out  # still pending: the dry run applied nothing
    code, out, _ = cli(cfg, "resync", "--all")
    assert code == 0 and "applied 1 change" in out
    code, out, _ = cli(cfg, "status")
    assert "ok" in out


def test_connect_google_prints_an_authorization_link(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "syncd.toml",
        make_config(
            tmp_path / "state",
            google={"client_id": "cid-123"},
            http={"port": 8470, "public_url": "https://syncd.example.org"},
        ),
    )
    cli(cfg, "ingest", "-", stdin=jsonl([f.therapist()]))
    code, out, _ = cli(cfg, "connect", "google", "t-1")
    assert code == 0
    link = next(line for line in out.splitlines() if line.startswith("http"))
    assert "client_id=cid-123" in link and "code_challenge_method=S256" in link
    assert "redirect_uri=https%3A%2F%2Fsyncd.example.org%2Foauth%2Fgoogle%2Fcallback" in link
    out2 = run_syncd(cfg, "disconnect", "t-1", "99")
    assert out2.returncode != 0 and "has no connection 99" in out2.stderr


def test_check_config_refuses_google_reminders_and_colour_google_would_refuse(
    tmp_path: Path,
) -> None:
    """Google takes at most 5 override reminders of 0..40320 minutes and colours "1".."11"
    (events resource): a configuration that would make every write fail is refused at once."""
    base = tmp_path / "syncd.toml"
    cases = [
        ("reminder_minutes = [1, 2, 3, 4, 5, 6]", "[google.reminder_minutes]", "at most 5"),
        ("reminder_minutes = [50000]", "[google.reminder_minutes]", "40320"),
        ('color_id = "12"', "[google.color_id]", "1 to 11"),
    ]
    for line, field, rule in cases:
        base.write_text(f"[google]\n{line}\n")
        code, out, err = cli(base, "check-config")
        assert code != 0 and out == ""
        assert len(err.strip().splitlines()) == 1 and field in err and rule in err, err
    base.write_text('[google]\nreminder_minutes = [10, 60]\ncolor_id = "11"\n')
    assert cli(base, "check-config")[0] == 0


def test_run_refuses_a_plain_http_public_url_for_google_push(tmp_path: Path) -> None:
    """Google delivers push notifications only to HTTPS ("Push notifications" guide): the
    daemon refuses to start, in one line, rather than never hearing from Google."""
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        '[google]\nclient_id = "cid"\n[http]\npublic_url = "http://syncd.example.org"\n'
    )
    for command in ("run", "check-config"):
        code, _out, err = cli(cfg, command)
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert "https://" in err and "public_url" in err
    cfg.write_text(cfg.read_text().replace("http://", "https://"))
    assert cli(cfg, "check-config")[0] == 0


def test_a_database_behind_the_code_is_named_and_not_migrated_by_a_reader(tmp_path: Path) -> None:
    from syncd.store import database

    state = tmp_path / "state"
    cfg = write_config(tmp_path / "syncd.toml", make_config(state))
    engine = database.make_engine(f"sqlite:///{state / 'syncd.db'}")
    try:
        [head] = database.schema_heads()
        older = f"{int(head) - 1:04d}"
        database.upgrade(engine, older)
    finally:
        engine.dispose()
    code, _out, err = cli(cfg, "status")
    assert code == 1
    line = one_error_line(err)
    assert f"is at schema {older}, this syncd needs {head}: run `syncd db upgrade`" in line
    assert cli(cfg, "db", "upgrade")[0] == 0
    assert cli(cfg, "status")[0] == 0


def test_a_command_line_that_does_not_parse_is_one_line_too(tmp_path: Path) -> None:
    cfg = tmp_path / "syncd.toml"
    cfg.write_text("")
    for args, line in [
        (["resync", "--bogus"], "error: No such option '--bogus' (see main resync --help)"),
        (["token", "create"], "error: Missing argument 'NAME' (see main token create --help)"),
        (["stauts"], "error: No such command 'stauts' (see main --help)"),
    ]:
        code, _out, err = cli(cfg, *args)
        assert code == 2 and one_error_line(err) == line, (args, err)

"""The command line: one-line errors, status table, resync dry run, config commands."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from syncd.cli import main
from tests import factories as f
from tests.caldav_servers import CalDAVServer
from tests.conftest import make_config, write_config
from tests.proc import jsonl, run_syncd


def cli(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "syncd.toml", make_config(tmp_path / "state"))
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    cases = [
        (["resync"], "name one or more therapists"),
        (["resync", "t-nobody"], "unknown therapist"),
        (
            [
                "connect",
                "caldav",
                "t-nobody",
                "--url",
                "http://127.0.0.1:9/",
                "--username",
                "u",
                "--password-file",
                str(pw),
            ],
            "unknown therapist",
        ),
        (
            [
                "connect",
                "caldav",
                "t-1",
                "--url",
                "http://127.0.0.1:9/",
                "--username",
                "u",
                "--password-file",
                str(tmp_path / "missing"),
            ],
            "cannot read secret file",
        ),
    ]
    for args, needle in cases:
        out = run_syncd(cfg, *args)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, out.stderr)
        assert "Traceback" not in out.stderr


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

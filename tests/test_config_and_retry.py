"""Configuration loading (file, defaults, environment) and the retry policy for transient errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from connectors.errors import (
    AlreadyExists,
    AuthFailed,
    ConnectorError,
    InvalidSyncToken,
    NotFound,
    PreconditionFailed,
    ProtocolError,
    Transient,
)
from syncd import retry
from syncd.config import Config, ConfigError, load
from syncd.retry import RetryPolicy

# -- configuration ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    # The default state directory follows systemd's STATE_DIRECTORY; pin it for every test.
    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    return state


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    return path


def config_error(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env={} if env is None else env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults(_state_dir: Path) -> None:
    cfg = load(None, env={})
    assert cfg == Config()
    assert cfg.daemon.state_dir == _state_dir
    assert cfg.daemon.workers == 4
    assert cfg.daemon.poll_interval == 0.2
    assert cfg.database.url == ""
    assert cfg.database_url == f"sqlite:///{_state_dir / 'syncd.db'}"
    assert cfg.sync.interval == 60
    assert (cfg.sync.retry_attempts, cfg.sync.retry_base, cfg.sync.retry_cap) == (4, 0.5, 30)
    assert cfg.caldav.timeout == 15
    assert cfg.caldav.calendar_id == "syncd"
    assert cfg.key_file == _state_dir / "secret.key"
    assert cfg.logging.level == "INFO"


def test_state_dir_takes_the_first_of_several_state_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert load(None, env={}).daemon.state_dir == tmp_path / "a"


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[daemon]
workers = 8
state_dir = "/var/lib/syncd"

[database]
url = "postgresql+psycopg://syncd@db/syncd"

[sync]
interval = 30
retry_cap = 10.5

[caldav]
calendar_name = "Sessions"

[security]
key_file = "/run/credentials/syncd.service/key"

[logging]
level = "DEBUG"
""",
    )
    cfg = load(path, env={})
    assert cfg.daemon.workers == 8
    assert cfg.daemon.state_dir == Path("/var/lib/syncd")
    assert cfg.database_url == "postgresql+psycopg://syncd@db/syncd"
    assert cfg.sync.interval == 30 and cfg.sync.retry_cap == 10.5
    assert cfg.sync.retry_attempts == 4  # not in the file: default
    assert cfg.caldav.calendar_name == "Sessions"
    assert cfg.key_file == Path("/run/credentials/syncd.service/key")
    assert cfg.logging.level == "DEBUG"


def test_file_state_dir_moves_the_default_database(tmp_path: Path) -> None:
    path = write(tmp_path, f'[daemon]\nstate_dir = "{tmp_path / "s"}"\n')
    assert load(path, env={}).database_url == f"sqlite:///{tmp_path / 's' / 'syncd.db'}"


def test_environment_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nworkers = 8\n\n[database]\nurl = "sqlite:///file.db"\n')
    env = {"SYNCD_DATABASE_URL": "postgresql://env/db", "SYNCD_DAEMON_WORKERS": "12"}
    cfg = load(path, env=env)
    assert cfg.database_url == "postgresql://env/db"
    assert cfg.daemon.workers == 12
    assert load(path, env={}).daemon.workers == 8


def test_environment_overrides_apply_without_a_file() -> None:
    cfg = load(None, env={"SYNCD_DAEMON_WORKERS": "2", "SYNCD_LOGGING_LEVEL": "ERROR"})
    assert cfg.daemon.workers == 2 and cfg.logging.level == "ERROR"


def test_environment_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_DAEMON_WORKERS", "3")
    assert load(None).daemon.workers == 3


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"SYNCD_DAEMON_BOGUS": "1", "SYNCD_WORKERS": "9", "DATABASE_URL": "postgresql://x"}
    assert load(None, env=env) == load(None, env={})


def test_unknown_option_is_named(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "[daemon]\nwrokers = 8\n"))
    assert "daemon.wrokers" in message
    assert str(tmp_path / "syncd.toml") in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    assert "[deamon]" in config_error(write(tmp_path, "[deamon]\nworkers = 8\n"))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[daemon]\nworkers = "many"\n', "daemon.workers"),
        ("[daemon]\nworkers = 0\n", "daemon.workers"),
        ("[daemon]\nworkers = 65\n", "daemon.workers"),
        ("[sync]\nretry_base = 0\n", "sync.retry_base"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level"),
        ("[caldav]\ntimeout = -1\n", "caldav.timeout"),
    ],
)
def test_bad_value_is_named_by_section_and_option(tmp_path: Path, text: str, where: str) -> None:
    assert f"[{where}]" in config_error(write(tmp_path, text))


def test_bad_environment_value_is_named() -> None:
    message = config_error(None, {"SYNCD_DAEMON_WORKERS": "lots"})
    assert "[daemon.workers]" in message
    assert message.startswith("environment")


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    assert "invalid TOML" in config_error(write(tmp_path, "[daemon\nworkers = 8\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(missing)
    assert str(missing) in message and "does not exist" in message


# Regression: a scalar where a section belongs, plus an override for that section, used to crash
# with AttributeError; and a bad environment value used to be blamed on the file (fixed in a326626).


def test_scalar_section_with_environment_override_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'database = "postgresql://x"\n')
    assert "[database]" in config_error(path)
    assert "[database]" in config_error(path, {"SYNCD_DATABASE_URL": "postgresql://env/db"})


def test_bad_environment_value_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nworkers = 8\n")
    message = config_error(path, {"SYNCD_DAEMON_WORKERS": "lots"})
    assert "[daemon.workers]" in message
    # (tmp_path contains the test's name, so look at where the message starts)
    assert not message.startswith(str(path))
    assert message.startswith("environment variable SYNCD_DAEMON_WORKERS")
    # while a bad value in the file is still blamed on the file
    bad_file = write(tmp_path, '[daemon]\nworkers = "lots"\n')
    assert config_error(bad_file, {"SYNCD_DATABASE_URL": "sqlite://"}).startswith(str(bad_file))


# -- retry policy ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(0, 19),
    base=st.floats(0.01, 5),
    cap=st.floats(0.1, 120),
    seed=st.integers(0, 2**32),
)
def test_delay_is_within_half_and_one_of_the_capped_step(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(attempts=20, base=base, cap=cap)
    step = min(cap, base * 2**attempt)
    delay = policy.delay(attempt, None, random.Random(seed))
    assert step / 2 <= delay <= step
    assert delay <= cap


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(0, 19),
    retry_after=st.floats(0, 10_000),
    cap=st.floats(0.1, 120),
    seed=st.integers(0, 2**32),
)
def test_delay_honours_retry_after_up_to_the_cap(
    attempt: int, retry_after: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(attempts=20, base=0.5, cap=cap)
    delay = policy.delay(attempt, retry_after, random.Random(seed))
    assert delay >= min(retry_after, cap)
    assert delay <= max(min(cap, 0.5 * 2**attempt), min(retry_after, cap))
    assert delay <= cap


def test_delay_grows_exponentially_until_the_cap() -> None:
    class Top(random.Random):
        def random(self) -> float:  # the top of the jitter range
            return 1.0

    policy = RetryPolicy(base=0.5, cap=3.0)
    assert [policy.delay(a, None, Top()) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(0, 2.5, Top()) == 2.5
    assert policy.delay(0, 60.0, Top()) == 3.0


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_call_returns_at_once_without_errors() -> None:
    slept: list[float] = []
    fn = Flaky()
    assert retry.call(fn, RetryPolicy(), sleep=slept.append) == "ok"
    assert (fn.calls, slept) == (1, [])


def test_call_retries_transient_errors_then_succeeds() -> None:
    slept: list[float] = []
    fn = Flaky(Transient("503"), Transient("429", retry_after=7.0))
    policy = RetryPolicy(attempts=4, base=0.5, cap=30)
    assert retry.call(fn, policy, sleep=slept.append, rng=random.Random(1)) == "ok"
    assert fn.calls == 3
    assert len(slept) == 2
    assert 0.25 <= slept[0] <= 0.5
    assert slept[1] >= 7.0


def test_call_gives_up_after_the_last_attempt_and_reraises() -> None:
    slept: list[float] = []
    last = Transient("timeout 4")
    fn = Flaky(Transient("timeout 1"), Transient("timeout 2"), Transient("timeout 3"), last)
    with pytest.raises(Transient) as info:
        retry.call(fn, RetryPolicy(attempts=4, base=1, cap=5), sleep=slept.append)
    assert info.value is last
    assert fn.calls == 4
    assert len(slept) == 3  # no sleep after the last attempt
    for attempt, delay in enumerate(slept):
        step = min(5, 2**attempt)
        assert step / 2 <= delay <= step


def test_a_single_attempt_never_sleeps() -> None:
    slept: list[float] = []
    fn = Flaky(Transient("503"))
    with pytest.raises(Transient):
        retry.call(fn, RetryPolicy(attempts=1), sleep=slept.append)
    assert (fn.calls, slept) == (1, [])


@pytest.mark.parametrize(
    "error",
    [
        NotFound("gone"),
        AlreadyExists("there"),
        PreconditionFailed("412"),
        AuthFailed("revoked"),
        InvalidSyncToken("stale"),
        ProtocolError("garbage"),
        ConnectorError("other"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_call_never_retries_other_connector_errors(error: ConnectorError) -> None:
    slept: list[float] = []
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        retry.call(fn, RetryPolicy(attempts=5), sleep=slept.append)
    assert info.value is error
    assert (fn.calls, slept) == (1, [])


def test_non_transient_error_after_transient_ones_stops_at_once() -> None:
    slept: list[float] = []
    fn = Flaky(Transient("503"), AuthFailed("revoked"), Transient("503"))
    with pytest.raises(AuthFailed):
        retry.call(fn, RetryPolicy(attempts=5), sleep=slept.append)
    assert fn.calls == 2 and len(slept) == 1


def test_example_config_names_every_option() -> None:
    """config/syncd.example.toml shows every option in its section: commented out at its default,
    or set (``state_dir``, which the example shares with the systemd unit)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "config" / "syncd.example.toml").read_text()
    parts = re.split(r"^\[(\w+)\]\s*$", text, flags=re.M)
    sections = {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}
    missing: list[str] = []
    for name, field in Config.model_fields.items():
        section = field.annotation  # every field of Config is a section model
        assert isinstance(section, type) and issubclass(section, BaseModel), name
        missing += [
            f"[{name}] {option}"
            for option in section.model_fields
            if not re.search(rf"^(# )?{option} =", sections.get(name, ""), re.M)
        ]
    assert not missing, missing

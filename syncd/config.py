"""Configuration: one TOML file, every option with a default, each overridable by an
environment variable ``SYNCD_<SECTION>_<OPTION>`` (e.g. ``SYNCD_DATABASE_URL``).

Which file: ``--config FILE``, else ``$SYNCD_CONFIG``, else ``/etc/syncd/syncd.toml`` when it
exists (the service's own, so a command typed on the server reads what the service reads), else
none (embedded defaults). Secrets never live here: the file only names the files they are read
from.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The service's configuration (systemd's ConfigurationDirectory=syncd); tests point it elsewhere.
SYSTEM_CONFIG = Path("/etc/syncd/syncd.toml")


class ConfigError(Exception):
    pass


def find(given: Path | None, system: Path | None = None) -> Path | None:
    """The file to read: ``given`` (from --config or $SYNCD_CONFIG), else the system file when it
    exists, else None."""
    if given is not None:
        return given
    system = SYSTEM_CONFIG if system is None else system
    return system if system.is_file() else None


# SQLAlchemy URL schemes syncd runs on (psycopg 3 for PostgreSQL).
_DB_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets this; elsewhere follow the XDG convention.
    if sd := os.environ.get("STATE_DIRECTORY"):
        return Path(sd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "syncd"


class DaemonConfig(_Section):
    state_dir: Path = Field(default_factory=_default_state_dir)
    workers: int = Field(4, ge=1, le=64)
    poll_interval: float = Field(0.2, gt=0, le=10)
    lease_seconds: float = Field(60, ge=3)
    shutdown_timeout: float = Field(30, ge=0)


class DatabaseConfig(_Section):
    url: str = ""  # empty: SQLite at <state_dir>/syncd.db

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError(
                "not a database URL: use sqlite:////path/to/syncd.db or "
                "postgresql://user@host:5432/name"
            )
        if scheme.lower() not in _DB_SCHEMES:
            raise ValueError(
                f"unsupported database {scheme!r}: syncd runs on SQLite (sqlite:///PATH) or "
                "PostgreSQL (postgresql://user@host:5432/name)"
            )
        if scheme.lower() == "sqlite" and rest in ("", "/", "/:memory:"):
            raise ValueError("an in-memory SQLite database keeps nothing: give a file path")
        return value


class SyncConfig(_Section):
    interval: float = Field(60, ge=1)
    retry_attempts: int = Field(4, ge=1, le=20)
    retry_base: float = Field(0.5, gt=0)
    retry_cap: float = Field(30, gt=0)
    failure_backoff_cap: float = Field(900, ge=1)


class CalDAVConfig(_Section):
    timeout: float = Field(15, gt=0, le=300)
    calendar_name: str = "Therapy sessions (syncd)"
    calendar_id: str = "syncd"
    # false: refuse CalDAV URLs whose host resolves to a loopback/private/link-local address.
    allow_private_hosts: bool = False


class GoogleConfig(_Section):
    client_id: str = ""
    client_secret_file: Path | None = None  # also $SYNCD_GOOGLE_CLIENT_SECRET
    api_url: str = "https://www.googleapis.com/"
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    revoke_url: str = "https://oauth2.googleapis.com/revoke"
    timeout: float = Field(15, gt=0, le=300)
    calendar_name: str = "Therapy sessions (syncd)"
    color_id: str = ""
    reminder_minutes: list[int] | None = None
    min_request_interval: float = Field(0.05, ge=0, le=10)
    max_batch: int = Field(50, ge=1, le=1000)
    watch: bool = True
    watch_ttl: int = Field(7 * 24 * 3600, ge=300)


class AvailabilityConfig(_Section):
    weeks: int = Field(8, ge=1, le=52)
    busy_refresh: float = Field(60, ge=0)
    tentative_busy: bool = True
    all_day: Literal["transparency", "busy", "free"] = "transparency"
    stale_after: float = Field(3600, ge=60)


class OffersConfig(_Section):
    hold_hours: float = Field(24, gt=0, le=24 * 14)
    sweep_interval: float = Field(1.0, gt=0, le=60)


class SecurityConfig(_Section):
    key_file: Path | None = None  # empty: <state_dir>/secret.key


class PlatformConfig(_Section):
    """Outbound notifications to the platform (a signed webhook fed from the outbox)."""

    webhook_url: str = ""  # empty: keep notifications in the outbox, send nothing
    # The HMAC key is read from this file or $SYNCD_WEBHOOK_SECRET; never inline here.
    webhook_secret_file: Path | None = None
    timeout: float = Field(10, gt=0, le=300)
    retry_base: float = Field(2, gt=0)
    retry_cap: float = Field(600, gt=0)
    batch: int = Field(50, ge=1, le=1000)
    poll_interval: float = Field(1.0, gt=0, le=3600)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value


class HttpConfig(_Section):
    """The daemon's one HTTP port: health checks, the Google OAuth callback and push
    notifications (later the ingestion/admin API and the dashboard)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8470, ge=0, le=65535)  # 0: any free port (tests)
    public_url: str = ""  # empty: http://<host>:<port>

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value


class ApiConfig(_Section):
    """The HTTP API: signed platform events (POST /v1/events)."""

    # The HMAC key the platform signs events with, read from this file or $SYNCD_INGEST_SECRET.
    ingest_secret_file: Path | None = None
    max_events: int = Field(500, ge=1, le=500)
    signature_tolerance: float = Field(300, ge=1, le=3600)


class LoggingConfig(_Section):
    level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class Config(_Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    caldav: CalDAVConfig = Field(default_factory=CalDAVConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    offers: OffersConfig = Field(default_factory=OffersConfig)
    google: GoogleConfig = Field(default_factory=GoogleConfig)
    availability: AvailabilityConfig = Field(default_factory=AvailabilityConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.daemon.state_dir / 'syncd.db'}"

    @property
    def key_file(self) -> Path:
        return self.security.key_file or self.daemon.state_dir / "secret.key"


def _env_overrides(env: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, model in Config.model_fields.items():
        sub = model.annotation
        assert isinstance(sub, type) and issubclass(sub, BaseModel)
        for option in sub.model_fields:
            value = env.get(f"SYNCD_{section}_{option}".upper())
            if value is not None:
                out.setdefault(section, {})[option] = value
    return out


def load(path: Path | None, env: dict[str, str] | None = None) -> Config:
    """Read ``path`` (None: defaults only), then apply environment overrides."""
    env = dict(os.environ) if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    overrides = _env_overrides(env)
    for section, values in overrides.items():
        current = data.get(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{path}: [{section}] must be a table (a [{section}] section)")
        data[section] = {**current, **values}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc)
        from_env = len(loc) >= 2 and loc[1] in overrides.get(loc[0], {})
        if from_env:
            origin = f"environment variable SYNCD_{loc[0].upper()}_{loc[1].upper()}"
        else:
            origin = str(path) if path else "defaults"
        raise ConfigError(f"{origin}: [{where}] {err['msg']}") from None

"""Configuration: one TOML file, every option with a default, each overridable by an
environment variable ``SYNCD_<SECTION>_<OPTION>`` (e.g. ``SYNCD_DATABASE_URL``).

Which file: ``--config FILE``, else ``$SYNCD_CONFIG``, else ``/etc/syncd/syncd.toml`` when it
exists (the service's own, so a command typed on the server reads what the service reads), else
none (embedded defaults). Secrets never live here: the file only names the files they are read
from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.egress import EgressPolicy, parse_networks

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


# What therapists see as the name of the calendar syncd creates for them: no product name.
DEFAULT_CALENDAR_NAME = "Therapy sessions"


class CalDAVConfig(_Section):
    timeout: float = Field(15, gt=0, le=300)
    calendar_name: str = Field(DEFAULT_CALENDAR_NAME, min_length=1, max_length=200)
    calendar_id: str = "syncd"
    # Deprecated: the same as [outbound] allow_private_hosts (either one set to true allows).
    allow_private_hosts: bool = False


class OutboundConfig(_Section):
    """Where syncd may connect: CalDAV servers (and every URL they name), Google's API and
    OAuth endpoints, the platform's webhook. Public internet addresses only by default."""

    # true: any address, loopback and private networks included (tests, a LAN-only setup).
    allow_private_hosts: bool = False
    # Networks allowed although not public, e.g. ["10.20.0.0/16"] for a platform webhook or a
    # CalDAV server on the operator's own network. Comma-separated in the environment.
    allowed_networks: list[str] = Field(default_factory=list)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            parse_networks(str(v) for v in value)  # a ValueError names the bad entry
            return [str(v).strip() for v in value]
        return value


class GoogleConfig(_Section):
    client_id: str = ""
    client_secret_file: Path | None = None  # also $SYNCD_GOOGLE_CLIENT_SECRET
    api_url: str = "https://www.googleapis.com/"
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    revoke_url: str = "https://oauth2.googleapis.com/revoke"
    timeout: float = Field(15, gt=0, le=300)
    calendar_name: str = Field(DEFAULT_CALENDAR_NAME, min_length=1, max_length=200)
    color_id: str = ""
    reminder_minutes: list[int] | None = None
    min_request_interval: float = Field(0.1, ge=0, le=10)  # 600 calls/min/user
    max_batch: int = Field(50, ge=1, le=1000)
    watch: bool = True
    watch_ttl: int = Field(7 * 24 * 3600, ge=300)

    @field_validator("color_id")
    @classmethod
    def _colour(cls, value: str) -> str:
        # Event colours are "1" to "11" (colors.get; events resource, colorId).
        value = value.strip()
        if value and value not in {str(n) for n in range(1, 12)}:
            raise ValueError("must be an event colour id from 1 to 11, or empty")
        return value

    @field_validator("reminder_minutes")
    @classmethod
    def _reminders(cls, value: list[int] | None) -> list[int] | None:
        # At most 5 override reminders, each 0 to 40320 minutes (4 weeks) before the event
        # (events resource, reminders.overrides).
        if value is None:
            return value
        if len(value) > 5:
            raise ValueError(f"Google allows at most 5 reminders, {len(value)} given")
        for minutes in value:
            if not 0 <= minutes <= 40320:
                raise ValueError(f"{minutes} is not between 0 and 40320 minutes (4 weeks)")
        return value


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
    # The booking's page on the platform, e.g. "https://platform.example/sessions/{session_id}":
    # each calendar entry links to it (URL property, and a line in its description).
    session_url: str = ""

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value

    @field_validator("session_url")
    @classmethod
    def _session_template(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        if "{session_id}" not in value:
            raise ValueError("must contain {session_id}, where the session's id goes")
        if "{" in value.replace("{session_id}", "") or "}" in value.replace("{session_id}", ""):
            raise ValueError("the only placeholder allowed is {session_id}")
        if any(c.isspace() for c in value):
            raise ValueError("must not contain spaces")
        return value


class ConnectConfig(_Section):
    """Connect links: the page therapists open to connect their own calendar."""

    # How long a link from `syncd connect-link` / POST /v1/admin/connect-links stays valid.
    link_days: float = Field(7, gt=0, le=90)
    # After a link is used, the browser that used it may finish the steps (busy calendars,
    # the confirmation, disconnect) for this many minutes.
    session_minutes: float = Field(60, ge=5, le=24 * 60)


class HttpConfig(_Section):
    """The daemon's one HTTP port: health checks, the Google OAuth callback and push
    notifications (later the ingestion/admin API and the dashboard)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8470, ge=0, le=65535)  # 0: any free port (tests)
    public_url: str = ""  # empty: http://<host>:<port>
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client. Empty:
    # the connecting address is the client, whatever the headers say.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        # From the environment: "10.0.0.1, 10.1.0.0/16".
        return (
            [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value

    @property
    def base_url(self) -> str:
        """Where browsers and providers reach the daemon: the public URL, else the listening
        address (links, OAuth redirects, push addresses and feed URLs start with it)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class ApiConfig(_Section):
    """The HTTP API: signed platform events (POST /v1/events)."""

    # The HMAC key the platform signs events with, read from this file or $SYNCD_INGEST_SECRET.
    ingest_secret_file: Path | None = None
    max_events: int = Field(500, ge=1, le=500)
    signature_tolerance: float = Field(300, ge=1, le=3600)


class LimitsConfig(_Section):
    """Failed credential checks allowed per client address in one window of ``window`` seconds;
    beyond that every attempt is answered 429 with Retry-After until the window ends. 0: off."""

    window: float = Field(600, ge=1, le=86400)
    login: int = Field(10, ge=0)  # dashboard sign-ins with a wrong token
    bearer: int = Field(30, ge=0)  # API requests with a missing, unknown or revoked token
    feed: int = Field(30, ge=0)  # feed URLs that name no feed
    signature: int = Field(30, ge=0)  # POST /v1/events with a bad Syncd-Signature


class RetentionConfig(_Section):
    """How long history is kept (cancelled and completed sessions, expired offers, inbound event
    bodies), counted from the end of each; the daemon purges older history every sweep."""

    days: float = Field(90, gt=0, le=36500)
    sweep_interval: float = Field(3600, ge=1, le=86400)


class LoggingConfig(_Section):
    level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class Config(_Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    caldav: CalDAVConfig = Field(default_factory=CalDAVConfig)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    offers: OffersConfig = Field(default_factory=OffersConfig)
    google: GoogleConfig = Field(default_factory=GoogleConfig)
    availability: AvailabilityConfig = Field(default_factory=AvailabilityConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    connect: ConnectConfig = Field(default_factory=ConnectConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.daemon.state_dir / 'syncd.db'}"

    @property
    def egress(self) -> EgressPolicy:
        """The outbound policy these options describe (system DNS)."""
        return EgressPolicy(
            allow_private=self.outbound.allow_private_hosts or self.caldav.allow_private_hosts,
            allowed_networks=parse_networks(self.outbound.allowed_networks),
        )

    @property
    def key_file(self) -> Path:
        return self.security.key_file or self.daemon.state_dir / "secret.key"


def google_push_problem(cfg: Config) -> str | None:
    """Why the daemon cannot take Google push notifications as configured, if it cannot:
    Google delivers them only to an HTTPS address ("Push notifications" guide)."""
    url = cfg.http.public_url
    if cfg.google.client_id and cfg.google.watch and url and not url.startswith("https://"):
        return (
            f"[http] public_url {url} must be an https:// address for Google push "
            "notifications (Google sends them only over HTTPS); put syncd behind an HTTPS "
            "reverse proxy, or set [google] watch = false"
        )
    return None


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

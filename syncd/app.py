"""Wiring: one object that holds the configured database, secrets and connectors, shared by the
daemon, the CLI and the demo.

The connectors, the engine and the ingestor are imported when first asked for, so a CLI command
that only reads the database never loads the CalDAV or Google client libraries.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from connectors.egress import STRICT, EgressPolicy, Resolver
from syncd import log_guard, private_files
from syncd.clock import Clock, utc_now
from syncd.config import Config
from syncd.secrets import SecretBox, SecretError, load_or_create_key, read_secret_file, require_key
from syncd.store import database

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.caldav import ServerMemory
    from connectors.google import GoogleSettings
    from syncd.delivery import Deliverer
    from syncd.engine import Engine
    from syncd.ingest import Ingestor
    from syncd.store.tables import ConnectionRow

GOOGLE_SECRET_ENV = "SYNCD_GOOGLE_CLIENT_SECRET"  # noqa: S105 - a variable name
GOOGLE_CREDENTIAL = "syncd-google-client-secret"  # the systemd credential's name


class UnknownProvider(Exception):
    pass


@dataclass
class App:
    config: Config
    db: DbEngine
    sessions: sessionmaker[Session]
    clock: Clock = utc_now
    # Where every outbound request may go (connectors, OAuth calls, the webhook).
    egress: EgressPolicy = STRICT
    # False: a missing key is an error, never generated (CLI commands; see secrets.load_key).
    create_key: bool = True
    _box: SecretBox | None = field(default=None, repr=False)
    _box_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # What the CalDAV connectors this process makes learn about servers, shared between them.
    _caldav_memory: ServerMemory | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        migrate: bool = True,
        clock: Clock = utc_now,
        create_key: bool = True,
        resolver: Resolver | None = None,
    ) -> App:
        """Open (creating when ``migrate``) the database. With ``create_key`` the secret key is
        loaded now and generated if there is none; without, it is read when first needed.
        ``resolver`` replaces the system's DNS for outbound requests (tests)."""
        log_guard.install()  # also for uses without setup_logging (tests, embedding)
        database.check_owner(config.database_url)
        # Read-only commands create nothing where they look; an existing folder is tightened.
        if migrate or config.daemon.state_dir.exists():
            private_files.private_dir(config.daemon.state_dir)
        db = database.make_engine(config.database_url, create=migrate)
        egress = config.egress
        if resolver is not None:
            egress = dataclasses.replace(egress, resolver=resolver)
        try:
            if migrate:
                database.upgrade(db)
            app = cls(
                config,
                db,
                database.session_factory(db),
                clock,
                egress=egress,
                create_key=create_key,
            )
            if create_key:
                app.box  # noqa: B018 - generate (and warn about) a new key at start, not mid-pass
        except BaseException:
            db.dispose()
            raise
        return app

    @property
    def box(self) -> SecretBox:
        """Seals and opens stored secrets with the key from secrets.load_key."""
        with self._box_lock:
            if self._box is None:
                key_file = self.config.key_file
                key = load_or_create_key(key_file) if self.create_key else require_key(key_file)
                self._box = SecretBox(key)
            return self._box

    def close(self) -> None:
        self.db.dispose()

    def connector_for(self, row: ConnectionRow) -> Connector:
        if row.provider == "caldav":
            from connectors.caldav import CalDAVConnector, CalDAVSettings, ServerMemory

            with self._box_lock:
                if self._caldav_memory is None:
                    self._caldav_memory = ServerMemory()
            c = self.config.caldav
            return CalDAVConnector(
                CalDAVSettings(
                    url=row.url,
                    username=row.username,
                    password=self.box.open(row.secret),
                    calendar_url=row.calendar_url,
                    calendar_name=c.calendar_name,
                    calendar_id=c.calendar_id,
                    timeout=c.timeout,
                    egress=self.egress,
                ),
                self._caldav_memory,
            )
        if row.provider == "google":
            from connectors.google import GoogleConnector

            return GoogleConnector(
                self.google_settings(self.box.open(row.secret), row.calendar_url)
            )
        raise UnknownProvider(f"connection {row.id}: unknown provider {row.provider!r}")

    def google_settings(self, refresh_token: str, calendar_url: str | None) -> GoogleSettings:
        from connectors.google import GoogleSettings

        g = self.config.google
        if not g.client_id:
            raise SecretError("[google] client_id is not configured (see docs/google.md)")
        return GoogleSettings(
            refresh_token=refresh_token,
            client_id=g.client_id,
            client_secret=self.google_client_secret(),
            url=g.api_url,
            token_uri=g.token_url,
            revoke_uri=g.revoke_url,
            calendar_url=calendar_url,
            calendar_name=g.calendar_name,
            timeout=g.timeout,
            color_id=g.color_id or None,
            reminder_minutes=tuple(g.reminder_minutes) if g.reminder_minutes is not None else None,
            min_interval=g.min_request_interval,
            max_batch=g.max_batch,
            egress=self.egress,
        )

    def google_client_secret(self) -> str:
        if env := os.environ.get(GOOGLE_SECRET_ENV, "").strip():
            return env
        if self.config.google.client_secret_file is not None:
            return read_secret_file(self.config.google.client_secret_file)
        # A command run with the service's credentials (systemd-run, systemd/syncd-admin).
        if creds := os.environ.get("CREDENTIALS_DIRECTORY"):
            cred = Path(creds) / GOOGLE_CREDENTIAL
            if cred.exists():
                return read_secret_file(cred)
        raise SecretError(
            f"no Google OAuth client secret: set ${GOOGLE_SECRET_ENV} or "
            f"[google] client_secret_file, or provide the credential {GOOGLE_CREDENTIAL}"
        )

    def engine(self) -> Engine:
        from syncd import connect_links, retry
        from syncd.engine import Engine

        s = self.config.sync
        policy = retry.RetryPolicy(s.retry_attempts, s.retry_base, s.retry_cap)
        return Engine(
            self.sessions,
            self.connector_for,
            clock=self.clock,
            policy=policy,
            availability=self.config.availability,
            session_url=self.config.platform.session_url or None,
            reconnect_link=connect_links.reconnect_issuer(
                self.config, connect_links.app_signer(self)
            ),
        )

    def ingestor(self) -> Ingestor:
        from syncd.ingest import Ingestor

        hold = timedelta(hours=self.config.offers.hold_hours)
        return Ingestor(self.sessions, self.clock, hold=hold)

    def webhook_secret(self) -> bytes:
        """The HMAC key that signs notifications to the platform: ``$SYNCD_WEBHOOK_SECRET``, else
        the ``[platform] webhook_secret_file``. Empty when no webhook is configured and no secret
        is given; an error when a webhook URL is configured without one."""
        from syncd.outbox import WEBHOOK_SECRET_ENV

        if env := os.environ.get(WEBHOOK_SECRET_ENV, "").strip():
            return env.encode()

        platform = self.config.platform
        if platform.webhook_secret_file is not None:
            return read_secret_file(platform.webhook_secret_file).encode()
        if platform.webhook_url:
            raise SecretError(
                f"[platform] webhook_url is set but there is no webhook secret: set "
                f"${WEBHOOK_SECRET_ENV} or [platform] webhook_secret_file"
            )
        return b""

    def deliverer(self) -> Deliverer:
        """The outbox delivery worker (sends nothing without a ``[platform] webhook_url``)."""
        from syncd.delivery import Deliverer

        return Deliverer(
            self.sessions,
            self.config.platform,
            self.webhook_secret(),
            self.clock,
            egress=self.egress,
        )

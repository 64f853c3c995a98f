"""Wiring: one object that holds the configured database, secrets and connectors, shared by the
daemon, the CLI and the demo."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Connector
from connectors.caldav import CalDAVConnector, CalDAVSettings
from connectors.egress import STRICT, EgressPolicy, Resolver
from connectors.google import GoogleConnector, GoogleSettings
from syncd import connect_links, log_guard, private_files, retry
from syncd.clock import Clock, utc_now
from syncd.config import Config
from syncd.engine import Engine
from syncd.ingest import Ingestor
from syncd.outbox import WEBHOOK_SECRET_ENV, Deliverer
from syncd.secrets import SecretBox, SecretError, load_or_create_key, read_secret_file
from syncd.store import database
from syncd.store.tables import ConnectionRow

GOOGLE_SECRET_ENV = "SYNCD_GOOGLE_CLIENT_SECRET"  # noqa: S105 - a variable name


class UnknownProvider(Exception):
    pass


@dataclass
class App:
    config: Config
    db: DbEngine
    sessions: sessionmaker[Session]
    box: SecretBox
    clock: Clock = utc_now
    # Where every outbound request may go (connectors, OAuth calls, the webhook).
    egress: EgressPolicy = STRICT

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        migrate: bool = True,
        clock: Clock = utc_now,
        resolver: Resolver | None = None,
    ) -> App:
        """``resolver`` replaces the system's DNS for outbound requests (tests)."""
        log_guard.install()  # also for uses without setup_logging (tests, embedding)
        private_files.private_dir(config.daemon.state_dir)
        db = database.make_engine(config.database_url)
        if migrate:
            database.upgrade(db)
        box = SecretBox(load_or_create_key(config.key_file))
        egress = config.egress
        if resolver is not None:
            egress = dataclasses.replace(egress, resolver=resolver)
        return cls(config, db, database.session_factory(db), box, clock, egress)

    def close(self) -> None:
        self.db.dispose()

    def connector_for(self, row: ConnectionRow) -> Connector:
        if row.provider == "caldav":
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
                )
            )
        if row.provider == "google":
            return GoogleConnector(
                self.google_settings(self.box.open(row.secret), row.calendar_url)
            )
        raise UnknownProvider(f"connection {row.id}: unknown provider {row.provider!r}")

    def google_settings(self, refresh_token: str, calendar_url: str | None) -> GoogleSettings:
        g = self.config.google
        if not g.client_id:
            raise SecretError("[google] client_id is not configured (see docs/google.md)")
        return GoogleSettings(
            refresh_token=refresh_token,
            client_id=g.client_id,
            client_secret=self.google_client_secret(),
            url=g.api_url,
            token_uri=g.token_url,
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
        raise SecretError(
            f"no Google OAuth client secret: set ${GOOGLE_SECRET_ENV} or "
            "[google] client_secret_file"
        )

    def engine(self) -> Engine:
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
        hold = timedelta(hours=self.config.offers.hold_hours)
        return Ingestor(self.sessions, self.clock, hold=hold)

    def webhook_secret(self) -> bytes:
        """The HMAC key that signs notifications to the platform: ``$SYNCD_WEBHOOK_SECRET``, else
        the ``[platform] webhook_secret_file``. Empty when no webhook is configured and no secret
        is given; an error when a webhook URL is configured without one."""
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
        return Deliverer(
            self.sessions,
            self.config.platform,
            self.webhook_secret(),
            self.clock,
            egress=self.egress,
        )

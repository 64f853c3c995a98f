"""Delivery of the outbox (:mod:`syncd.outbox`) to the platform's webhook, run by the daemon.

Each round claims up to ``batch`` due rows through an expiring lease (one conditional UPDATE, so
replicas sharing a database never send the same row at the same time), POSTs each as signed
JSON, and records the outcome: 2xx marks it delivered; anything else schedules a retry with
capped exponential backoff and jitter (``Retry-After`` honoured on 429/503). A replica that dies
mid-send leaves a lease that expires, and the row is sent again: at least once.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from connectors.egress import STRICT, EgressPolicy
from syncd.clock import Clock, utc_now
from syncd.config import PlatformConfig
from syncd.outbox import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    backoff,
    parse_retry_after,
    sign,
    wire_body,
)
from syncd.secrets import SecretError
from syncd.store.tables import OutboxRow

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    event_id: str
    topic: str
    created_at: datetime
    payload: dict[str, Any]
    attempts: int


class Deliverer:
    """Sends due outbox rows to ``config.webhook_url``. ``deliver_due`` is called by the daemon on
    a worker thread; it never raises. Several Deliverers (threads, processes, replicas) may share
    one database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: PlatformConfig,
        secret: bytes,
        clock: Clock = utc_now,
        client: httpx.Client | None = None,
        *,
        rng: random.Random | None = None,
        egress: EgressPolicy = STRICT,
    ) -> None:
        if config.webhook_url and not secret:
            raise SecretError("[platform] webhook_url is set but the webhook secret is empty")
        self.config = config
        self._sessions = sessions
        self._secret = secret
        self._clock = clock
        self._own_client = client is None
        # Without a client of the caller's, every connection passes the outbound policy.
        if client is None:
            # Only the daemon delivers: listing the outbox loads no HTTP client.
            from connectors.egress_http import httpx_client

            client = httpx_client(egress, timeout=config.timeout)
        self._client = client
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # The lease outlives a few requests; a row is only sent while at least one request
        # timeout (plus a margin) of it is left, and the rest of a batch is released, so a
        # crashed replica's rows are retried within a minute or so.
        self.lease = timedelta(seconds=max(60.0, 3 * config.timeout))
        self._send_margin = timedelta(seconds=config.timeout + 5)
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Stop after the request in flight (if any) and close the HTTP client."""
        self._closed = True
        with self._lock:
            if self._own_client:
                self._client.close()

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def deliver_due(self) -> int:
        """Send what is due now; the number delivered. Never raises: failures are recorded on
        the rows (and logged with the notification id) and retried later."""
        if not self.config.webhook_url or self._closed:
            return 0
        with self._lock:
            token = uuid.uuid4().hex
            try:
                claimed, lease_until = self._claim(token)
            except Exception:
                log.exception("outbox: claiming due notifications failed; will retry")
                return 0
            delivered = 0
            for i, row in enumerate(claimed):
                if self._closed or self._clock() + self._send_margin > lease_until:
                    self._release(token, [r.id for r in claimed[i:]])
                    break
                try:
                    delivered += self._send(token, row)
                except Exception as exc:
                    # A database error recording the outcome: the lease expires and the row is
                    # sent again (at least once). Never log the payload.
                    log.error(  # no traceback: it could carry row data
                        "outbox: recording the delivery of %s failed: %s",
                        row.event_id,
                        type(exc).__name__,
                    )
            return delivered

    def _claim(self, token: str) -> tuple[list[_Claimed], datetime]:
        now = self._clock()
        until = now + self.lease
        conditions = (
            OutboxRow.delivered_at.is_(None),
            or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= now),
            or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
        )
        # One statement: on PostgreSQL the candidates are row-locked (skipping rows another
        # replica is claiming right now) and the outer conditions are re-checked against the
        # newest row versions; on SQLite the statement holds the write lock throughout.
        candidates = (
            select(OutboxRow.id)
            .where(*conditions)
            .order_by(OutboxRow.id)
            .limit(self.config.batch)
            .with_for_update(skip_locked=True)
        )
        with self._sessions() as s:
            rows = s.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(candidates), *conditions)
                .values(lease_owner=token, lease_until=until)
                .returning(
                    OutboxRow.id,
                    OutboxRow.event_id,
                    OutboxRow.topic,
                    OutboxRow.created_at,
                    OutboxRow.payload,
                    OutboxRow.attempts,
                )
                .execution_options(synchronize_session=False)
            ).all()
            s.commit()
        claimed = sorted((_Claimed(*r) for r in rows), key=lambda c: c.id)
        return claimed, until

    def _release(self, token: str, ids: list[int]) -> None:
        try:
            with self._sessions() as s:
                s.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(ids), OutboxRow.lease_owner == token)
                    .values(lease_owner=None, lease_until=None)
                    .execution_options(synchronize_session=False)
                )
                s.commit()
        except Exception as exc:
            log.error("outbox: releasing %d notifications failed: %s", len(ids), type(exc).__name__)

    def _send(self, token: str, row: _Claimed) -> int:
        body = wire_body(row.event_id, row.topic, row.created_at, row.payload)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            EVENT_ID_HEADER: row.event_id,
            "User-Agent": "syncd",
        }
        status: int | None = None
        retry_after: float | None = None
        try:
            response = self._client.post(
                self.config.webhook_url, content=body, headers=headers, timeout=self.config.timeout
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            status = response.status_code
            if 200 <= status < 300:
                self._delivered(row, status)
                return 1
            error = f"HTTP {status} {response.reason_phrase}".strip()
            if status in (429, 503):
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
        self._failed(token, row, status, error[:_ERROR_LENGTH], retry_after)
        return 0

    def _delivered(self, row: _Claimed, status: int) -> None:
        now = self._clock()
        with self._sessions() as s:
            # Not conditional on the lease: the platform has it, whoever holds the row now.
            s.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row.id, OutboxRow.delivered_at.is_(None))
                .values(
                    delivered_at=now,
                    attempts=OutboxRow.attempts + 1,
                    last_status=status,
                    last_error=None,
                    next_attempt_at=None,
                    lease_owner=None,
                    lease_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            s.commit()
        log.debug("outbox: delivered %s (%s)", row.event_id, row.topic)

    def _failed(
        self,
        token: str,
        row: _Claimed,
        status: int | None,
        error: str,
        retry_after: float | None,
    ) -> None:
        now = self._clock()
        cfg = self.config
        delay = backoff(row.attempts, cfg.retry_base, cfg.retry_cap, self._rng, retry_after)
        with self._sessions() as s:
            s.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.id == row.id,
                    OutboxRow.lease_owner == token,
                    OutboxRow.delivered_at.is_(None),
                )
                .values(
                    attempts=OutboxRow.attempts + 1,
                    last_status=status,
                    last_error=error,
                    next_attempt_at=now + timedelta(seconds=delay),
                    lease_owner=None,
                    lease_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            s.commit()
        log.warning(
            "outbox: delivery of %s failed (attempt %d): %s; next try in %.0fs",
            row.event_id,
            row.attempts + 1,
            error,
            delay,
        )

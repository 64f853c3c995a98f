"""Rate limits on credential checks: dashboard sign-ins, bearer tokens, feed tokens and ingest
signatures, per client address.

Failures are counted in the database (``rate_limits``: one row per kind, client and fixed
window, incremented by an atomic upsert), so every replica sharing it sees one count, and a
restart forgets nothing. A client that reached the limit is refused every attempt of that kind,
right or wrong, until the window ends: refusing only the wrong ones would still tell a guesser
when a guess was right. Only presented credentials count (a request without any is no guess).

IPv6 clients are counted per /64, the block one subscriber usually holds, so cycling through
addresses of one's own network does not reset the count.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from syncd.clock import Clock
from syncd.config import LimitsConfig
from syncd.store.tables import RateLimitRow

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    LOGIN = "login"
    BEARER = "bearer"
    FEED = "feed"
    SIGNATURE = "signature"


WHAT = {
    Kind.LOGIN: "dashboard sign-ins",
    Kind.BEARER: "API token checks",
    Kind.FEED: "feed requests",
    Kind.SIGNATURE: "event signatures",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def client_key(host: str | None) -> str:
    """What one client's failures are counted under: its address (an IPv6 one as its /64)."""
    if not host:
        return "unknown"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]  # not an address (a Unix socket, a proxy's odd header): as given
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass(frozen=True, slots=True)
class Limiter:
    sessions: sessionmaker[Session]
    config: LimitsConfig
    clock: Clock

    def limit(self, kind: Kind) -> int:
        c = self.config
        limits = {
            Kind.LOGIN: c.login,
            Kind.BEARER: c.bearer,
            Kind.FEED: c.feed,
            Kind.SIGNATURE: c.signature,
        }
        return limits[kind]

    def _window(self, now: datetime) -> datetime:
        seconds = (now - _EPOCH).total_seconds()
        return _EPOCH + timedelta(seconds=seconds - seconds % self.config.window)

    def retry_after(self, kind: Kind, client: str) -> int | None:
        """Whole seconds until ``client`` may try ``kind`` again; None while under the limit."""
        limit = self.limit(kind)
        if limit <= 0:
            return None
        now = self.clock()
        start = self._window(now)
        with self.sessions() as s:
            failures = s.scalar(
                select(RateLimitRow.failures).where(
                    RateLimitRow.kind == kind.value,
                    RateLimitRow.client == client,
                    RateLimitRow.window_start == start,
                )
            )
        if failures is None or failures < limit:
            return None
        left = (start + timedelta(seconds=self.config.window) - now).total_seconds()
        return max(1, math.ceil(left))

    def failed(self, kind: Kind, client: str) -> int:
        """Count one failure of ``client``; returns the failures in this window so far."""
        if self.limit(kind) <= 0:
            return 0
        start = self._window(self.clock())
        with self.sessions.begin() as s:
            statement = _increment(s.get_bind().dialect.name).values(
                kind=kind.value, client=client, window_start=start, failures=1
            )
            count = int(s.execute(statement).scalar_one())
        if count == self.limit(kind):
            log.warning(
                "rate limit: %d failed %s from %s; refusing them for the rest of the %g s window%s",
                count,
                WHAT[kind],
                client,
                self.config.window,
                _proxy_hint(client),
            )
        return count


def _proxy_hint(client: str) -> str:
    try:
        loopback = ipaddress.ip_network(client, strict=False).is_loopback
    except ValueError:
        return ""
    return " (behind a reverse proxy? set [http] trusted_proxies)" if loopback else ""


def _increment(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE SET failures = failures + 1 RETURNING failures``: one
    atomic statement, so concurrent failures on several replicas are all counted."""
    insert: Any = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    statement = insert(RateLimitRow)
    return statement.on_conflict_do_update(
        index_elements=[RateLimitRow.kind, RateLimitRow.client, RateLimitRow.window_start],
        set_={"failures": RateLimitRow.failures + 1},
    ).returning(RateLimitRow.failures)


def purge(s: Session, now: datetime, window: float) -> int:
    """Forget windows that have ended."""
    ended = now - timedelta(seconds=window)
    result = s.execute(delete(RateLimitRow).where(RateLimitRow.window_start < ended))
    return cast("CursorResult[Any]", result).rowcount

"""What CalDAV connectors learn about servers, kept beyond one connector.

A connector is cheap to make and short-lived (one per connection, rebuilt when its secret
changes; a CLI command makes its own). Two things it learns are worth handing to the next one
for the same account, and are kept in a :class:`ServerMemory` that whoever makes connectors
owns and passes in (``syncd.app.App`` keeps one per process; a connector made without one has
its own):

- that the server asked for Basic auth: the next connector sends it with its first request,
  so a pass that finds nothing changed costs one request. Only ever learnt from the server's
  own challenge, so no credentials go anywhere, or in any form, that the server did not ask
  for;
- that a calendar made the server fail or time out on busy-time queries: it is read item by
  item for a while without asking the server first (a query that timed out may still be
  running there: Radicale and Xandikos keep expanding an endless rule).
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Final

# (origin, username): the account a Basic challenge was for.
AccountKey = tuple[str, str]
# (username, calendar URL): a calendar as one account sees it.
CalendarKey = tuple[str, str]

# Expired item-wise marks are dropped once there are this many, so the memory stays bounded
# by the calendars that failed within the last hour.
_PRUNE_AT: Final = 1024


class ServerMemory:
    """Shared, thread-safe memory of CalDAV servers' behaviour (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._basic: set[AccountKey] = set()
        self._itemwise_until: dict[CalendarKey, float] = {}

    def wants_basic(self, account: AccountKey) -> bool:
        with self._lock:
            return account in self._basic

    def learn_basic(self, account: AccountKey) -> None:
        with self._lock:
            self._basic.add(account)

    def forget_basic(self, account: AccountKey) -> None:
        with self._lock:
            self._basic.discard(account)

    def reads_itemwise(self, calendar: CalendarKey) -> bool:
        """Whether ``calendar`` is to be read item by item now."""
        with self._lock:
            return self._itemwise_until.get(calendar, 0.0) > monotonic()

    def read_itemwise_for(self, calendar: CalendarKey, seconds: float) -> None:
        """Read ``calendar`` item by item for the next ``seconds``."""
        now = monotonic()
        with self._lock:
            if len(self._itemwise_until) >= _PRUNE_AT:
                for key, ends in list(self._itemwise_until.items()):
                    if ends <= now:
                        del self._itemwise_until[key]
            self._itemwise_until[calendar] = now + seconds

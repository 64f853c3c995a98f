"""Fault and limit injection: ``inject``ed faults, a calendar over its usage limits, one
calendar's freeBusy error, and the per-account sliding-window quota every call counts
toward ("Usage limits" guide; "Handle API errors")."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from ._base import StandInState
from ._errors import FAULT_KINDS, fault_error
from ._model import Fault

# Methods a calendar's usage limits stop ("Avoid Calendar use limits": creating and changing
# events); reads keep working.
WRITE_METHODS = frozenset(
    {"events.insert", "events.update", "events.patch", "events.delete", "events.import"}
)
# Google's per-user quota: 600 requests per minute per user per project, a sliding window
# ("Usage limits" guide); every part of a batch counts ("Send batch requests").
USER_RATE_LIMIT = 600
USER_RATE_WINDOW = 60.0


class FaultInjection(StandInState):
    """Test controls that make calls fail, and the usage limits checked on every call."""

    user_rate_limit: int | None
    user_rate_window: float
    _user_calls: dict[str, deque[float]]
    _calendar_limits: dict[str, tuple[float, float | None]]
    _freebusy_errors: dict[str, str]

    # faults -------------------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        times: int | None = 1,
        *,
        calendar_id: str | None = None,
        account: str | None = None,
        methods: Iterable[str] | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> Fault:
        """Make the next ``times`` matching API calls (None: all of them) fail with ``kind``.

        Scoped to a calendar, an account and/or API method names (``events.insert``...); the
        OAuth endpoints (``token``, ``auth``, ``revoke``) only when named in ``methods``.
        Batch parts are matched one by one. Returns the rule (see ``hits``/``remaining``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "slow" and delay is None:
            raise ValueError("a 'slow' fault needs delay=seconds")
        fault = Fault(
            kind=kind,
            remaining=times,
            calendar_id=calendar_id,
            account=account,
            methods=frozenset(methods) if methods is not None else None,
            retry_after=retry_after,
            delay=delay,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, account: str | None, calendar_ids: set[str]) -> Any:
        """Consume the first matching fault: a 'slow' one sleeps here (outside the lock) and
        returns None; any other returns its ApiError."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, account, calendar_ids):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    break
            else:
                return None
        if fault.kind == "slow":
            time.sleep(fault.delay or 0)
            return None
        return fault_error(fault.kind, fault.retry_after)

    # usage limits ---------------------------------------------------------------------------------

    def _check_usage_limits(self, name: str, account: str, calendar_ids: set[str]) -> None:
        """A calendar over its usage limits refuses writes until the limit lifts; every call
        (each batch part too) counts toward the account's per-minute quota."""
        now = time.time()
        with self._lock:
            if name in WRITE_METHODS:
                for calendar_id in calendar_ids:
                    limit = self._calendar_limits.get(calendar_id)
                    if limit is not None and limit[0] > now:
                        retry_after = limit[1]
                        raise fault_error("quota", retry_after)
            if self.user_rate_limit is None:
                return
            calls = self._user_calls.setdefault(account, deque())
            while calls and calls[0] <= now - self.user_rate_window:
                calls.popleft()
            if len(calls) >= self.user_rate_limit:
                raise fault_error("user_rate_limit", None)
            calls.append(now)

    def limit_calendar(
        self, calendar_id: str, seconds: float, *, retry_after: float | None = None
    ) -> None:
        """Put a calendar over Google's usage limits for ``seconds``: every write to it
        answers 403 ``quotaExceeded`` (domain usageLimits), with a ``Retry-After`` header when
        given, until then ("Avoid Calendar use limits"; "Handle API errors")."""
        with self._lock:
            self._calendar_limits[calendar_id] = (time.time() + seconds, retry_after)

    def fail_freebusy(self, calendar_id: str, reason: str | None = "internalError") -> None:
        """freebusy.query answers this calendar with ``errors: [{reason}]`` and no busy
        intervals, the others normally (freebusy.query reference, calendars.(key).errors);
        ``None`` clears it."""
        with self._lock:
            if reason is None:
                self._freebusy_errors.pop(calendar_id, None)
            else:
                self._freebusy_errors[calendar_id] = reason

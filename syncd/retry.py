"""Capped exponential backoff with jitter for transient connector errors."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from connectors.errors import Transient

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Full-range jitter in [½, 1] of the exponential step, never below the server's hint."""
        step = min(self.cap, self.base * 2.0**attempt)
        jittered = step * (0.5 + rng.random() / 2)
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, self.cap))
        return jittered


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Transient as exc:
            # A server asking for more patience than a pass should spend sleeping (a quota
            # exhausted for minutes) gets it from the scheduler instead, freeing this worker.
            too_long = exc.retry_after is not None and exc.retry_after > policy.cap
            if attempt == policy.attempts - 1 or too_long:
                raise
            sleep(policy.delay(attempt, exc.retry_after, rng))
    raise AssertionError("unreachable")

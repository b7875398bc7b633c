"""A per-socket message budget: a token bucket refilled at `rate` messages per second."""

from __future__ import annotations

import time
from collections.abc import Callable


class MessageThrottle:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._warned_at = float("-inf")

    def allow(self) -> bool:
        """Spend one message; False when the budget is exhausted."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def should_warn(self) -> bool:
        """At most one rate-limit error per second, so that a flood is not answered by a flood."""
        now = self._clock()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            return True
        return False

    @property
    def retry_after(self) -> float:
        return max(0.0, (1 - self._tokens) / self.rate)

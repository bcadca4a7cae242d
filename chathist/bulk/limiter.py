"""The write-rate limiter of a bulk run (``max_wcu``): a token bucket of write units."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from chathist.errors import ConfigurationError

__all__ = ["WriteLimiter"]


class WriteLimiter:
    """A token bucket of write units: on average at most ``rate`` WCU per second.

    `acquire` takes a request's estimated units before it is sent (waiting while the bucket is
    short), `settle` corrects by what DynamoDB reported. Bursts are bounded by ``burst`` units
    (default: one second's worth). ``clock`` and ``sleep`` can be replaced in tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigurationError("max_wcu must be positive")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(self.rate, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()
        self.started = self._stamp
        self.consumed = 0.0
        """Write units DynamoDB reported for the requests this limiter let through."""
        self.waited = 0.0
        self.largest = 0.0
        """The largest single request estimate or report seen (bounds the overshoot)."""

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, units: float) -> None:
        """Wait until the bucket allows a request estimated at ``units``, and debit them."""
        while True:
            with self._lock:
                self._refill()
                need = min(units, self.burst)
                if self._tokens >= need - 1e-6:  # (float rounding must not stall it)
                    self._tokens -= units
                    self.largest = max(self.largest, units)
                    return
                delay = (need - self._tokens) / self.rate
                self.waited += delay
            self._sleep(delay)

    def settle(self, estimated: float, actual: float) -> None:
        """Replace a request's estimate by what it really consumed."""
        with self._lock:
            self._tokens += estimated - actual
            self.consumed += actual
            self.largest = max(self.largest, actual)

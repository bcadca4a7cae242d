"""The one retry rule: a bounded number of attempts within a deadline, with jittered backoff.

Every loop of chathist that tries again (a lost race for the next sequence number, a truncating
list-layout write, a lazy migration meeting a changed legacy item, unprocessed batch items, a read
that met a concurrent clear) runs on a `RetryRule`. botocore retries each request by itself
(throttling, 5xx, dropped connections; configured once, in `chathist.dynamo.client`); these rules
sit above that, where chathist decides to send something different.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "Attempts",
    "RetryRule",
]

BACKOFF_BASE: Final = 0.004
"""Seconds of the first backoff's upper bound; it doubles with each attempt."""
BACKOFF_CAP: Final = 0.25
"""The longest backoff, in seconds."""


@dataclass(frozen=True)
class RetryRule:
    """At most ``attempts`` attempts, none started after ``timeout`` seconds (None: no
    deadline); `backoff` gives the full-jitter exponential wait before attempt ``n``."""

    attempts: int
    timeout: float | None = None

    def start(self, clock: Callable[[], float] = time.monotonic) -> Attempts:
        """A fresh count of attempts under this rule."""
        return Attempts(self, clock)

    @staticmethod
    def backoff(attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based): uniform in
        [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 30)))


class Attempts:
    """Iterate to get attempt numbers 0, 1, ... while the rule allows another; then the loop
    ends and `spent` says what was used (for the caller's error)."""

    def __init__(self, rule: RetryRule, clock: Callable[[], float]) -> None:
        self.rule = rule
        self._clock = clock
        self._started = clock()
        self.count = 0

    def __iter__(self) -> Iterator[int]:
        deadline = None if self.rule.timeout is None else self._started + self.rule.timeout
        for attempt in range(self.rule.attempts):
            if attempt and deadline is not None and self._clock() > deadline:
                return
            self.count = attempt + 1
            yield attempt

    @property
    def spent(self) -> str:
        """``gave up after N attempts[, T s budget]``."""
        budget = "" if self.rule.timeout is None else f", {self.rule.timeout:g} s budget"
        return f"gave up after {self.count} attempts{budget}"

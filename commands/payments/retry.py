"""How often, and after how long, a provider call is tried again.

Only ``ERROR`` (the provider said it did nothing) and ``UNKNOWN`` (no usable answer) are
retryable. ``DECLINED`` and ``REJECTED`` are definite answers that another try would not
change, and ``OK``/``PENDING`` need no retry. An ``UNKNOWN`` outcome must be settled by a
status query before the charge is sent again; this policy only says whether and when to try.

Waits use full jitter (AWS, "Exponential Backoff And Jitter"): uniformly random between zero
and the exponential ceiling, so workers that failed together do not retry together. The
random source is injected so tests are exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from commands.payments.ports import CallOutcome

RETRYABLE_OUTCOMES = frozenset({CallOutcome.ERROR, CallOutcome.UNKNOWN})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``max_attempts`` calls in all (the first one included); the wait before
    attempt ``n + 1`` is ``delay(n, rng)`` seconds."""

    max_attempts: int
    base_delay_s: float
    max_delay_s: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ValueError("max_attempts must be an integer >= 1")
        if not self.base_delay_s >= 0:
            raise ValueError("base_delay_s must be >= 0")
        if not self.max_delay_s >= self.base_delay_s:
            raise ValueError("max_delay_s must be >= base_delay_s")
        if not self.multiplier >= 1:
            raise ValueError("multiplier must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after attempt ``attempt`` (1-based):
        ``min(max_delay_s, base_delay_s * multiplier ** (attempt - 1))``."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        if self.base_delay_s == 0:
            return 0.0
        try:
            raw = self.base_delay_s * self.multiplier ** (attempt - 1)
        except OverflowError:  # a huge attempt number: the cap holds
            return self.max_delay_s
        return min(self.max_delay_s, raw)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after attempt ``attempt`` failed: uniform in [0, ceiling]."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def should_retry(self, outcome: CallOutcome, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based), which came to ``outcome``, may be followed
        by another: only for ``ERROR`` and ``UNKNOWN``, and only below ``max_attempts``."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        return outcome in RETRYABLE_OUTCOMES and attempt < self.max_attempts

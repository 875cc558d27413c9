"""Circuit breakers: one per provider, so a failing provider is skipped instead of called.

States (``state`` is evaluated against the clock on every read)::

    closed --(failure rate >= threshold over >= min_calls calls in the window)--> open
    open --(open_for_s elapsed)--> half_open
    half_open --(a probe succeeds)--> closed (window cleared)
    half_open --(a probe fails)--> open (for open_for_s again)

``allow()`` reserves a call slot: always granted while closed, never while open, and while
half-open only as long as fewer than ``half_open_probes`` probes are in flight. A probe
slot is given back by the ``record_*`` call that reports its result; a caller that reserved
a slot and then did not call the provider gives it back with ``release()``. A slot that is
never given back (a crashed worker) lapses after ``probe_timeout_s``, so a half-open
breaker can never be wedged shut.

What counts as a failure: the provider did not work. Callers record a **success** for
``OK``, ``PENDING``, ``DECLINED`` and ``REJECTED`` (a decline or a rejection is a definite
answer: the provider worked, the payment did not), and a **failure** for ``ERROR`` and
``UNKNOWN``. ``record_outcome`` applies that rule.

Time is injected (``clock``: seconds, monotonic by default) so tests are exact. Every
breaker is thread-safe: the engine's workers call it from several threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from commands.payments.ports import CallOutcome

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

Clock = Callable[[], float]

# A provider that answered, even with a refusal, is healthy.
FAILURE_OUTCOMES = frozenset({CallOutcome.ERROR, CallOutcome.UNKNOWN})


def is_failure(outcome: CallOutcome) -> bool:
    """Whether ``outcome`` counts against the provider's health (``ERROR``, ``UNKNOWN``)."""
    return outcome in FAILURE_OUTCOMES


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Shared by every breaker of a board.

    ``failure_rate_threshold`` is a fraction in (0, 1]: the breaker opens when at least
    ``min_calls`` calls happened in the last ``window_s`` seconds and at least that fraction
    failed. ``max_samples`` bounds the memory of one window under heavy load (the oldest
    calls are dropped first).
    """

    window_s: float = 30.0
    min_calls: int = 10
    failure_rate_threshold: float = 0.5
    open_for_s: float = 30.0
    half_open_probes: int = 1
    probe_timeout_s: float = 30.0
    max_samples: int = 10_000

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError("window_s must be > 0")
        if self.min_calls < 1:
            raise ValueError("min_calls must be >= 1")
        if not 0 < self.failure_rate_threshold <= 1:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if not self.open_for_s >= 0:
            raise ValueError("open_for_s must be >= 0")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be >= 1")
        if not self.probe_timeout_s > 0:
            raise ValueError("probe_timeout_s must be > 0")
        if self.max_samples < self.min_calls:
            raise ValueError("max_samples must be >= min_calls")


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of a provider's breaker, for logs and a payment's timeline.

    ``at`` is the board's clock reading; ``seq`` numbers the changes of one board from 1.
    """

    seq: int
    provider: str
    from_state: str
    to_state: str
    at: float
    reason: str

    def describe(self) -> str:
        return f"breaker {self.provider}: {self.from_state} -> {self.to_state} ({self.reason})"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state and its window's statistics at ``at``.

    ``success_rate`` and ``p99_latency_ms`` are None when no call is in the window.
    """

    provider: str
    state: str
    calls: int
    failures: int
    success_rate: float | None
    p99_latency_ms: float | None
    opened_at: float | None
    probes_in_flight: int
    at: float


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    ok: bool
    latency_ms: float


def p99(latencies: list[float]) -> float | None:
    """The 99th percentile by nearest rank (None for no values)."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class CircuitBreaker:
    """The breaker of one provider (see the module's docstring)."""

    def __init__(
        self,
        provider: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[str, str, str, float, str], None] | None = None,
    ) -> None:
        """``on_change(provider, from_state, to_state, at, reason)`` is called on every
        transition, while the breaker's lock is held: it must not call back into it."""
        self.provider = provider
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._opened_at: float | None = None
        self._samples: deque[_Sample] = deque()
        self._failures = 0  # failures among _samples
        self._probes: list[float] = []  # reservation times of half-open probes in flight

    # ---- public API -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``, as of now."""
        with self._lock:
            return self._advance(self._clock())

    def allow(self) -> bool:
        """Reserve a call slot: False while open, or half-open with every probe slot taken."""
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            if state == CLOSED:
                return True
            if state == OPEN:
                return False
            self._expire_probes(now)
            if len(self._probes) >= self.config.half_open_probes:
                return False
            self._probes.append(now)
            return True

    def release(self) -> None:
        """Give back a slot ``allow()`` reserved for a call that was never made."""
        with self._lock:
            if self._probes:
                self._probes.pop(0)

    def record_success(self, latency_ms: float) -> None:
        """The provider answered (``OK``, ``PENDING``, ``DECLINED``, ``REJECTED``)."""
        self._record(True, latency_ms)

    def record_failure(self, latency_ms: float) -> None:
        """The provider did not answer usefully (``ERROR``, ``UNKNOWN``)."""
        self._record(False, latency_ms)

    def record_outcome(self, outcome: CallOutcome, latency_ms: float) -> None:
        """Record a call by its classified outcome (declines and rejections are successes)."""
        self._record(not is_failure(outcome), latency_ms)

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            self._prune(now)
            if state == HALF_OPEN:
                self._expire_probes(now)
            calls = len(self._samples)
            return BreakerSnapshot(
                provider=self.provider,
                state=state,
                calls=calls,
                failures=self._failures,
                success_rate=(calls - self._failures) / calls if calls else None,
                p99_latency_ms=p99([s.latency_ms for s in self._samples]),
                opened_at=self._opened_at,
                probes_in_flight=len(self._probes),
                at=now,
            )

    # ---- internals (called with the lock held) ----------------------------------------------

    def _record(self, ok: bool, latency_ms: float) -> None:
        with self._lock:
            now = self._clock()
            state = self._advance(now)
            self._add(_Sample(now, ok, float(latency_ms)))
            if state == HALF_OPEN:
                # Any answer while half-open is a probe's: calls that started before the
                # breaker opened tell as much about the provider as a probe does.
                if self._probes:
                    self._probes.pop(0)
                if ok:
                    self._samples.clear()
                    self._failures = 0
                    self._probes.clear()
                    self._opened_at = None
                    self._move(HALF_OPEN, CLOSED, now, "probe succeeded")
                else:
                    self._open(HALF_OPEN, now, "probe failed")
            elif state == CLOSED:
                self._prune(now)
                calls = len(self._samples)
                cfg = self.config
                if calls >= cfg.min_calls and self._failures / calls >= cfg.failure_rate_threshold:
                    reason = (
                        f"{self._failures} of {calls} calls failed in {cfg.window_s:g} s "
                        f"(threshold {cfg.failure_rate_threshold:.0%})"
                    )
                    self._open(CLOSED, now, reason)
            # While open, a late answer of a call made before it opened changes nothing.

    def _advance(self, now: float) -> str:
        if (
            self._state == OPEN
            and self._opened_at is not None
            and now >= self._opened_at + self.config.open_for_s
        ):
            self._probes.clear()
            self._move(OPEN, HALF_OPEN, now, f"open for {self.config.open_for_s:g} s")
        return self._state

    def _open(self, from_state: str, now: float, reason: str) -> None:
        self._opened_at = now
        self._probes.clear()
        self._move(from_state, OPEN, now, reason)

    def _move(self, from_state: str, to_state: str, now: float, reason: str) -> None:
        self._state = to_state
        if self._on_change is not None:
            self._on_change(self.provider, from_state, to_state, now, reason)

    def _add(self, sample: _Sample) -> None:
        self._samples.append(sample)
        if not sample.ok:
            self._failures += 1
        while len(self._samples) > self.config.max_samples:
            self._drop_oldest()

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._samples and self._samples[0].at <= horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        if not self._samples.popleft().ok:
            self._failures -= 1

    def _expire_probes(self, now: float) -> None:
        limit = now - self.config.probe_timeout_s
        self._probes = [at for at in self._probes if at > limit]


class BreakerBoard:
    """One breaker per provider name, created on first use, all with the same config; and
    the last ``max_changes`` state changes of all of them, numbered, for the timeline.

    ``record(provider, ok, latency_ms)`` is the processor's ``HealthPort``.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        max_changes: int = 1000,
    ) -> None:
        if max_changes < 1:
            raise ValueError("max_changes must be >= 1")
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._changes: deque[StateChange] = deque(maxlen=max_changes)
        self._seq = 0

    def breaker(self, provider: str) -> CircuitBreaker:
        with self._lock:
            found = self._breakers.get(provider)
            if found is None:
                found = CircuitBreaker(
                    provider, self.config, clock=self._clock, on_change=self._changed
                )
                self._breakers[provider] = found
            return found

    def __iter__(self) -> Iterator[CircuitBreaker]:
        with self._lock:
            return iter(list(self._breakers.values()))

    def allow(self, provider: str) -> bool:
        return self.breaker(provider).allow()

    def release(self, provider: str) -> None:
        self.breaker(provider).release()

    def state(self, provider: str) -> str:
        return self.breaker(provider).state

    def record(self, provider: str, ok: bool, latency_ms: float) -> None:
        """Record a call: ``ok`` False only for ``ERROR`` and ``UNKNOWN`` outcomes."""
        b = self.breaker(provider)
        if ok:
            b.record_success(latency_ms)
        else:
            b.record_failure(latency_ms)

    def record_outcome(self, provider: str, outcome: CallOutcome, latency_ms: float) -> None:
        self.breaker(provider).record_outcome(outcome, latency_ms)

    def snapshots(self) -> dict[str, BreakerSnapshot]:
        return {b.provider: b.snapshot() for b in self}

    def changes(self, since: int = 0) -> list[StateChange]:
        """The kept state changes with ``seq > since``, oldest first."""
        with self._lock:
            return [c for c in self._changes if c.seq > since]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def _changed(
        self, provider: str, from_state: str, to_state: str, at: float, reason: str
    ) -> None:
        # Called under the breaker's lock; takes only the board's, which is never held
        # while calling into a breaker, so the two cannot deadlock.
        with self._lock:
            self._seq += 1
            self._changes.append(StateChange(self._seq, provider, from_state, to_state, at, reason))

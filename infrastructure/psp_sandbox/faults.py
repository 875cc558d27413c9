"""Fault injection, set per provider through the admin API; seeded so tests are deterministic."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    """What goes wrong at one provider. Rates are probabilities per money call (0..1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    http_5xx_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_after_charge_rate: float = Field(default=0.0, ge=0, le=1)
    drop_response_rate: float = Field(default=0.0, ge=0, le=1)
    duplicate_webhook_rate: float = Field(default=0.0, ge=0, le=1)
    out_of_order_webhooks: bool = False
    decline_rate: float = Field(default=0.0, ge=0, le=1)
    dispute_next_capture: bool = False
    seed: int | None = None
    hang_ms: int = Field(
        default=15_000, ge=0, le=300_000, description="How long a timed-out answer hangs."
    )
    reorder_window_ms: int = Field(
        default=300, ge=1, le=60_000, description="Webhooks held together, then sent reversed."
    )


@dataclass(frozen=True, slots=True)
class Draw:
    """The fate of one money call, decided up front (always the same number of draws)."""

    http_5xx: bool = False
    error: bool = False
    decline: bool = False
    timeout_after_charge: bool = False
    drop_response: bool = False


class FaultState:
    """One provider's faults and random streams: one for calls, one for webhooks."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        # Not for security: reproducible fault sequences.
        self._calls = random.Random(faults.seed)  # noqa: S311
        self._hooks = random.Random(None if faults.seed is None else faults.seed + 1)  # noqa: S311

    def draw(self) -> Draw:
        f, r = self.faults, self._calls
        rolls = [r.random() for _ in range(5)]
        return Draw(
            http_5xx=rolls[0] < f.http_5xx_rate,
            error=rolls[1] < f.error_rate,
            decline=rolls[2] < f.decline_rate,
            timeout_after_charge=rolls[3] < f.timeout_after_charge_rate,
            drop_response=rolls[4] < f.drop_response_rate,
        )

    def duplicate_webhook(self) -> bool:
        return self._hooks.random() < self.faults.duplicate_webhook_rate

    def take_dispute(self) -> bool:
        """True once after ``dispute_next_capture`` was set."""
        if not self.faults.dispute_next_capture:
            return False
        self.faults = self.faults.model_copy(update={"dispute_next_capture": False})
        return True

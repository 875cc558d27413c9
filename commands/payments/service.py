"""What the command API needs of payments: the processor and the providers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from commands.payments.breaker import BreakerBoard
from commands.payments.ports import PaymentProvider
from commands.payments.processor import PaymentProcessor
from domain.errors import ValidationError
from domain.payment import METHODS


class DeadLetterAdmin(Protocol):
    """The dead-letter list as an admin sees it."""

    def list_open(self, limit: int) -> list[dict[str, Any]]: ...

    def replay(self, letter_id: int) -> dict[str, Any] | None: ...


@dataclass
class PaymentServices:
    processor: PaymentProcessor
    providers: Mapping[str, PaymentProvider]
    dead_letters: DeadLetterAdmin | None = None
    board: BreakerBoard | None = None  # the providers' circuit breakers, for health

    def payout_provider(self, currency: str, requested: str | None) -> str:
        """The provider a pay-out goes through: the one asked for, else the first
        configured provider that handles the currency."""
        if requested is not None:
            if requested not in self.providers:
                raise ValidationError(f"unknown provider {requested!r}")
            return requested
        for name, provider in self.providers.items():
            if any(provider.supports(method, currency) for method in METHODS):
                return name
        raise ValidationError(f"no provider pays out in {currency}")

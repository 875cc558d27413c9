"""The Payout aggregate: a merchant withdraws money to a bank account through a provider.

States: ``requested -> processing -> paid | failed`` (``requested -> paid | failed`` when the
provider answers at once). The amount is held on the merchant's wallet from the request
(a pending transfer, see ``domain/payment_ledger.py``) and posted when the provider pays it
out, or released when it fails. Like a payment's, the provider's updates may arrive twice
or late: ``apply_update`` ignores them once the payout is settled.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.context import CommandContext
from domain.errors import CardNumberRejected, PaymentStateError, ValidationError
from domain.money import Money
from domain.pan import find_pan

REQUESTED = "requested"
PROCESSING = "processing"
PAID = "paid"
FAILED = "failed"
SETTLED = frozenset({PAID, FAILED})

UPDATE_PAID = "paid"
UPDATE_FAILED = "failed"
DESTINATION_FIELDS = ("account_number", "bank_code", "account_name")


class Payout(Aggregate):
    class Event(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class Created(Event, Aggregate.Created):
        merchant_id: str
        wallet_id: str
        transfer_id: str
        fingerprint: str
        amount: int
        currency: str
        provider: str
        destination: dict[str, str]
        metadata: dict[str, Any]

    class ProviderCalled(Event):
        operation: str
        provider: str
        attempt_number: int
        outcome: str
        latency_ms: float
        code: str
        detail: str
        decision: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payout)
            aggregate.calls += 1
            if aggregate.status == REQUESTED and self.outcome in ("pending", "unknown"):
                aggregate.status = PROCESSING

    class Paid(Event):
        fee: int
        provider_event_id: str | None
        provider_ref: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payout)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = PAID
            aggregate.fee = self.fee
            aggregate.provider_ref = self.provider_ref or aggregate.provider_ref

    class Failed(Event):
        reason: str
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payout)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = FAILED
            aggregate.failure_reason = self.reason

    @event(Created)
    def __init__(
        self,
        merchant_id: str,
        wallet_id: str,
        transfer_id: str,
        fingerprint: str,
        amount: int,
        currency: str,
        provider: str,
        destination: dict[str, str],
        metadata: dict[str, Any],
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.wallet_id = wallet_id
        self.transfer_id = transfer_id
        self.fingerprint = fingerprint
        self.amount = amount
        self.currency = currency
        self.provider = provider
        self.destination = destination
        self.metadata = metadata
        self.status = REQUESTED
        self.fee = 0
        self.calls = 0
        self.provider_ref: str | None = None
        self.failure_reason: str | None = None
        self.provider_event_ids: set[str] = set()

    @classmethod
    def create(
        cls,
        payout_id: UUID,
        *,
        merchant_id: str,
        wallet_id: str,
        transfer_id: str,
        amount: Money,
        provider: str,
        destination: dict[str, str],
        metadata: dict[str, Any],
        fingerprint: str,
        ctx: CommandContext,
    ) -> Payout:
        amount.require_positive()
        if not provider:
            raise ValidationError("provider is required")
        unknown = set(destination) - set(DESTINATION_FIELDS)
        if unknown:
            raise ValidationError(f"destination has unknown fields: {', '.join(sorted(unknown))}")
        for name in ("account_number", "bank_code"):
            value = destination.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > 64:
                raise ValidationError(f"destination.{name} is required (at most 64 characters)")
        where = find_pan(destination, root="destination") or find_pan(metadata, root="metadata")
        if where is not None:
            raise CardNumberRejected(f"{where} holds a card number")
        return cls._create(
            cls.Created,
            id=payout_id,
            merchant_id=merchant_id,
            wallet_id=wallet_id,
            transfer_id=transfer_id,
            fingerprint=fingerprint,
            amount=amount.minor,
            currency=amount.currency.code,
            provider=provider,
            destination=dict(destination),
            metadata=metadata,
            **ctx.stamp(),
        )

    @property
    def settled(self) -> bool:
        return self.status in SETTLED

    def money(self, minor: int) -> Money:
        return Money.of(minor, self.currency)

    def record_provider_call(
        self,
        *,
        outcome: str,
        latency_ms: float,
        ctx: CommandContext,
        code: str = "",
        detail: str = "",
        decision: str = "",
    ) -> None:
        self.trigger_event(
            self.ProviderCalled,
            operation="payout",
            provider=self.provider,
            attempt_number=self.calls + 1,
            outcome=outcome,
            latency_ms=round(float(latency_ms), 3),
            code=code[:100],
            detail=detail[:500],
            decision=decision[:500],
            **ctx.stamp(),
        )

    def apply_update(
        self,
        status: str,
        ctx: CommandContext,
        *,
        provider_event_id: str | None = None,
        provider_ref: str | None = None,
        fee: int = 0,
        reason: str = "",
    ) -> bool:
        """Record the provider's ``paid`` or ``failed``; answers whether it changed anything
        (a duplicate or a late update of a settled payout changes nothing)."""
        key = f"{self.provider}:{provider_event_id}" if provider_event_id else None
        if self.settled or (key is not None and key in self.provider_event_ids):
            return False
        if status == UPDATE_PAID:
            if type(fee) is not int or fee < 0:
                raise ValidationError("fee must be zero or positive")
            self.trigger_event(
                self.Paid, fee=fee, provider_event_id=key, provider_ref=provider_ref, **ctx.stamp()
            )
        elif status == UPDATE_FAILED:
            self.trigger_event(
                self.Failed, reason=reason or "failed", provider_event_id=key, **ctx.stamp()
            )
        else:
            raise PaymentStateError(f"unknown payout update {status!r}")
        return True


def _seen(payout: Payout, key: str | None) -> None:
    if key is not None:
        payout.provider_event_ids.add(key)

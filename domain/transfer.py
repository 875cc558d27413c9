"""The Transfer aggregate: one journal entry (debit one account, credit another).

A transfer is either posted at once, or pending (two-phase): it holds funds on the debit
wallet until it is posted (fully or partially), voided, or expires.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.context import CommandContext
from domain.direct_events import DirectEvents
from domain.errors import InvalidAmount, PostExceedsPending, TransferExpired, TransferNotPending
from domain.money import Money

PENDING = "pending"
POSTED = "posted"
VOIDED = "voided"
EXPIRED = "expired"

# kinds
TRANSFER = "transfer"
DEPOSIT = "deposit"
WITHDRAWAL = "withdrawal"


class Transfer(DirectEvents, Aggregate):
    """A balanced movement of ``amount`` from ``debit_account_id`` to ``credit_account_id``."""

    class Event(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class Created(Event, Aggregate.Created):
        merchant_id: str
        kind: str
        debit_account_id: str
        credit_account_id: str
        amount: int
        currency: str
        pending: bool
        expires_at: datetime | None
        metadata: dict[str, Any]

    class Posted(Event):
        """The journal entry for ``amount`` is now posted; any rest of the hold is released."""

        amount: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Transfer)
            aggregate.status = POSTED
            aggregate.posted_amount = self.amount

    class Voided(Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Transfer)
            aggregate.status = VOIDED

    class Expired(Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Transfer)
            aggregate.status = EXPIRED

    @event(Created)
    def __init__(
        self,
        merchant_id: str,
        kind: str,
        debit_account_id: str,
        credit_account_id: str,
        amount: int,
        currency: str,
        pending: bool,
        expires_at: datetime | None,
        metadata: dict[str, Any],
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.kind = kind
        self.debit_account_id = debit_account_id
        self.credit_account_id = credit_account_id
        self.amount = amount
        self.currency = currency
        self.pending = pending
        self.expires_at = expires_at
        self.metadata = metadata
        self.status = PENDING if pending else POSTED
        self.posted_amount = 0 if pending else amount

    @classmethod
    def create(
        cls,
        transfer_id: UUID,
        *,
        merchant_id: str,
        kind: str,
        debit_account_id: str,
        credit_account_id: str,
        amount: Money,
        pending: bool,
        expires_at: datetime | None,
        metadata: dict[str, Any],
        ctx: CommandContext,
    ) -> Transfer:
        return cls._create(
            cls.Created,
            id=transfer_id,
            merchant_id=merchant_id,
            kind=kind,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount=amount.minor,
            currency=amount.currency.code,
            pending=pending,
            expires_at=expires_at,
            metadata=metadata,
            **ctx.stamp(),
        )

    def money(self, minor: int) -> Money:
        return Money.of(minor, self.currency)

    def is_expired_at(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def require_pending(self, now: datetime) -> None:
        """Guard for post and void: pending, and not past its expiry at command time."""
        if self.status == EXPIRED:
            # Whether the sweeper has released the hold yet must not change the answer.
            at = self.expires_at.isoformat() if self.expires_at else "its expiry"
            raise TransferExpired(f"transfer {self.id} expired at {at}")
        if self.status != PENDING:
            raise TransferNotPending(f"transfer {self.id} is {self.status}, not pending")
        if self.expires_at is not None and now >= self.expires_at:
            raise TransferExpired(f"transfer {self.id} expired at {self.expires_at.isoformat()}")

    def require_postable(self, amount: Money, now: datetime) -> None:
        self.require_pending(now)
        if amount.minor <= 0:
            raise InvalidAmount("amount must be greater than zero")
        if amount.minor > self.amount:
            raise PostExceedsPending(
                f"cannot post {amount.format()}: only {self.money(self.amount).format()} "
                f"{self.currency} is pending"
            )

    def post(self, amount: Money, ctx: CommandContext) -> None:
        self.trigger_event(self.Posted, amount=amount.minor, **ctx.stamp())

    def void(self, ctx: CommandContext) -> None:
        self.trigger_event(self.Voided, **ctx.stamp())

    def expire(self, ctx: CommandContext) -> None:
        if self.status != PENDING:
            raise TransferNotPending(f"transfer {self.id} is {self.status}, not pending")
        if not self.is_expired_at(ctx.now):
            raise TransferNotPending(f"transfer {self.id} has not expired yet")
        self.trigger_event(self.Expired, **ctx.stamp())

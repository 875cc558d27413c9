"""The Wallet aggregate: one double-entry account of one merchant in one currency."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.context import CommandContext
from domain.direct_events import DirectEvents
from domain.errors import (
    BalanceOverflow,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidWalletState,
    ValidationError,
    WalletClosed,
    WalletFrozen,
    WalletNotEmpty,
)
from domain.money import MAX_BALANCE, Currency, Money

ACTIVE = "active"
FROZEN = "frozen"
CLOSED = "closed"


class Wallet(DirectEvents, Aggregate):
    """A merchant's account. Balances are integer minor units of ``currency``.

    ``posted`` is settled money; ``pending`` is held for pending transfers;
    ``available = posted - pending + credit_limit`` may never go below zero.
    """

    class Event(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class Opened(Event, Aggregate.Created):
        merchant_id: str
        currency: str
        credit_limit: int
        metadata: dict[str, Any]

    class Debited(Event):
        """Money left the wallet (one side of a journal entry)."""

        transfer_id: str
        amount: int
        counterparty_id: str
        kind: str
        posted_after: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.posted = self.posted_after

    class Credited(Event):
        """Money entered the wallet (one side of a journal entry)."""

        transfer_id: str
        amount: int
        counterparty_id: str
        kind: str
        posted_after: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.posted = self.posted_after

    class HoldPlaced(Event):
        transfer_id: str
        amount: int
        pending_after: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.pending = self.pending_after

    class HoldReleased(Event):
        """A hold ended: ``reason`` is posted, voided or expired."""

        transfer_id: str
        amount: int
        reason: str
        pending_after: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.pending = self.pending_after

    class Frozen(Event):
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.status = FROZEN

    class Unfrozen(Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.status = ACTIVE

    class Closed(Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Wallet)
            aggregate.status = CLOSED

    @event(Opened)
    def __init__(
        self,
        merchant_id: str,
        currency: str,
        credit_limit: int,
        metadata: dict[str, Any],
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.currency = currency
        self.credit_limit = credit_limit
        self.metadata = metadata
        self.posted = 0
        self.pending = 0
        self.status = ACTIVE

    @classmethod
    def open(
        cls,
        wallet_id: UUID,
        merchant_id: str,
        currency: Currency,
        credit_limit: int,
        metadata: dict[str, Any],
        ctx: CommandContext,
    ) -> Wallet:
        if type(credit_limit) is not int or credit_limit < 0:
            raise ValidationError("credit_limit must be zero or a positive amount")
        if credit_limit > MAX_BALANCE:
            raise ValidationError("credit_limit is too large")
        if not merchant_id:
            raise ValidationError("merchant_id is required")
        return cls._create(
            cls.Opened,
            id=wallet_id,
            merchant_id=merchant_id,
            currency=currency.code,
            credit_limit=credit_limit,
            metadata=metadata,
            **ctx.stamp(),
        )

    # ---- derived state -------------------------------------------------------------

    @property
    def available(self) -> int:
        return self.posted - self.pending + self.credit_limit

    def money(self, minor: int) -> Money:
        return Money.of(minor, self.currency)

    # ---- guards (no mutation) ------------------------------------------------------

    def require_currency(self, amount: Money) -> None:
        if amount.currency.code != self.currency:
            raise CurrencyMismatch(
                f"wallet {self.id} holds {self.currency}, the amount is {amount.currency.code}"
            )

    def require_active(self) -> None:
        if self.status == FROZEN:
            raise WalletFrozen(f"wallet {self.id} is frozen")
        if self.status == CLOSED:
            raise WalletClosed(f"wallet {self.id} is closed")

    def require_can_debit(self, amount: Money) -> None:
        self.require_currency(amount)
        self.require_active()
        if amount.minor > self.available:
            raise InsufficientFunds(
                f"wallet {self.id} has {self.money(self.available).format()} {self.currency} "
                f"available, {amount.format()} requested"
            )

    def require_can_credit(self, amount: Money) -> None:
        self.require_currency(amount)
        self.require_active()
        if self.posted + amount.minor > MAX_BALANCE:
            raise BalanceOverflow(f"wallet {self.id} balance would exceed the maximum")

    # ---- commands (call the guard first; these assume it passed) -------------------

    def debit(
        self, transfer_id: str, amount: Money, counterparty_id: str, kind: str, ctx: CommandContext
    ) -> None:
        self.trigger_event(
            self.Debited,
            transfer_id=transfer_id,
            amount=amount.minor,
            counterparty_id=counterparty_id,
            kind=kind,
            posted_after=self.posted - amount.minor,
            **ctx.stamp(),
        )

    def credit(
        self, transfer_id: str, amount: Money, counterparty_id: str, kind: str, ctx: CommandContext
    ) -> None:
        self.trigger_event(
            self.Credited,
            transfer_id=transfer_id,
            amount=amount.minor,
            counterparty_id=counterparty_id,
            kind=kind,
            posted_after=self.posted + amount.minor,
            **ctx.stamp(),
        )

    def place_hold(self, transfer_id: str, amount: Money, ctx: CommandContext) -> None:
        self.trigger_event(
            self.HoldPlaced,
            transfer_id=transfer_id,
            amount=amount.minor,
            pending_after=self.pending + amount.minor,
            **ctx.stamp(),
        )

    def release_hold(
        self, transfer_id: str, amount: Money, reason: str, ctx: CommandContext
    ) -> None:
        self.trigger_event(
            self.HoldReleased,
            transfer_id=transfer_id,
            amount=amount.minor,
            reason=reason,
            pending_after=self.pending - amount.minor,
            **ctx.stamp(),
        )

    def freeze(self, reason: str, ctx: CommandContext) -> None:
        if self.status != ACTIVE:
            raise InvalidWalletState(f"wallet {self.id} is {self.status}, not active")
        self.trigger_event(self.Frozen, reason=reason, **ctx.stamp())

    def unfreeze(self, ctx: CommandContext) -> None:
        if self.status != FROZEN:
            raise InvalidWalletState(f"wallet {self.id} is {self.status}, not frozen")
        self.trigger_event(self.Unfrozen, **ctx.stamp())

    def close(self, ctx: CommandContext) -> None:
        if self.status == CLOSED:
            raise WalletClosed(f"wallet {self.id} is already closed")
        if self.posted != 0 or self.pending != 0:
            raise WalletNotEmpty(
                f"wallet {self.id} can be closed only at zero balance "
                f"(posted {self.money(self.posted).format()}, "
                f"pending {self.money(self.pending).format()})"
            )
        self.trigger_event(self.Closed, **ctx.stamp())

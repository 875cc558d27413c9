"""Projectors: turn domain events into read-model rows. Pure; no I/O of their own.

Each projector owns one read model (table). The runner feeds events in position order,
in batches, and commits the rows together with the tracking position.
"""

from __future__ import annotations

from typing import Any, Protocol

from domain.ledger import world_account_id
from domain.transfer import EXPIRED, POSTED, VOIDED, Transfer
from domain.wallet import ACTIVE, CLOSED, FROZEN, Wallet
from projections.payments import payment_projectors
from projections.ports import (
    BalancesWriter,
    StatementEntry,
    StatementsWriter,
    TransferChange,
    TransferRow,
    TransfersWriter,
    WalletChange,
    WalletRow,
)
from projections.schedules import schedule_projectors


class Projector(Protocol):
    """``name`` is public (CLI, tracking); ``process`` writes through ``writer``.

    ``consumes`` names the event classes (with their subclasses) ``process`` may write
    for: the runner does not decode, nor hand the projector, any other event.
    """

    name: str
    consumes: tuple[type, ...]

    def process(self, event: Any, position: int, writer: Any) -> None: ...


class BalancesProjector:
    """Wallet balances (posted, pending, available) and status; ``world`` per currency."""

    name = "balances"
    consumes: tuple[type, ...] = (Wallet.Event,)

    def process(self, event: Any, position: int, writer: BalancesWriter) -> None:
        wid = str(event.originator_id)
        at = event.timestamp
        version = event.originator_version
        if isinstance(event, Wallet.Opened):
            writer.wallet_opened(
                WalletRow(
                    wallet_id=wid,
                    merchant_id=event.merchant_id,
                    currency=event.currency,
                    credit_limit=event.credit_limit,
                    metadata=event.metadata,
                    is_system=False,
                    opened_at=at,
                    position=position,
                )
            )
        elif isinstance(event, Wallet.Debited | Wallet.Credited):
            writer.wallet_changed(
                WalletChange(wid, position, at, version, posted=event.posted_after)
            )
            world_currency = self._world_currency(event)
            if world_currency is not None:
                # The world account mirrors the wallet side: a deposit credits the wallet
                # and debits world, so world moves by the opposite amount.
                delta = -event.amount if isinstance(event, Wallet.Credited) else event.amount
                writer.ensure_world(event.counterparty_id, world_currency, at, position)
                writer.wallet_changed(
                    WalletChange(event.counterparty_id, position, at, world_delta=delta)
                )
        elif isinstance(event, Wallet.HoldPlaced | Wallet.HoldReleased):
            writer.wallet_changed(
                WalletChange(wid, position, at, version, pending=event.pending_after)
            )
        elif isinstance(event, Wallet.Frozen):
            writer.wallet_changed(WalletChange(wid, position, at, version, status=FROZEN))
        elif isinstance(event, Wallet.Unfrozen):
            writer.wallet_changed(WalletChange(wid, position, at, version, status=ACTIVE))
        elif isinstance(event, Wallet.Closed):
            writer.wallet_changed(WalletChange(wid, position, at, version, status=CLOSED))

    @staticmethod
    def _world_currency(event: Wallet.Debited | Wallet.Credited) -> str | None:
        # The event does not name its currency; the world id encodes it, so test the
        # currencies this event could be in by id. Cheap: ids are derived, not looked up.
        return _WORLD_IDS.currency_of(event.counterparty_id)


class _WorldIds:
    def __init__(self) -> None:
        from domain.currencies import MINOR_UNITS

        self._by_id = {str(world_account_id(code)): code for code in MINOR_UNITS}

    def currency_of(self, account_id: str) -> str | None:
        return self._by_id.get(account_id)


_WORLD_IDS = _WorldIds()


def world_currency_of(account_id: str) -> str | None:
    """The currency if ``account_id`` is a ``world`` account, else None."""
    return _WORLD_IDS.currency_of(account_id)


class StatementsProjector:
    """Every posting of every wallet, with the posted balance after it."""

    name = "statements"
    consumes: tuple[type, ...] = (Wallet.Debited, Wallet.Credited)

    def process(self, event: Any, position: int, writer: StatementsWriter) -> None:
        if isinstance(event, Wallet.Debited | Wallet.Credited):
            sign = 1 if isinstance(event, Wallet.Credited) else -1
            writer.add_entry(
                StatementEntry(
                    wallet_id=str(event.originator_id),
                    position=position,
                    transfer_id=event.transfer_id,
                    kind=event.kind,
                    amount=sign * event.amount,
                    posted_after=event.posted_after,
                    counterparty_id=event.counterparty_id,
                    at=event.timestamp,
                )
            )


class TransfersProjector:
    """Transfers with their status (pending, posted, voided, expired)."""

    name = "transfers"
    consumes: tuple[type, ...] = (
        Transfer.Created,
        Transfer.Posted,
        Transfer.Voided,
        Transfer.Expired,
    )

    def process(self, event: Any, position: int, writer: TransfersWriter) -> None:
        tid = str(event.originator_id)
        if isinstance(event, Transfer.Created):
            writer.transfer_created(
                TransferRow(
                    transfer_id=tid,
                    merchant_id=event.merchant_id,
                    kind=event.kind,
                    debit_account_id=event.debit_account_id,
                    credit_account_id=event.credit_account_id,
                    amount=event.amount,
                    currency=event.currency,
                    status="pending" if event.pending else POSTED,
                    posted_amount=0 if event.pending else event.amount,
                    pending=event.pending,
                    expires_at=event.expires_at,
                    metadata=event.metadata,
                    created_at=event.timestamp,
                    position=position,
                )
            )
        elif isinstance(event, Transfer.Posted):
            writer.transfer_changed(
                TransferChange(tid, POSTED, event.amount, event.timestamp, position)
            )
        elif isinstance(event, Transfer.Voided):
            writer.transfer_changed(TransferChange(tid, VOIDED, None, event.timestamp, position))
        elif isinstance(event, Transfer.Expired):
            writer.transfer_changed(TransferChange(tid, EXPIRED, None, event.timestamp, position))


def all_projectors() -> list[Any]:
    return [
        BalancesProjector(),
        StatementsProjector(),
        TransfersProjector(),
        *payment_projectors(),
        *schedule_projectors(),
    ]

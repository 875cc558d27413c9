"""Projector of pay-outs: each pay-out's current state (``payouts`` -> ``rm_payouts``),
its bank account masked. Pure; it folds events into rows through a ``folds.RowWriter``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain import payout as po
from domain.payout import Payout
from projections.folds import RowWriter


@dataclass(frozen=True, slots=True)
class PayoutRow:
    payout_id: str
    merchant_id: str
    wallet_id: str
    transfer_id: str
    amount: int
    currency: str
    provider: str
    provider_ref: str | None
    status: str
    fee: int
    calls: int
    last_call_outcome: str | None
    failure_reason: str | None
    destination: dict[str, str | None]  # masked: account_number_last4, bank_code, account_name
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_position: int
    position: int
    version: int


def masked_destination(destination: dict[str, str]) -> dict[str, str | None]:
    """A pay-out's bank account as a read model may keep it: never the whole number."""
    account = destination.get("account_number") or ""
    return {
        "account_number_last4": account[-4:] or None,
        "bank_code": destination.get("bank_code"),
        "account_name": destination.get("account_name"),
    }


def evolve_payout(row: PayoutRow | None, event: Any, position: int) -> PayoutRow | None:
    """``row`` after ``event``; mirrors each event's ``apply`` in ``domain.payout``."""
    if row is not None and position <= row.position:
        return row
    if isinstance(event, Payout.Created):
        return PayoutRow(
            payout_id=str(event.originator_id),
            merchant_id=event.merchant_id,
            wallet_id=event.wallet_id,
            transfer_id=event.transfer_id,
            amount=event.amount,
            currency=event.currency,
            provider=event.provider,
            provider_ref=None,
            status=po.REQUESTED,
            fee=0,
            calls=0,
            last_call_outcome=None,
            failure_reason=None,
            destination=masked_destination(event.destination),
            metadata=dict(event.metadata),
            created_at=event.timestamp,
            updated_at=event.timestamp,
            created_position=position,
            position=position,
            version=event.originator_version,
        )
    if row is None:
        return None
    row = replace(
        row, updated_at=event.timestamp, position=position, version=event.originator_version
    )
    if isinstance(event, Payout.ProviderCalled):
        moving = row.status == po.REQUESTED and event.outcome in ("pending", "unknown")
        return replace(
            row,
            calls=row.calls + 1,
            last_call_outcome=event.outcome,
            status=po.PROCESSING if moving else row.status,
        )
    if isinstance(event, Payout.Paid):
        return replace(
            row,
            status=po.PAID,
            fee=event.fee,
            provider_ref=event.provider_ref or row.provider_ref,
        )
    if isinstance(event, Payout.Failed):
        return replace(row, status=po.FAILED, failure_reason=event.reason)
    return row


class PayoutsProjector:
    """Every pay-out's current state (``rm_payouts``)."""

    name = "payouts"
    consumes: tuple[type, ...] = (Payout.Event,)

    def process(self, event: Any, position: int, writer: RowWriter[PayoutRow]) -> None:
        if isinstance(event, Payout.Event):
            writer.change(
                (str(event.originator_id),),
                lambda row: evolve_payout(row, event, position),
            )

"""Response bodies of commands: the state a command produced, amounts as decimal strings."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from domain.ledger import world_account_id
from domain.money import Currency, format_minor
from domain.transfer import PENDING, Transfer
from domain.wallet import Wallet


def wallet_view(wallet: Wallet) -> dict[str, Any]:
    exp = Currency.of(wallet.currency).exponent
    return {
        "id": str(wallet.id),
        "merchant_id": wallet.merchant_id,
        "currency": wallet.currency,
        "status": wallet.status,
        "credit_limit": format_minor(wallet.credit_limit, exp),
        "balance": {
            "posted": format_minor(wallet.posted, exp),
            "pending": format_minor(wallet.pending, exp),
            "available": format_minor(wallet.available, exp),
        },
        "metadata": wallet.metadata,
        "version": wallet.version,
    }


@functools.cache
def _world_id(currency: str) -> str:
    return str(world_account_id(currency))


def account_ref(account_id: str, currency: str) -> str | None:
    """A wallet id, or None for the currency's ``world`` account."""
    return None if account_id == _world_id(currency) else account_id


class _LastIsoformat:
    """``isoformat()`` of the last datetime object asked for: every transfer of one
    command (a batch of a thousand) was created at the same instant, one object."""

    def __init__(self) -> None:
        # One tuple, replaced whole: a reader on another thread sees a matching pair.
        self._last: tuple[datetime | None, str] = (None, "")

    def __call__(self, value: datetime) -> str:
        last = self._last
        if last[0] is not value:
            # Identity, not equality: equal instants in other time zones print otherwise.
            last = self._last = (value, value.isoformat())
        return last[1]


_created_at = _LastIsoformat()


def transfer_view(transfer: Transfer) -> dict[str, Any]:
    exp = Currency.of(transfer.currency).exponent  # interned: one dict lookup
    return {
        "id": str(transfer.id),
        "kind": transfer.kind,
        "status": transfer.status,
        "debit_wallet_id": account_ref(transfer.debit_account_id, transfer.currency),
        "credit_wallet_id": account_ref(transfer.credit_account_id, transfer.currency),
        "amount": format_minor(transfer.amount, exp),
        "currency": transfer.currency,
        "pending": transfer.pending,
        "pending_amount": format_minor(transfer.amount if transfer.status == PENDING else 0, exp),
        "posted_amount": format_minor(transfer.posted_amount, exp),
        "expires_at": transfer.expires_at.isoformat() if transfer.expires_at else None,
        "metadata": transfer.metadata,
        "created_at": _created_at(transfer.created_on),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def payment_view(payment: Any) -> dict[str, Any]:
    """A ``domain.payment.Payment`` as the API shows it."""
    exp = Currency.of(payment.currency).exponent

    def fmt(minor: int) -> str:
        return format_minor(minor, exp)

    return {
        "id": str(payment.id),
        "merchant_id": payment.merchant_id,
        "wallet_id": payment.wallet_id,
        "amount": fmt(payment.amount),
        "currency": payment.currency,
        "method": payment.method,
        "capture_method": payment.capture_method,
        "status": payment.status,
        "provider": payment.provider,
        "outcome_unknown": payment.outcome_unknown,
        "attempts": [
            {"number": a.number, "provider": a.provider, "outcome": a.outcome}
            for a in payment.attempts
        ],
        "authorized_amount": fmt(payment.authorized_amount),
        "authorization_expires_at": _iso(payment.authorization_expires_at),
        "captured_amount": fmt(payment.captured_amount),
        "released_amount": fmt(payment.released_amount),
        "refunded_amount": fmt(payment.refunded_amount),
        "fees": fmt(payment.fees),
        "refunds": [{"id": rid, "amount": fmt(minor)} for rid, minor in payment.refunds.items()],
        "pending_operations": [
            {"id": op.operation_id, "kind": op.kind, "amount": fmt(op.amount)}
            for op in payment.operations.values()
        ],
        "dispute": (
            {
                "id": str(payment.id),
                "provider_dispute_id": payment.dispute_id,
                "amount": fmt(payment.disputed_amount),
                "status": {"disputed": "open", "won": "won", "lost": "lost"}.get(
                    payment.status, "closed"
                ),
            }
            if payment.dispute_id
            else None
        ),
        "failure_reason": payment.failure_reason,
        "cancel_reason": payment.cancel_reason,
        "metadata": payment.metadata,
        "created_at": payment.created_on.isoformat(),
        "updated_at": payment.modified_on.isoformat(),
        "version": payment.version,
    }


def payout_view(payout: Any) -> dict[str, Any]:
    """A ``domain.payout.Payout`` as the API shows it (the account number masked)."""
    exp = Currency.of(payout.currency).exponent
    account = payout.destination.get("account_number", "")
    return {
        "id": str(payout.id),
        "merchant_id": payout.merchant_id,
        "wallet_id": payout.wallet_id,
        "amount": format_minor(payout.amount, exp),
        "currency": payout.currency,
        "provider": payout.provider,
        "status": payout.status,
        "fee": format_minor(payout.fee, exp),
        "destination": {
            "account_number_last4": account[-4:],
            "bank_code": payout.destination.get("bank_code"),
            "account_name": payout.destination.get("account_name"),
        },
        "failure_reason": payout.failure_reason,
        "transfer_id": payout.transfer_id,
        "metadata": payout.metadata,
        "created_at": payout.created_on.isoformat(),
        "updated_at": payout.modified_on.isoformat(),
        "version": payout.version,
    }

"""Response bodies of commands: the state a command produced, amounts as decimal strings."""

from __future__ import annotations

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


def account_ref(account_id: str, currency: str) -> str | None:
    """A wallet id, or None for the currency's ``world`` account."""
    return None if account_id == str(world_account_id(currency)) else account_id


def transfer_view(transfer: Transfer) -> dict[str, Any]:
    exp = Currency.of(transfer.currency).exponent
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
        "created_at": transfer.created_on.isoformat(),
    }

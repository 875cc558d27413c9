"""Journal entries over wallets: the only code that moves money.

Every function checks every guard before it changes anything, so a failure leaves the
aggregates untouched. ``None`` stands for the currency's ``world`` system account: the
unbounded account for money entering (deposits) and leaving (withdrawals) the platform.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.context import CommandContext
from domain.errors import BalanceOverflow, CurrencyMismatch, SameAccount, ValidationError
from domain.money import MAX_BALANCE, Money
from domain.transfer import Transfer
from domain.wallet import Wallet

WORLD_NAMESPACE = uuid5(NAMESPACE_URL, "urn:payments-ledger:world")


@functools.cache
def world_account_id(currency: str) -> UUID:
    """The id of ``world`` for one currency: stable, so every process agrees on it."""
    return uuid5(WORLD_NAMESPACE, currency)


# A wallet's id as text, for each leg of every transfer it takes part in: UUID.__str__ is
# Python code, an LRU hit is a C-level dict lookup.
_id_text = functools.lru_cache(maxsize=1 << 16)(UUID.__str__)


def _account_id(wallet: Wallet | None, currency: str) -> str:
    return _id_text(wallet.id if wallet is not None else world_account_id(currency))


def open_transfer(
    transfer_id: UUID,
    *,
    kind: str,
    debit: Wallet | None,
    credit: Wallet | None,
    amount: Money,
    pending: bool,
    expires_at: datetime | None,
    merchant_id: str,
    metadata: dict[str, Any],
    ctx: CommandContext,
    force: bool = False,
) -> Transfer:
    """Record a journal entry moving ``amount`` from ``debit`` to ``credit``.

    With ``pending`` the money is only held on the debit wallet until posted or voided.
    ``force`` records a fact that already happened outside the ledger (a provider's
    chargeback or refund): the wallets' status and the debit wallet's available balance
    are not checked, so the debit may take the wallet below zero. Only the payment engine's
    postings of provider facts use it (see ``domain/payment_ledger.py``).
    """
    if debit is None and credit is None:
        raise ValidationError("a transfer needs at least one wallet")
    if debit is not None and credit is not None:
        if debit.id == credit.id:
            raise SameAccount("debit and credit wallet must differ")
        if debit.currency != credit.currency:
            raise CurrencyMismatch(
                f"wallet {debit.id} holds {debit.currency}, "
                f"wallet {credit.id} holds {credit.currency}"
            )
    amount.require_positive()
    if pending and debit is None:
        raise ValidationError("a pending transfer must debit a wallet")
    if expires_at is not None and not pending:
        raise ValidationError("only a pending transfer can expire")
    if expires_at is not None and expires_at <= ctx.now:
        raise ValidationError("expiry must be in the future")
    if force:
        for wallet in (debit, credit):
            if wallet is not None:
                wallet.require_currency(amount)
        if credit is not None and credit.posted + amount.minor > MAX_BALANCE:
            raise BalanceOverflow(f"wallet {credit.id} balance would exceed the maximum")
    else:
        if debit is not None:
            debit.require_can_debit(amount)
        if credit is not None:
            credit.require_can_credit(amount)

    currency = amount.currency.code
    debit_id = _account_id(debit, currency)
    credit_id = _account_id(credit, currency)
    tid = str(transfer_id)
    if pending:
        assert debit is not None
        debit.place_hold(tid, amount, ctx)
    else:
        if debit is not None:
            debit.debit(tid, amount, credit_id, kind, ctx)
        if credit is not None:
            credit.credit(tid, amount, debit_id, kind, ctx)
    return Transfer.create(
        transfer_id,
        merchant_id=merchant_id,
        kind=kind,
        debit_account_id=debit_id,
        credit_account_id=credit_id,
        amount=amount,
        pending=pending,
        expires_at=expires_at,
        metadata=metadata,
        ctx=ctx,
    )


def post_transfer(
    transfer: Transfer,
    debit: Wallet,
    credit: Wallet | None,
    amount: Money | None,
    ctx: CommandContext,
    force: bool = False,
) -> Money:
    """Capture all (``amount`` None) or part of a pending transfer; release the rest.
    ``force`` (a provider's fact, see ``open_transfer``) skips the wallets' status checks."""
    to_post = transfer.money(transfer.amount) if amount is None else amount
    if to_post.currency.code != transfer.currency:
        raise CurrencyMismatch(f"transfer {transfer.id} is in {transfer.currency}")
    transfer.require_postable(to_post, ctx.now)
    if not force:
        debit.require_active()
        if credit is not None:
            credit.require_can_credit(to_post)

    tid = str(transfer.id)
    debit.release_hold(tid, transfer.money(transfer.amount), "posted", ctx)
    debit.debit(tid, to_post, transfer.credit_account_id, transfer.kind, ctx)
    if credit is not None:
        credit.credit(tid, to_post, transfer.debit_account_id, transfer.kind, ctx)
    transfer.post(to_post, ctx)
    return to_post


def void_transfer(transfer: Transfer, debit: Wallet, ctx: CommandContext) -> None:
    """Release a pending transfer's hold; nothing is posted."""
    transfer.require_pending(ctx.now)
    debit.release_hold(str(transfer.id), transfer.money(transfer.amount), "voided", ctx)
    transfer.void(ctx)


def expire_transfer(transfer: Transfer, debit: Wallet, ctx: CommandContext) -> None:
    """Release the hold of a pending transfer whose expiry has passed (the sweeper's job)."""
    transfer.expire(ctx)
    debit.release_hold(str(transfer.id), transfer.money(transfer.amount), "expired", ctx)

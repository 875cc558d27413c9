"""The ledger postings of payments and pay-outs: double entry through system accounts.

System accounts are wallets of the ``platform`` merchant with ids derived from their role,
so every process agrees on them and the first posting that needs one opens it:

- ``clearing(provider, currency)``: what the provider owes us. Its balance goes below zero
  as captures are credited to merchants (it has an unbounded credit limit) and comes back
  as the provider settles, refunds and charges back.
- ``fees(currency)``: the fees providers take, as the platform passes them on.
- ``disputes(currency)``: money taken from merchants while a dispute is open.

| what happened | debit | credit | kind |
| --- | --- | --- | --- |
| capture of A with fee F | clearing | merchant A - F | ``payment_capture`` |
| | clearing | fees F | ``payment_fee`` |
| refund R asked for by the merchant | merchant (held from the request) | clearing | ``refund`` |
| refund R the provider reports unasked | merchant (forced) | clearing | ``provider_refund`` |
| dispute D opened | merchant (forced) | disputes | ``dispute`` |
| dispute won | disputes | merchant | ``dispute_won`` |
| dispute lost (or accepted) | disputes | clearing | ``dispute_lost`` |
| pay-out P | merchant (held from the request) | clearing | ``payout`` |
| pay-out fee | merchant (forced) | fees | ``payout_fee`` |

An authorization moves no money (the customer's bank holds it, not us). Postings of facts
the provider reports (a capture, a chargeback, a refund made at the provider) are forced:
they happened, so the ledger records them even if the merchant's wallet is frozen or the
debit takes it below zero (``FORCED_KINDS``; the audit knows them). Every transfer id is
derived from the payment (or pay-out) and the posting, so a posting is made once: a second
try finds the transfer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain import ledger
from domain.context import CommandContext
from domain.money import MAX_BALANCE
from domain.payment import Payment
from domain.payout import Payout
from domain.transfer import PENDING, Transfer
from domain.wallet import Wallet

PLATFORM = "platform"

PAYMENT_CAPTURE = "payment_capture"
PAYMENT_FEE = "payment_fee"
REFUND = "refund"
PROVIDER_REFUND = "provider_refund"
DISPUTE = "dispute"
DISPUTE_WON = "dispute_won"
DISPUTE_LOST = "dispute_lost"
PAYOUT = "payout"
PAYOUT_FEE = "payout_fee"
FORCED_KINDS = frozenset({PROVIDER_REFUND, DISPUTE, PAYOUT_FEE})

CLEARING = "clearing"
FEES = "fees"
DISPUTES = "disputes"
SYSTEM_NAMESPACE = uuid5(NAMESPACE_URL, "urn:payments-ledger:system-accounts")


@functools.cache
def system_account_id(role: str, currency: str, provider: str = "") -> UUID:
    return uuid5(SYSTEM_NAMESPACE, f"{role}:{provider}:{currency}")


def system_credit_limit(role: str) -> int:
    return MAX_BALANCE if role == CLEARING else 0


def entry_id(owner: UUID, label: str) -> UUID:
    """The id of one posting of a payment or pay-out: the same posting, the same id."""
    return uuid5(owner, label)


@dataclass
class Accounts:
    """The wallets a payment's postings touch, loaded (or opened) by the caller."""

    merchant: Wallet
    clearing: Wallet
    fees: Wallet
    disputes: Wallet


TransferLoader = Callable[[UUID], Transfer | None]


def _open(
    tid: UUID,
    kind: str,
    debit: Wallet,
    credit: Wallet,
    minor: int,
    owner: Any,
    ctx: CommandContext,
    *,
    pending: bool = False,
    force: bool = True,
) -> Transfer:
    return ledger.open_transfer(
        tid,
        kind=kind,
        debit=debit,
        credit=credit,
        amount=owner.money(minor),
        pending=pending,
        expires_at=None,
        merchant_id=owner.merchant_id,
        metadata={"payment_id" if isinstance(owner, Payment) else "payout_id": str(owner.id)},
        ctx=ctx,
        force=force,
    )


def post_payment_events(
    payment: Payment,
    events: list[Any],
    accounts: Accounts,
    load_transfer: TransferLoader,
    ctx: CommandContext,
) -> list[Transfer]:
    """The journal entries for a payment's new ``events`` (in order); answers the transfers
    opened or changed, for the caller to save with the payment in one transaction."""
    out: list[Transfer] = []
    m, clearing = accounts.merchant, accounts.clearing
    pid = payment.id
    for e in events:
        if isinstance(e, Payment.Captured):
            net = e.amount - e.fee
            if net > 0:
                out.append(
                    _open(entry_id(pid, "capture"), PAYMENT_CAPTURE, clearing, m, net, payment, ctx)
                )
            if e.fee > 0:
                out.append(
                    _open(
                        entry_id(pid, "fee"),
                        PAYMENT_FEE,
                        clearing,
                        accounts.fees,
                        e.fee,
                        payment,
                        ctx,
                    )
                )
        elif isinstance(e, Payment.OperationRequested) and e.kind == "refund":
            # Held from the request: the merchant cannot spend what is being refunded.
            tid = entry_id(pid, f"refund:{e.operation_id}")
            out.append(
                _open(tid, REFUND, m, clearing, e.amount, payment, ctx, pending=True, force=False)
            )
        elif isinstance(e, Payment.OperationFailed) and e.kind == "refund":
            held = load_transfer(entry_id(pid, f"refund:{e.operation_id}"))
            if held is not None and held.status == PENDING:
                ledger.void_transfer(held, m, ctx)
                out.append(held)
        elif isinstance(e, Payment.Refunded):
            held = load_transfer(entry_id(pid, f"refund:{e.refund_id}"))
            if held is not None and held.status == PENDING:
                ledger.post_transfer(held, m, clearing, payment.money(e.amount), ctx, force=True)
                out.append(held)
            else:
                tid = entry_id(pid, f"provider-refund:{e.refund_id}")
                out.append(_open(tid, PROVIDER_REFUND, m, clearing, e.amount, payment, ctx))
        elif isinstance(e, Payment.DisputeOpened):
            tid = entry_id(pid, "dispute")
            out.append(_open(tid, DISPUTE, m, accounts.disputes, e.amount, payment, ctx))
        elif isinstance(e, Payment.DisputeWon):
            tid = entry_id(pid, "dispute-won")
            out.append(_open(tid, DISPUTE_WON, accounts.disputes, m, e.amount, payment, ctx))
        elif isinstance(e, Payment.DisputeLost):
            tid = entry_id(pid, "dispute-lost")
            out.append(
                _open(tid, DISPUTE_LOST, accounts.disputes, clearing, e.amount, payment, ctx)
            )
    return out


def hold_payout(
    payout: Payout, merchant: Wallet, clearing: Wallet, ctx: CommandContext
) -> Transfer:
    """Hold the pay-out's amount on the merchant's wallet (its available balance must cover
    it) until the provider pays it out or fails."""
    return _open(
        UUID(payout.transfer_id),
        PAYOUT,
        merchant,
        clearing,
        payout.amount,
        payout,
        ctx,
        pending=True,
        force=False,
    )


def settle_payout(
    payout: Payout,
    held: Transfer,
    merchant: Wallet,
    clearing: Wallet,
    fees: Wallet,
    ctx: CommandContext,
) -> list[Transfer]:
    """Post (paid, with its fee) or release (failed) a settled pay-out's hold."""
    if held.status != PENDING:
        return []
    if payout.status == "paid":
        ledger.post_transfer(held, merchant, clearing, None, ctx, force=True)
        out = [held]
        if payout.fee > 0:
            tid = entry_id(payout.id, "fee")
            out.append(_open(tid, PAYOUT_FEE, merchant, fees, payout.fee, payout, ctx))
        return out
    ledger.void_transfer(held, merchant, ctx)
    return [held]

"""Handlers of payment and pay-out commands: the payment changes and its ledger postings
are made in one unit of work, so they are saved in one transaction (never half of it).

The provider calls themselves happen outside, in the payment processor
(``commands/payments/processor.py``): it records what it is about to do (an attempt, an
operation) through these handlers before calling, and what came of it after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from commands.handlers import Result, UnitOfWork, own
from commands.model import (
    AcceptDispute,
    ApplyPayoutUpdate,
    ApplyProviderUpdate,
    CreatePayment,
    CreatePayout,
    ExpireAuthorization,
    FailPayment,
    FailPaymentOperation,
    ProviderCall,
    RecordAnswer,
    RecordPaymentCall,
    RequestPaymentOperation,
    ShowPayment,
    ShowPayout,
    StartPaymentAttempt,
    SubmitDisputeEvidence,
)
from commands.views import payment_view, payout_view
from domain.errors import (
    CurrencyMismatch,
    LedgerError,
    PaymentNotCancelable,
    PaymentNotCapturable,
    PaymentStateError,
    ValidationError,
)
from domain.money import Money
from domain.payment import CANCEL_REQUESTED, CANCELED, OP_CAPTURE, Payment, UpdateOutcome
from domain.payment_ledger import (
    CLEARING,
    DISPUTES,
    FEES,
    Accounts,
    entry_id,
    hold_payout,
    post_payment_events,
    settle_payout,
)
from domain.payout import Payout


class IdempotencyKeyReused(ValidationError):
    """The request's key already made a payment (or operation) from another request."""

    code = "idempotency-key-reused"
    title = "Idempotency key reused"


class OperationFailed(LedgerError):
    """A capture, cancel or refund the provider refused (answered again on a retry)."""

    code = "provider-refused"
    title = "The provider refused the operation"
    status = 402


OPERATIONS = ("capture", "cancel", "refund")


def _record(payment: Payment, call: ProviderCall | None, uow: UnitOfWork) -> None:
    if call is not None:
        payment.record_provider_call(
            operation=call.operation,
            provider=call.provider,
            outcome=call.outcome,
            latency_ms=call.latency_ms,
            code=call.code,
            detail=call.detail,
            decision=call.decision,
            ctx=uow.ctx,
        )


def _post(payment: Payment, since: int, uow: UnitOfWork) -> None:
    """The ledger postings of the payment's events from index ``since`` of its pending
    events, into the same unit of work."""
    events = list(payment.pending_events[since:])
    if not events:
        return
    currency = payment.currency
    accounts = Accounts(
        merchant=uow.wallet(UUID(payment.wallet_id)),
        clearing=uow.system_wallet(CLEARING, currency, payment.provider or ""),
        fees=uow.system_wallet(FEES, currency),
        disputes=uow.system_wallet(DISPUTES, currency),
    )
    for transfer in post_payment_events(payment, events, accounts, uow.find_transfer, uow.ctx):
        uow.add(transfer)


def _view(payment: Payment, status: int = 200, **extra: Any) -> Result:
    return status, {"payment": payment_view(payment), **extra}


def create_payment(cmd: CreatePayment, uow: UnitOfWork) -> Result:
    existing = uow.find(cmd.payment_id)
    if existing is not None:
        # A retry of a request that created it and then did not finish: resume.
        if not isinstance(existing, Payment) or existing.fingerprint != cmd.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request; use a new key"
            )
        return _view(existing, 200, resumed=True)
    wallet = own(uow, uow.wallet(cmd.wallet_id))
    wallet.require_currency(cmd.amount)
    wallet.require_active()
    payment = Payment.create(
        cmd.payment_id,
        merchant_id=wallet.merchant_id,
        amount=cmd.amount,
        method=cmd.method,
        payment_method_token=cmd.payment_method_token,
        capture_method=cmd.capture_method,
        metadata=cmd.metadata,
        wallet_id=str(wallet.id),
        fingerprint=cmd.fingerprint,
        provider_tokens=cmd.provider_tokens,
        ctx=uow.ctx,
    )
    uow.add(payment)
    return _view(payment, 201)


def show_payment(cmd: ShowPayment, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    if cmd.operation_id is not None:
        done = _finished(payment, cmd.operation_id)  # raises if the provider refused it
        if done is not None and done[0] == 202:
            return done
    return _view(
        payment, cmd.status, **({"operation_id": cmd.operation_id} if cmd.operation_id else {})
    )


def record_answer(cmd: RecordAnswer, uow: UnitOfWork) -> Result:
    return cmd.status, cmd.body


def start_attempt(cmd: StartPaymentAttempt, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    payment.require_routable()
    _record(payment, cmd.call, uow)
    number = payment.start_attempt(cmd.provider, uow.ctx)
    return _view(payment, 200, attempt=number)


def record_call(cmd: RecordPaymentCall, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    _record(payment, cmd.call, uow)
    if cmd.attempt_error is not None and payment.outcome_unknown:
        payment.record_attempt_error(cmd.attempt_error, uow.ctx)
    return _view(payment)


def apply_update(cmd: ApplyProviderUpdate, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    _record(payment, cmd.call, uow)
    outcome = payment.classify_provider_update(cmd.update)
    since = len(payment.pending_events)
    if outcome is UpdateOutcome.APPLIED:
        payment.apply_provider_update(cmd.update, uow.ctx)
        _post(payment, since, uow)
    return _view(payment, 200, update_outcome=outcome.value)


def fail_payment(cmd: FailPayment, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    payment.fail(cmd.reason, uow.ctx)
    return _view(payment)


SUPERSEDED: dict[str, type[PaymentStateError]] = {
    PaymentNotCancelable.code: PaymentNotCancelable,
    PaymentNotCapturable.code: PaymentNotCapturable,
}


def _finished(payment: Payment, operation_id: str) -> Result | None:
    """What a retried operation request answers when the operation is already done."""
    state = payment.finished_operations.get(operation_id)
    if state is None:
        if operation_id in payment.operations:
            return _view(payment, 202, operation_id=operation_id, resumed=True)
        return None
    status, code = state
    if status == "superseded":  # the capture or void lost to the other one
        raise SUPERSEDED[code](
            f"operation {operation_id} was overtaken: the payment is {payment.status}"
        )
    if status == "failed":
        raise OperationFailed(f"the provider refused operation {operation_id} ({code})")
    return _view(payment, 200, operation_id=operation_id)


def request_operation(cmd: RequestPaymentOperation, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    done = _finished(payment, cmd.operation_id)
    if done is not None:
        return done
    if cmd.currency is not None and cmd.currency != payment.currency:
        raise CurrencyMismatch(f"payment {payment.id} is in {payment.currency}")
    amount = Money.parse(cmd.amount, payment.currency) if cmd.amount is not None else None
    since = len(payment.pending_events)
    if cmd.kind == OP_CAPTURE:
        payment.request_capture(cmd.operation_id, uow.ctx, amount)
    elif cmd.kind == "cancel":
        if payment.status == CANCELED and payment.cancel_reason == CANCEL_REQUESTED:
            return _view(payment)  # canceled already: canceling again changes nothing
        if payment.request_cancel(cmd.operation_id, uow.ctx) is None:
            return _view(payment)  # nothing was held at the provider: canceled at once
    elif cmd.kind == "refund":
        if amount is None:
            amount = payment.money(payment.refundable_amount - payment.pending_refunds())
            if amount.minor <= 0:
                payment.require_refundable(cmd.operation_id, 1)  # says why not
        payment.request_refund(cmd.operation_id, amount, uow.ctx)
        _post(payment, since, uow)  # the refund is held on the merchant's wallet
    else:
        raise ValidationError(f"operation must be one of {', '.join(OPERATIONS)}")
    return _view(payment, 202, operation_id=cmd.operation_id)


def fail_operation(cmd: FailPaymentOperation, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    _record(payment, cmd.call, uow)
    if cmd.operation_id in payment.operations:
        since = len(payment.pending_events)
        payment.fail_operation(cmd.operation_id, cmd.code, cmd.reason, uow.ctx)
        _post(payment, since, uow)
    return _view(payment)


def expire_authorization(cmd: ExpireAuthorization, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    payment.expire_authorization(uow.ctx)
    return _view(payment)


def accept_dispute(cmd: AcceptDispute, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    since = len(payment.pending_events)
    payment.accept_dispute(uow.ctx)
    _post(payment, since, uow)
    return _view(payment)


def submit_evidence(cmd: SubmitDisputeEvidence, uow: UnitOfWork) -> Result:
    payment = uow.payment(cmd.payment_id)
    payment.submit_dispute_evidence(cmd.evidence, uow.ctx)
    return _view(payment)


# ---- pay-outs ---------------------------------------------------------------------------------


def create_payout(cmd: CreatePayout, uow: UnitOfWork) -> Result:
    existing = uow.find(cmd.payout_id)
    if existing is not None:
        if not isinstance(existing, Payout) or existing.fingerprint != cmd.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request; use a new key"
            )
        return 200, {"payout": payout_view(existing), "resumed": True}
    wallet = own(uow, uow.wallet(cmd.wallet_id))
    payout = Payout.create(
        cmd.payout_id,
        merchant_id=wallet.merchant_id,
        wallet_id=str(wallet.id),
        transfer_id=str(entry_id(cmd.payout_id, "payout")),
        amount=cmd.amount,
        provider=cmd.provider,
        destination=cmd.destination,
        metadata=cmd.metadata,
        fingerprint=cmd.fingerprint,
        ctx=uow.ctx,
    )
    clearing = uow.system_wallet(CLEARING, payout.currency, payout.provider)
    uow.add(hold_payout(payout, wallet, clearing, uow.ctx))
    uow.add(payout)
    return 201, {"payout": payout_view(payout)}


def show_payout(cmd: ShowPayout, uow: UnitOfWork) -> Result:
    return cmd.status, {"payout": payout_view(uow.payout(cmd.payout_id))}


def apply_payout_update(cmd: ApplyPayoutUpdate, uow: UnitOfWork) -> Result:
    payout = uow.payout(cmd.payout_id)
    if cmd.call is not None:
        payout.record_provider_call(
            outcome=cmd.call.outcome,
            latency_ms=cmd.call.latency_ms,
            code=cmd.call.code,
            detail=cmd.call.detail,
            decision=cmd.call.decision,
            ctx=uow.ctx,
        )
    changed = False
    if cmd.status is not None:
        changed = payout.apply_update(
            cmd.status,
            uow.ctx,
            provider_event_id=cmd.provider_event_id,
            provider_ref=cmd.provider_ref,
            fee=cmd.fee,
            reason=cmd.reason,
        )
    if changed:
        held = uow.find_transfer(UUID(payout.transfer_id))
        if held is not None:
            merchant = uow.wallet(UUID(payout.wallet_id))
            clearing = uow.system_wallet(CLEARING, payout.currency, payout.provider)
            fees = uow.system_wallet(FEES, payout.currency)
            for transfer in settle_payout(payout, held, merchant, clearing, fees, uow.ctx):
                uow.add(transfer)
    return 200, {"payout": payout_view(payout), "applied": changed}


PAYMENT_HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], Result]] = {
    CreatePayment: create_payment,
    ShowPayment: show_payment,
    RecordAnswer: record_answer,
    StartPaymentAttempt: start_attempt,
    RecordPaymentCall: record_call,
    ApplyProviderUpdate: apply_update,
    FailPayment: fail_payment,
    RequestPaymentOperation: request_operation,
    FailPaymentOperation: fail_operation,
    ExpireAuthorization: expire_authorization,
    AcceptDispute: accept_dispute,
    SubmitDisputeEvidence: submit_evidence,
    CreatePayout: create_payout,
    ShowPayout: show_payout,
    ApplyPayoutUpdate: apply_payout_update,
}

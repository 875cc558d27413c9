"""Projectors of payments: each payment's current state (``payments`` -> ``rm_payments``)
and its refunds (``refunds`` -> ``rm_refunds``: asked for, refused or done, and those the
provider reported unasked). Pure, like ``projectors``; they fold events into rows through
a ``folds.RowWriter``. Pay-outs are in ``payouts``, the timeline of both in
``payment_timeline``; ``payment_projectors`` lists all four.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from domain import payment as pay
from domain.payment import Payment
from projections.folds import RowWriter
from projections.payment_timeline import PaymentTimelineProjector
from projections.payouts import PayoutsProjector

DISPUTE_OPEN = "open"
DISPUTE_WON = "won"
DISPUTE_LOST = "lost"
DISPUTE_STATUSES = (DISPUTE_OPEN, DISPUTE_WON, DISPUTE_LOST)

REFUND_PENDING = "pending"
REFUND_SUCCEEDED = "succeeded"
REFUND_FAILED = "failed"


# ---- rm_payments ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingOperation:
    """A capture, void or refund sent to the provider and not answered yet."""

    kind: str
    amount: int


@dataclass(frozen=True, slots=True)
class PaymentRow:
    payment_id: str
    merchant_id: str
    wallet_id: str
    amount: int
    currency: str
    method: str
    capture_method: str
    status: str
    provider: str | None
    provider_ref: str | None
    authorized_amount: int
    captured_amount: int
    released_amount: int
    refunded_amount: int
    fees: int
    dispute_id: str | None
    disputed_amount: int
    dispute_status: str | None  # open, won, lost
    failure_reason: str | None
    cancel_reason: str | None
    authorization_expires_at: datetime | None
    attempts: int
    last_attempt_outcome: str | None
    operations: dict[str, PendingOperation]  # by operation (or refund) id
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_position: int
    position: int  # of the latest event
    version: int

    @property
    def outcome_unknown(self) -> bool:
        """An attempt was sent (or timed out) and its answer is not known yet."""
        return self.status == pay.PROCESSING and self.last_attempt_outcome == pay.ATTEMPT_PENDING


def _settle(row: PaymentRow, outcome: str, only_if: tuple[str, ...]) -> str | None:
    # Payment._settle_attempt: the last attempt's outcome moves only from these.
    last = row.last_attempt_outcome
    return outcome if last in only_if else last


def _without(ops: dict[str, PendingOperation], *kinds: str) -> dict[str, PendingOperation]:
    return {k: op for k, op in ops.items() if op.kind not in kinds}


def evolve_payment(row: PaymentRow | None, event: Any, position: int) -> PaymentRow | None:
    """``row`` after ``event`` (at ``position``); mirrors each event's ``apply`` in
    ``domain.payment``. None while the payment's creation has not been seen."""
    if row is not None and position <= row.position:
        return row
    if isinstance(event, Payment.Created):
        return PaymentRow(
            payment_id=str(event.originator_id),
            merchant_id=event.merchant_id,
            wallet_id=event.wallet_id,
            amount=event.amount,
            currency=event.currency,
            method=event.method,
            capture_method=event.capture_method,
            status=pay.CREATED,
            provider=None,
            provider_ref=None,
            authorized_amount=0,
            captured_amount=0,
            released_amount=0,
            refunded_amount=0,
            fees=0,
            dispute_id=None,
            disputed_amount=0,
            dispute_status=None,
            failure_reason=None,
            cancel_reason=None,
            authorization_expires_at=None,
            attempts=0,
            last_attempt_outcome=None,
            operations={},
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
    if isinstance(event, Payment.AttemptStarted):
        return replace(
            row,
            status=pay.PROCESSING,
            provider=event.provider,
            attempts=event.attempt_number,
            last_attempt_outcome=pay.ATTEMPT_PENDING,
        )
    if isinstance(event, Payment.AttemptErrored):
        return replace(
            row, last_attempt_outcome=_settle(row, pay.ATTEMPT_ERROR, (pay.ATTEMPT_PENDING,))
        )
    if isinstance(event, Payment.Authorized):
        return replace(
            row,
            status=pay.AUTHORIZED,
            provider_ref=event.provider_ref or row.provider_ref,
            authorized_amount=event.amount,
            authorization_expires_at=event.expires_at,
            last_attempt_outcome=_settle(
                row, pay.ATTEMPT_AUTHORIZED, (pay.ATTEMPT_PENDING, pay.ATTEMPT_ERROR)
            ),
        )
    if isinstance(event, Payment.Captured):
        return replace(
            row,
            status=pay.CAPTURED,
            provider_ref=event.provider_ref or row.provider_ref,
            authorized_amount=event.amount + event.released,
            captured_amount=event.amount,
            released_amount=event.released,
            fees=row.fees + event.fee,
            operations=_without(row.operations, pay.OP_CAPTURE, pay.OP_VOID),
            last_attempt_outcome=_settle(
                row,
                pay.ATTEMPT_CAPTURED,
                (pay.ATTEMPT_PENDING, pay.ATTEMPT_ERROR, pay.ATTEMPT_AUTHORIZED),
            ),
        )
    if isinstance(event, Payment.Failed):
        return replace(
            row,
            status=pay.FAILED,
            failure_reason=event.reason,
            last_attempt_outcome=_settle(row, pay.ATTEMPT_DECLINED, (pay.ATTEMPT_PENDING,)),
        )
    if isinstance(event, Payment.Canceled):
        return replace(
            row,
            status=pay.CANCELED,
            cancel_reason=event.reason,
            released_amount=event.released,
            operations=_without(row.operations, pay.OP_CAPTURE, pay.OP_VOID),
        )
    if isinstance(event, Payment.Refunded):
        status = row.status
        if status != pay.DISPUTED:  # a refund sent before a dispute opened keeps it open
            full = event.refunded_after == row.captured_amount
            status = pay.REFUNDED if full else pay.PARTIALLY_REFUNDED
        ops = {k: op for k, op in row.operations.items() if k != event.refund_id}
        return replace(row, status=status, refunded_amount=event.refunded_after, operations=ops)
    if isinstance(event, Payment.DisputeOpened):
        return replace(
            row,
            status=pay.DISPUTED,
            dispute_id=event.dispute_id,
            disputed_amount=event.amount,
            dispute_status=DISPUTE_OPEN,
        )
    if isinstance(event, Payment.DisputeWon):
        return replace(row, status=pay.WON, dispute_status=DISPUTE_WON)
    if isinstance(event, Payment.DisputeLost):
        return replace(row, status=pay.LOST, dispute_status=DISPUTE_LOST)
    if isinstance(event, Payment.OperationRequested):
        ops = {**row.operations, event.operation_id: PendingOperation(event.kind, event.amount)}
        return replace(row, operations=ops)
    if isinstance(event, Payment.OperationFailed):
        ops = {k: op for k, op in row.operations.items() if k != event.operation_id}
        return replace(row, operations=ops)
    return row  # ProviderCalled, DisputeEvidenceSubmitted: only the time and version move


class PaymentsProjector:
    """Every payment's current state (``rm_payments``)."""

    name = "payments"
    consumes: tuple[type, ...] = (Payment.Event,)

    def process(self, event: Any, position: int, writer: RowWriter[PaymentRow]) -> None:
        if isinstance(event, Payment.Event):
            writer.change(
                (str(event.originator_id),),
                lambda row: evolve_payment(row, event, position),
            )


# ---- rm_refunds ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefundRow:
    payment_id: str
    refund_id: str
    amount: int
    status: str  # pending, succeeded, failed
    code: str | None  # the provider's, when it refused
    reason: str | None
    requested_at: datetime | None  # None for a refund the provider reported unasked
    created_at: datetime
    updated_at: datetime
    created_position: int
    position: int


def evolve_refund(row: RefundRow | None, event: Any, position: int) -> RefundRow | None:
    """A refund after a refund request, its failure, or the provider's ``Refunded``."""
    if row is not None and position <= row.position:
        return row
    at = event.timestamp
    if isinstance(event, Payment.OperationRequested):
        return RefundRow(
            payment_id=str(event.originator_id),
            refund_id=event.operation_id,
            amount=event.amount,
            status=REFUND_PENDING,
            code=None,
            reason=None,
            requested_at=at,
            created_at=row.created_at if row else at,
            updated_at=at,
            created_position=row.created_position if row else position,
            position=position,
        )
    if isinstance(event, Payment.OperationFailed):
        if row is None:
            return None
        return replace(
            row,
            status=REFUND_FAILED,
            code=event.code or None,
            reason=event.reason or None,
            updated_at=at,
            position=position,
        )
    if isinstance(event, Payment.Refunded):
        if row is None:
            return RefundRow(
                payment_id=str(event.originator_id),
                refund_id=event.refund_id,
                amount=event.amount,
                status=REFUND_SUCCEEDED,
                code=None,
                reason=None,
                requested_at=None,
                created_at=at,
                updated_at=at,
                created_position=position,
                position=position,
            )
        return replace(
            row,
            amount=event.amount,
            status=REFUND_SUCCEEDED,
            code=None,
            reason=None,
            updated_at=at,
            position=position,
        )
    return row


class RefundsProjector:
    """Every refund of every payment (``rm_refunds``), keyed by payment and refund id."""

    name = "refunds"
    consumes: tuple[type, ...] = (
        Payment.OperationRequested,
        Payment.OperationFailed,
        Payment.Refunded,
    )

    def process(self, event: Any, position: int, writer: RowWriter[RefundRow]) -> None:
        if isinstance(event, Payment.OperationRequested | Payment.OperationFailed):
            if event.kind != pay.OP_REFUND:
                return
            refund_id = event.operation_id
        elif isinstance(event, Payment.Refunded):
            refund_id = event.refund_id
        else:
            return
        writer.change(
            (str(event.originator_id), refund_id),
            lambda row: evolve_refund(row, event, position),
        )


def payment_projectors() -> list[Any]:
    return [
        PaymentsProjector(),
        RefundsProjector(),
        PayoutsProjector(),
        PaymentTimelineProjector(),
    ]

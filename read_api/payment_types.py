"""GraphQL types of payments and pay-outs, each mapped from one projection row.

Amounts are ``Money`` (decimal strings in major units) like the rest of the schema. A
payment's ``refunds`` and ``timeline`` and a pay-out's ``timeline`` are fetched when asked
for, after the payment or pay-out itself was found visible.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from domain.errors import ValidationError
from projections.payment_timeline import TimelineRow
from projections.payments import PaymentRow, RefundRow
from projections.payouts import PayoutRow
from read_api.context import ReadContext
from read_api.pagination import page_size
from read_api.payment_ports import PaymentReadQueries, ProviderHealthRow
from read_api.types import BigInt, Connection, MoneyAmount, account_ref

ReadInfo = Info[ReadContext, None]

DEFAULT_TIMELINE_PAGE = 100

# ---- cursors: ``<kind>:<position>`` in unpadded URL-safe base64, like ``pagination`` ------

_POSITION = re.compile(r"[0-9]{1,19}")
_BIGINT_MAX = 2**63 - 1

PAYMENTS_CURSOR = "p"
DISPUTES_CURSOR = "d"
PAYOUTS_CURSOR = "o"
TIMELINE_CURSOR = "l"


def position_cursor(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def parse_position_cursor(kind: str, cursor: str) -> int:
    """The position in a cursor of ``kind``; a ``validation-error`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, sep, key = raw.partition(":")
    if prefix != kind or not sep or not _POSITION.fullmatch(key) or int(key) > _BIGINT_MAX:
        raise ValidationError(f"after: {cursor!r} is not a cursor of this connection")
    return int(key)


class _CreatedAt(Protocol):
    @property
    def created_position(self) -> int: ...


RowT = TypeVar("RowT", bound=_CreatedAt)
NodeT = TypeVar("NodeT")


async def created_order_page(
    ctx: ReadContext,
    kind: str,
    first: int | None,
    after: str | None,
    fetch: Callable[[int | None, int], list[RowT]],
    node: Callable[[RowT], NodeT],
) -> Connection[NodeT]:
    """One page of a list in creation order: ``fetch(after_position, limit)`` runs in a
    worker thread and is asked for one row more than the page, to tell if another follows;
    each row becomes ``node(row)`` under a cursor of ``kind`` on its creation position."""
    limit = page_size(first)
    key = parse_position_cursor(kind, after) if after is not None else None
    rows = await ctx.run(partial(fetch, key, limit + 1))
    return Connection.build(
        [(position_cursor(kind, r.created_position), node(r)) for r in rows[:limit]],
        has_next_page=len(rows) > limit,
    )


def payment_port(info: ReadInfo) -> PaymentReadQueries:
    port = info.context.payments
    if port is None:  # a wiring error, reported as internal-error
        raise RuntimeError("the GraphQL context has no PaymentReadQueries")
    return port


# ---- types --------------------------------------------------------------------------------


@strawberry.type
class PendingOperation:
    id: str
    kind: str = strawberry.field(description="capture, void or refund")
    amount: MoneyAmount = strawberry.field(description="0 for a void.")


@strawberry.type
class Dispute:
    id: str = strawberry.field(description="The provider's dispute id.")
    payment_id: strawberry.ID
    amount: MoneyAmount
    status: str = strawberry.field(description="open, won or lost")


@strawberry.type
class Refund:
    id: str
    amount: MoneyAmount
    status: str = strawberry.field(description="pending, succeeded or failed")
    code: str | None = strawberry.field(description="The provider's code when it refused.")
    reason: str | None
    requested_at: datetime | None = strawberry.field(
        description="Null for a refund the provider reported without our asking."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: RefundRow, currency: str) -> Refund:
        return cls(
            id=r.refund_id,
            amount=MoneyAmount.of(r.amount, currency),
            status=r.status,
            code=r.code,
            reason=r.reason,
            requested_at=r.requested_at,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )


@strawberry.type
class TimelineEntry:
    position: BigInt
    at: datetime
    type: str = strawberry.field(
        description="The event: Payment.AttemptStarted, Payment.ProviderCalled,"
        " Transfer.Posted, ..."
    )
    attempt_number: int | None
    provider: str | None
    operation: str | None
    outcome: str | None
    latency_ms: float | None
    decision: str | None = strawberry.field(description="The engine's routing/retry decision.")
    code: str | None
    detail: str | None
    provider_event_id: str | None
    reference: str | None = strawberry.field(
        description="The refund, operation, dispute or provider reference it is about."
    )
    amount: MoneyAmount | None
    fee: MoneyAmount | None
    transfer_id: strawberry.ID | None = strawberry.field(
        description="For ledger postings: the transfer."
    )
    transfer_kind: str | None
    debit_wallet_id: strawberry.ID | None
    credit_wallet_id: strawberry.ID | None
    correlation_id: str
    causation_id: str

    @classmethod
    def from_record(cls, r: TimelineRow, currency: str) -> TimelineEntry:
        def money(minor: int | None) -> MoneyAmount | None:
            return None if minor is None else MoneyAmount.of(minor, currency)

        def account(account_id: str | None) -> strawberry.ID | None:
            return None if account_id is None else account_ref(account_id)

        return cls(
            position=BigInt(r.position),
            at=r.at,
            type=r.event_type,
            attempt_number=r.attempt_number,
            provider=r.provider,
            operation=r.operation,
            outcome=r.outcome,
            latency_ms=r.latency_ms,
            decision=r.decision,
            code=r.code,
            detail=r.detail,
            provider_event_id=r.provider_event_id,
            reference=r.reference,
            amount=money(r.amount),
            fee=money(r.fee),
            transfer_id=None if r.transfer_id is None else strawberry.ID(r.transfer_id),
            transfer_kind=r.transfer_kind,
            debit_wallet_id=account(r.debit_account_id),
            credit_wallet_id=account(r.credit_account_id),
            correlation_id=r.correlation_id,
            causation_id=r.causation_id,
        )


async def _timeline(
    info: ReadInfo, owner_id: str, currency: str, first: int | None, after: str | None
) -> Connection[TimelineEntry]:
    limit = page_size(first)
    key = parse_position_cursor(TIMELINE_CURSOR, after) if after is not None else None
    port = payment_port(info)
    rows = await info.context.run(partial(port.timeline, owner_id, after=key, limit=limit + 1))
    return Connection.build(
        [
            (position_cursor(TIMELINE_CURSOR, r.position), TimelineEntry.from_record(r, currency))
            for r in rows[:limit]
        ],
        has_next_page=len(rows) > limit,
    )


async def _payment_refunds(root: Payment, info: ReadInfo) -> list[Refund]:
    port = payment_port(info)
    rows = await info.context.run(partial(port.refunds, root.row.payment_id))
    return [Refund.from_record(r, root.row.currency) for r in rows]


async def _payment_timeline(
    root: Payment,
    info: ReadInfo,
    first: int | None = DEFAULT_TIMELINE_PAGE,
    after: str | None = None,
) -> Connection[TimelineEntry]:
    return await _timeline(info, root.row.payment_id, root.row.currency, first, after)


async def _payout_timeline(
    root: Payout,
    info: ReadInfo,
    first: int | None = DEFAULT_TIMELINE_PAGE,
    after: str | None = None,
) -> Connection[TimelineEntry]:
    return await _timeline(info, root.row.payout_id, root.row.currency, first, after)


@strawberry.type
class Payment:
    id: strawberry.ID
    merchant_id: str
    wallet_id: strawberry.ID | None
    amount: MoneyAmount
    currency: str
    method: str
    capture_method: str
    status: str
    provider: str | None = strawberry.field(description="The current attempt's provider.")
    provider_ref: str | None = strawberry.field(description="The provider's payment id.")
    authorized_amount: MoneyAmount
    captured_amount: MoneyAmount
    released_amount: MoneyAmount
    refunded_amount: MoneyAmount
    fees: MoneyAmount
    failure_reason: str | None
    cancel_reason: str | None
    authorization_expires_at: datetime | None
    attempts: int
    last_attempt_outcome: str | None
    outcome_unknown: bool = strawberry.field(
        description="An attempt was sent and its answer is not known yet."
    )
    pending_operations: list[PendingOperation]
    dispute: Dispute | None
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    position: BigInt = strawberry.field(description="Event position of the latest change.")
    version: int
    refunds: list[Refund] = strawberry.field(
        resolver=_payment_refunds,
        description="Refunds asked for or reported, pending and failed ones too.",
    )
    timeline: Connection[TimelineEntry] = strawberry.field(
        resolver=_payment_timeline,
        description="Everything that happened to the payment, its ledger postings included,"
        " in position order.",
    )
    row: strawberry.Private[PaymentRow]

    @classmethod
    def from_record(cls, r: PaymentRow) -> Payment:
        def money(minor: int) -> MoneyAmount:
            return MoneyAmount.of(minor, r.currency)

        dispute = None
        if r.dispute_id is not None:
            dispute = Dispute(
                id=r.dispute_id,
                payment_id=strawberry.ID(r.payment_id),
                amount=money(r.disputed_amount),
                status=r.dispute_status or "open",
            )
        return cls(
            id=strawberry.ID(r.payment_id),
            merchant_id=r.merchant_id,
            wallet_id=strawberry.ID(r.wallet_id) if r.wallet_id else None,
            amount=money(r.amount),
            currency=r.currency,
            method=r.method,
            capture_method=r.capture_method,
            status=r.status,
            provider=r.provider,
            provider_ref=r.provider_ref,
            authorized_amount=money(r.authorized_amount),
            captured_amount=money(r.captured_amount),
            released_amount=money(r.released_amount),
            refunded_amount=money(r.refunded_amount),
            fees=money(r.fees),
            failure_reason=r.failure_reason,
            cancel_reason=r.cancel_reason,
            authorization_expires_at=r.authorization_expires_at,
            attempts=r.attempts,
            last_attempt_outcome=r.last_attempt_outcome,
            outcome_unknown=r.outcome_unknown,
            pending_operations=[
                PendingOperation(id=k, kind=op.kind, amount=money(op.amount))
                for k, op in sorted(r.operations.items())
            ],
            dispute=dispute,
            metadata=JSON(r.metadata),
            created_at=r.created_at,
            updated_at=r.updated_at,
            position=BigInt(r.position),
            version=r.version,
            row=r,
        )


@strawberry.type
class PayoutDestination:
    account_number_last4: str | None
    bank_code: str | None
    account_name: str | None


@strawberry.type
class Payout:
    id: strawberry.ID
    merchant_id: str
    wallet_id: strawberry.ID
    transfer_id: strawberry.ID = strawberry.field(description="The held (then posted) transfer.")
    amount: MoneyAmount
    currency: str
    provider: str
    provider_ref: str | None
    status: str = strawberry.field(description="requested, processing, paid or failed")
    fee: MoneyAmount
    calls: int
    last_call_outcome: str | None
    failure_reason: str | None
    destination: PayoutDestination
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    position: BigInt = strawberry.field(description="Event position of the latest change.")
    version: int
    timeline: Connection[TimelineEntry] = strawberry.field(
        resolver=_payout_timeline,
        description="The pay-out's events and ledger postings in position order.",
    )
    row: strawberry.Private[PayoutRow]

    @classmethod
    def from_record(cls, r: PayoutRow) -> Payout:
        return cls(
            id=strawberry.ID(r.payout_id),
            merchant_id=r.merchant_id,
            wallet_id=strawberry.ID(r.wallet_id),
            transfer_id=strawberry.ID(r.transfer_id),
            amount=MoneyAmount.of(r.amount, r.currency),
            currency=r.currency,
            provider=r.provider,
            provider_ref=r.provider_ref,
            status=r.status,
            fee=MoneyAmount.of(r.fee, r.currency),
            calls=r.calls,
            last_call_outcome=r.last_call_outcome,
            failure_reason=r.failure_reason,
            destination=PayoutDestination(
                account_number_last4=r.destination.get("account_number_last4"),
                bank_code=r.destination.get("bank_code"),
                account_name=r.destination.get("account_name"),
            ),
            metadata=JSON(r.metadata),
            created_at=r.created_at,
            updated_at=r.updated_at,
            position=BigInt(r.position),
            version=r.version,
            row=r,
        )


@strawberry.type
class ProviderHealth:
    name: str
    health: str
    breaker_state: str = strawberry.field(description="closed, open or half_open")
    success_rate: float | None = strawberry.field(description="0..1 over the window.")
    p99_latency_ms: float | None
    calls_in_window: int

    @classmethod
    def from_record(cls, r: ProviderHealthRow) -> ProviderHealth:
        return cls(
            name=r.name,
            health=r.health,
            breaker_state=r.breaker_state,
            success_rate=r.success_rate,
            p99_latency_ms=r.p99_latency_ms,
            calls_in_window=r.calls_in_window,
        )

"""The payment root fields of the read schema: ``payment``, ``payments``, ``disputes``,
``payout``, ``payouts`` and ``providers`` (``PaymentQuery``, merged into ``schema.Query``).

Scoping is the same as for wallets and transfers: a merchant sees only its own payments
and pay-outs, a role that sees all (admin, auditor) sees every one; one it may not see is
reported exactly like a missing one, ``null`` plus a ``not-found`` error. Lists are
forward-only connections in creation order (``first``/``after``; ``first`` capped at
500); ``createdAfter`` is inclusive and ``createdBefore`` exclusive. ``providers`` needs a
principal of any role: it shows no merchant's data.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from typing import Annotated

import strawberry

from domain import payment as pay
from domain import payout as po
from domain.errors import NotFound, ValidationError
from domain.money import Currency
from projections.payments import DISPUTE_STATUSES
from read_api.pagination import DEFAULT_PAGE
from read_api.payment_ports import PaymentFilter, PayoutFilter
from read_api.payment_types import (
    DISPUTES_CURSOR,
    PAYMENTS_CURSOR,
    PAYOUTS_CURSOR,
    Payment,
    Payout,
    ProviderHealth,
    ReadInfo,
    created_order_page,
    payment_port,
)
from read_api.types import Connection

PAYOUT_STATUSES = (po.REQUESTED, po.PROCESSING, po.PAID, po.FAILED)


@strawberry.input(name="PaymentFilter")
class PaymentFilterInput:
    status: str | None = None
    provider: str | None = None
    method: str | None = None
    currency: str | None = None
    created_after: datetime | None = strawberry.field(default=None, description="Inclusive.")
    created_before: datetime | None = strawberry.field(default=None, description="Exclusive.")


@strawberry.input(name="PayoutFilter")
class PayoutFilterInput:
    status: str | None = None
    provider: str | None = None
    currency: str | None = None
    created_after: datetime | None = strawberry.field(default=None, description="Inclusive.")
    created_before: datetime | None = strawberry.field(default=None, description="Exclusive.")


def _uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError(f"{name}: {value[:60]!r} is not a UUID") from None


def _one_of(value: str | None, allowed: tuple[str, ...], name: str) -> None:
    if value is not None and value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}")


def _instant(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValidationError(f"{name} needs a UTC offset, e.g. 2024-01-31T00:00:00Z")
    return value


def _currency(value: str | None) -> str | None:
    if value is not None:
        Currency.of(value)  # unknown-currency rather than an empty page
    return value


def _payment_filter(given: PaymentFilterInput | None) -> PaymentFilter:
    if given is None:
        return PaymentFilter()
    _one_of(given.status, pay.STATES, "filter.status")
    _one_of(given.method, pay.METHODS, "filter.method")
    return PaymentFilter(
        status=given.status,
        provider=given.provider,
        method=given.method,
        currency=_currency(given.currency),
        created_after=_instant(given.created_after, "filter.createdAfter"),
        created_before=_instant(given.created_before, "filter.createdBefore"),
    )


def _payout_filter(given: PayoutFilterInput | None) -> PayoutFilter:
    if given is None:
        return PayoutFilter()
    _one_of(given.status, PAYOUT_STATUSES, "filter.status")
    return PayoutFilter(
        status=given.status,
        provider=given.provider,
        currency=_currency(given.currency),
        created_after=_instant(given.created_after, "filter.createdAfter"),
        created_before=_instant(given.created_before, "filter.createdBefore"),
    )


async def payment(info: ReadInfo, id: strawberry.ID) -> Payment | None:
    ctx = info.context
    scope = ctx.scope()
    pid = _uuid(id, "id")
    row = await ctx.run(partial(payment_port(info).payment, pid, scope))
    if row is None:
        raise NotFound(f"payment {pid} not found")
    return Payment.from_record(row)


async def payments(
    info: ReadInfo,
    filter_: Annotated[PaymentFilterInput | None, strawberry.argument(name="filter")] = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[Payment] | None:
    ctx = info.context
    scope = ctx.scope()
    where = _payment_filter(filter_)
    port = payment_port(info)
    return await created_order_page(
        ctx,
        PAYMENTS_CURSOR,
        first,
        after,
        lambda key, limit: port.payments(scope, where, after=key, limit=limit),
        Payment.from_record,
    )


async def disputes(
    info: ReadInfo,
    status: str | None = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[Payment] | None:
    ctx = info.context
    scope = ctx.scope()
    _one_of(status, DISPUTE_STATUSES, "status")
    port = payment_port(info)
    return await created_order_page(
        ctx,
        DISPUTES_CURSOR,
        first,
        after,
        lambda key, limit: port.disputes(scope, status=status, after=key, limit=limit),
        Payment.from_record,
    )


async def payout(info: ReadInfo, id: strawberry.ID) -> Payout | None:
    ctx = info.context
    scope = ctx.scope()
    pid = _uuid(id, "id")
    row = await ctx.run(partial(payment_port(info).payout, pid, scope))
    if row is None:
        raise NotFound(f"payout {pid} not found")
    return Payout.from_record(row)


async def payouts(
    info: ReadInfo,
    filter_: Annotated[PayoutFilterInput | None, strawberry.argument(name="filter")] = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[Payout] | None:
    ctx = info.context
    scope = ctx.scope()
    where = _payout_filter(filter_)
    port = payment_port(info)
    return await created_order_page(
        ctx,
        PAYOUTS_CURSOR,
        first,
        after,
        lambda key, limit: port.payouts(scope, where, after=key, limit=limit),
        Payout.from_record,
    )


async def providers(info: ReadInfo) -> list[ProviderHealth]:
    ctx = info.context
    ctx.scope()
    port = ctx.providers
    if port is None:
        return []
    rows = await ctx.run(port.providers)
    return [ProviderHealth.from_record(r) for r in rows]


@strawberry.type
class PaymentQuery:
    payment: Payment | None = strawberry.field(
        resolver=payment,
        description="One payment; null with a not-found error if missing or not visible.",
    )
    payments: Connection[Payment] | None = strawberry.field(
        resolver=payments,
        description="Visible payments in creation order; first is capped at 500.",
    )
    disputes: Connection[Payment] | None = strawberry.field(
        resolver=disputes,
        description="Visible payments with a dispute (open, won or lost), in creation order.",
    )
    payout: Payout | None = strawberry.field(
        resolver=payout,
        description="One pay-out; null with a not-found error if missing or not visible.",
    )
    payouts: Connection[Payout] | None = strawberry.field(
        resolver=payouts,
        description="Visible pay-outs in the order they were requested.",
    )
    providers: list[ProviderHealth] = strawberry.field(
        resolver=providers,
        description="Each provider as its circuit breaker sees it (empty when not wired).",
    )

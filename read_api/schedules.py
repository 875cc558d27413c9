"""The scheduled-payment root fields of the read schema: ``scheduledPayment`` and
``scheduledPayments`` (``ScheduleQuery``, merged into ``schema.Query``).

Scoping is the payments': a merchant sees only its own schedules, a role that sees all
(admin, auditor, analyst) sees every one; one it may not see is reported exactly like a
missing one, ``null`` plus a ``not-found`` error. The list is a forward-only connection
in creation order (``first``/``after``; ``first`` capped at 500). The payment method
token is not in the read model, so it is not here either.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial

import strawberry
from strawberry.scalars import JSON

from domain import schedule as sched
from domain.errors import NotFound, ValidationError
from read_api.pagination import DEFAULT_PAGE
from read_api.payment_types import ReadInfo, created_order_page
from read_api.schedule_ports import ScheduleReadQueries, ScheduleRecord
from read_api.types import BigInt, Connection, MoneyAmount

SCHEDULE_STATUSES = (sched.ACTIVE, sched.CANCELED, sched.COMPLETED)
SCHEDULES_CURSOR = "sc"


def schedule_port(info: ReadInfo) -> ScheduleReadQueries:
    port = info.context.schedules
    if port is None:  # a wiring error, reported as internal-error
        raise RuntimeError("the GraphQL context has no ScheduleReadQueries")
    return port


@strawberry.type
class OccurrenceCounts:
    started: int = strawberry.field(description="Occurrences run, each with its payment.")
    skipped: int = strawberry.field(description="Occurrences skipped (missed or requested).")


@strawberry.type
class ScheduledPayment:
    id: strawberry.ID
    merchant_id: str
    wallet_id: strawberry.ID = strawberry.field(description="The wallet payments credit.")
    amount: MoneyAmount = strawberry.field(description="Charged at each occurrence.")
    currency: str
    method: str
    frequency: JSON = strawberry.field(
        description='As given, e.g. {"type": "monthly", "day": 31, "at": "09:00"}; UTC times.'
    )
    status: str = strawberry.field(description="active, canceled or completed")
    catch_up: str = strawberry.field(description="latest, all or none")
    starts_at: datetime
    ends_at: datetime | None = strawberry.field(description="Inclusive; null: no end.")
    max_occurrences: int | None
    next_occurrence: int | None = strawberry.field(
        description="The number of the next occurrence (from 1); null when none is due."
    )
    next_due_at: datetime | None = strawberry.field(description="Null once canceled or completed.")
    occurrences: OccurrenceCounts
    last_payment_id: strawberry.ID | None = strawberry.field(
        description="The payment of the latest occurrence run; null before the first."
    )
    last_due_at: datetime | None = strawberry.field(
        description="When the latest occurrence handled (run or skipped) was due."
    )
    cancel_reason: str | None
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    position: BigInt = strawberry.field(description="Event position of the latest change.")
    version: int

    @classmethod
    def from_record(cls, r: ScheduleRecord) -> ScheduledPayment:
        return cls(
            id=strawberry.ID(r.schedule_id),
            merchant_id=r.merchant_id,
            wallet_id=strawberry.ID(r.wallet_id),
            amount=MoneyAmount.of(r.amount, r.currency),
            currency=r.currency,
            method=r.method,
            frequency=JSON(r.frequency),
            status=r.status,
            catch_up=r.catch_up,
            starts_at=r.starts_at,
            ends_at=r.ends_at,
            max_occurrences=r.max_occurrences,
            next_occurrence=r.next_number if r.next_due_at is not None else None,
            next_due_at=r.next_due_at,
            occurrences=OccurrenceCounts(started=r.started_count, skipped=r.skipped_count),
            last_payment_id=strawberry.ID(r.last_payment_id) if r.last_payment_id else None,
            last_due_at=r.last_due_at,
            cancel_reason=r.cancel_reason,
            metadata=JSON(r.metadata),
            created_at=r.created_at,
            updated_at=r.updated_at,
            position=BigInt(r.position),
            version=r.version,
        )


async def scheduled_payment(info: ReadInfo, id: strawberry.ID) -> ScheduledPayment | None:
    ctx = info.context
    scope = ctx.scope()
    try:
        sid = str(uuid.UUID(id))
    except ValueError:
        raise ValidationError(f"id: {id[:60]!r} is not a UUID") from None
    row = await ctx.run(partial(schedule_port(info).schedule, sid, scope))
    if row is None:
        raise NotFound(f"scheduled payment {sid} not found")
    return ScheduledPayment.from_record(row)


async def scheduled_payments(
    info: ReadInfo,
    status: str | None = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[ScheduledPayment] | None:
    ctx = info.context
    scope = ctx.scope()
    if status is not None and status not in SCHEDULE_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(SCHEDULE_STATUSES)}")
    port = schedule_port(info)
    return await created_order_page(
        ctx,
        SCHEDULES_CURSOR,
        first,
        after,
        lambda key, limit: port.schedules(scope, status=status, after=key, limit=limit),
        ScheduledPayment.from_record,
    )


@strawberry.type
class ScheduleQuery:
    scheduled_payment: ScheduledPayment | None = strawberry.field(
        resolver=scheduled_payment,
        description="One scheduled payment; null with a not-found error if missing or not visible.",
    )
    scheduled_payments: Connection[ScheduledPayment] | None = strawberry.field(
        resolver=scheduled_payments,
        description="Visible scheduled payments in creation order, with status (active,"
        " canceled or completed) if given; first is capped at 500.",
    )

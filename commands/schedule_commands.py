"""Scheduled and recurring payments: the commands and their handlers.

``CreateSchedule``, ``UpdateSchedule``, ``CancelSchedule`` and ``ShowSchedule`` are the
merchant's (``/v1/scheduled-payments``); ``RunScheduleOccurrences`` is the scheduler's
(``infrastructure/scheduler.py``). Running an occurrence records ``OccurrenceStarted`` on
the schedule and creates its ``Payment`` in the same unit of work, so the engine saves both
in one transaction: both are written or neither.

Exactly once: the plan is computed on the schedule as loaded, and the schedule's
guard accepts only its next occurrence. Two schedulers racing on one schedule both pass in
memory, but optimistic concurrency keeps only the first save; the engine re-runs the
loser alone on freshly loaded state, where that occurrence is no longer due (or, should
the guard refuse it, the refusal is answered as "nothing to do").

The ``Command`` union in ``commands/model.py`` does not list these commands: dispatch is
by type (``SCHEDULE_HANDLERS``, merged in ``commands/dispatch.py``), and ``as_command``
passes them where a ``Command`` is typed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from commands.handlers import Result, UnitOfWork, own
from commands.model import Command
from commands.payment_handlers import IdempotencyKeyReused
from domain.errors import (
    CurrencyMismatch,
    NotFound,
    OccurrenceAlreadyHandled,
    WalletNotActive,
)
from domain.money import Currency, Money, format_minor
from domain.payment import Payment
from domain.schedule import (
    CANCELED,
    CATCH_UP_LATEST,
    RUN,
    SKIP_MISSED,
    SKIP_REQUESTED,
    UNCHANGED,
    ScheduledPayment,
    Unchanged,
    occurrence_payment_id,
    occurrence_payment_key,
)

# How many coming due dates a schedule's view lists.
UPCOMING = 5
# Occurrence payments are captured as soon as they are authorized: nobody is there to
# capture them by hand.
CAPTURE_AUTOMATIC = "automatic"


# ---- commands ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateSchedule:
    """``schedule_id`` is derived from the merchant and the request's idempotency key."""

    schedule_id: UUID
    wallet_id: UUID
    amount: Money
    method: str
    payment_method_token: str
    frequency: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None = None
    max_occurrences: int | None = None
    catch_up: str = CATCH_UP_LATEST
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateSchedule:
    """``None`` (``UNCHANGED`` for ``ends_at`` and ``max_occurrences``, where ``None``
    means "no end"): left as it is. ``amount`` is the API's decimal string, parsed in the
    schedule's currency."""

    schedule_id: UUID
    amount: str | None = None
    currency: str | None = None
    frequency: dict[str, Any] | None = None
    ends_at: datetime | Unchanged | None = UNCHANGED
    max_occurrences: int | Unchanged | None = UNCHANGED
    catch_up: str | None = None
    metadata: dict[str, Any] | None = None
    payment_method_token: str | None = None


@dataclass(frozen=True, slots=True)
class CancelSchedule:
    """Idempotent: canceling a canceled schedule answers it as it is."""

    schedule_id: UUID
    reason: str = SKIP_REQUESTED


@dataclass(frozen=True, slots=True)
class ShowSchedule:
    schedule_id: UUID
    status: int = 200


@dataclass(frozen=True, slots=True)
class RunScheduleOccurrences:
    """Internal (the scheduler's): start or skip what is due at ``now`` on one schedule.
    The same ``now`` decides the plan and is checked by the guards."""

    schedule_id: UUID
    now: datetime


ScheduleCommand = (
    CreateSchedule | UpdateSchedule | CancelSchedule | ShowSchedule | RunScheduleOccurrences
)


def as_command(command: ScheduleCommand) -> Command:
    """``command`` where a ``Command`` is typed (see the module docstring)."""
    return cast(Command, command)


# ---- views -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def upcoming(schedule: ScheduledPayment, limit: int = UPCOMING) -> list[datetime]:
    """The next ``limit`` due dates under the schedule's current terms (fewer at its end)."""
    dates: list[datetime] = []
    if not schedule.is_active:
        return dates
    number, at = schedule.next_number, schedule.next_due_at
    while at is not None and len(dates) < limit:
        dates.append(at)
        at = schedule.following(number, at)
        number += 1
    return dates


def schedule_view(schedule: ScheduledPayment) -> dict[str, Any]:
    """A ``ScheduledPayment`` as the API shows it (never its payment method token)."""
    exp = Currency.of(schedule.currency).exponent
    return {
        "id": str(schedule.id),
        "merchant_id": schedule.merchant_id,
        "wallet_id": schedule.wallet_id,
        "amount": format_minor(schedule.amount, exp),
        "currency": schedule.currency,
        "method": schedule.method,
        "frequency": schedule.frequency,
        "starts_at": _iso(schedule.starts_at),
        "ends_at": _iso(schedule.ends_at),
        "max_occurrences": schedule.max_occurrences,
        "catch_up": schedule.catch_up,
        "metadata": schedule.metadata,
        "status": schedule.status,
        "next_occurrence": schedule.next_number if schedule.next_due_at is not None else None,
        "next_due_at": _iso(schedule.next_due_at),
        "upcoming": [at.isoformat() for at in upcoming(schedule)],
        "occurrences": {"started": schedule.started_count, "skipped": schedule.skipped_count},
        "last_payment_id": schedule.last_payment_id,
        "created_at": schedule.created_on.isoformat(),
        "updated_at": schedule.modified_on.isoformat(),
        "version": schedule.version,
    }


def _view(schedule: ScheduledPayment, status: int = 200, **extra: Any) -> Result:
    return status, {"scheduled_payment": schedule_view(schedule), **extra}


# ---- handlers ----------------------------------------------------------------------------


def _schedule(uow: UnitOfWork, schedule_id: UUID) -> ScheduledPayment:
    agg = uow.find(schedule_id)
    if not isinstance(agg, ScheduledPayment) or not uow.principal.may_see(agg.merchant_id):
        # Another merchant's schedule is reported as absent, not as forbidden.
        raise NotFound(f"scheduled payment {schedule_id} not found")
    return agg


def create_schedule(cmd: CreateSchedule, uow: UnitOfWork) -> Result:
    if uow.find(cmd.schedule_id) is not None:
        # The engine replays a stored answer for a retried key; reaching this means the
        # key's record was purged after the schedule was made (a day or more ago).
        raise IdempotencyKeyReused(
            "this Idempotency-Key already created a scheduled payment; use a new key"
        )
    wallet = own(uow, uow.wallet(cmd.wallet_id))
    wallet.require_currency(cmd.amount)
    wallet.require_active()
    schedule = ScheduledPayment.create(
        cmd.schedule_id,
        merchant_id=wallet.merchant_id,
        wallet_id=str(wallet.id),
        amount=cmd.amount,
        method=cmd.method,
        payment_method_token=cmd.payment_method_token,
        frequency=cmd.frequency,
        starts_at=cmd.starts_at,
        ends_at=cmd.ends_at,
        max_occurrences=cmd.max_occurrences,
        catch_up=cmd.catch_up,
        metadata=cmd.metadata,
        ctx=uow.ctx,
    )
    uow.add(schedule)
    return _view(schedule, 201)


def update_schedule(cmd: UpdateSchedule, uow: UnitOfWork) -> Result:
    schedule = _schedule(uow, cmd.schedule_id)
    if cmd.currency is not None and cmd.currency != schedule.currency:
        raise CurrencyMismatch(
            f"scheduled payment {schedule.id} is in {schedule.currency}, not {cmd.currency}"
        )
    amount = Money.parse(cmd.amount, schedule.currency) if cmd.amount is not None else None
    changed = schedule.update(
        uow.ctx,
        amount=amount,
        frequency=cmd.frequency,
        ends_at=cmd.ends_at,
        max_occurrences=cmd.max_occurrences,
        catch_up=cmd.catch_up,
        metadata=cmd.metadata,
        payment_method_token=cmd.payment_method_token,
    )
    return _view(schedule, 200, changed=changed)


def cancel_schedule(cmd: CancelSchedule, uow: UnitOfWork) -> Result:
    schedule = _schedule(uow, cmd.schedule_id)
    if schedule.status != CANCELED:
        schedule.cancel(uow.ctx, cmd.reason)  # a completed schedule is refused (409)
    return _view(schedule)


def show_schedule(cmd: ShowSchedule, uow: UnitOfWork) -> Result:
    return _view(_schedule(uow, cmd.schedule_id), cmd.status)


def run_occurrences(cmd: RunScheduleOccurrences, uow: UnitOfWork) -> Result:
    """Start (with its payment) or skip each occurrence due at ``cmd.now``, as the
    catch-up policy plans it. ``more``: the plan was bounded and more is due."""
    schedule = _schedule(uow, cmd.schedule_id)
    ctx = dataclasses.replace(uow.ctx, now=cmd.now)
    payment_ids: list[str] = []
    skipped = 0
    try:
        for number, due_at, action in schedule.due(ctx.now):
            if action != RUN:
                schedule.skip_occurrence(number, due_at, SKIP_MISSED, ctx)
                skipped += 1
                continue
            wallet = uow.wallet(UUID(schedule.wallet_id))
            try:
                wallet.require_active()
            except WalletNotActive as exc:
                # No payment can be made into it: recorded as skipped (why: the error's
                # code) rather than left due, which would be retried every pass.
                schedule.skip_occurrence(number, due_at, exc.code, ctx)
                skipped += 1
                continue
            # Derived from the occurrence: were it ever saved apart from the schedule's
            # event, a second creation would conflict on the id instead of charging twice.
            payment_id = occurrence_payment_id(schedule.id, number)
            schedule.start_occurrence(number, due_at, payment_id, ctx)
            payment = Payment.create(
                payment_id,
                merchant_id=schedule.merchant_id,
                amount=schedule.money(schedule.amount),
                method=schedule.method,
                payment_method_token=schedule.payment_method_token,
                capture_method=CAPTURE_AUTOMATIC,
                metadata=dict(schedule.metadata),
                wallet_id=schedule.wallet_id,
                fingerprint=occurrence_payment_key(schedule.id, number),
                ctx=ctx,
            )
            uow.add(payment)
            payment_ids.append(str(payment_id))
    except OccurrenceAlreadyHandled:
        # Another scheduler got there first; what this one did before it stays valid.
        pass
    return _view(
        schedule,
        200,
        payment_ids=payment_ids,
        skipped=skipped,
        more=bool(schedule.due(ctx.now)),
    )


SCHEDULE_HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], Result]] = {
    CreateSchedule: create_schedule,
    UpdateSchedule: update_schedule,
    CancelSchedule: cancel_schedule,
    ShowSchedule: show_schedule,
    RunScheduleOccurrences: run_occurrences,
}

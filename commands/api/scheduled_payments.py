"""Scheduled and recurring payments: ``/v1/scheduled-payments``.

``POST`` creates a schedule (Idempotency-Key required; the id is derived from the merchant
and the key). ``GET /{id}``, ``PUT /{id}`` and ``DELETE /{id}`` go through the engine and
answer the schedule as it is now; ``PUT`` and ``DELETE`` are idempotent by nature and take
an Idempotency-Key only if the client sends one. ``GET`` (the list) reads the read model
through ``ScheduleListing``, a port the composition root sets on
``app.state.scheduled_payments``; it lags the writes by the projection's delay.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime, Field, StrictStr

from commands.api import deps
from commands.api.deps import CommandWriter, CurrentPrincipal, json_response
from commands.api.schemas import Amount, Body, CurrencyCode, Metadata, PaymentMethod
from commands.engine import Outcome
from commands.handlers import derived_id
from commands.model import CommandRequest, Principal
from commands.problems import RequestProblem
from commands.schedule_commands import (
    CancelSchedule,
    CreateSchedule,
    ScheduleCommand,
    ShowSchedule,
    UpdateSchedule,
    as_command,
)
from domain.money import Currency, Money, format_minor
from domain.schedule import UNCHANGED

router = APIRouter(tags=["scheduled-payments"])

MAX_PAGE = 200

# ---- the read port ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleSummary:
    """One row of the schedules read model (amounts in minor units)."""

    id: str
    merchant_id: str
    wallet_id: str
    status: str
    amount: int
    currency: str
    method: str
    frequency: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None
    max_occurrences: int | None
    catch_up: str
    metadata: dict[str, Any]
    next_occurrence: int | None
    next_due_at: datetime | None
    started: int
    skipped: int
    last_payment_id: str | None
    created_at: datetime
    updated_at: datetime
    position: int  # the creation's position: the listing's order and cursor


class ScheduleListing(Protocol):
    """Port: schedules from the read model, in creation order."""

    def list_schedules(
        self, merchant_id: str | None, *, status: str | None, after: int, limit: int
    ) -> list[ScheduleSummary]:
        """Up to ``limit`` schedules created after position ``after``, of ``merchant_id``
        (None: every merchant's) and with ``status`` (None: any)."""
        ...


def _listing(request: Request) -> ScheduleListing:
    listing: ScheduleListing | None = getattr(request.app.state, "scheduled_payments", None)
    if listing is None:
        raise RequestProblem(
            "scheduled-payments-not-configured",
            "Scheduled payments listing is not configured",
            503,
            "this service has no read model of scheduled payments",
        )
    return listing


# ---- request bodies -------------------------------------------------------------------------

Frequency = Annotated[
    dict[str, Any],
    Field(
        examples=[{"type": "monthly", "day": 31, "at": "09:00"}],
        description=(
            'One of {"type": "interval", "every_seconds": n}, {"type": "daily", "at": '
            '"HH:MM"}, {"type": "weekly", "weekday": "monday", "at": "HH:MM"}, '
            '{"type": "monthly", "day": 1..31, "at": "HH:MM"}; times are UTC.'
        ),
    ),
]
MaxOccurrences = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]
CatchUp = Literal["latest", "all", "none"]
# ``Metadata`` without its default, for an update where absent means unchanged.
NewMetadata = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[StrictStr, Field(max_length=500)]],
    Field(max_length=50, description="Replaces the metadata: up to 50 string keys and values."),
]
Token = Annotated[
    StrictStr,
    Field(min_length=1, max_length=255, description="The provider's token; never a card number."),
]


class ScheduleCreate(Body):
    wallet_id: UUID = Field(description="The merchant's wallet the payments are credited to.")
    amount: Amount
    currency: CurrencyCode
    method: PaymentMethod
    payment_method_token: Token
    frequency: Frequency
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = Field(default=None, description="Inclusive; null: no end.")
    max_occurrences: MaxOccurrences | None = None
    catch_up: CatchUp = "latest"
    metadata: Metadata


class ScheduleUpdate(Body):
    """Fields left out are unchanged; ``ends_at`` and ``max_occurrences`` set to null
    remove the limit."""

    amount: Amount | None = None
    currency: CurrencyCode | None = None
    frequency: Frequency | None = None
    ends_at: AwareDatetime | None = None
    max_occurrences: MaxOccurrences | None = None
    catch_up: CatchUp | None = None
    metadata: NewMetadata | None = None
    payment_method_token: Token | None = None


# ---- callers --------------------------------------------------------------------------------


@dataclass
class Caller:
    """A write whose Idempotency-Key is optional (PUT, DELETE): with a key its answer is
    stored and replayed like any other write; without one it simply runs again."""

    request: Request
    principal: Principal
    key: str | None

    async def run(self, command: ScheduleCommand) -> Response:
        if self.key is not None:
            keyed = await deps.writer(self.request, self.principal, self.key)
            return await keyed.run(as_command(command))
        return await _submit(self.request, self.principal, command)


async def caller(
    request: Request,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Caller:
    if not principal.can_write:
        raise RequestProblem("forbidden", "Forbidden", 403, f"role {principal.role!r} is read-only")
    return Caller(request, principal, idempotency_key)


OptionalKeyWriter = Annotated[Caller, Depends(caller)]


async def _submit(request: Request, principal: Principal, command: ScheduleCommand) -> Response:
    corr = request.headers.get("X-Request-Id") or str(uuid.uuid4())
    engine = request.app.state.ledger.engine
    req = CommandRequest(as_command(command), principal, corr)
    return json_response(await asyncio.wrap_future(engine.submit(req)))


# ---- routes ---------------------------------------------------------------------------------


@router.post("/v1/scheduled-payments", status_code=201, summary="Charge a customer on a schedule")
async def create_scheduled_payment(body: ScheduleCreate, writer: CommandWriter) -> Response:
    schedule_id = derived_id("scheduled-payment", writer.principal.merchant_id, writer.key)
    command = CreateSchedule(
        schedule_id=schedule_id,
        wallet_id=body.wallet_id,
        amount=Money.parse(body.amount, body.currency),
        method=body.method,
        payment_method_token=body.payment_method_token,
        frequency=dict(body.frequency),
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        max_occurrences=body.max_occurrences,
        catch_up=body.catch_up,
        metadata=dict(body.metadata),
    )
    return await writer.run(as_command(command))


@router.get("/v1/scheduled-payments/{schedule_id}", summary="A scheduled payment as it is now")
async def get_scheduled_payment(
    schedule_id: UUID, request: Request, principal: CurrentPrincipal
) -> Response:
    return await _submit(request, principal, ShowSchedule(schedule_id))


@router.put("/v1/scheduled-payments/{schedule_id}", summary="Change a scheduled payment")
async def update_scheduled_payment(
    schedule_id: UUID, body: ScheduleUpdate, write: OptionalKeyWriter
) -> Response:
    given = body.model_fields_set
    command = UpdateSchedule(
        schedule_id=schedule_id,
        amount=body.amount,
        currency=body.currency,
        frequency=dict(body.frequency) if body.frequency is not None else None,
        ends_at=body.ends_at if "ends_at" in given else UNCHANGED,
        max_occurrences=body.max_occurrences if "max_occurrences" in given else UNCHANGED,
        catch_up=body.catch_up,
        metadata=dict(body.metadata) if body.metadata is not None else None,
        payment_method_token=body.payment_method_token,
    )
    return await write.run(command)


@router.delete("/v1/scheduled-payments/{schedule_id}", summary="Cancel a scheduled payment")
async def cancel_scheduled_payment(schedule_id: UUID, write: OptionalKeyWriter) -> Response:
    return await write.run(CancelSchedule(schedule_id))


@router.get("/v1/scheduled-payments", summary="The merchant's scheduled payments")
async def list_scheduled_payments(
    request: Request,
    principal: CurrentPrincipal,
    status: Annotated[Literal["active", "canceled", "completed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    merchant_id: Annotated[
        str | None, Query(max_length=200, description="Admin, auditor and analyst keys only.")
    ] = None,
) -> Response:
    if merchant_id is not None and not principal.sees_all:
        raise RequestProblem(
            "forbidden", "Forbidden", 403, "merchant keys list only their own schedules"
        )
    owner = merchant_id if principal.sees_all else principal.merchant_id
    after = _decode_cursor(cursor)
    rows = await asyncio.to_thread(
        _listing(request).list_schedules, owner, status=status, after=after, limit=limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    body = {
        "scheduled_payments": [summary_view(r) for r in page],
        "next_cursor": _encode_cursor(page[-1].position) if more and page else None,
    }
    return json_response(Outcome(200, body))


def summary_view(row: ScheduleSummary) -> dict[str, Any]:
    exp = Currency.of(row.currency).exponent
    return {
        "id": row.id,
        "merchant_id": row.merchant_id,
        "wallet_id": row.wallet_id,
        "amount": format_minor(row.amount, exp),
        "currency": row.currency,
        "method": row.method,
        "frequency": row.frequency,
        "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat() if row.ends_at else None,
        "max_occurrences": row.max_occurrences,
        "catch_up": row.catch_up,
        "metadata": row.metadata,
        "status": row.status,
        "next_occurrence": row.next_occurrence,
        "next_due_at": row.next_due_at.isoformat() if row.next_due_at else None,
        "occurrences": {"started": row.started, "skipped": row.skipped},
        "last_payment_id": row.last_payment_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"sp:{position}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, position = text.partition(":")
        if prefix != "sp" or not position.isdigit():
            raise ValueError(cursor)
        return int(position)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RequestProblem(
            "validation-error", "Invalid request", 422, "cursor is not one this API gave"
        ) from None

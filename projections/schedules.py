"""The scheduled-payments read model: one row per schedule, with when it is next due.

Filled from the events' own ``next_due_at`` (the aggregate records its decision), so this
projection needs no frequency rule. The scheduler polls the rows that are due
(``status = 'active' AND next_due_at <= now``); ``GET /v1/scheduled-payments`` lists them.
The payment method token is not kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from domain.schedule import ACTIVE, CANCELED, COMPLETED, ScheduledPayment


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    schedule_id: str
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
    next_number: int
    next_due_at: datetime | None
    created_at: datetime
    position: int
    version: int


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """Columns to set on a schedule's row (names from ``CHANGEABLE``), and occurrences to
    add to its counts."""

    schedule_id: str
    position: int
    at: datetime
    version: int
    values: dict[str, Any] = field(default_factory=dict)
    started: int = 0
    skipped: int = 0


# The columns a ScheduleChange may set.
CHANGEABLE = frozenset(
    {
        "status",
        "amount",
        "frequency",
        "ends_at",
        "max_occurrences",
        "catch_up",
        "metadata",
        "next_number",
        "next_due_at",
        "last_payment_id",
        "last_due_at",
        "cancel_reason",
    }
)


class SchedulesWriter(Protocol):
    def schedule_created(self, row: ScheduleRow) -> None: ...
    def schedule_changed(self, change: ScheduleChange) -> None: ...


def _status_after(next_due_at: datetime | None) -> str:
    return ACTIVE if next_due_at is not None else COMPLETED


class ScheduledPaymentsProjector:
    """``rm_scheduled_payments``: each schedule's terms, status, counts and next due."""

    name = "scheduled_payments"
    consumes: tuple[type, ...] = (ScheduledPayment.Event,)

    def process(self, event: Any, position: int, writer: SchedulesWriter) -> None:
        if not isinstance(event, ScheduledPayment.Event):
            return
        sid = str(event.originator_id)
        at = event.timestamp
        version = event.originator_version
        if isinstance(event, ScheduledPayment.Created):
            writer.schedule_created(
                ScheduleRow(
                    schedule_id=sid,
                    merchant_id=event.merchant_id,
                    wallet_id=event.wallet_id,
                    status=ACTIVE,
                    amount=event.amount,
                    currency=event.currency,
                    method=event.method,
                    frequency=event.frequency,
                    starts_at=event.starts_at,
                    ends_at=event.ends_at,
                    max_occurrences=event.max_occurrences,
                    catch_up=event.catch_up,
                    metadata=event.metadata,
                    next_number=1,
                    next_due_at=event.next_due_at,
                    created_at=at,
                    position=position,
                    version=version,
                )
            )
        elif isinstance(event, ScheduledPayment.Updated):
            values = {
                "amount": event.amount,
                "frequency": event.frequency,
                "ends_at": event.ends_at,
                "max_occurrences": event.max_occurrences,
                "catch_up": event.catch_up,
                "metadata": event.metadata,
                "next_due_at": event.next_due_at,
                "status": _status_after(event.next_due_at),
            }
            writer.schedule_changed(ScheduleChange(sid, position, at, version, values))
        elif isinstance(event, ScheduledPayment.OccurrenceStarted):
            values = self._handled(event.number, event.due_at, event.next_due_at)
            values["last_payment_id"] = event.payment_id
            writer.schedule_changed(ScheduleChange(sid, position, at, version, values, started=1))
        elif isinstance(event, ScheduledPayment.OccurrenceSkipped):
            values = self._handled(event.number, event.due_at, event.next_due_at)
            writer.schedule_changed(ScheduleChange(sid, position, at, version, values, skipped=1))
        elif isinstance(event, ScheduledPayment.Canceled):
            values = {"status": CANCELED, "next_due_at": None, "cancel_reason": event.reason}
            writer.schedule_changed(ScheduleChange(sid, position, at, version, values))

    @staticmethod
    def _handled(number: int, due_at: datetime, next_due_at: datetime | None) -> dict[str, Any]:
        return {
            "next_number": number + 1,
            "last_due_at": due_at,
            "next_due_at": next_due_at,
            "status": _status_after(next_due_at),
        }


def schedule_projectors() -> list[Any]:
    return [ScheduledPaymentsProjector()]

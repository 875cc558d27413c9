"""The read side's port for scheduled (recurring) payments.

``ScheduleReadQueries`` answers from the ``scheduled_payments`` projection's table
(infrastructure implements it on PostgreSQL: ``PgScheduleReadQueries``). Like
``ReadQueries``, visibility is part of every query, and every method blocks: callers run
it in a worker thread. Optional in the GraphQL context: without it the schedule fields
fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from read_api.ports import Scope

# The projections this port reads; ``Ledger-Min-Position`` waits for them too.
SCHEDULE_PROJECTIONS = ("scheduled_payments",)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One row of the scheduled-payments read model; amounts in minor units."""

    schedule_id: str
    merchant_id: str
    wallet_id: str
    status: str  # active, canceled or completed
    amount: int
    currency: str
    method: str
    frequency: dict[str, Any]
    starts_at: datetime
    ends_at: datetime | None
    max_occurrences: int | None
    catch_up: str
    metadata: dict[str, Any]
    next_number: int  # the number the next occurrence will have
    next_due_at: datetime | None  # None once canceled or completed
    started_count: int
    skipped_count: int
    last_payment_id: str | None
    last_due_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime
    created_position: int  # the lists' order and cursor key
    position: int  # of the latest change
    version: int


class ScheduleReadQueries(Protocol):
    """Blocking queries of the scheduled-payments read model."""

    def schedule(self, schedule_id: str, scope: Scope) -> ScheduleRecord | None:
        """The schedule if it exists and ``scope`` may see it."""
        ...

    def schedules(
        self, scope: Scope, *, status: str | None, after: int | None, limit: int
    ) -> list[ScheduleRecord]:
        """Up to ``limit`` visible schedules (with ``status`` if given) in creation order,
        those created strictly after position ``after`` when given."""
        ...

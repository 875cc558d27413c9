"""``ScheduleReadQueries`` on PostgreSQL: keyset-paginated SQL over ``rm_scheduled_payments``.

Lists walk ``(merchant_id, created_position)`` for a merchant and ``(created_position)``
for a caller who sees all; the status filter is a fixed fragment. Values always travel as
parameters.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from read_api.ports import Scope
from read_api.schedule_ports import ScheduleRecord

SCHEDULES = sql.Identifier("rm_scheduled_payments")

_COLUMNS = (
    "schedule_id", "merchant_id", "wallet_id", "status", "amount", "currency", "method",
    "frequency", "starts_at", "ends_at", "max_occurrences", "catch_up", "metadata",
    "next_number", "next_due_at", "started_count", "skipped_count", "last_payment_id",
    "last_due_at", "cancel_reason", "created_at", "updated_at", "created_position",
    "position", "version",
)  # fmt: skip
_SELECT = sql.SQL("SELECT {} FROM {}").format(
    sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), SCHEDULES
)


def schedule_from_values(v: tuple[Any, ...]) -> ScheduleRecord:
    """A ``ScheduleRecord`` from one row selected in ``_COLUMNS`` order."""
    r = dict(zip(_COLUMNS, v, strict=True))
    return ScheduleRecord(
        schedule_id=str(r["schedule_id"]),
        merchant_id=r["merchant_id"],
        wallet_id=str(r["wallet_id"]),
        status=r["status"],
        amount=int(r["amount"]),
        currency=r["currency"],
        method=r["method"],
        frequency=dict(r["frequency"]),
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
        max_occurrences=r["max_occurrences"],
        catch_up=r["catch_up"],
        metadata=dict(r["metadata"] or {}),
        next_number=int(r["next_number"]),
        next_due_at=r["next_due_at"],
        started_count=int(r["started_count"]),
        skipped_count=int(r["skipped_count"]),
        last_payment_id=r["last_payment_id"],
        last_due_at=r["last_due_at"],
        cancel_reason=r["cancel_reason"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        created_position=int(r["created_position"]),
        position=int(r["position"]),
        version=int(r["version"]),
    )


class PgScheduleReadQueries:
    """The schedule read port on the live read-model table of one PostgreSQL database."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def _fetch(self, query: sql.Composed, params: list[Any]) -> list[ScheduleRecord]:
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [schedule_from_values(r) for r in rows]

    def schedule(self, schedule_id: str, scope: Scope) -> ScheduleRecord | None:
        parts = [sql.SQL("schedule_id = %s")]
        params: list[Any] = [UUID(schedule_id)]
        if scope.merchant_id is not None:
            parts.append(sql.SQL("merchant_id = %s"))
            params.append(scope.merchant_id)
        rows = self._fetch(_SELECT + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params)
        return rows[0] if rows else None

    def schedules(
        self, scope: Scope, *, status: str | None, after: int | None, limit: int
    ) -> list[ScheduleRecord]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for fragment, value in (
            ("merchant_id = %s", scope.merchant_id),
            ("status = %s", status),
            ("created_position > %s", after),
        ):
            if value is not None:
                parts.append(sql.SQL(fragment))
                params.append(value)
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")
        query = _SELECT + where + sql.SQL(" ORDER BY created_position LIMIT %s")
        return self._fetch(query, [*params, limit])

"""``ScheduleListing`` (``commands/api/scheduled_payments.py``) on ``rm_scheduled_payments``."""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from commands.api.scheduled_payments import ScheduleSummary

_COLUMNS = (
    "schedule_id, merchant_id, wallet_id, status, amount, currency, method, frequency,"
    " starts_at, ends_at, max_occurrences, catch_up, metadata, next_number, next_due_at,"
    " started_count, skipped_count, last_payment_id, created_at, updated_at, created_position"
)


def _summary(v: Any) -> ScheduleSummary:
    return ScheduleSummary(
        id=str(v[0]),
        merchant_id=v[1],
        wallet_id=v[2],
        status=v[3],
        amount=int(v[4]),
        currency=v[5],
        method=v[6],
        frequency=dict(v[7]),
        starts_at=v[8],
        ends_at=v[9],
        max_occurrences=v[10],
        catch_up=v[11],
        metadata=dict(v[12] or {}),
        next_occurrence=int(v[13]) if v[14] is not None else None,
        next_due_at=v[14],
        started=int(v[15]),
        skipped=int(v[16]),
        last_payment_id=v[17],
        created_at=v[18],
        updated_at=v[19],
        position=int(v[20]),
    )


class PgScheduleListing:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def list_schedules(
        self, merchant_id: str | None, *, status: str | None, after: int, limit: int
    ) -> list[ScheduleSummary]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM rm_scheduled_payments"
                " WHERE created_position > %s"
                " AND (%s::text IS NULL OR merchant_id = %s)"
                " AND (%s::text IS NULL OR status = %s)"
                " ORDER BY created_position LIMIT %s",
                (after, merchant_id, merchant_id, status, status, limit),
            ).fetchall()
        return [_summary(v) for v in rows]

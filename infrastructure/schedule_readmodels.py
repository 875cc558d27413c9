"""The ``rm_scheduled_payments`` table and the buffered writer of its projector
(``projections/schedules.py``). Registered in ``readmodels.TABLES`` and ``BUFFERS``.

The buffer folds a batch's events in memory: a schedule created in the batch is inserted
with every later change already applied; a schedule created earlier gets one UPDATE with
the batch's last values and the sum of its new occurrences. Both inside the runner's
transaction, with the tracking position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import Connection, sql
from psycopg.types.json import Jsonb

from projections.schedules import CHANGEABLE, ScheduleChange, ScheduleRow

SCHEDULES_DDL = """
CREATE TABLE {t} (
    schedule_id uuid PRIMARY KEY,
    merchant_id text NOT NULL,
    wallet_id text NOT NULL,
    status text NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    method text NOT NULL,
    frequency jsonb NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz,
    max_occurrences integer,
    catch_up text NOT NULL,
    metadata jsonb NOT NULL,
    next_number integer NOT NULL,
    next_due_at timestamptz,
    started_count integer NOT NULL DEFAULT 0,
    skipped_count integer NOT NULL DEFAULT 0,
    last_payment_id text,
    last_due_at timestamptz,
    cancel_reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version integer NOT NULL
);
CREATE INDEX ON {t} (next_due_at) WHERE status = 'active';
CREATE INDEX ON {t} (merchant_id, created_position);
CREATE INDEX ON {t} (created_position);
"""

_JSON = frozenset({"frequency", "metadata"})
_INSERT_COLUMNS = (
    "schedule_id", "merchant_id", "wallet_id", "status", "amount", "currency", "method",
    "frequency", "starts_at", "ends_at", "max_occurrences", "catch_up", "metadata",
    "next_number", "next_due_at", "started_count", "skipped_count", "last_payment_id",
    "last_due_at", "cancel_reason", "created_at", "updated_at", "created_position",
    "position", "version",
)  # fmt: skip


def _db(column: str, value: Any) -> Any:
    return Jsonb(value) if column in _JSON and value is not None else value


class ScheduledPaymentsBuffer:
    """``projections.schedules.SchedulesWriter`` on ``rm_scheduled_payments``."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.created: dict[str, dict[str, Any]] = {}
        self.changed: dict[str, dict[str, Any]] = {}

    def schedule_created(self, row: ScheduleRow) -> None:
        self.created[row.schedule_id] = {
            "schedule_id": row.schedule_id,
            "merchant_id": row.merchant_id,
            "wallet_id": row.wallet_id,
            "status": row.status,
            "amount": row.amount,
            "currency": row.currency,
            "method": row.method,
            "frequency": row.frequency,
            "starts_at": row.starts_at,
            "ends_at": row.ends_at,
            "max_occurrences": row.max_occurrences,
            "catch_up": row.catch_up,
            "metadata": row.metadata,
            "next_number": row.next_number,
            "next_due_at": row.next_due_at,
            "started_count": 0,
            "skipped_count": 0,
            "last_payment_id": None,
            "last_due_at": None,
            "cancel_reason": None,
            "created_at": row.created_at,
            "updated_at": row.created_at,
            "created_position": row.position,
            "position": row.position,
            "version": row.version,
        }

    def schedule_changed(self, change: ScheduleChange) -> None:
        unknown = change.values.keys() - CHANGEABLE
        if unknown:
            raise ValueError(f"not a changeable column: {', '.join(sorted(unknown))}")
        stamp = {"updated_at": change.at, "position": change.position, "version": change.version}
        row = self.created.get(change.schedule_id)
        if row is not None:
            row.update(change.values, **stamp)
            row["started_count"] += change.started
            row["skipped_count"] += change.skipped
            return
        pending = self.changed.setdefault(
            change.schedule_id, {"values": {}, "started": 0, "skipped": 0}
        )
        pending["values"].update(change.values, **stamp)
        pending["started"] += change.started
        pending["skipped"] += change.skipped

    def flush(self, conn: Connection[Any]) -> None:
        t = sql.Identifier(self.table)
        with conn.cursor() as cur:
            if self.created:
                cur.executemany(
                    sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        t,
                        sql.SQL(", ").join(map(sql.Identifier, _INSERT_COLUMNS)),
                        sql.SQL(", ").join(sql.Placeholder() * len(_INSERT_COLUMNS)),
                    ),
                    [[_db(c, row[c]) for c in _INSERT_COLUMNS] for row in self.created.values()],
                )
            for schedule_id, change in self.changed.items():
                values: dict[str, Any] = change["values"]
                sets = [sql.SQL("{} = %s").format(sql.Identifier(column)) for column in values] + [
                    sql.SQL("started_count = started_count + %s"),
                    sql.SQL("skipped_count = skipped_count + %s"),
                ]
                cur.execute(
                    sql.SQL("UPDATE {} SET {} WHERE schedule_id = %s").format(
                        t, sql.SQL(", ").join(sets)
                    ),
                    [
                        *(_db(c, v) for c, v in values.items()),
                        change["started"],
                        change["skipped"],
                        schedule_id,
                    ],
                )


TABLES: dict[str, tuple[str, str]] = {
    "scheduled_payments": ("rm_scheduled_payments", SCHEDULES_DDL),
}

BUFFERS: dict[str, Callable[[str], Any]] = {
    "scheduled_payments": ScheduledPaymentsBuffer,
}

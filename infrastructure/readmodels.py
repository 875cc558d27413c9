"""PostgreSQL read-model tables and buffered writers for the projectors' ports.

Writers buffer a batch of events' rows in memory and flush them with COPY and one
``UPDATE`` per table inside the runner's transaction, so one batch is one commit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection, sql

from infrastructure import payment_readmodels, schedule_readmodels
from projections.ports import StatementEntry, TransferChange, TransferRow, WalletChange, WalletRow

# ---- DDL: every table is created under a given name so a rebuild can use a new one ------

BALANCES_DDL = """
CREATE TABLE {t} (
    wallet_id uuid PRIMARY KEY,
    merchant_id text NOT NULL,
    currency text NOT NULL,
    status text NOT NULL DEFAULT 'active',
    credit_limit bigint NOT NULL DEFAULT 0,
    posted bigint NOT NULL DEFAULT 0,
    pending bigint NOT NULL DEFAULT 0,
    metadata jsonb NOT NULL DEFAULT '{{}}',
    is_system boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 1,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX ON {t} (merchant_id, wallet_id);
"""

STATEMENTS_DDL = """
CREATE TABLE {t} (
    wallet_id uuid NOT NULL,
    position bigint NOT NULL,
    transfer_id uuid NOT NULL,
    kind text NOT NULL,
    amount bigint NOT NULL,
    posted_after bigint NOT NULL,
    counterparty_id uuid NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (wallet_id, position)
);
CREATE INDEX ON {t} (wallet_id, at, position);
"""

TRANSFERS_DDL = """
CREATE TABLE {t} (
    transfer_id uuid PRIMARY KEY,
    merchant_id text NOT NULL,
    kind text NOT NULL,
    debit_account_id uuid NOT NULL,
    credit_account_id uuid NOT NULL,
    amount bigint NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    posted_amount bigint NOT NULL,
    pending boolean NOT NULL,
    expires_at timestamptz,
    metadata jsonb NOT NULL DEFAULT '{{}}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX ON {t} (debit_account_id, position);
CREATE INDEX ON {t} (credit_account_id, position);
CREATE INDEX ON {t} (merchant_id, position);
CREATE INDEX ON {t} (position);
CREATE INDEX ON {t} (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
"""

TABLES: dict[str, tuple[str, str]] = {
    # projection name -> (live table, DDL)
    "balances": ("rm_balances", BALANCES_DDL),
    "statements": ("rm_statement_entries", STATEMENTS_DDL),
    "transfers": ("rm_transfers", TRANSFERS_DDL),
    **payment_readmodels.TABLES,
    **schedule_readmodels.TABLES,
}


def create_table(conn: Connection[Any], projection: str, table: str) -> None:
    """Create ``table`` for ``projection`` unless it exists (indexes get unique auto names)."""
    exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    if exists and exists[0] is not None:
        return
    ddl = TABLES[projection][1].format(t=sql.Identifier(table).as_string(conn))
    conn.execute(ddl)


# ---- buffered writers ---------------------------------------------------------------------
#
# A catch-up writes hundreds of thousands of rows, so rows travel as cheaply as psycopg
# allows: COPY rows of plain values, datetimes and JSON as text formatted by orjson
# (psycopg's datetime dumper costs several times a whole row of the other columns), and
# a batch's updates as one JSON document read with ``json_to_recordset`` (psycopg dumps
# array parameters element by element in Python).


def timestamp_text(value: datetime | None) -> str | None:
    """``value`` as the RFC 3339 text PostgreSQL reads into a ``timestamptz`` column."""
    return None if value is None else _rfc3339(value)


@functools.lru_cache(maxsize=4096)
def _rfc3339(value: datetime) -> str:
    # Cached: every event of one command carries the command's time, so a batch of
    # events has a few distinct times.
    return orjson.dumps(value)[1:-1].decode()


def json_text(value: Any) -> str:
    """``value`` as JSON text, for a ``jsonb`` column in a COPY."""
    return orjson.dumps(value).decode()


def _copy_statement(table: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


class BalancesBuffer:
    OPENED_COLS = ("wallet_id", "merchant_id", "currency", "status", "credit_limit", "posted",
                   "pending", "metadata", "is_system", "version", "opened_at", "updated_at",
                   "position")  # fmt: skip
    _CHANGED = ("posted", "pending", "status", "version")

    def __init__(self, table: str) -> None:
        self.table = table
        self.opened: dict[str, dict[str, Any]] = {}
        # wallet id -> the columns to set (and the world delta to add), as json_to_recordset
        # reads them: absent keys are NULL, and NULL keeps the column.
        self.changes: dict[str, dict[str, Any]] = {}
        self.worlds: dict[str, tuple[str, datetime, int]] = {}

    def wallet_opened(self, row: WalletRow) -> None:
        self.opened[row.wallet_id] = {
            "wallet_id": row.wallet_id,
            "merchant_id": row.merchant_id,
            "currency": row.currency,
            "status": "active",
            "credit_limit": row.credit_limit,
            "posted": 0,
            "pending": 0,
            "metadata": row.metadata,
            "is_system": row.is_system,
            "version": 1,
            "opened_at": row.opened_at,
            "updated_at": row.opened_at,
            "position": row.position,
        }

    def ensure_world(self, wallet_id: str, currency: str, at: datetime, position: int) -> None:
        self.worlds.setdefault(wallet_id, (currency, at, position))

    def wallet_changed(self, change: WalletChange) -> None:
        target = self.opened.get(change.wallet_id)
        if target is None:
            target = self.changes.get(change.wallet_id)
            if target is None:
                target = self.changes[change.wallet_id] = {
                    "wallet_id": change.wallet_id,
                    "world_delta": 0,
                }
            target["world_delta"] += change.world_delta
        if change.posted is not None:
            target["posted"] = change.posted
        if change.pending is not None:
            target["pending"] = change.pending
        if change.status is not None:
            target["status"] = change.status
        if change.version is not None:
            target["version"] = change.version
        target["updated_at"] = change.at
        target["position"] = change.position

    def flush(self, conn: Connection[Any]) -> None:
        t = sql.Identifier(self.table)
        with conn.cursor() as cur:
            if self.worlds:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (wallet_id, merchant_id, currency, is_system, opened_at,"
                        " updated_at, position) VALUES (%s, 'system', %s, true, %s, %s, %s)"
                        " ON CONFLICT (wallet_id) DO NOTHING"
                    ).format(t),
                    [(w, c, at, at, p) for w, (c, at, p) in self.worlds.items()],
                )
            if self.opened:
                with cur.copy(_copy_statement(self.table, self.OPENED_COLS)) as copy:
                    for r in self.opened.values():
                        copy.write_row(
                            (r["wallet_id"], r["merchant_id"], r["currency"], r["status"],
                             r["credit_limit"], r["posted"], r["pending"], json_text(r["metadata"]),
                             r["is_system"], r["version"], timestamp_text(r["opened_at"]),
                             timestamp_text(r["updated_at"]), r["position"])
                        )  # fmt: skip
            if self.changes:
                # One statement for every changed wallet of the batch.
                cur.execute(
                    sql.SQL(
                        "UPDATE {t} AS b SET posted = COALESCE(c.posted, b.posted) + c.world_delta,"
                        " pending = COALESCE(c.pending, b.pending),"
                        " status = COALESCE(c.status, b.status),"
                        " version = COALESCE(c.version, b.version),"
                        " updated_at = c.updated_at, position = c.position"
                        " FROM json_to_recordset(%s::json) AS c(wallet_id uuid, posted bigint,"
                        " world_delta bigint, pending bigint, status text, version int,"
                        " updated_at timestamptz, position bigint)"
                        " WHERE b.wallet_id = c.wallet_id"
                    ).format(t=t),
                    (json_text(list(self.changes.values())),),
                )


class StatementsBuffer:
    COLS = ("wallet_id", "position", "transfer_id", "kind", "amount", "posted_after",
            "counterparty_id", "at")  # fmt: skip

    def __init__(self, table: str) -> None:
        self.table = table
        self.rows: list[tuple[Any, ...]] = []

    def add_entry(self, e: StatementEntry) -> None:
        self.rows.append(
            (e.wallet_id, e.position, e.transfer_id, e.kind, e.amount, e.posted_after,
             e.counterparty_id, timestamp_text(e.at))
        )  # fmt: skip

    def flush(self, conn: Connection[Any]) -> None:
        if not self.rows:
            return
        with conn.cursor() as cur, cur.copy(_copy_statement(self.table, self.COLS)) as copy:
            for row in self.rows:
                copy.write_row(row)


class TransfersBuffer:
    COLS = ("transfer_id", "merchant_id", "kind", "debit_account_id", "credit_account_id",
            "amount", "currency", "status", "posted_amount", "pending", "expires_at", "metadata",
            "created_at", "updated_at", "position")  # fmt: skip
    # Where a change lands in a row created in the same batch (a list in COLS order).
    _STATUS = COLS.index("status")
    _POSTED_AMOUNT = COLS.index("posted_amount")
    _UPDATED_AT = COLS.index("updated_at")
    _POSITION = COLS.index("position")

    def __init__(self, table: str) -> None:
        self.table = table
        self.created: dict[str, list[Any]] = {}
        # transfer id -> the columns to set, as json_to_recordset reads them
        self.changes: dict[str, dict[str, Any]] = {}

    def transfer_created(self, r: TransferRow) -> None:
        created_at = timestamp_text(r.created_at)
        self.created[r.transfer_id] = [
            r.transfer_id, r.merchant_id, r.kind, r.debit_account_id, r.credit_account_id,
            r.amount, r.currency, r.status, r.posted_amount, r.pending,
            timestamp_text(r.expires_at), json_text(r.metadata), created_at, created_at,
            r.position,
        ]  # fmt: skip

    def transfer_changed(self, c: TransferChange) -> None:
        row = self.created.get(c.transfer_id)
        if row is not None:
            row[self._STATUS] = c.status
            if c.posted_amount is not None:
                row[self._POSTED_AMOUNT] = c.posted_amount
            row[self._UPDATED_AT] = timestamp_text(c.at)
            row[self._POSITION] = c.position
            return
        target = self.changes.setdefault(c.transfer_id, {"transfer_id": c.transfer_id})
        target["status"] = c.status
        if c.posted_amount is not None:
            target["posted_amount"] = c.posted_amount
        target["updated_at"] = c.at
        target["position"] = c.position

    def flush(self, conn: Connection[Any]) -> None:
        with conn.cursor() as cur:
            if self.created:
                with cur.copy(_copy_statement(self.table, self.COLS)) as copy:
                    for row in self.created.values():
                        copy.write_row(row)
            if self.changes:
                cur.execute(
                    sql.SQL(
                        "UPDATE {t} AS x SET status = c.status,"
                        " posted_amount = COALESCE(c.posted_amount, x.posted_amount),"
                        " updated_at = c.updated_at, position = c.position"
                        " FROM json_to_recordset(%s::json) AS c(transfer_id uuid, status text,"
                        " posted_amount bigint, updated_at timestamptz, position bigint)"
                        " WHERE x.transfer_id = c.transfer_id"
                    ).format(t=sql.Identifier(self.table)),
                    (json_text(list(self.changes.values())),),
                )


BUFFERS: dict[str, Callable[[str], Any]] = {
    "balances": BalancesBuffer,
    "statements": StatementsBuffer,
    "transfers": TransfersBuffer,
    **payment_readmodels.BUFFERS,
    **schedule_readmodels.BUFFERS,
}

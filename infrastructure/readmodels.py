"""PostgreSQL read-model tables and buffered writers for the projectors' ports.

Writers buffer a batch of events' rows in memory and flush them with COPY and
``executemany`` inside the runner's transaction, so one batch is one commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import Connection, sql
from psycopg.types.json import Jsonb

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


class BalancesBuffer:
    def __init__(self, table: str) -> None:
        self.table = table
        self.opened: dict[str, dict[str, Any]] = {}
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
        if target is not None:
            for key in ("posted", "pending", "status", "version"):
                value = getattr(change, key)
                if value is not None:
                    target[key] = value
            target["updated_at"] = change.at
            target["position"] = change.position
            return
        merged = self.changes.setdefault(change.wallet_id, {"world_delta": 0})
        for key in ("posted", "pending", "status", "version"):
            value = getattr(change, key)
            if value is not None:
                merged[key] = value
        merged["world_delta"] += change.world_delta
        merged["updated_at"] = change.at
        merged["position"] = change.position

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
                cols = list(next(iter(self.opened.values())).keys())
                with cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(
                        t, sql.SQL(", ").join(map(sql.Identifier, cols))
                    )
                ) as copy:
                    for row in self.opened.values():
                        copy.write_row([Jsonb(row[c]) if c == "metadata" else row[c] for c in cols])
            if self.changes:
                # One statement for every changed wallet of the batch.
                rows = list(self.changes.items())
                cur.execute(
                    sql.SQL(
                        "UPDATE {t} AS b SET posted = COALESCE(c.posted, b.posted) + c.delta,"
                        " pending = COALESCE(c.pending, b.pending),"
                        " status = COALESCE(c.status, b.status),"
                        " version = COALESCE(c.version, b.version),"
                        " updated_at = c.updated_at, position = c.position"
                        " FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[],"
                        " %s::text[], %s::int[], %s::timestamptz[], %s::bigint[])"
                        " AS c(wallet_id, posted, delta, pending, status, version, updated_at,"
                        " position) WHERE b.wallet_id = c.wallet_id"
                    ).format(t=t),
                    (
                        [w for w, _ in rows],
                        [c.get("posted") for _, c in rows],
                        [c["world_delta"] for _, c in rows],
                        [c.get("pending") for _, c in rows],
                        [c.get("status") for _, c in rows],
                        [c.get("version") for _, c in rows],
                        [c["updated_at"] for _, c in rows],
                        [c["position"] for _, c in rows],
                    ),
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
             e.counterparty_id, e.at)
        )  # fmt: skip

    def flush(self, conn: Connection[Any]) -> None:
        if not self.rows:
            return
        stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(self.table), sql.SQL(", ").join(map(sql.Identifier, self.COLS))
        )
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            for row in self.rows:
                copy.write_row(row)


class TransfersBuffer:
    COLS = ("transfer_id", "merchant_id", "kind", "debit_account_id", "credit_account_id",
            "amount", "currency", "status", "posted_amount", "pending", "expires_at", "metadata",
            "created_at", "updated_at", "position")  # fmt: skip

    def __init__(self, table: str) -> None:
        self.table = table
        self.created: dict[str, dict[str, Any]] = {}
        self.changes: dict[str, dict[str, Any]] = {}

    def transfer_created(self, r: TransferRow) -> None:
        self.created[r.transfer_id] = {
            "transfer_id": r.transfer_id,
            "merchant_id": r.merchant_id,
            "kind": r.kind,
            "debit_account_id": r.debit_account_id,
            "credit_account_id": r.credit_account_id,
            "amount": r.amount,
            "currency": r.currency,
            "status": r.status,
            "posted_amount": r.posted_amount,
            "pending": r.pending,
            "expires_at": r.expires_at,
            "metadata": Jsonb(r.metadata),
            "created_at": r.created_at,
            "updated_at": r.created_at,
            "position": r.position,
        }

    def transfer_changed(self, c: TransferChange) -> None:
        target = self.created.get(c.transfer_id) or self.changes.setdefault(c.transfer_id, {})
        target["status"] = c.status
        if c.posted_amount is not None:
            target["posted_amount"] = c.posted_amount
        target["updated_at"] = c.at
        target["position"] = c.position

    def flush(self, conn: Connection[Any]) -> None:
        t = sql.Identifier(self.table)
        with conn.cursor() as cur:
            if self.created:
                stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    t, sql.SQL(", ").join(map(sql.Identifier, self.COLS))
                )
                with cur.copy(stmt) as copy:
                    for row in self.created.values():
                        copy.write_row([row[c] for c in self.COLS])
            if self.changes:
                rows = list(self.changes.items())
                cur.execute(
                    sql.SQL(
                        "UPDATE {t} AS x SET status = c.status,"
                        " posted_amount = COALESCE(c.posted_amount, x.posted_amount),"
                        " updated_at = c.updated_at, position = c.position"
                        " FROM unnest(%s::uuid[], %s::text[], %s::bigint[], %s::timestamptz[],"
                        " %s::bigint[]) AS c(transfer_id, status, posted_amount, updated_at,"
                        " position) WHERE x.transfer_id = c.transfer_id"
                    ).format(t=t),
                    (
                        [tid for tid, _ in rows],
                        [c["status"] for _, c in rows],
                        [c.get("posted_amount") for _, c in rows],
                        [c["updated_at"] for _, c in rows],
                        [c["position"] for _, c in rows],
                    ),
                )


BUFFERS: dict[str, Callable[[str], Any]] = {
    "balances": BalancesBuffer,
    "statements": StatementsBuffer,
    "transfers": TransfersBuffer,
    **payment_readmodels.BUFFERS,
    **schedule_readmodels.BUFFERS,
}

"""PostgreSQL read-model tables and buffered writers for the projectors' ports.

Writers buffer a batch of events' rows in memory and flush them with COPY and one
``UPDATE`` per table inside the runner's transaction, so one batch is one commit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson
from psycopg import Connection, sql

from infrastructure import payment_readmodels, schedule_readmodels
from projections.ports import StatementRow, TransferRow

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
# A catch-up writes hundreds of thousands of rows, so rows travel as cheaply as they can:
# COPY rows and array literals formatted here (ids and timestamps are already text: the
# projectors hand over the stored events' own), JSON as text formatted by orjson. psycopg
# would dump array parameters element by element in Python, and PostgreSQL reads
# ``json_to_recordset`` slower than array literals.
#
# The runner calls each buffer's ``seal()`` on the thread that projected the batch (the
# read-ahead thread), so ``flush``, on the thread holding the transaction, only sends
# bytes. COPY rows go sorted by the table's primary key: PostgreSQL then inserts
# neighbouring index keys one after the other instead of all over the index.


def timestamp_text(value: datetime | str | None) -> str | None:
    """``value`` as the RFC 3339 text PostgreSQL reads into a ``timestamptz`` column."""
    if value is None or isinstance(value, str):
        return value
    return _rfc3339(value)


@functools.lru_cache(maxsize=4096)
def _rfc3339(value: datetime) -> str:
    # Cached: every event of one command carries the command's time, so a batch of
    # events has a few distinct times.
    return orjson.dumps(value)[1:-1].decode()


def json_text(value: Any) -> str:
    """``value`` as JSON text, for a ``jsonb`` column in a COPY."""
    return "{}" if value == {} else orjson.dumps(value).decode()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
_FIRST = itemgetter(0)


def copy_field(value: Any) -> str:
    """``value`` as a field of COPY's text format (None as NULL, JSON for dicts and lists)."""
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, dict | list):
        return json_text(value).translate(_COPY_ESCAPES)
    return str(value)


def copy_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    """``rows`` in COPY's text format, every value escaped."""
    return "".join(["\t".join(map(copy_field, row)) + "\n" for row in rows]).encode()


def copy_text(
    rows: Sequence[Sequence[Any]], lines: list[str], columns: int, nulls: int = 0
) -> bytes:
    """``lines`` (``rows`` formatted by one f-string each, nothing escaped but ``nulls``
    NULL markers) if no value needed escaping, else ``rows`` formatted with every value
    escaped. Counts of the separators tell: a value holding a tab or a newline adds one."""
    text = "".join(lines)
    if (
        text.count("\t") == len(lines) * (columns - 1)
        and text.count("\n") == len(lines)
        and text.count("\\") == nulls
        and text.count("\t\\N\t") == nulls
        and "\r" not in text
    ):
        return text.encode()
    return copy_rows(rows)


def int_array(values: Sequence[int | None]) -> str | None:
    """An array literal of integers and NULLs, or None if a value is anything else."""
    if not set(map(type, values)) <= _INT_OR_NONE:
        return None
    return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"


_INT_OR_NONE = {int, type(None)}


def text_array(values: Sequence[str | None]) -> str | None:
    """An array literal of the strings (double-quoted) and NULLs, or None if a string holds
    a double quote or a backslash (it would need escaping)."""
    literal = "{" + ",".join(["NULL" if v is None else f'"{v}"' for v in values]) + "}"
    if literal.count('"') != 2 * (len(values) - values.count(None)) or "\\" in literal:
        return None
    return literal


def _copy_statement(table: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


# Columns absent from a change are NULL, and NULL keeps the column.
_BALANCES_UPDATE = (
    "UPDATE {t} AS b SET posted = COALESCE(c.posted, b.posted) + c.world_delta,"
    " pending = COALESCE(c.pending, b.pending), status = COALESCE(c.status, b.status),"
    " version = COALESCE(c.version, b.version), updated_at = c.updated_at,"
    " position = c.position FROM {c} WHERE b.wallet_id = c.wallet_id"
)
_BALANCES_ARRAYS = (
    "unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::int[],"
    " %s::timestamptz[], %s::bigint[]) AS c(wallet_id, posted, world_delta, pending, status,"
    " version, updated_at, position)"
)
_BALANCES_JSON = (
    "json_to_recordset(%s::json) AS c(wallet_id uuid, posted bigint, world_delta bigint,"
    " pending bigint, status text, version int, updated_at timestamptz, position bigint)"
)


class BalancesBuffer:
    OPENED_COLS = ("wallet_id", "merchant_id", "currency", "status", "credit_limit", "posted",
                   "pending", "metadata", "is_system", "version", "opened_at", "updated_at",
                   "position")  # fmt: skip

    def __init__(self, table: str) -> None:
        self.table = table
        # wallet id -> its row (as in OPENED_COLS) when opened in this batch
        self.opened: dict[str, dict[str, Any]] = {}
        # wallet id -> the columns to set (and the world delta to add); absent: kept
        self.changes: dict[str, dict[str, Any]] = {}
        self.worlds: dict[str, tuple[str, str, int]] = {}
        self.opened_data: bytes | None = None
        # the changes as array literals, one per column; () when sent as JSON instead
        self.arrays: tuple[str | None, ...] | None = None

    def wallet_opened(
        self,
        wallet_id: str,
        merchant_id: str,
        currency: str,
        credit_limit: int,
        metadata: dict[str, Any],
        at: str,
        position: int,
    ) -> None:
        self.opened[wallet_id] = {
            "wallet_id": wallet_id,
            "merchant_id": merchant_id,
            "currency": currency,
            "status": "active",
            "credit_limit": credit_limit,
            "posted": 0,
            "pending": 0,
            "metadata": metadata,
            "is_system": False,
            "version": 1,
            "opened_at": at,
            "updated_at": at,
            "position": position,
        }

    def _target(self, wallet_id: str) -> dict[str, Any]:
        target = self.opened.get(wallet_id)
        if target is None:
            target = self.changes.get(wallet_id)
            if target is None:
                target = self.changes[wallet_id] = {"wallet_id": wallet_id, "world_delta": 0}
        return target

    def wallet_changed(
        self, wallet_id: str, column: str, value: Any, version: int, at: str, position: int
    ) -> None:
        # _target inlined: one call per posting saved
        target = self.opened.get(wallet_id) or self.changes.get(wallet_id)
        if target is None:
            target = self.changes[wallet_id] = {"wallet_id": wallet_id, "world_delta": 0}
        target[column] = value
        target["version"] = version
        target["updated_at"] = at
        target["position"] = position

    def world_moved(
        self, wallet_id: str, currency: str, delta: int, at: str, position: int
    ) -> None:
        self.worlds.setdefault(wallet_id, (currency, at, position))
        target = self._target(wallet_id)
        if "world_delta" in target:  # a world account is never opened by an event
            target["world_delta"] += delta
        target["updated_at"] = at
        target["position"] = position

    def seal(self) -> None:
        if self.opened:
            self.opened_data = copy_rows(
                [r[c] for c in self.OPENED_COLS]
                for r in sorted(self.opened.values(), key=_WALLET_ID)
            )
        changes = sorted(self.changes.values(), key=_WALLET_ID)
        arrays = (
            text_array([c["wallet_id"] for c in changes]),
            int_array([c.get("posted") for c in changes]),
            int_array([c["world_delta"] for c in changes]),
            int_array([c.get("pending") for c in changes]),
            text_array([c.get("status") for c in changes]),
            int_array([c.get("version") for c in changes]),
            text_array([c["updated_at"] for c in changes]),
            int_array([c["position"] for c in changes]),
        )
        self.arrays = arrays if None not in arrays else ()

    def flush(self, conn: Connection[Any]) -> None:
        if self.arrays is None:
            self.seal()
        t = sql.Identifier(self.table)
        with conn.cursor() as cur:
            if self.worlds:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (wallet_id, merchant_id, currency, is_system, opened_at,"
                        " updated_at, position) VALUES (%s, 'system', %s, true, %s::timestamptz,"
                        " %s::timestamptz, %s) ON CONFLICT (wallet_id) DO NOTHING"
                    ).format(t),
                    [
                        (w, c, timestamp_text(at), timestamp_text(at), p)
                        for w, (c, at, p) in self.worlds.items()
                    ],
                )
            if self.opened_data:
                with cur.copy(_copy_statement(self.table, self.OPENED_COLS)) as copy:
                    copy.write(self.opened_data)
            if self.changes:
                # One statement for every changed wallet of the batch.
                if self.arrays:
                    cur.execute(
                        sql.SQL(_BALANCES_UPDATE).format(t=t, c=sql.SQL(_BALANCES_ARRAYS)),
                        self.arrays,
                    )
                else:
                    cur.execute(
                        sql.SQL(_BALANCES_UPDATE).format(t=t, c=sql.SQL(_BALANCES_JSON)),
                        (json_text(list(self.changes.values())),),
                    )


_WALLET_ID = itemgetter("wallet_id")


class StatementsBuffer:
    COLS = ("wallet_id", "position", "transfer_id", "kind", "amount", "posted_after",
            "counterparty_id", "at")  # fmt: skip

    def __init__(self, table: str) -> None:
        self.table = table
        self.rows: list[StatementRow] = []
        self.add_entry = self.rows.append  # the port's one method: rows are COPY rows
        self.data: bytes | None = None

    def seal(self) -> None:
        # Stable: each wallet's rows stay in position order, so rows go in key order.
        rows = sorted(self.rows, key=_FIRST)
        lines = [f"{w}\t{p}\t{t}\t{k}\t{a}\t{pa}\t{c}\t{at}\n" for w, p, t, k, a, pa, c, at in rows]
        self.data = copy_text(rows, lines, len(self.COLS))

    def flush(self, conn: Connection[Any]) -> None:
        if not self.rows:
            return
        if self.data is None:
            self.seal()
        with conn.cursor() as cur, cur.copy(_copy_statement(self.table, self.COLS)) as copy:
            copy.write(self.data or b"")


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
        self.created: dict[str, TransferRow | list[Any]] = {}
        # transfer id -> the columns to set, as json_to_recordset reads them
        self.changes: dict[str, dict[str, Any]] = {}
        self.data: bytes | None = None

    def transfer_created(self, row: TransferRow) -> None:
        self.created[row[0]] = row

    def transfer_changed(
        self, transfer_id: str, status: str, posted_amount: int | None, at: str, position: int
    ) -> None:
        row = self.created.get(transfer_id)
        if row is not None:
            if isinstance(row, tuple):
                row = self.created[transfer_id] = list(row)
            row[self._STATUS] = status
            if posted_amount is not None:
                row[self._POSTED_AMOUNT] = posted_amount
            row[self._UPDATED_AT] = at
            row[self._POSITION] = position
            return
        target = self.changes.setdefault(transfer_id, {"transfer_id": transfer_id})
        target["status"] = status
        if posted_amount is not None:
            target["posted_amount"] = posted_amount
        target["updated_at"] = at
        target["position"] = position

    def seal(self) -> None:
        rows = sorted(self.created.values(), key=_FIRST)
        lines = [
            f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\t{r[6]}\t{r[7]}\t{r[8]}\t"
            f"{'t' if r[9] else 'f'}\t{_NULL if r[10] is None else r[10]}\t{json_text(r[11])}\t"
            f"{r[12]}\t{r[13]}\t{r[14]}\n"
            for r in rows
        ]
        nulls = sum(r[10] is None for r in rows)  # expires_at, the one nullable column
        self.data = copy_text(rows, lines, len(self.COLS), nulls)

    def flush(self, conn: Connection[Any]) -> None:
        with conn.cursor() as cur:
            if self.created:
                if self.data is None:
                    self.seal()
                with cur.copy(_copy_statement(self.table, self.COLS)) as copy:
                    copy.write(self.data or b"")
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

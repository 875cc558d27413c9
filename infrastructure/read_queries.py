"""``ReadQueries`` on PostgreSQL: keyset-paginated SQL over the projections' tables.

Each list query is shaped to walk one index in key order and stop after ``limit`` rows:
``rm_balances (merchant_id, wallet_id)`` or its primary key, ``rm_transfers
(merchant_id | debit_account_id | credit_account_id, position)`` and
``rm_statement_entries (wallet_id, at, position)``. Optional filters add fixed SQL
fragments; values always travel as parameters.

``PgReadQueries`` is the blocking port on the service's pool. ``BatchedReads`` serves it
to the event loop (``AsyncReadQueries``): one-wallet lookups that arrive together, the
read API's most frequent query, share one query per scope and one worker-thread hop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio.to_thread
from psycopg import sql
from psycopg_pool import ConnectionPool

from read_api.context import ThreadedReads
from read_api.ports import Scope, StatementRecord, TransferRecord, WalletRecord

MAX_BATCH = 500  # one-wallet lookups per coalesced query

BALANCES = sql.Identifier("rm_balances")
TRANSFERS = sql.Identifier("rm_transfers")
STATEMENTS = sql.Identifier("rm_statement_entries")

_WALLET_COLS = sql.SQL(
    "wallet_id, merchant_id, currency, status, credit_limit, posted, pending, metadata,"
    " is_system, version, opened_at, updated_at, position"
)
_TRANSFER_COLS = sql.SQL(
    "transfer_id, merchant_id, kind, debit_account_id, credit_account_id, amount, currency,"
    " status, posted_amount, pending, expires_at, metadata, created_at, updated_at, position"
)
_STATEMENT_COLS = sql.SQL(
    "wallet_id, position, transfer_id, kind, amount, posted_after, counterparty_id, at"
)


def _wallet(row: tuple[Any, ...]) -> WalletRecord:
    (wid, merchant, currency, status, limit, posted, pending, metadata, is_system, version,
     opened_at, updated_at, position) = row  # fmt: skip
    return WalletRecord(
        wallet_id=str(wid),
        merchant_id=merchant,
        currency=currency,
        status=status,
        credit_limit=int(limit),
        posted=int(posted),
        pending=int(pending),
        metadata=dict(metadata or {}),
        is_system=bool(is_system),
        version=int(version),
        opened_at=opened_at,
        updated_at=updated_at,
        position=int(position),
    )


def _transfer(row: tuple[Any, ...]) -> TransferRecord:
    (tid, merchant, kind, debit, credit, amount, currency, status, posted_amount, pending,
     expires_at, metadata, created_at, updated_at, position) = row  # fmt: skip
    return TransferRecord(
        transfer_id=str(tid),
        merchant_id=merchant,
        kind=kind,
        debit_account_id=str(debit),
        credit_account_id=str(credit),
        amount=int(amount),
        currency=currency,
        status=status,
        posted_amount=int(posted_amount),
        pending=bool(pending),
        expires_at=expires_at,
        metadata=dict(metadata or {}),
        created_at=created_at,
        updated_at=updated_at,
        position=int(position),
    )


def _entry(row: tuple[Any, ...]) -> StatementRecord:
    wid, position, tid, kind, amount, posted_after, counterparty, at = row
    return StatementRecord(
        wallet_id=str(wid),
        position=int(position),
        transfer_id=str(tid),
        kind=kind,
        amount=int(amount),
        posted_after=int(posted_after),
        counterparty_id=str(counterparty),
        at=at,
    )


class _Where:
    """AND-ed SQL fragments with their parameters, kept side by side."""

    def __init__(self) -> None:
        self.parts: list[sql.Composable] = []
        self.params: list[Any] = []

    def add(self, fragment: str | sql.Composable, *params: Any) -> None:
        self.parts.append(sql.SQL(fragment) if isinstance(fragment, str) else fragment)
        self.params.extend(params)

    def sql(self) -> sql.Composed:
        if not self.parts:
            return sql.Composed([])
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.parts)


def _scope_wallets(where: _Where, scope: Scope) -> None:
    if scope.merchant_id is not None:
        where.add("merchant_id = %s", scope.merchant_id)
        where.add("NOT is_system")


Query = tuple[sql.Composable | str, list[Any]]

# The one-wallet lookup is the read API's most frequent query: its text is rendered once.
_WALLET_SQL = sql.SQL("SELECT {} FROM {} WHERE wallet_id = %s").format(_WALLET_COLS, BALANCES)
_WALLET_BY_ID = _WALLET_SQL.as_string(None)
_MERCHANT_WALLET_BY_ID = (
    _WALLET_SQL + sql.SQL(" AND merchant_id = %s AND NOT is_system")
).as_string(None)
_WALLETS_SQL = sql.SQL("SELECT {} FROM {} WHERE wallet_id = ANY(%s)").format(_WALLET_COLS, BALANCES)
_WALLETS_BY_ID = _WALLETS_SQL.as_string(None)
_MERCHANT_WALLETS_BY_ID = (
    _WALLETS_SQL + sql.SQL(" AND merchant_id = %s AND NOT is_system")
).as_string(None)
_POSITIONS = "SELECT name, position FROM projection_tracking"


def wallets_by_id_query(wallet_ids: list[str], scope: Scope) -> Query:
    ids = [UUID(w) for w in wallet_ids]
    if scope.merchant_id is None:
        return _WALLETS_BY_ID, [ids]
    return _MERCHANT_WALLETS_BY_ID, [ids, scope.merchant_id]


def wallet_query(wallet_id: str, scope: Scope) -> Query:
    if scope.merchant_id is None:
        return _WALLET_BY_ID, [UUID(wallet_id)]
    return _MERCHANT_WALLET_BY_ID, [UUID(wallet_id), scope.merchant_id]


def wallets_query(
    scope: Scope,
    merchant_id: str | None,
    currency: str | None,
    after: str | None,
    limit: int,
) -> Query:
    where = _Where()
    _scope_wallets(where, scope)
    if merchant_id is not None:
        where.add("merchant_id = %s", merchant_id)
    if currency is not None:
        where.add("currency = %s", currency)
    if after is not None:
        where.add("wallet_id > %s", UUID(after))
    query = (
        sql.SQL("SELECT {} FROM {}").format(_WALLET_COLS, BALANCES)
        + where.sql()
        + sql.SQL(" ORDER BY wallet_id LIMIT %s")
    )
    return query, [*where.params, limit]


def transfer_query(transfer_id: str, scope: Scope) -> Query:
    where = _Where()
    where.add("transfer_id = %s", UUID(transfer_id))
    if scope.merchant_id is not None:
        where.add("merchant_id = %s", scope.merchant_id)
    return sql.SQL("SELECT {} FROM {}").format(
        _TRANSFER_COLS, TRANSFERS
    ) + where.sql(), where.params


def transfers_query(
    scope: Scope,
    wallet_id: str | None,
    status: str | None,
    after: int | None,
    limit: int,
) -> Query:
    def branch(account_column: str | None) -> tuple[sql.Composed, list[Any]]:
        where = _Where()
        if account_column is not None and wallet_id is not None:
            column = sql.Identifier(account_column)
            where.add(sql.SQL("{} = %s").format(column), UUID(wallet_id))
        if scope.merchant_id is not None:
            where.add("merchant_id = %s", scope.merchant_id)
        if status is not None:
            where.add("status = %s", status)
        if after is not None:
            where.add("position > %s", after)
        query = (
            sql.SQL("SELECT {} FROM {}").format(_TRANSFER_COLS, TRANSFERS)
            + where.sql()
            + sql.SQL(" ORDER BY position LIMIT %s")
        )
        return query, [*where.params, limit]

    if wallet_id is None:
        return branch(None)
    # One index walk per side, merged: an OR would defeat both indexes. A transfer never
    # debits and credits the same account, so the sides do not overlap.
    debit, debit_params = branch("debit_account_id")
    credit, credit_params = branch("credit_account_id")
    query = sql.SQL("({}) UNION ALL ({}) ORDER BY position LIMIT %s").format(debit, credit)
    return query, [*debit_params, *credit_params, limit]


def statement_query(
    wallet_id: str,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> Query:
    where = _Where()
    where.add("wallet_id = %s", UUID(wallet_id))
    if start is not None:
        where.add("at >= %s", start)
    if end is not None:
        where.add("at < %s", end)
    if after is not None:
        where.add("(at, position) > (%s, %s)", *after)
    query = (
        sql.SQL("SELECT {} FROM {}").format(_STATEMENT_COLS, STATEMENTS)
        + where.sql()
        + sql.SQL(" ORDER BY at, position LIMIT %s")
    )
    return query, [*where.params, limit]


def posted_at_query(wallet_id: str, at: datetime) -> Query:
    query = sql.SQL(
        "SELECT posted_after FROM {} WHERE wallet_id = %s AND at <= %s"
        " ORDER BY at DESC, position DESC LIMIT 1"
    ).format(STATEMENTS)
    return query, [UUID(wallet_id), at]


def _positions(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(name): int(position) for name, position in rows}


class PgReadQueries:
    """The read port on the live read-model tables of one PostgreSQL database."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def _fetch(self, query: sql.Composable | str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        rows = self._fetch(*wallet_query(wallet_id, scope))
        return _wallet(rows[0]) if rows else None

    def wallets_by_id(self, wallet_ids: list[str], scope: Scope) -> dict[str, WalletRecord]:
        """The wallets among ``wallet_ids`` that exist and ``scope`` may see, by id."""
        rows = self._fetch(*wallets_by_id_query(wallet_ids, scope))
        return {r.wallet_id: r for r in map(_wallet, rows)}

    def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]:
        query = wallets_query(scope, merchant_id, currency, after, limit)
        return [_wallet(r) for r in self._fetch(*query)]

    def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None:
        rows = self._fetch(*transfer_query(transfer_id, scope))
        return _transfer(rows[0]) if rows else None

    def transfers(
        self,
        scope: Scope,
        *,
        wallet_id: str | None,
        status: str | None,
        after: int | None,
        limit: int,
    ) -> list[TransferRecord]:
        query = transfers_query(scope, wallet_id, status, after, limit)
        return [_transfer(r) for r in self._fetch(*query)]

    def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]:
        query = statement_query(wallet_id, start, end, after, limit)
        return [_entry(r) for r in self._fetch(*query)]

    def posted_at(self, wallet_id: str, at: datetime) -> int | None:
        rows = self._fetch(*posted_at_query(wallet_id, at))
        return int(rows[0][0]) if rows else None

    def positions(self) -> dict[str, int]:
        return _positions(self._fetch(_POSITIONS, []))


_Lookup = tuple[str, Scope, "asyncio.Future[WalletRecord | None]"]


class BatchedReads(ThreadedReads):
    """``AsyncReadQueries`` on ``PgReadQueries`` for one event loop.

    Every call runs in a worker thread, but one-wallet lookups are coalesced: those made
    while the loop is busy (or a batch is in flight) go as one ``wallet_id = ANY(...)``
    query per scope, in one thread hop. Each lookup still gets exactly what ``wallet``
    would answer: the scope is in the SQL, never applied afterwards. Created on the loop
    that serves requests; a call from another loop is not batched.
    """

    def __init__(self, queries: PgReadQueries, max_batch: int = MAX_BATCH) -> None:
        super().__init__(queries)
        self._pg = queries
        self._loop = asyncio.get_running_loop()
        self._max_batch = max_batch
        self._pending: list[_Lookup] = []
        self._flusher: asyncio.Task[None] | None = None

    async def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        if asyncio.get_running_loop() is not self._loop:
            return await super().wallet(wallet_id, scope)
        future: asyncio.Future[WalletRecord | None] = self._loop.create_future()
        self._pending.append((wallet_id, scope, future))
        if self._flusher is None:
            # A task's first step runs after the callbacks already queued: the lookups
            # of requests that are ready now join this batch.
            self._flusher = self._loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[_Lookup] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    found = await anyio.to_thread.run_sync(self._lookup, batch)
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, _, future), record in zip(batch, found, strict=True):
                        if not future.done():
                            future.set_result(record)
                batch = []
        finally:
            self._flusher = None
            for _, _, future in (*batch, *self._pending):  # left only if cancelled
                future.cancel()
            self._pending.clear()

    def _lookup(self, batch: list[_Lookup]) -> list[WalletRecord | None]:
        by_scope: dict[Scope, list[str]] = {}
        for wallet_id, scope, _ in batch:
            by_scope.setdefault(scope, []).append(wallet_id)
        found = {
            scope: self._pg.wallets_by_id(sorted(set(ids)), scope)
            for scope, ids in by_scope.items()
        }
        return [found[scope].get(wallet_id) for wallet_id, scope, _ in batch]

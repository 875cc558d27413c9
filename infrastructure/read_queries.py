"""``ReadQueries`` on PostgreSQL: keyset-paginated SQL over the projections' tables.

Each list query is shaped to walk one index in key order and stop after ``limit`` rows:
``rm_balances (merchant_id, wallet_id)`` or its primary key, ``rm_transfers
(merchant_id | debit_account_id | credit_account_id, position)`` and
``rm_statement_entries (wallet_id, at, position)``. Optional filters add fixed SQL
fragments; values always travel as parameters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from read_api.ports import Scope, StatementRecord, TransferRecord, WalletRecord

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


class PgReadQueries:
    """The read port on the live read-model tables of one PostgreSQL database."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def _fetch(self, query: sql.Composed | sql.SQL, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        where = _Where()
        where.add("wallet_id = %s", UUID(wallet_id))
        _scope_wallets(where, scope)
        rows = self._fetch(
            sql.SQL("SELECT {} FROM {}").format(_WALLET_COLS, BALANCES) + where.sql(),
            where.params,
        )
        return _wallet(rows[0]) if rows else None

    def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]:
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
        return [_wallet(r) for r in self._fetch(query, [*where.params, limit])]

    def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None:
        where = _Where()
        where.add("transfer_id = %s", UUID(transfer_id))
        if scope.merchant_id is not None:
            where.add("merchant_id = %s", scope.merchant_id)
        rows = self._fetch(
            sql.SQL("SELECT {} FROM {}").format(_TRANSFER_COLS, TRANSFERS) + where.sql(),
            where.params,
        )
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
            query, params = branch(None)
        else:
            # One index walk per side, merged: an OR would defeat both indexes. A transfer
            # never debits and credits the same account, so the sides do not overlap.
            debit, debit_params = branch("debit_account_id")
            credit, credit_params = branch("credit_account_id")
            query = sql.SQL("({}) UNION ALL ({}) ORDER BY position LIMIT %s").format(debit, credit)
            params = [*debit_params, *credit_params, limit]
        return [_transfer(r) for r in self._fetch(query, params)]

    def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]:
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
        return [_entry(r) for r in self._fetch(query, [*where.params, limit])]

    def posted_at(self, wallet_id: str, at: datetime) -> int | None:
        rows = self._fetch(
            sql.SQL(
                "SELECT posted_after FROM {} WHERE wallet_id = %s AND at <= %s"
                " ORDER BY at DESC, position DESC LIMIT 1"
            ).format(STATEMENTS),
            [UUID(wallet_id), at],
        )
        return int(rows[0][0]) if rows else None

    def positions(self) -> dict[str, int]:
        rows = self._fetch(sql.SQL("SELECT name, position FROM projection_tracking"), [])
        return {str(name): int(position) for name, position in rows}

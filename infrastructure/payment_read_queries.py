"""``PaymentReadQueries`` on PostgreSQL: keyset-paginated SQL over the payment projections.

Lists walk ``rm_payments (merchant_id[, status], created_position)`` or
``(created_position)`` (partial indexes for disputes), ``rm_payouts (merchant_id,
created_position)``, and the primary keys of ``rm_payment_timeline (owner_id, position)``
and ``rm_refunds (payment_id, refund_id)``. Optional filters add fixed SQL fragments;
values always travel as parameters.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from infrastructure.payment_readmodels import (
    PAYMENTS_TABLE,
    PAYOUTS_TABLE,
    REFUNDS_TABLE,
    TIMELINE_COLUMNS,
    payment_from_values,
    payout_from_values,
    refund_from_values,
    timeline_from_values,
)
from projections.payment_timeline import TimelineRow
from projections.payments import PaymentRow, RefundRow
from projections.payouts import PayoutRow
from read_api.payment_ports import PaymentFilter, PayoutFilter
from read_api.ports import Scope

PAYMENTS = sql.Identifier("rm_payments")
PAYOUTS = sql.Identifier("rm_payouts")
REFUNDS = sql.Identifier("rm_refunds")
TIMELINE = sql.Identifier("rm_payment_timeline")


def _cols(names: list[str] | tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


_PAYMENT_COLS = _cols(PAYMENTS_TABLE.names)
_PAYOUT_COLS = _cols(PAYOUTS_TABLE.names)
_REFUND_COLS = _cols(REFUNDS_TABLE.names)
_TIMELINE_COLS = _cols(TIMELINE_COLUMNS)


class _Where:
    """AND-ed SQL fragments with their parameters, kept side by side."""

    def __init__(self) -> None:
        self.parts: list[sql.Composable] = []
        self.params: list[Any] = []

    def add(self, fragment: str, *params: Any) -> None:
        self.parts.append(sql.SQL(fragment))
        self.params.extend(params)

    def add_if(self, fragment: str, value: Any) -> None:
        if value is not None:
            self.add(fragment, value)

    def sql(self) -> sql.Composed:
        if not self.parts:
            return sql.Composed([])
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.parts)


def _scoped(scope: Scope) -> _Where:
    where = _Where()
    where.add_if("merchant_id = %s", scope.merchant_id)
    return where


class PgPaymentReadQueries:
    """The payment read port on the live read-model tables of one PostgreSQL database."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def _fetch(self, query: sql.Composed, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def _list(
        self,
        table: sql.Identifier,
        cols: sql.Composed,
        where: _Where,
        after: int | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        where.add_if("created_position > %s", after)
        query = (
            sql.SQL("SELECT {} FROM {}").format(cols, table)
            + where.sql()
            + sql.SQL(" ORDER BY created_position LIMIT %s")
        )
        return self._fetch(query, [*where.params, limit])

    def payment(self, payment_id: str, scope: Scope) -> PaymentRow | None:
        where = _scoped(scope)
        where.add("payment_id = %s", UUID(payment_id))
        rows = self._fetch(
            sql.SQL("SELECT {} FROM {}").format(_PAYMENT_COLS, PAYMENTS) + where.sql(),
            where.params,
        )
        return payment_from_values(rows[0]) if rows else None

    def payments(
        self, scope: Scope, where: PaymentFilter, *, after: int | None, limit: int
    ) -> list[PaymentRow]:
        w = _scoped(scope)
        w.add_if("status = %s", where.status)
        w.add_if("provider = %s", where.provider)
        w.add_if("method = %s", where.method)
        w.add_if("currency = %s", where.currency)
        w.add_if("created_at >= %s", where.created_after)
        w.add_if("created_at < %s", where.created_before)
        rows = self._list(PAYMENTS, _PAYMENT_COLS, w, after, limit)
        return [payment_from_values(r) for r in rows]

    def disputes(
        self, scope: Scope, *, status: str | None, after: int | None, limit: int
    ) -> list[PaymentRow]:
        w = _scoped(scope)
        w.add("dispute_id IS NOT NULL")
        w.add_if("dispute_status = %s", status)
        rows = self._list(PAYMENTS, _PAYMENT_COLS, w, after, limit)
        return [payment_from_values(r) for r in rows]

    def refunds(self, payment_id: str) -> list[RefundRow]:
        rows = self._fetch(
            sql.SQL(
                "SELECT {} FROM {} WHERE payment_id = %s ORDER BY created_position, refund_id"
            ).format(_REFUND_COLS, REFUNDS),
            [UUID(payment_id)],
        )
        return [refund_from_values(r) for r in rows]

    def timeline(self, owner_id: str, *, after: int | None, limit: int) -> list[TimelineRow]:
        where = _Where()
        where.add("owner_id = %s", UUID(owner_id))
        where.add_if("position > %s", after)
        query = (
            sql.SQL("SELECT {} FROM {}").format(_TIMELINE_COLS, TIMELINE)
            + where.sql()
            + sql.SQL(" ORDER BY position LIMIT %s")
        )
        return [timeline_from_values(r) for r in self._fetch(query, [*where.params, limit])]

    def payout(self, payout_id: str, scope: Scope) -> PayoutRow | None:
        where = _scoped(scope)
        where.add("payout_id = %s", UUID(payout_id))
        rows = self._fetch(
            sql.SQL("SELECT {} FROM {}").format(_PAYOUT_COLS, PAYOUTS) + where.sql(),
            where.params,
        )
        return payout_from_values(rows[0]) if rows else None

    def payouts(
        self, scope: Scope, where: PayoutFilter, *, after: int | None, limit: int
    ) -> list[PayoutRow]:
        w = _scoped(scope)
        w.add_if("status = %s", where.status)
        w.add_if("provider = %s", where.provider)
        w.add_if("currency = %s", where.currency)
        w.add_if("created_at >= %s", where.created_after)
        w.add_if("created_at < %s", where.created_before)
        rows = self._list(PAYOUTS, _PAYOUT_COLS, w, after, limit)
        return [payout_from_values(r) for r in rows]

"""What the payment worker asks of the read models: which payments and pay-outs to resume,
which authorizations to expire. Each query walks one partial index of
``payment_readmodels`` in order and stops after ``limit`` rows.

The read models trail the event store by the projection's lag, so an answer may name a
payment that has moved on since: every step the worker takes is a command guarded by the
payment's state, so a stale answer costs a no-op, never a double charge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from infrastructure.payment_readmodels import PAYMENT_NEEDS_WORK, PAYOUT_UNSETTLED

PAYMENTS = sql.Identifier("rm_payments")
PAYOUTS = sql.Identifier("rm_payouts")


def _ids(pool: ConnectionPool, query: sql.Composed, params: list[object]) -> list[UUID]:
    with pool.connection() as conn:
        return [UUID(str(row[0])) for row in conn.execute(query, params).fetchall()]


def _cutoff(older_than: timedelta, now: datetime | None) -> datetime:
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    return (now or datetime.now(UTC)) - older_than


def payments_needing_work(
    pool: ConnectionPool, older_than: timedelta, limit: int, *, now: datetime | None = None
) -> list[UUID]:
    """Payments left in flight, untouched (no event) for longer than ``older_than``, the
    longest untouched first: still ``created``; ``processing`` with the last attempt
    pending (outcome unknown) or errored (retryable); or with a capture, void or refund
    sent to the provider and not answered."""
    query = (
        sql.SQL("SELECT payment_id FROM {} WHERE ").format(PAYMENTS)
        + sql.SQL(PAYMENT_NEEDS_WORK)  # braces in it are SQL, not placeholders
        + sql.SQL(" AND updated_at < %s ORDER BY updated_at LIMIT %s")
    )
    return _ids(pool, query, [_cutoff(older_than, now), limit])


def expired_authorizations(pool: ConnectionPool, now: datetime, limit: int) -> list[UUID]:
    """Authorized payments whose authorization expired at or before ``now``, the earliest
    expiry first: for ``expire_authorization``."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    query = sql.SQL(
        "SELECT payment_id FROM {} WHERE status = 'authorized'"
        " AND authorization_expires_at <= %s ORDER BY authorization_expires_at LIMIT %s"
    ).format(PAYMENTS)
    return _ids(pool, query, [now, limit])


def payouts_needing_work(
    pool: ConnectionPool, older_than: timedelta, limit: int, *, now: datetime | None = None
) -> list[UUID]:
    """Pay-outs neither paid nor failed, untouched for longer than ``older_than``, the
    longest untouched first."""
    query = (
        sql.SQL("SELECT payout_id FROM {} WHERE ").format(PAYOUTS)
        + sql.SQL(PAYOUT_UNSETTLED)
        + sql.SQL(" AND updated_at < %s ORDER BY updated_at LIMIT %s")
    )
    return _ids(pool, query, [_cutoff(older_than, now), limit])

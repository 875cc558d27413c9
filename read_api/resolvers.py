"""Root-field resolvers: check the caller, validate arguments, ask the read port.

Every resolver needs a principal (else ``unauthorized``) and sees only what its scope
allows. A wallet or transfer the caller may not see is reported exactly like a missing
one: ``null`` plus a ``not-found`` error. Lists are filtered by the store.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from domain.errors import NotFound, ValidationError
from domain.money import Currency
from domain.transfer import EXPIRED, PENDING, POSTED, VOIDED
from read_api.context import ReadContext
from read_api.pagination import (
    DEFAULT_PAGE,
    page_size,
    parse_statement_cursor,
    parse_transfer_cursor,
    parse_wallet_cursor,
    statement_cursor,
    transfer_cursor,
    wallet_cursor,
)
from read_api.ports import WalletRecord
from read_api.types import BalanceAt, Connection, MoneyAmount, StatementEntry, Transfer, Wallet

TRANSFER_STATUSES = (PENDING, POSTED, VOIDED, EXPIRED)

ReadInfo = Info[ReadContext, None]


def _uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError(f"{name}: {value[:60]!r} is not a UUID") from None


def _aware(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None:
        raise ValidationError(f"{name} needs a UTC offset, e.g. 2024-01-31T00:00:00Z")
    return value


def _aware_or_none(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else _aware(value, name)


async def _visible_wallet(info: ReadInfo, wallet_id: str, name: str) -> WalletRecord:
    ctx = info.context
    scope = ctx.scope()
    wid = _uuid(wallet_id, name)
    record = await ctx.reads.wallet(wid, scope)
    if record is None:
        raise NotFound(f"wallet {wid} not found")
    return record


async def wallet(info: ReadInfo, id: strawberry.ID) -> Wallet | None:
    return Wallet.from_record(await _visible_wallet(info, id, "id"))


async def wallets(
    info: ReadInfo,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
    merchant_id: str | None = None,
    currency: str | None = None,
) -> Connection[Wallet] | None:
    ctx = info.context
    scope = ctx.scope()
    limit = page_size(first)
    if currency is not None:
        Currency.of(currency)  # unknown-currency rather than an empty page
    key = parse_wallet_cursor(after) if after is not None else None
    rows = await ctx.reads.wallets(
        scope, merchant_id=merchant_id, currency=currency, after=key, limit=limit + 1
    )
    return Connection.build(
        [(wallet_cursor(r.wallet_id), Wallet.from_record(r)) for r in rows[:limit]],
        has_next_page=len(rows) > limit,
    )


async def transfer(info: ReadInfo, id: strawberry.ID) -> Transfer | None:
    ctx = info.context
    scope = ctx.scope()
    tid = _uuid(id, "id")
    record = await ctx.reads.transfer(tid, scope)
    if record is None:
        raise NotFound(f"transfer {tid} not found")
    return Transfer.from_record(record)


async def transfers(
    info: ReadInfo,
    wallet_id: strawberry.ID | None = None,
    status: str | None = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[Transfer] | None:
    ctx = info.context
    scope = ctx.scope()
    limit = page_size(first)
    if status is not None and status not in TRANSFER_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(TRANSFER_STATUSES)}")
    key = parse_transfer_cursor(after) if after is not None else None
    wid = None
    if wallet_id is not None:
        wid = (await _visible_wallet(info, wallet_id, "walletId")).wallet_id
    rows = await ctx.reads.transfers(
        scope, wallet_id=wid, status=status, after=key, limit=limit + 1
    )
    return Connection.build(
        [(transfer_cursor(r.position), Transfer.from_record(r)) for r in rows[:limit]],
        has_next_page=len(rows) > limit,
    )


async def statement(
    info: ReadInfo,
    wallet_id: strawberry.ID,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
    first: int | None = DEFAULT_PAGE,
    after: str | None = None,
) -> Connection[StatementEntry] | None:
    ctx = info.context
    ctx.scope()  # unauthorized comes before any argument error
    limit = page_size(first)
    start, end = _aware_or_none(from_, "from"), _aware_or_none(to, "to")
    key = parse_statement_cursor(after) if after is not None else None
    record = await _visible_wallet(info, wallet_id, "walletId")
    rows = await ctx.reads.statement(
        record.wallet_id, start=start, end=end, after=key, limit=limit + 1
    )
    return Connection.build(
        [
            (statement_cursor(r.at, r.position), StatementEntry.from_record(r, record.currency))
            for r in rows[:limit]
        ],
        has_next_page=len(rows) > limit,
    )


async def balance_at(info: ReadInfo, wallet_id: strawberry.ID, at: datetime) -> BalanceAt | None:
    ctx = info.context
    ctx.scope()  # unauthorized comes before any argument error
    instant = _aware(at, "at")
    record = await _visible_wallet(info, wallet_id, "walletId")
    posted = await ctx.reads.posted_at(record.wallet_id, instant)
    return BalanceAt(
        wallet_id=strawberry.ID(record.wallet_id),
        at=instant,
        posted=MoneyAmount.of(posted or 0, record.currency),
    )

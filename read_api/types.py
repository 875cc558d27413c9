"""GraphQL object types, each mapped from one port row by ``from_record``.

Amounts leave as ``Money { amount currency }`` with ``amount`` a decimal string in major
units ("12.34", JPY "5", KWD "1.234"), never a float. Positions are ``BigInt``: event
positions are PostgreSQL bigints and would overflow GraphQL's 32-bit ``Int``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, NewType, TypeVar

import strawberry
from strawberry.scalars import JSON

from domain.money import Currency, format_minor
from domain.transfer import PENDING
from projections.projectors import world_currency_of
from read_api.ports import StatementRecord, TransferRecord, WalletRecord

BigInt = NewType("BigInt", int)


def _parse_bigint(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("BigInt must be an integer or a string of digits")
    return int(value)


BIGINT_SCALAR = strawberry.scalar(
    name="BigInt",
    description="A 64-bit integer, serialized as a JSON number.",
    serialize=int,
    parse_value=_parse_bigint,
)

T = TypeVar("T")


@strawberry.type(name="Money", description="An amount in major units of one currency.")
class MoneyAmount:
    amount: str = strawberry.field(description='Decimal string, e.g. "12.34"; never a float.')
    currency: str = strawberry.field(description="ISO 4217 code.")

    @classmethod
    def of(cls, minor: int, currency: str) -> MoneyAmount:
        return cls(amount=format_minor(minor, Currency.of(currency).exponent), currency=currency)


def account_ref(account_id: str) -> strawberry.ID | None:
    """A wallet id, or None for a ``world`` system account."""
    return None if world_currency_of(account_id) is not None else strawberry.ID(account_id)


@strawberry.type
class Balance:
    posted: MoneyAmount
    pending: MoneyAmount = strawberry.field(description="Held by pending transfers.")
    available: MoneyAmount = strawberry.field(description="posted - pending + creditLimit.")


@strawberry.type
class Wallet:
    id: strawberry.ID
    merchant_id: str
    currency: str
    status: str
    credit_limit: MoneyAmount
    balance: Balance
    metadata: JSON
    is_system: bool
    version: int
    position: BigInt = strawberry.field(description="Event position of the latest change.")
    opened_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: WalletRecord) -> Wallet:
        def money(minor: int) -> MoneyAmount:
            return MoneyAmount.of(minor, r.currency)

        return cls(
            id=strawberry.ID(r.wallet_id),
            merchant_id=r.merchant_id,
            currency=r.currency,
            status=r.status,
            credit_limit=money(r.credit_limit),
            balance=Balance(
                posted=money(r.posted),
                pending=money(r.pending),
                available=money(r.posted - r.pending + r.credit_limit),
            ),
            metadata=JSON(r.metadata),
            is_system=r.is_system,
            version=r.version,
            position=BigInt(r.position),
            opened_at=r.opened_at,
            updated_at=r.updated_at,
        )


@strawberry.type
class Transfer:
    id: strawberry.ID
    kind: str
    status: str
    debit_wallet_id: strawberry.ID | None = strawberry.field(description="Null for world.")
    credit_wallet_id: strawberry.ID | None = strawberry.field(description="Null for world.")
    amount: MoneyAmount
    posted_amount: MoneyAmount
    pending_amount: MoneyAmount = strawberry.field(description="amount while pending, else 0.")
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    metadata: JSON
    position: BigInt = strawberry.field(description="Event position of the latest change.")

    @classmethod
    def from_record(cls, r: TransferRecord) -> Transfer:
        return cls(
            id=strawberry.ID(r.transfer_id),
            kind=r.kind,
            status=r.status,
            debit_wallet_id=account_ref(r.debit_account_id),
            credit_wallet_id=account_ref(r.credit_account_id),
            amount=MoneyAmount.of(r.amount, r.currency),
            posted_amount=MoneyAmount.of(r.posted_amount, r.currency),
            pending_amount=MoneyAmount.of(r.amount if r.status == PENDING else 0, r.currency),
            expires_at=r.expires_at,
            created_at=r.created_at,
            updated_at=r.updated_at,
            metadata=JSON(r.metadata),
            position=BigInt(r.position),
        )


@strawberry.type
class StatementEntry:
    position: BigInt
    transfer_id: strawberry.ID
    kind: str
    amount: MoneyAmount = strawberry.field(description="Signed: credits positive.")
    balance_after: MoneyAmount = strawberry.field(description="Posted balance after it.")
    counterparty_id: strawberry.ID | None = strawberry.field(description="Null for world.")
    at: datetime

    @classmethod
    def from_record(cls, r: StatementRecord, currency: str) -> StatementEntry:
        return cls(
            position=BigInt(r.position),
            transfer_id=strawberry.ID(r.transfer_id),
            kind=r.kind,
            amount=MoneyAmount.of(r.amount, currency),
            balance_after=MoneyAmount.of(r.posted_after, currency),
            counterparty_id=account_ref(r.counterparty_id),
            at=r.at,
        )


@strawberry.type
class BalanceAt:
    wallet_id: strawberry.ID
    at: datetime
    posted: MoneyAmount


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None
    has_previous_page: bool = strawberry.field(
        description="Always false: pagination is forward only (first/after)."
    )
    start_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @classmethod
    def build(cls, items: list[tuple[str, T]], has_next_page: bool) -> Connection[T]:
        edges = [Edge(cursor=c, node=n) for c, n in items]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next_page,
                end_cursor=edges[-1].cursor if edges else None,
                has_previous_page=False,
                start_cursor=edges[0].cursor if edges else None,
            ),
        )

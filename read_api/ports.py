"""The read side's port: what the GraphQL schema asks of the read models.

infrastructure/ implements it on PostgreSQL (``PgReadQueries``); tests use an in-memory
fake. Rows are plain frozen dataclasses; amounts are integer minor units, ids are
canonical UUID strings. Every ``ReadQueries`` method is blocking: callers run it in a
worker thread. ``AsyncReadQueries`` is the same port for the event loop (the service's
adapter uses an asynchronous connection pool, so a read costs no thread hop).

Visibility is part of every query that can return another merchant's rows, so the
filtering happens in the store (in SQL), never after the fact in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.principal import Principal

# The projections whose tables the schema reads; ``Ledger-Min-Position`` waits for all.
READ_PROJECTIONS = ("balances", "statements", "transfers")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows a caller may read.

    ``merchant_id`` None means every row, the ``world`` system accounts included;
    otherwise only that merchant's rows and never a system account.
    """

    merchant_id: str | None

    @classmethod
    def of(cls, principal: Principal) -> Scope:
        return cls(None if principal.sees_all else principal.merchant_id)

    @property
    def sees_all(self) -> bool:
        return self.merchant_id is None


@dataclass(frozen=True, slots=True)
class WalletRecord:
    wallet_id: str
    merchant_id: str
    currency: str
    status: str
    credit_limit: int
    posted: int
    pending: int
    metadata: dict[str, Any]
    is_system: bool
    version: int
    opened_at: datetime
    updated_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class TransferRecord:
    transfer_id: str
    merchant_id: str
    kind: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    status: str
    posted_amount: int
    pending: bool
    expires_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    position: int  # of the transfer's latest change; unique among transfers


@dataclass(frozen=True, slots=True)
class StatementRecord:
    wallet_id: str
    position: int
    transfer_id: str
    kind: str
    amount: int  # signed: credits positive, debits negative
    posted_after: int
    counterparty_id: str
    at: datetime


class ReadQueries(Protocol):
    """Blocking read-model queries. Lists return at most ``limit`` rows in key order,
    strictly after the ``after`` key when one is given (keyset pagination)."""

    def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None:
        """The wallet if it exists and ``scope`` may see it."""
        ...

    def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]:
        """Visible wallets ordered by ``wallet_id``, optionally of one merchant/currency."""
        ...

    def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None:
        """The transfer if it exists and ``scope`` may see it (by its ``merchant_id``)."""
        ...

    def transfers(
        self,
        scope: Scope,
        *,
        wallet_id: str | None,
        status: str | None,
        after: int | None,
        limit: int,
    ) -> list[TransferRecord]:
        """Visible transfers ordered by ``position``; with ``wallet_id`` those debiting
        or crediting that account."""
        ...

    def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]:
        """Entries of one wallet with ``start <= at < end``, ordered by ``(at, position)``.

        Does not check visibility: the caller looks the wallet up with its scope first.
        """
        ...

    def posted_at(self, wallet_id: str, at: datetime) -> int | None:
        """``posted_after`` of the wallet's last entry with ``at <= at``; None if none."""
        ...

    def positions(self) -> dict[str, int]:
        """Each projection's tracking position, by projection name."""
        ...


class AsyncReadQueries(Protocol):
    """``ReadQueries`` with coroutine methods: same arguments, same answers."""

    async def wallet(self, wallet_id: str, scope: Scope) -> WalletRecord | None: ...

    async def wallets(
        self,
        scope: Scope,
        *,
        merchant_id: str | None,
        currency: str | None,
        after: str | None,
        limit: int,
    ) -> list[WalletRecord]: ...

    async def transfer(self, transfer_id: str, scope: Scope) -> TransferRecord | None: ...

    async def transfers(
        self,
        scope: Scope,
        *,
        wallet_id: str | None,
        status: str | None,
        after: int | None,
        limit: int,
    ) -> list[TransferRecord]: ...

    async def statement(
        self,
        wallet_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[StatementRecord]: ...

    async def posted_at(self, wallet_id: str, at: datetime) -> int | None: ...

    async def positions(self) -> dict[str, int]: ...

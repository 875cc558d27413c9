"""Ports the projectors write through. infrastructure/ implements them on PostgreSQL.

Rows are plain dataclasses; amounts are integer minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class WalletRow:
    wallet_id: str
    merchant_id: str
    currency: str
    credit_limit: int
    metadata: dict[str, Any]
    is_system: bool
    opened_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class WalletChange:
    wallet_id: str
    position: int
    at: datetime
    version: int | None = None
    posted: int | None = None
    pending: int | None = None
    status: str | None = None
    world_delta: int = 0  # only for world accounts: added to posted


@dataclass(frozen=True, slots=True)
class StatementEntry:
    wallet_id: str
    position: int
    transfer_id: str
    kind: str
    amount: int  # signed: credits positive, debits negative
    posted_after: int
    counterparty_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TransferRow:
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
    position: int


@dataclass(frozen=True, slots=True)
class TransferChange:
    transfer_id: str
    status: str
    posted_amount: int | None
    at: datetime
    position: int


class BalancesWriter(Protocol):
    def wallet_opened(self, row: WalletRow) -> None: ...
    def wallet_changed(self, change: WalletChange) -> None: ...
    def ensure_world(self, wallet_id: str, currency: str, at: datetime, position: int) -> None: ...


class StatementsWriter(Protocol):
    def add_entry(self, entry: StatementEntry) -> None: ...


class TransfersWriter(Protocol):
    def transfer_created(self, row: TransferRow) -> None: ...
    def transfer_changed(self, change: TransferChange) -> None: ...

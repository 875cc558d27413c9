"""Commands (imperative) accepted by the ledger engine, and who issues them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.money import Currency, Money
from domain.principal import ROLES as ROLES
from domain.principal import Principal as Principal


@dataclass(frozen=True, slots=True)
class OpenWallet:
    merchant_id: str
    currency: Currency
    credit_limit: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FreezeWallet:
    wallet_id: UUID
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnfreezeWallet:
    wallet_id: UUID


@dataclass(frozen=True, slots=True)
class CloseWallet:
    wallet_id: UUID


@dataclass(frozen=True, slots=True)
class Deposit:
    wallet_id: UUID
    amount: Money
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Withdraw:
    wallet_id: UUID
    amount: Money
    pending: bool = False
    timeout_seconds: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateTransfer:
    debit_wallet_id: UUID
    credit_wallet_id: UUID
    amount: Money
    pending: bool = False
    timeout_seconds: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PostTransfer:
    """``amount`` is the API's decimal string, parsed in the transfer's currency."""

    transfer_id: UUID
    amount: str | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class VoidTransfer:
    transfer_id: UUID


@dataclass(frozen=True, slots=True)
class TransferBatch:
    transfers: tuple[CreateTransfer, ...]
    atomic: bool


@dataclass(frozen=True, slots=True)
class ExpireTransfer:
    """Internal (the sweeper's): release the hold of a pending transfer past its expiry."""

    transfer_id: UUID


Command = (
    OpenWallet
    | FreezeWallet
    | UnfreezeWallet
    | CloseWallet
    | Deposit
    | Withdraw
    | CreateTransfer
    | PostTransfer
    | VoidTransfer
    | TransferBatch
    | ExpireTransfer
)


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command with its caller and, for API requests, its idempotency key."""

    command: Command
    principal: Principal
    correlation_id: str
    idempotency_key: str | None = None
    request_hash: str = ""
    now: datetime | None = None

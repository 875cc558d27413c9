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


# ---- payments and pay-outs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One provider call for the timeline: what was asked, what came of it, and why."""

    operation: str
    provider: str
    outcome: str
    latency_ms: float = 0.0
    code: str = ""
    detail: str = ""
    decision: str = ""


@dataclass(frozen=True, slots=True)
class CreatePayment:
    """``payment_id`` is derived from the merchant and the request's idempotency key, so a
    retry after a crash finds the payment it created; ``fingerprint`` is the request's hash
    (the same key with another request is refused)."""

    payment_id: UUID
    wallet_id: UUID
    amount: Money
    method: str
    payment_method_token: str
    capture_method: str
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)
    provider_tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShowPayment:
    """Answers the payment as it is; sent with the request's idempotency key it stores
    that answer, which retries of the request then replay."""

    payment_id: UUID
    status: int = 200
    operation_id: str | None = None  # answer for this operation (refused: its problem)


@dataclass(frozen=True, slots=True)
class RecordAnswer:
    """Stores ``body`` as the answer to the request's idempotency key (a request that
    failed before it changed anything, answered the same way on every retry)."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartPaymentAttempt:
    payment_id: UUID
    provider: str
    call: ProviderCall | None = None


@dataclass(frozen=True, slots=True)
class RecordPaymentCall:
    payment_id: UUID
    call: ProviderCall
    attempt_error: str | None = None  # a definite error: the attempt charged nothing


@dataclass(frozen=True, slots=True)
class ApplyProviderUpdate:
    """A provider's statement (an answer, a status query, a webhook) and its postings."""

    payment_id: UUID
    update: Any  # domain.payment.ProviderUpdate
    call: ProviderCall | None = None


@dataclass(frozen=True, slots=True)
class FailPayment:
    payment_id: UUID
    reason: str


@dataclass(frozen=True, slots=True)
class RequestPaymentOperation:
    """The merchant's capture (``amount`` None: all), cancel or refund: recorded before
    the provider is called. ``operation_id`` is derived from the request's key."""

    payment_id: UUID
    kind: str  # capture | cancel | refund
    operation_id: str
    fingerprint: str
    amount: str | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class FailPaymentOperation:
    payment_id: UUID
    operation_id: str
    code: str
    reason: str
    call: ProviderCall | None = None


@dataclass(frozen=True, slots=True)
class ExpireAuthorization:
    payment_id: UUID


@dataclass(frozen=True, slots=True)
class AcceptDispute:
    payment_id: UUID


@dataclass(frozen=True, slots=True)
class SubmitDisputeEvidence:
    payment_id: UUID
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CreatePayout:
    payout_id: UUID
    wallet_id: UUID
    amount: Money
    provider: str
    destination: dict[str, str]
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShowPayout:
    payout_id: UUID
    status: int = 200


@dataclass(frozen=True, slots=True)
class ApplyPayoutUpdate:
    """``status`` paid or failed (None: only record the call)."""

    payout_id: UUID
    status: str | None
    call: ProviderCall | None = None
    provider_event_id: str | None = None
    provider_ref: str | None = None
    fee: int = 0
    reason: str = ""


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
    | CreatePayment
    | ShowPayment
    | RecordAnswer
    | StartPaymentAttempt
    | RecordPaymentCall
    | ApplyProviderUpdate
    | FailPayment
    | RequestPaymentOperation
    | FailPaymentOperation
    | ExpireAuthorization
    | AcceptDispute
    | SubmitDisputeEvidence
    | CreatePayout
    | ShowPayout
    | ApplyPayoutUpdate
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

"""Request bodies. Amounts are decimal strings in major units; a JSON number is refused."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

MAX_BATCH = 8190

Amount = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=40,
        examples=["12.34"],
        description='Decimal string in major units ("12.34"); JSON numbers are refused.',
    ),
]
CurrencyCode = Annotated[StrictStr, Field(min_length=3, max_length=3, examples=["USD"])]
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[StrictStr, Field(max_length=500)]],
    Field(default_factory=dict, max_length=50, description="Up to 50 string keys and values."),
]
TimeoutSeconds = Annotated[int, Field(strict=True, ge=1, le=30 * 24 * 3600)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WalletCreate(Body):
    currency: CurrencyCode
    credit_limit: Amount = "0"
    metadata: Metadata
    merchant_id: StrictStr | None = Field(
        default=None, max_length=200, description="Admin keys only: the owning merchant."
    )


class WalletFreeze(Body):
    reason: StrictStr = Field(default="", max_length=500)


class Empty(Body):
    pass


class DepositCreate(Body):
    wallet_id: UUID
    amount: Amount
    currency: CurrencyCode
    metadata: Metadata


class WithdrawalCreate(Body):
    wallet_id: UUID
    amount: Amount
    currency: CurrencyCode
    pending: StrictBool = False
    timeout_seconds: TimeoutSeconds | None = None
    metadata: Metadata


class TransferCreate(Body):
    debit_wallet_id: UUID
    credit_wallet_id: UUID
    amount: Amount
    currency: CurrencyCode
    pending: StrictBool = False
    timeout_seconds: TimeoutSeconds | None = None
    metadata: Metadata


class TransferPost(Body):
    amount: Amount | None = Field(
        default=None, description="Amount to capture; omit to capture the whole pending amount."
    )
    currency: CurrencyCode | None = None


class TransferBatchCreate(Body):
    atomic: StrictBool = False
    transfers: list[TransferCreate] = Field(min_length=1, max_length=MAX_BATCH)


PaymentMethod = Literal["card", "upi", "bank_transfer", "digital_wallet"]
Evidence = Annotated[
    dict[Annotated[str, Field(max_length=40)], Annotated[StrictStr, Field(max_length=5000)]],
    Field(min_length=1, max_length=20),
]


class PaymentCreate(Body):
    wallet_id: UUID = Field(description="The merchant's wallet the payment is credited to.")
    amount: Amount
    currency: CurrencyCode
    method: PaymentMethod
    payment_method_token: StrictStr = Field(
        min_length=1, max_length=255, description="The provider's token; never a card number."
    )
    payment_method_tokens: dict[
        Annotated[str, Field(max_length=40)],
        Annotated[StrictStr, Field(min_length=1, max_length=255)],
    ] = Field(
        default_factory=dict,
        max_length=10,
        description="The customer's token at each provider, so the payment can fail over.",
    )
    capture_method: Literal["automatic", "manual"] = "automatic"
    metadata: Metadata


class PaymentCapture(Body):
    amount: Amount | None = Field(default=None, description="Omit to capture everything.")
    currency: CurrencyCode | None = None


class RefundCreate(Body):
    amount: Amount | None = Field(default=None, description="Omit to refund all that is left.")
    currency: CurrencyCode | None = None


class PayoutDestination(Body):
    account_number: StrictStr = Field(min_length=1, max_length=64)
    bank_code: StrictStr = Field(min_length=1, max_length=64)
    account_name: StrictStr | None = Field(default=None, max_length=200)


class PayoutCreate(Body):
    wallet_id: UUID
    amount: Amount
    currency: CurrencyCode
    destination: PayoutDestination
    provider: StrictStr | None = Field(default=None, max_length=40)
    metadata: Metadata


class DisputeEvidence(Body):
    evidence: Evidence

"""Request bodies of the provider API and the admin API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from infrastructure.psp_sandbox.providers import Method

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Reference = Annotated[str, Field(min_length=1, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardDetails(_Body):
    # SecretStr: the number never shows in a repr, a log line or an error.
    number: SecretStr
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2100)
    cvc: SecretStr | None = None


class UpiDetails(_Body):
    vpa: str = Field(pattern=r"^[\w.\-]{2,64}@[\w]{2,64}$")


class BankAccount(_Body):
    account_number: SecretStr
    bank_code: str = Field(min_length=2, max_length=20)
    account_name: str | None = Field(default=None, max_length=200)


class WalletDetails(_Body):
    wallet: Literal["apple_pay", "google_pay", "paypal", "paytm", "phonepe"]
    account: str = Field(min_length=1, max_length=200)


class TokenRequest(_Body):
    method: Method
    card: CardDetails | None = None
    upi: UpiDetails | None = None
    bank_account: BankAccount | None = None
    digital_wallet: WalletDetails | None = None


class AuthorizationRequest(_Body):
    reference: Reference
    amount: int = Field(gt=0, le=10**15)
    currency: Currency
    method: Method
    token: str = Field(min_length=1, max_length=200)
    capture: bool = Field(default=False, description="Capture in the same step (automatic).")


class CaptureRequest(_Body):
    amount: int | None = Field(default=None, gt=0, le=10**15, description="Default: all of it.")


class RefundRequest(_Body):
    reference: Reference
    payment_id: str = Field(min_length=1, max_length=200)
    amount: int | None = Field(default=None, gt=0, le=10**15, description="Default: the rest.")


class PayoutRequest(_Body):
    reference: Reference
    amount: int = Field(gt=0, le=10**15)
    currency: Currency
    destination: BankAccount


class ProviderConfig(_Body):
    """Per-provider behaviour that is not a fault."""

    mode: Literal["sync", "async"] = "sync"
    async_delay_ms: int = Field(default=200, ge=0, le=600_000)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_secret: str = Field(default="", pattern=r"^(whsec_[A-Za-z0-9+/=]+)?$")
    auth_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)


class ProviderConfigUpdate(_Body):
    """Fields left out keep their value."""

    mode: Literal["sync", "async"] | None = None
    async_delay_ms: int | None = Field(default=None, ge=0, le=600_000)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_secret: str | None = Field(default=None, pattern=r"^whsec_[A-Za-z0-9+/=]+$")
    auth_ttl_s: int | None = Field(default=None, ge=1)


class DisputeRequest(_Body):
    provider: str
    payment_id: str
    amount: int | None = Field(default=None, gt=0)
    reason: str = "fraudulent"


class DisputeResolution(_Body):
    outcome: Literal["won", "lost"]

"""The provider port: what the payment engine needs from a payment service provider (PSP).

Every adapter (the sandbox PSP, Stripe) implements ``PaymentProvider``. Adapters speak the
provider's protocol and translate its answers into ``CallResult``s and its webhooks into
``WebhookEvent``s; nothing here knows any provider's wire format, and adding a provider
touches no domain code.

Calls are synchronous (the engine's workers are threads). An adapter never raises for what
the provider answered or for a network failure: it classifies it.

- ``CallOutcome.OK``: the provider did it; ``update`` says what the payment (or payout) is
  now, normalised into the domain's ``ProviderUpdate`` (or a ``PayoutUpdate``).
- ``CallOutcome.DECLINED``: a definite business refusal (card declined, payout rejected);
  ``update`` is the ``failed`` update. Never retried.
- ``CallOutcome.REJECTED``: a definite error for which the provider did nothing and which a
  retry would not fix (invalid token, unsupported currency, amount too large, wrong state).
- ``CallOutcome.ERROR``: a definite, retryable error for which the provider did nothing
  (it said so: a problem document marked retryable, connection refused before sending).
- ``CallOutcome.UNKNOWN``: no usable answer (timeout, dropped connection, a gateway's 5xx):
  the provider may or may not have acted. Only a status query may settle it.
- ``CallOutcome.PENDING``: accepted, the outcome comes later (webhook or status query).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from domain.payment import ProviderUpdate


class CallOutcome(StrEnum):
    OK = "ok"
    DECLINED = "declined"
    REJECTED = "rejected"
    ERROR = "error"
    UNKNOWN = "unknown"
    PENDING = "pending"


PAYOUT_PAID = "paid"
PAYOUT_FAILED = "failed"
PAYOUT_PENDING = "pending"


@dataclass(frozen=True, slots=True)
class PayoutUpdate:
    """A provider's statement about a pay-out: ``paid`` or ``failed`` (``pending`` while in
    flight). ``fee`` in minor units, charged on ``paid``."""

    status: str
    provider_event_id: str | None = None
    provider_payout_id: str | None = None
    fee: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one provider call came to. ``latency_ms`` is measured by the adapter.

    ``provider_ref`` is the provider's own id of the payment (or payout, refund) when known:
    the engine keeps it for later calls (capture, void, refund).
    """

    outcome: CallOutcome
    update: ProviderUpdate | PayoutUpdate | None = None
    provider_ref: str | None = None
    code: str = ""
    detail: str = ""
    latency_ms: float = 0.0

    @property
    def definite(self) -> bool:
        """The provider certainly did nothing (so another attempt cannot double-charge)."""
        return self.outcome in (CallOutcome.REJECTED, CallOutcome.ERROR)


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """Authorize (``capture=False``) or charge (``capture=True``) ``amount`` minor units.

    ``reference`` is our payment id: the provider stores it and answers status queries by it.
    ``idempotency_key`` is derived from the payment and the attempt, so a retried call can
    never charge twice.
    """

    reference: str
    idempotency_key: str
    amount: int
    currency: str
    method: str
    token: str
    capture: bool


@dataclass(frozen=True, slots=True)
class PaymentOperation:
    """Capture (``amount`` None: all), void, or refund (``reference`` is our refund id)
    of the provider's payment ``provider_ref`` whose reference is ``payment_reference``."""

    payment_reference: str
    provider_ref: str | None
    idempotency_key: str
    currency: str
    amount: int | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    reference: str
    idempotency_key: str
    amount: int
    currency: str
    destination: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StatusResult:
    """The answer to a status query by our reference.

    ``found`` False means the provider has no record of that reference (after an unknown
    outcome: nothing was charged, a new attempt is safe). ``updates`` are what the provider's
    record says, in order (e.g. ``authorized`` then ``captured``, refunds, dispute), ready
    to be applied through the state machine. ``outcome`` is ``UNKNOWN`` (or ``ERROR``)
    when the query itself failed.
    """

    outcome: CallOutcome
    found: bool = False
    updates: tuple[ProviderUpdate | PayoutUpdate, ...] = ()
    provider_ref: str | None = None
    detail: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified webhook, normalised. ``kind`` is ``payment`` or ``payout``;
    ``reference`` is our id (payment or payout) the provider echoes back."""

    event_id: str
    kind: str
    reference: str
    update: ProviderUpdate | PayoutUpdate
    provider_ref: str | None = None


class WebhookRejected(Exception):
    """Bad signature, stale timestamp or a body that is not the provider's."""


class PaymentProvider(Protocol):
    """One PSP. ``name`` is stable: it is stored in events and keys clearing accounts."""

    name: str

    def supports(self, method: str, currency: str) -> bool: ...

    def accepts_token(self, token: str) -> bool:
        """Whether ``token`` is a payment method this provider can charge (tokens are
        usually made by one provider and valid only there)."""
        ...

    def fee(self, method: str, currency: str, amount: int) -> int:
        """The provider's fee for capturing ``amount`` (for cost-based routing)."""
        ...

    def authorize(self, request: ChargeRequest) -> CallResult: ...

    def capture(self, operation: PaymentOperation) -> CallResult: ...

    def void(self, operation: PaymentOperation) -> CallResult: ...

    def refund(self, operation: PaymentOperation) -> CallResult: ...

    def payment_status(self, reference: str) -> StatusResult: ...

    def payout(self, request: PayoutRequest) -> CallResult: ...

    def payout_status(self, reference: str) -> StatusResult: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        """Verify the signature and normalise; raises ``WebhookRejected``. An event of a
        type the engine does not need (e.g. a token created) answers an empty list."""
        ...

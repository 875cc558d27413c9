"""The Payment aggregate: one charge of a customer for a merchant through a provider (PSP).

States and the transitions between them (``TRANSITIONS``)::

    created -> processing -> authorized -> captured -> partially_refunded -> refunded
                                                   \\-> refunded
    captured | partially_refunded -> disputed -> won | lost
    created | processing -> failed;  created | processing | authorized -> canceled

Two kinds of input move a payment:

- commands (from the merchant, or the engine driving the payment): each checks its guard
  first and raises a specific ``LedgerError`` when the payment's state does not allow it,
  leaving the payment untouched;
- provider updates (webhooks, answers to calls, status queries), normalised into a
  ``ProviderUpdate``: these are facts about the provider, they may arrive twice, late or out
  of order, so ``apply_provider_update`` never raises for those. It applies an update only
  when it moves the payment forward along one transition, and ignores duplicates (same
  provider event id, or a refund id already recorded), stale updates (a late "authorized"
  after "captured") and ones that contradict the payment (which a reconciliation should look
  at: ``classify_provider_update`` says which).

Amounts are integer minor units of ``currency``. Time is ``ctx.now`` of the command: an
authorization has expired when ``ctx.now >= authorization_expires_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.context import CommandContext
from domain.errors import (
    AuthorizationExpired,
    CaptureExceedsAuthorized,
    CardNumberRejected,
    CurrencyMismatch,
    DisputeExceedsCaptured,
    InvalidAmount,
    LedgerError,
    PaymentNotCancelable,
    PaymentNotCapturable,
    PaymentNotDisputable,
    PaymentNotDisputed,
    PaymentNotRefundable,
    PaymentNotRoutable,
    PaymentOutcomeUnknown,
    PaymentStateError,
    RefundAlreadyRecorded,
    RefundExceedsCaptured,
    ValidationError,
)
from domain.money import Money
from domain.pan import find_pan

# ---- states ----------------------------------------------------------------------------------

CREATED = "created"
PROCESSING = "processing"
AUTHORIZED = "authorized"
CAPTURED = "captured"
PARTIALLY_REFUNDED = "partially_refunded"
REFUNDED = "refunded"
DISPUTED = "disputed"
WON = "won"
LOST = "lost"
FAILED = "failed"
CANCELED = "canceled"

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({PROCESSING, FAILED, CANCELED}),
    # A provider may answer "captured" straight away (automatic capture).
    PROCESSING: frozenset({AUTHORIZED, CAPTURED, FAILED, CANCELED}),
    AUTHORIZED: frozenset({CAPTURED, CANCELED}),
    CAPTURED: frozenset({PARTIALLY_REFUNDED, REFUNDED, DISPUTED}),
    PARTIALLY_REFUNDED: frozenset({PARTIALLY_REFUNDED, REFUNDED, DISPUTED}),
    DISPUTED: frozenset({WON, LOST}),
    WON: frozenset(),
    LOST: frozenset(),
    REFUNDED: frozenset(),
    FAILED: frozenset(),
    CANCELED: frozenset(),
}
STATES = tuple(TRANSITIONS)
TERMINAL_STATES = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


def _closure() -> dict[str, frozenset[str]]:
    reach: dict[str, frozenset[str]] = {}
    for start in STATES:
        seen: set[str] = set()
        todo = list(TRANSITIONS[start])
        while todo:
            state = todo.pop()
            if state not in seen:
                seen.add(state)
                todo.extend(TRANSITIONS[state])
        reach[start] = frozenset(seen)
    return reach


_LATER = _closure()


def is_forward(before: str, after: str) -> bool:
    """Whether ``after`` lies strictly later than ``before`` in the state machine's order
    (reachable through one or more transitions)."""
    return after in _LATER[before]


# ---- vocabularies ----------------------------------------------------------------------------

CARD = "card"
UPI = "upi"
BANK_TRANSFER = "bank_transfer"
DIGITAL_WALLET = "digital_wallet"
METHODS = (CARD, UPI, BANK_TRANSFER, DIGITAL_WALLET)

AUTOMATIC = "automatic"
MANUAL = "manual"
CAPTURE_METHODS = (AUTOMATIC, MANUAL)

# Outcome of one provider attempt. PENDING: sent, no answer yet; after a timeout it stays
# PENDING (unknown), and nothing else may be tried until a status query settles it.
# ERROR: a definite failure that charged nothing (retryable).
ATTEMPT_PENDING = "pending"
ATTEMPT_ERROR = "error"
ATTEMPT_DECLINED = "declined"
ATTEMPT_AUTHORIZED = "authorized"
ATTEMPT_CAPTURED = "captured"

# Operations the merchant asked for that wait for the provider's answer.
OP_CAPTURE = "capture"
OP_VOID = "void"
OP_REFUND = "refund"

# Why a payment was canceled.
CANCEL_REQUESTED = "requested"
CANCEL_AUTHORIZATION_EXPIRED = "authorization_expired"
CANCEL_BY_PROVIDER = "provider"

# Used when a provider authorizes without saying until when.
DEFAULT_AUTHORIZATION_TTL = timedelta(days=7)
MAX_TOKEN_LENGTH = 255

# ---- provider updates ------------------------------------------------------------------------

PROVIDER_AUTHORIZED = "authorized"
PROVIDER_CAPTURED = "captured"
PROVIDER_FAILED = "failed"
PROVIDER_CANCELED = "canceled"
PROVIDER_REFUNDED = "refunded"
PROVIDER_DISPUTE_OPENED = "dispute_opened"
PROVIDER_DISPUTE_WON = "dispute_won"
PROVIDER_DISPUTE_LOST = "dispute_lost"

_UPDATE_TARGET = {
    PROVIDER_AUTHORIZED: AUTHORIZED,
    PROVIDER_CAPTURED: CAPTURED,
    PROVIDER_FAILED: FAILED,
    PROVIDER_CANCELED: CANCELED,
    PROVIDER_DISPUTE_OPENED: DISPUTED,
    PROVIDER_DISPUTE_WON: WON,
    PROVIDER_DISPUTE_LOST: LOST,
}
PROVIDER_STATUSES = (*_UPDATE_TARGET, PROVIDER_REFUNDED)


@dataclass(frozen=True, slots=True)
class ProviderUpdate:
    """A provider's statement about a payment, normalised by its adapter.

    ``provider_event_id`` (the webhook's event id) deduplicates; ``None`` for answers that
    have none (a synchronous response), which then rely on the state order alone.
    ``provider`` defaults to the payment's current provider; ``provider_ref`` is the
    provider's own id of the payment, kept for later calls. ``amount`` is in minor units:
    required for ``refunded``; for ``captured`` it defaults to the whole authorization and for
    ``dispute_opened`` to everything captured and not refunded.
    """

    status: str
    provider_event_id: str | None = None
    provider: str | None = None
    amount: int | None = None
    fee: int = 0
    reason: str = ""
    refund_id: str | None = None
    dispute_id: str | None = None
    authorization_expires_at: datetime | None = None
    provider_ref: str | None = None

    def __post_init__(self) -> None:
        if self.status not in PROVIDER_STATUSES:
            raise ValidationError(f"unknown provider status {self.status!r}")
        if self.provider_event_id is not None and not self.provider_event_id:
            raise ValidationError("provider_event_id must not be empty")
        if self.amount is not None and (type(self.amount) is not int or self.amount <= 0):
            raise InvalidAmount("a provider update's amount must be a positive integer")
        if type(self.fee) is not int or self.fee < 0:
            raise InvalidAmount("a provider update's fee must be zero or a positive integer")
        if self.status == PROVIDER_REFUNDED and (not self.refund_id or self.amount is None):
            raise ValidationError("a refunded update needs a refund_id and an amount")


class UpdateOutcome(StrEnum):
    """What ``apply_provider_update`` does with an update. Only APPLIED changes anything."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this provider event id (or refund id) is already recorded
    STALE = "stale"  # the payment is already at or past that state
    OUT_OF_ORDER = "out_of_order"  # a later state whose predecessor has not arrived yet
    CONFLICT = "conflict"  # contradicts the payment (other branch, provider or amount)


@dataclass(frozen=True, slots=True)
class Operation:
    """A capture, void or refund sent (or about to be sent) to the provider: recorded
    before the call, so a crash before the answer resumes it with the same idempotency key.
    ``amount`` is 0 for a void."""

    operation_id: str
    kind: str
    amount: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one provider: ``number`` counts from 1."""

    number: int
    provider: str
    outcome: str


def _seen(payment: Payment, key: str | None) -> None:
    if key is not None:
        payment.provider_event_ids.add(key)


def _drop_operations(payment: Payment, done: str, superseded: str, code: str) -> None:
    """Settle the in-flight capture and void operations once one of them has happened:
    those of kind ``done`` succeeded; those of kind ``superseded`` lost the race and are
    finished with the error ``code`` (a void retried after a capture won is refused, not
    answered as if it had voided)."""
    for key, op in list(payment.operations.items()):
        if op.kind == done:
            payment.finished_operations[key] = ("succeeded", "")
        elif op.kind == superseded:
            payment.finished_operations[key] = ("superseded", code)
        else:
            continue
        del payment.operations[key]


def _settle_attempt(payment: Payment, outcome: str, only_if: tuple[str, ...]) -> None:
    if payment.attempts and payment.attempts[-1].outcome in only_if:
        payment.attempts[-1] = replace(payment.attempts[-1], outcome=outcome)


class Payment(Aggregate):
    """A payment of ``amount`` minor units of ``currency`` to ``merchant_id``.

    ``captured_amount - refunded_amount`` is what the merchant keeps; while ``disputed``,
    ``dispute_hold`` of it is held until the dispute is won or lost.
    """

    class Event(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class Created(Event, Aggregate.Created):
        merchant_id: str
        wallet_id: str
        fingerprint: str
        amount: int
        currency: str
        method: str
        payment_method_token: str
        capture_method: str
        metadata: dict[str, Any]
        provider_tokens: dict[str, str]

    class AttemptStarted(Event):
        """The engine routed the payment to ``provider`` and is calling it."""

        attempt_number: int
        provider: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.status = PROCESSING
            aggregate.provider = self.provider
            aggregate.attempts.append(Attempt(self.attempt_number, self.provider, ATTEMPT_PENDING))

    class AttemptErrored(Event):
        """The attempt failed for certain without charging anything: it may be retried."""

        attempt_number: int
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _settle_attempt(aggregate, ATTEMPT_ERROR, (ATTEMPT_PENDING,))

    class Authorized(Event):
        """The provider holds ``amount`` on the customer's method until ``expires_at``."""

        # Named ``expires_at`` like Transfer.Created's: the event store's transcoder types
        # that key (and ``timestamp``) back into a datetime when it reads an event.
        amount: int
        expires_at: datetime
        provider_event_id: str | None
        provider_ref: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            if self.provider_ref is not None:
                aggregate.provider_ref = self.provider_ref
            aggregate.status = AUTHORIZED
            aggregate.authorized_amount = self.amount
            aggregate.authorization_expires_at = self.expires_at
            _settle_attempt(aggregate, ATTEMPT_AUTHORIZED, (ATTEMPT_PENDING, ATTEMPT_ERROR))

    class Captured(Event):
        """``amount`` was captured; ``released`` is the rest of the authorization, let go."""

        amount: int
        fee: int
        released: int
        provider_event_id: str | None
        provider_ref: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            if self.provider_ref is not None:
                aggregate.provider_ref = self.provider_ref
            _drop_operations(aggregate, OP_CAPTURE, OP_VOID, "payment-not-cancelable")
            aggregate.status = CAPTURED
            aggregate.authorized_amount = self.amount + self.released
            aggregate.captured_amount = self.amount
            aggregate.released_amount = self.released
            aggregate.fees += self.fee
            _settle_attempt(
                aggregate, ATTEMPT_CAPTURED, (ATTEMPT_PENDING, ATTEMPT_ERROR, ATTEMPT_AUTHORIZED)
            )

    class Failed(Event):
        reason: str
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = FAILED
            aggregate.failure_reason = self.reason
            _settle_attempt(aggregate, ATTEMPT_DECLINED, (ATTEMPT_PENDING,))

    class Canceled(Event):
        """Canceled before capture; ``released`` is the authorization let go (0 if none)."""

        reason: str
        released: int
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            _drop_operations(aggregate, OP_VOID, OP_CAPTURE, "payment-not-capturable")
            aggregate.status = CANCELED
            aggregate.cancel_reason = self.reason
            aggregate.released_amount = self.released

    class Refunded(Event):
        refund_id: str
        amount: int
        refunded_after: int
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            aggregate.refunds[self.refund_id] = self.amount
            aggregate.refunded_amount = self.refunded_after
            if aggregate.operations.pop(self.refund_id, None) is not None:
                aggregate.finished_operations[self.refund_id] = ("succeeded", "")
            if aggregate.status != DISPUTED:  # a refund sent before a dispute opened
                full = self.refunded_after == aggregate.captured_amount
                aggregate.status = REFUNDED if full else PARTIALLY_REFUNDED

    class DisputeOpened(Event):
        """The customer disputes ``amount``: it is held until the dispute is decided."""

        dispute_id: str
        amount: int
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = DISPUTED
            aggregate.dispute_id = self.dispute_id
            aggregate.disputed_amount = self.amount

    class DisputeWon(Event):
        """The merchant won: the held amount is the merchant's again."""

        dispute_id: str
        amount: int
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = WON

    class DisputeLost(Event):
        """The merchant lost (or accepted): the held amount goes back to the customer."""

        dispute_id: str
        amount: int
        provider_event_id: str | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            _seen(aggregate, self.provider_event_id)
            aggregate.status = LOST

    class OperationRequested(Event):
        """The merchant asked for a capture, void or refund; the provider is called next."""

        operation_id: str
        kind: str
        amount: int

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.operations[self.operation_id] = Operation(
                self.operation_id, self.kind, self.amount
            )

    class OperationFailed(Event):
        """The provider refused the operation for certain (nothing happened there)."""

        operation_id: str
        kind: str
        code: str
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.operations.pop(self.operation_id, None)
            aggregate.finished_operations[self.operation_id] = ("failed", self.code)

    class ProviderCalled(Event):
        """One call to a provider and what came of it, with the engine's decision: the
        payment's causal timeline (attempts, latency, retries, breaker and routing)."""

        operation: str
        provider: str
        attempt_number: int
        outcome: str
        latency_ms: float
        code: str
        detail: str
        decision: str

    class DisputeEvidenceSubmitted(Event):
        dispute_id: str
        evidence: dict[str, Any]

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Payment)
            aggregate.dispute_evidence.append(self.evidence)

    @event(Created)
    def __init__(
        self,
        merchant_id: str,
        wallet_id: str,
        fingerprint: str,
        amount: int,
        currency: str,
        method: str,
        payment_method_token: str,
        capture_method: str,
        metadata: dict[str, Any],
        provider_tokens: dict[str, str],
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.provider_tokens = provider_tokens
        self.wallet_id = wallet_id
        self.fingerprint = fingerprint
        self.amount = amount
        self.currency = currency
        self.method = method
        self.payment_method_token = payment_method_token
        self.capture_method = capture_method
        self.metadata = metadata
        self.status = CREATED
        self.provider: str | None = None
        self.attempts: list[Attempt] = []
        self.authorized_amount = 0
        self.authorization_expires_at: datetime | None = None
        self.captured_amount = 0
        self.released_amount = 0
        self.refunded_amount = 0
        self.refunds: dict[str, int] = {}
        self.dispute_id: str | None = None
        self.disputed_amount = 0
        self.fees = 0
        self.failure_reason: str | None = None
        self.cancel_reason: str | None = None
        self.provider_event_ids: set[str] = set()
        self.provider_ref: str | None = None
        self.operations: dict[str, Operation] = {}
        # operation id -> ("succeeded", "") or ("failed", provider's code): a retried
        # request finds what became of its operation.
        self.finished_operations: dict[str, tuple[str, str]] = {}
        self.dispute_evidence: list[dict[str, Any]] = []

    @classmethod
    def create(
        cls,
        payment_id: UUID,
        *,
        merchant_id: str,
        amount: Money,
        method: str,
        wallet_id: str = "",
        fingerprint: str = "",
        provider_tokens: dict[str, str] | None = None,
        payment_method_token: str,
        capture_method: str,
        metadata: dict[str, Any],
        ctx: CommandContext,
    ) -> Payment:
        """A new payment, not yet sent to any provider. Card numbers are refused: the
        customer's payment method arrives only as a provider token."""
        if not merchant_id:
            raise ValidationError("merchant_id is required")
        amount.require_positive()
        if method not in METHODS:
            raise ValidationError(f"method must be one of {', '.join(METHODS)}")
        if capture_method not in CAPTURE_METHODS:
            raise ValidationError(f"capture_method must be one of {', '.join(CAPTURE_METHODS)}")
        if not isinstance(payment_method_token, str) or not payment_method_token:
            raise ValidationError("payment_method_token is required")
        if len(payment_method_token) > MAX_TOKEN_LENGTH:
            raise ValidationError("payment_method_token is too long")
        tokens = dict(provider_tokens or {})
        if len(tokens) > 10 or any(
            not isinstance(v, str) or not v or len(v) > MAX_TOKEN_LENGTH for v in tokens.values()
        ):
            raise ValidationError("provider_tokens: at most 10 tokens of 1-255 characters")
        where = (
            find_pan(payment_method_token, root="payment_method_token")
            or find_pan(tokens, root="provider_tokens")
            or find_pan(metadata, root="metadata")
        )
        if where is not None:
            raise CardNumberRejected(
                f"{where} holds a card number; send the provider's payment method token"
            )
        return cls._create(
            cls.Created,
            id=payment_id,
            merchant_id=merchant_id,
            wallet_id=wallet_id,
            fingerprint=fingerprint,
            amount=amount.minor,
            currency=amount.currency.code,
            method=method,
            payment_method_token=payment_method_token,
            capture_method=capture_method,
            metadata=metadata,
            provider_tokens=tokens,
            **ctx.stamp(),
        )

    # ---- derived state -------------------------------------------------------------------

    def money(self, minor: int) -> Money:
        return Money.of(minor, self.currency)

    def token_for(self, provider: str) -> str:
        """The customer's payment method at ``provider``: its own token when one was given,
        else the payment's token."""
        return self.provider_tokens.get(provider, self.payment_method_token)

    @property
    def refundable_amount(self) -> int:
        """Captured and not yet refunded: the most a refund or a dispute can cover."""
        return self.captured_amount - self.refunded_amount

    def pending_refunds(self, excluding: str | None = None) -> int:
        """What refunds sent to the provider and not yet answered will take."""
        return sum(
            op.amount
            for key, op in self.operations.items()
            if op.kind == OP_REFUND and key != excluding
        )

    def operation(self, kind: str) -> Operation | None:
        """The pending operation of ``kind`` (the first one, for refunds)."""
        return next((op for op in self.operations.values() if op.kind == kind), None)

    @property
    def dispute_hold(self) -> int:
        """The amount an open dispute holds (0 when none is open)."""
        return self.disputed_amount if self.status == DISPUTED else 0

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def outcome_unknown(self) -> bool:
        """A provider call is out (or timed out) and its answer is not known yet."""
        last = self.last_attempt
        return self.status == PROCESSING and last is not None and last.outcome == ATTEMPT_PENDING

    def is_authorization_expired(self, now: datetime) -> bool:
        return (
            self.status == AUTHORIZED
            and self.authorization_expires_at is not None
            and now >= self.authorization_expires_at
        )

    # ---- guards (no mutation) ------------------------------------------------------------

    def _require_currency(self, amount: Money) -> None:
        if amount.currency.code != self.currency:
            raise CurrencyMismatch(
                f"payment {self.id} is in {self.currency}, the amount is {amount.currency.code}"
            )

    def _require_settled_attempt(self) -> None:
        if self.outcome_unknown:
            raise PaymentOutcomeUnknown(
                f"payment {self.id}: the outcome of attempt {len(self.attempts)} at "
                f"{self.provider} is not known yet; query the provider first"
            )

    def require_routable(self) -> None:
        """Guard for ``start_attempt``: new, or processing after a definite, retryable error.
        Never while the last attempt's outcome is unknown: that could charge twice."""
        if self.status not in (CREATED, PROCESSING):
            raise PaymentNotRoutable(f"payment {self.id} is {self.status}")
        self._require_settled_attempt()

    def require_capturable(self, minor: int, fee: int, now: datetime) -> None:
        """Guard for a manual capture of ``minor`` before the authorization expires."""
        if self.status == CANCELED and self.cancel_reason == CANCEL_AUTHORIZATION_EXPIRED:
            # Whether the sweeper has canceled it yet must not change the answer.
            raise AuthorizationExpired(f"the authorization of payment {self.id} has expired")
        if self.capture_method != MANUAL:
            raise PaymentNotCapturable(f"payment {self.id} is captured automatically")
        if self.status != AUTHORIZED:
            raise PaymentNotCapturable(f"payment {self.id} is {self.status}, not authorized")
        if self.is_authorization_expired(now):
            at = self.authorization_expires_at.isoformat() if self.authorization_expires_at else ""
            raise AuthorizationExpired(f"the authorization of payment {self.id} expired at {at}")
        self._require_capture_amounts(minor, fee, self.authorized_amount)

    def _require_capture_amounts(self, minor: int, fee: int, limit: int) -> None:
        if minor <= 0:
            raise InvalidAmount("amount must be greater than zero")
        if minor > limit:
            raise CaptureExceedsAuthorized(
                f"cannot capture {self.money(minor).format()}: only "
                f"{self.money(limit).format()} {self.currency} is authorized"
            )
        if type(fee) is not int or not 0 <= fee <= minor:
            raise InvalidAmount("fee must be between zero and the captured amount")

    def require_cancelable(self) -> None:
        """Guard for ``cancel``: before any money was captured, and never while an attempt's
        outcome is unknown (the provider may have charged)."""
        if self.status not in (CREATED, PROCESSING, AUTHORIZED):
            raise PaymentNotCancelable(f"payment {self.id} is {self.status}")
        self._require_settled_attempt()

    def require_refundable(self, refund_id: str, minor: int) -> None:
        """Guard for ``refund``: captured, no open dispute, and never more than what was
        captured minus what was already refunded or is being refunded."""
        if not refund_id:
            raise ValidationError("refund_id is required")
        if refund_id in self.refunds:
            raise RefundAlreadyRecorded(f"refund {refund_id} of payment {self.id} exists")
        if self.status == DISPUTED:
            raise PaymentNotRefundable(f"payment {self.id} has an open dispute")
        if self.status not in (CAPTURED, PARTIALLY_REFUNDED):
            raise PaymentNotRefundable(f"payment {self.id} is {self.status}")
        if minor <= 0:
            raise InvalidAmount("amount must be greater than zero")
        left = self.refundable_amount - self.pending_refunds(excluding=refund_id)
        if minor > left:
            raise RefundExceedsCaptured(
                f"cannot refund {self.money(minor).format()}: "
                f"{self.money(left).format()} {self.currency} "
                "is captured and not yet refunded (or being refunded)"
            )

    def require_disputable(self, minor: int) -> None:
        """Guard for ``open_dispute``: captured, not fully refunded, no dispute yet, and
        never more than what was captured minus what was refunded."""
        if self.status == REFUNDED:
            raise PaymentNotDisputable(f"payment {self.id} is fully refunded")
        if self.status not in (CAPTURED, PARTIALLY_REFUNDED):
            raise PaymentNotDisputable(f"payment {self.id} is {self.status}")
        if minor <= 0:
            raise InvalidAmount("amount must be greater than zero")
        if minor > self.refundable_amount:
            raise DisputeExceedsCaptured(
                f"cannot dispute {self.money(minor).format()}: "
                f"{self.money(self.refundable_amount).format()} {self.currency} "
                "is captured and not refunded"
            )

    def require_open_dispute(self) -> None:
        if self.status != DISPUTED:
            raise PaymentNotDisputed(f"payment {self.id} is {self.status}, not disputed")

    def _require_no_operation(self, error: type[PaymentStateError], *kinds: str) -> None:
        for op in self.operations.values():
            if op.kind in kinds:
                raise error(
                    f"payment {self.id}: a {op.kind} ({op.operation_id}) is already in progress"
                )

    # ---- commands (each checks its guard before it changes anything) ---------------------

    def start_attempt(self, provider: str, ctx: CommandContext) -> int:
        """Route the payment to ``provider``; answers the new attempt's number (from 1),
        which with the payment id makes the provider call's idempotency key."""
        if not provider:
            raise ValidationError("provider is required")
        self.require_routable()
        number = len(self.attempts) + 1
        self.trigger_event(
            self.AttemptStarted, attempt_number=number, provider=provider, **ctx.stamp()
        )
        return number

    def record_attempt_error(self, reason: str, ctx: CommandContext) -> None:
        """The pending attempt failed for certain and charged nothing (a 4xx that is not a
        decline, a refused connection): the engine may start another attempt."""
        if not self.outcome_unknown:
            raise PaymentStateError(f"payment {self.id} has no attempt awaiting an answer")
        self.trigger_event(
            self.AttemptErrored,
            attempt_number=len(self.attempts),
            reason=reason,
            **ctx.stamp(),
        )

    def fail(self, reason: str, ctx: CommandContext) -> None:
        """The engine gives up (attempts exhausted, no eligible provider)."""
        if self.status not in (CREATED, PROCESSING):
            raise PaymentStateError(f"payment {self.id} is {self.status}; it cannot fail now")
        self._require_settled_attempt()
        self.trigger_event(self.Failed, reason=reason, provider_event_id=None, **ctx.stamp())

    def capture(self, ctx: CommandContext, amount: Money | None = None, *, fee: int = 0) -> None:
        """Capture all (``amount=None``) or part of a manual authorization; the rest of it
        is released. ``fee`` is the provider's fee in minor units, when known."""
        if amount is not None:
            self._require_currency(amount)
        minor = self.authorized_amount if amount is None else amount.minor
        self.require_capturable(minor, fee, ctx.now)
        self.trigger_event(
            self.Captured,
            amount=minor,
            fee=fee,
            released=self.authorized_amount - minor,
            provider_event_id=None,
            provider_ref=None,
            **ctx.stamp(),
        )

    def cancel(self, ctx: CommandContext, reason: str = CANCEL_REQUESTED) -> None:
        """Cancel before capture; an authorization is released (voided)."""
        self.require_cancelable()
        self.trigger_event(
            self.Canceled,
            reason=reason,
            released=self.authorized_amount if self.status == AUTHORIZED else 0,
            provider_event_id=None,
            **ctx.stamp(),
        )

    def request_capture(
        self, operation_id: str, ctx: CommandContext, amount: Money | None = None
    ) -> Operation:
        """Record that the merchant asked to capture all or part of a manual authorization;
        the provider is called next and its answer recorded by ``apply_provider_update``."""
        if not operation_id:
            raise ValidationError("operation_id is required")
        if amount is not None:
            self._require_currency(amount)
        minor = self.authorized_amount if amount is None else amount.minor
        self.require_capturable(minor, 0, ctx.now)
        self._require_no_operation(PaymentNotCapturable, OP_CAPTURE, OP_VOID)
        return self._request(operation_id, OP_CAPTURE, minor, ctx)

    def request_cancel(self, operation_id: str, ctx: CommandContext) -> Operation | None:
        """Cancel: an authorization must be voided at the provider (answers the operation
        to send); before that, nothing is held there and the payment is canceled at once
        (answers None)."""
        if not operation_id:
            raise ValidationError("operation_id is required")
        self.require_cancelable()
        self._require_no_operation(PaymentNotCancelable, OP_CAPTURE, OP_VOID)
        if self.status == AUTHORIZED:
            return self._request(operation_id, OP_VOID, 0, ctx)
        self.cancel(ctx)
        return None

    def request_refund(self, refund_id: str, amount: Money, ctx: CommandContext) -> Operation:
        """Record a refund the merchant asked for; the provider is called next. Pending
        refunds count against what can still be refunded, so two racing refunds can never
        exceed what was captured."""
        self._require_currency(amount)
        if refund_id in self.operations:
            raise RefundAlreadyRecorded(f"refund {refund_id} of payment {self.id} is in progress")
        self.require_refundable(refund_id, amount.minor)
        return self._request(refund_id, OP_REFUND, amount.minor, ctx)

    def _request(self, operation_id: str, kind: str, minor: int, ctx: CommandContext) -> Operation:
        self.trigger_event(
            self.OperationRequested,
            operation_id=operation_id,
            kind=kind,
            amount=minor,
            **ctx.stamp(),
        )
        return self.operations[operation_id]

    def fail_operation(
        self, operation_id: str, code: str, reason: str, ctx: CommandContext
    ) -> None:
        """The provider refused a pending operation for certain: it is dropped."""
        op = self.operations.get(operation_id)
        if op is None:
            raise PaymentStateError(f"payment {self.id} has no operation {operation_id}")
        self.trigger_event(
            self.OperationFailed,
            operation_id=operation_id,
            kind=op.kind,
            code=code,
            reason=reason,
            **ctx.stamp(),
        )

    def record_provider_call(
        self,
        *,
        operation: str,
        provider: str,
        outcome: str,
        latency_ms: float,
        ctx: CommandContext,
        code: str = "",
        detail: str = "",
        decision: str = "",
    ) -> None:
        """Add one provider call to the payment's timeline (changes no state)."""
        self.trigger_event(
            self.ProviderCalled,
            operation=operation,
            provider=provider,
            attempt_number=len(self.attempts),
            outcome=outcome,
            latency_ms=round(float(latency_ms), 3),
            code=code[:100],
            detail=detail[:500],
            decision=decision[:500],
            **ctx.stamp(),
        )

    def submit_dispute_evidence(self, evidence: dict[str, Any], ctx: CommandContext) -> None:
        """Keep the merchant's evidence for an open dispute (never a card number)."""
        self.require_open_dispute()
        if not isinstance(evidence, dict) or not evidence:
            raise ValidationError("evidence must be a non-empty object")
        where = find_pan(evidence, root="evidence")
        if where is not None:
            raise CardNumberRejected(f"{where} holds a card number")
        self.trigger_event(
            self.DisputeEvidenceSubmitted,
            dispute_id=self.dispute_id or "",
            evidence=evidence,
            **ctx.stamp(),
        )

    def expire_authorization(self, ctx: CommandContext) -> None:
        """Cancel an authorization that has expired at ``ctx.now`` and release it."""
        if self.status != AUTHORIZED:
            raise PaymentStateError(f"payment {self.id} is {self.status}, not authorized")
        if not self.is_authorization_expired(ctx.now):
            raise PaymentStateError(f"the authorization of payment {self.id} has not expired")
        if any(op.kind == OP_CAPTURE for op in self.operations.values()):
            # The capture was asked for in time and its outcome at the provider decides:
            # canceling here could leave money captured there that the ledger never saw.
            raise PaymentStateError(f"a capture of payment {self.id} is in flight")
        self.cancel(ctx, reason=CANCEL_AUTHORIZATION_EXPIRED)

    def refund(self, refund_id: str, amount: Money, ctx: CommandContext) -> None:
        """Refund part or all of what was captured and not yet refunded."""
        self._require_currency(amount)
        self.require_refundable(refund_id, amount.minor)
        self._refund(refund_id, amount.minor, None, ctx)

    def _refund(self, refund_id: str, minor: int, key: str | None, ctx: CommandContext) -> None:
        self.trigger_event(
            self.Refunded,
            refund_id=refund_id,
            amount=minor,
            refunded_after=self.refunded_amount + minor,
            provider_event_id=key,
            **ctx.stamp(),
        )

    def open_dispute(
        self, dispute_id: str, ctx: CommandContext, amount: Money | None = None
    ) -> None:
        """Record a dispute (chargeback) of ``amount``, by default all that is not
        refunded: it is held until the dispute is won or lost."""
        if not dispute_id:
            raise ValidationError("dispute_id is required")
        if amount is not None:
            self._require_currency(amount)
        minor = self.refundable_amount if amount is None else amount.minor
        self.require_disputable(minor)
        self._open_dispute(dispute_id, minor, None, ctx)

    def _open_dispute(
        self, dispute_id: str, minor: int, key: str | None, ctx: CommandContext
    ) -> None:
        self.trigger_event(
            self.DisputeOpened,
            dispute_id=dispute_id,
            amount=minor,
            provider_event_id=key,
            **ctx.stamp(),
        )

    def accept_dispute(self, ctx: CommandContext) -> None:
        """The merchant accepts the dispute: it is lost."""
        self.require_open_dispute()
        self._close_dispute(won=False, key=None, ctx=ctx)

    def _close_dispute(self, *, won: bool, key: str | None, ctx: CommandContext) -> None:
        self.trigger_event(
            self.DisputeWon if won else self.DisputeLost,
            dispute_id=self.dispute_id or "",
            amount=self.disputed_amount,
            provider_event_id=key,
            **ctx.stamp(),
        )

    # ---- provider updates: never raise for stale, duplicate or out-of-order ones --------

    def _update_key(self, update: ProviderUpdate) -> str | None:
        provider = update.provider or self.provider
        if update.provider_event_id is None or provider is None:
            return None
        return f"{provider}:{update.provider_event_id}"

    def classify_provider_update(self, update: ProviderUpdate) -> UpdateOutcome:
        """What ``apply_provider_update`` would do with ``update``; changes nothing."""
        key = self._update_key(update)
        if key is not None and key in self.provider_event_ids:
            return UpdateOutcome.DUPLICATE
        if self.provider is None or update.provider not in (None, self.provider):
            return UpdateOutcome.CONFLICT  # never sent there, or an earlier attempt's provider
        if update.status == PROVIDER_REFUNDED:
            return self._classify_refund(update)
        target = _UPDATE_TARGET[update.status]
        if target == self.status or is_forward(target, self.status):
            return UpdateOutcome.STALE
        if not is_forward(self.status, target):
            return UpdateOutcome.CONFLICT
        if target not in TRANSITIONS[self.status]:
            return UpdateOutcome.OUT_OF_ORDER
        try:
            self._require_update(update)
        except LedgerError:
            return UpdateOutcome.CONFLICT
        return UpdateOutcome.APPLIED

    def _classify_refund(self, update: ProviderUpdate) -> UpdateOutcome:
        assert update.refund_id is not None and update.amount is not None
        if update.refund_id in self.refunds:
            return UpdateOutcome.DUPLICATE  # e.g. the webhook confirming our own refund
        if self.status in (CREATED, PROCESSING, AUTHORIZED):
            return UpdateOutcome.OUT_OF_ORDER  # the capture has not arrived yet
        if self.status == DISPUTED and update.refund_id in self.operations:
            # Sent before the dispute opened and done by the provider: record it, as long
            # as the refund and the dispute together stay within what was captured.
            left = self.refundable_amount - self.disputed_amount
            return UpdateOutcome.APPLIED if update.amount <= left else UpdateOutcome.CONFLICT
        try:
            self.require_refundable(update.refund_id, update.amount)
        except LedgerError:
            return UpdateOutcome.CONFLICT
        return UpdateOutcome.APPLIED

    def _require_update(self, update: ProviderUpdate) -> None:
        """The amount rules a forward update must also meet (raises LedgerError)."""
        if update.status == PROVIDER_AUTHORIZED:
            if update.amount not in (None, self.amount):
                raise InvalidAmount("partial authorizations are not supported")
        elif update.status == PROVIDER_CAPTURED:
            limit = self.authorized_amount if self.status == AUTHORIZED else self.amount
            self._require_capture_amounts(update.amount or limit, update.fee, limit)
        elif update.status == PROVIDER_DISPUTE_OPENED:
            self.require_disputable(update.amount or self.refundable_amount)

    def apply_provider_update(self, update: ProviderUpdate, ctx: CommandContext) -> bool:
        """Apply a provider's update if it moves the payment forward; answers whether it
        changed anything. Duplicate, stale, out-of-order and conflicting updates are
        ignored without raising (``classify_provider_update`` tells them apart).

        The provider is the authority on its own side: a capture it reports while the
        payment is still authorized is recorded even past our expiry time (its clock
        decided), but once the payment is canceled a late capture is a conflict.
        """
        if self.classify_provider_update(update) is not UpdateOutcome.APPLIED:
            return False
        key = self._update_key(update)
        status = update.status
        if status == PROVIDER_AUTHORIZED:
            expires = update.authorization_expires_at or ctx.now + DEFAULT_AUTHORIZATION_TTL
            self.trigger_event(
                self.Authorized,
                amount=self.amount,
                expires_at=expires,
                provider_event_id=key,
                provider_ref=update.provider_ref,
                **ctx.stamp(),
            )
        elif status == PROVIDER_CAPTURED:
            limit = self.authorized_amount if self.status == AUTHORIZED else self.amount
            minor = update.amount or limit
            self.trigger_event(
                self.Captured,
                amount=minor,
                fee=update.fee,
                released=limit - minor,
                provider_event_id=key,
                provider_ref=update.provider_ref,
                **ctx.stamp(),
            )
        elif status == PROVIDER_FAILED:
            self.trigger_event(
                self.Failed,
                reason=update.reason or "declined",
                provider_event_id=key,
                **ctx.stamp(),
            )
        elif status == PROVIDER_CANCELED:
            voided = self.operation(OP_VOID) is not None
            self.trigger_event(
                self.Canceled,
                reason=CANCEL_REQUESTED if voided else CANCEL_BY_PROVIDER,
                released=self.authorized_amount if self.status == AUTHORIZED else 0,
                provider_event_id=key,
                **ctx.stamp(),
            )
        elif status == PROVIDER_REFUNDED:
            assert update.refund_id is not None and update.amount is not None
            self._refund(update.refund_id, update.amount, key, ctx)
        elif status == PROVIDER_DISPUTE_OPENED:
            dispute_id = update.dispute_id or update.provider_event_id or "dispute"
            self._open_dispute(dispute_id, update.amount or self.refundable_amount, key, ctx)
        else:
            self._close_dispute(won=status == PROVIDER_DISPUTE_WON, key=key, ctx=ctx)
        return True

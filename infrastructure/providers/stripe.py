"""Stripe behind the provider port, on the official ``stripe`` SDK.

One ``StripeProvider`` holds its own ``stripe.StripeClient`` (never the SDK's global
configuration) over the SDK's ``requests`` client (one pooled session per thread, a
connect and a read timeout), with the SDK's own network retries off: the engine decides
about retries, and it must learn about every failure.
``api_base`` points the client somewhere else than api.stripe.com (localstripe in tests).
The Stripe API version is the one the installed SDK is generated for (its types describe
that version) unless ``stripe_version`` pins another; webhook endpoints should be set to
the same version, since Stripe shapes a webhook's objects by the endpoint's version.

Payments are PaymentIntents. ``authorize`` creates and confirms one in a single request
(``capture_method`` ``manual`` or ``automatic``, ``payment_method`` = the token, card
payment methods only, which also covers Apple Pay and Google Pay: their tokens are card
PaymentMethods, and no ``return_url`` is needed), with our reference in
``metadata.reference`` and Stripe's ``Idempotency-Key`` = the request's key. "Cards only"
is ``allowed_payment_method_types`` since 2026-07-29.dahlia (2026-09-30.endive refuses the
older ``payment_method_types``), and ``payment_method_types`` when ``stripe_version`` pins
an earlier version (localstripe knows only that one). ``capture`` sends ``amount_to_capture``
for a partial capture, ``void`` cancels the intent, ``refund`` creates a Refund whose
``metadata.reference`` is our refund id (and ``metadata.payment_reference`` the payment's).
When the engine has no ``provider_ref`` yet, the intent is found by reference first.

What a PaymentIntent's status means here (answers, status queries and webhooks):

=========================  ======================================================
PaymentIntent status       update (call outcome)
=========================  ======================================================
requires_capture           authorized (OK), expiry from the charge's capture_before
succeeded                  captured (OK), amount_received, estimated fee
canceled                   canceled (OK)
processing                 none yet (PENDING)
requires_payment_method    failed (DECLINED), reason = decline_code or code
requires_action            failed (DECLINED), reason ``authentication_required``:
                           a server-side payment cannot complete 3-D Secure
requires_confirmation      failed (DECLINED), reason ``not_confirmed``
=========================  ======================================================

How a failed call is classified (``_classify``):

==============================================================  ===========================
what came back                                                  outcome
==============================================================  ===========================
``CardError`` (402)                                             DECLINED, failed update
``IdempotencyError`` (a key reused with other parameters)       REJECTED ``idempotency_error``
``InvalidRequestError`` (400, 404)                              REJECTED, ``code`` = Stripe's
``AuthenticationError`` (401), ``PermissionError`` (403)        REJECTED
``RateLimitError`` (429): refused before any work               ERROR, Stripe's code
``APIError`` 409: the same key is running in another request   ERROR ``conflict``
``APIError`` 5xx, 424 or any other status: Stripe documents a   UNKNOWN
5xx as indeterminate, and no header says nothing was done
refused, unresolvable, connect timeout (nothing was sent)       ERROR ``connection_failed``
read timeout, dropped or broken connection                      UNKNOWN
a 2xx answer this adapter cannot read                           UNKNOWN ``unreadable``
==============================================================  ===========================

"Nothing was sent" is read from the ``urllib3`` exception under the ``requests`` one the
SDK chains as the cause of its ``APIConnectionError`` (no connection was ever made: refused,
unresolvable, or not made within the connect timeout); with an injected ``http_client`` of
another library every network failure is UNKNOWN. (The SDK's ``httpx`` client is not used:
it passes form bodies as ``data=``, which httpx deprecates with a warning on every POST.)

Status queries (``payment_status``) list the PaymentIntents and match
``metadata.reference`` here, scanning at most ``status_scan_limit`` of them (Stripe lists
the newest first). Stripe's Search API would be one call, but it is eventually consistent
("don't use search in read-after-write flows"): a miss right after a timed-out authorize
would say "never charged" and let the engine charge again. A list is consistent. When the
scan stops at the limit without a match the answer is UNKNOWN, never "not found". The
chosen intent (several with one reference: the most advanced) is read back with its
charge, then its refunds (and disputes, when the charge says it is disputed) are listed.

Refunds counted (in status queries and charge.refunded) are those succeeded or pending
(Stripe reports most card refunds pending; they almost always succeed), each once by its
id: our refund id from ``metadata.reference``, else Stripe's ``re_...`` (a refund made in
the Dashboard). Before 2025-03-31.basil Stripe also recorded the released part of a partial
capture, and a cancellation, as Refunds (and sent charge.refunded for them); with such a
pinned version only the refunds this adapter made are counted.

Fees are an estimate from Stripe's standard card tariff, ``FEE_BASIS_POINTS`` (2.9 %)
plus ``FEE_FIXED_MINOR`` (30 minor units), rounded half up and never more than the
amount: Stripe's real fee lives in the charge's balance transaction, in the settlement
currency, which is a matter for reconciliation. Standard pay-outs cost nothing.

Pay-outs use Stripe's Payout API, which pays the Stripe account's balance to one of that
account's own external accounts: it cannot pay to raw bank details. So a pay-out goes
through only when ``destination["account_number"]`` holds a Stripe external account id
(``ba_...`` or ``card_...``); any other destination is REJECTED ``unsupported`` before
anything is sent. ``payout_status`` scans the pay-outs like ``payment_status``.

Webhooks are verified with the SDK's ``construct_event`` (``Stripe-Signature``, HMAC-SHA256
of ``"{t}.{body}"``, ``webhook_tolerance_s``) and normalised; without a webhook secret every
webhook is rejected (the calls still work):

===============================================  ================================
event                                            update
===============================================  ================================
payment_intent.amount_capturable_updated         authorized
payment_intent.succeeded                         captured
payment_intent.canceled                          canceled
payment_intent.payment_failed                    failed
charge.refunded                                  refunded, one per refund of the
                                                 charge (refund_id = its
                                                 metadata.reference, else re_...)
charge.dispute.created                           dispute_opened (not for inquiries,
                                                 ``warning_*``: no funds are held)
charge.dispute.closed                            dispute_won / dispute_lost
payout.paid / payout.failed / payout.canceled    pay-out paid / failed / failed
anything else                                    nothing (an empty list)
===============================================  ================================

A charge or dispute names its PaymentIntent only by id, so when the charge does not carry
our reference in its metadata the intent is fetched (and a charge.refunded event without
its refunds embedded lists them). If that look-up fails the webhook is rejected
(``WebhookRejected``): the endpoint answers 400 and Stripe delivers it again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import stripe
import urllib3.exceptions

from commands.payments.ports import (
    PAYOUT_FAILED,
    PAYOUT_PAID,
    PAYOUT_PENDING,
    CallOutcome,
    CallResult,
    ChargeRequest,
    PaymentOperation,
    PayoutRequest,
    PayoutUpdate,
    StatusResult,
    WebhookEvent,
    WebhookRejected,
)
from domain.errors import LedgerError
from domain.pan import text_contains_pan
from domain.payment import (
    CARD,
    DIGITAL_WALLET,
    PROVIDER_AUTHORIZED,
    PROVIDER_CANCELED,
    PROVIDER_CAPTURED,
    PROVIDER_DISPUTE_LOST,
    PROVIDER_DISPUTE_OPENED,
    PROVIDER_DISPUTE_WON,
    PROVIDER_FAILED,
    PROVIDER_REFUNDED,
    ProviderUpdate,
)

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams

__all__ = ["DEFAULT_CURRENCIES", "StripeProvider", "estimated_fee"]

DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
DEFAULT_STATUS_SCAN_LIMIT = 1000
DEFAULT_WEBHOOK_TOLERANCE_S = 300
PAGE_SIZE = 100

ALLOWED_TYPES_SINCE = "2026-07-29"
# Before 2025-03-31.basil a partial capture or a cancellation created a Refund for the
# released amount (and sent charge.refunded): such refunds look like any other.
NO_RELEASE_REFUNDS_SINCE = "2025-03-31"

FEE_BASIS_POINTS = 290
FEE_FIXED_MINOR = 30

# Two-decimal currencies Stripe settles widely, where ISO 4217's minor unit and Stripe's
# "smallest currency unit" agree (they differ for e.g. ISK, HUF, TWD and UGX).
DEFAULT_CURRENCIES = frozenset(
    {"USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "SGD", "HKD"}
)
METHODS = frozenset({CARD, DIGITAL_WALLET})
TOKEN_PREFIXES = ("pm_", "card_", "src_")

_T = TypeVar("_T")

KIND_PAYMENT = "payment"
KIND_PAYOUT = "payout"
REFERENCE = "reference"
PAYMENT_REFERENCE = "payment_reference"

# Network failures before a connection existed: the request never left this process.
_NOT_SENT = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)

# Which of several PaymentIntents with one reference tells the story: the most advanced.
_INTENT_RANK = {
    "succeeded": 0,
    "requires_capture": 1,
    "processing": 2,
    "canceled": 3,
    "requires_action": 4,
    "requires_confirmation": 5,
    "requires_payment_method": 6,
}
_PAYOUT_RANK = {"paid": 0, "in_transit": 1, "pending": 2, "failed": 3, "canceled": 4}
# Refunds that hold money back (Stripe reports pending card refunds that almost always
# succeed); failed and canceled ones returned nothing.
_REFUND_COUNTS = frozenset({"succeeded", "pending", "requires_action"})
_INTENT_EVENTS = {
    "payment_intent.amount_capturable_updated": "requires_capture",
    "payment_intent.succeeded": "succeeded",
    "payment_intent.canceled": "canceled",
    "payment_intent.payment_failed": "requires_payment_method",
}
_PAYOUT_EVENTS = {
    "payout.paid": "paid",
    "payout.failed": "failed",
    "payout.canceled": "canceled",
}


def _method_types_param(stripe_version: str | None) -> str:
    """How a PaymentIntent is restricted to some payment method types: since
    2026-07-29.dahlia ``allowed_payment_method_types`` (and 2026-09-30.endive refuses the
    older ``payment_method_types``, which every earlier version, and localstripe, take)."""
    if stripe_version is not None and stripe_version[:10] < ALLOWED_TYPES_SINCE:
        return "payment_method_types"
    return "allowed_payment_method_types"


def estimated_fee(amount: int) -> int:
    """Stripe's standard card fee for ``amount`` minor units: 2.9 % (rounded half up)
    plus 30, never more than the amount itself."""
    fee = (amount * FEE_BASIS_POINTS + 5_000) // 10_000 + FEE_FIXED_MINOR
    return max(0, min(amount, fee))


class _Malformed(Exception):
    """A 2xx answer (or a verified event) that is not shaped as expected."""


class StripeProvider:
    """The ``PaymentProvider`` port over Stripe's API (see the module docstring)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        webhook_secret: str,
        name: str = "stripe",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        currencies: Iterable[str] = DEFAULT_CURRENCIES,
        stripe_version: str | None = None,
        status_scan_limit: int = DEFAULT_STATUS_SCAN_LIMIT,
        webhook_tolerance_s: int = DEFAULT_WEBHOOK_TOLERANCE_S,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required")
        if timeout_s <= 0 or status_scan_limit <= 0:
            raise ValueError("timeout_s and status_scan_limit must be positive")
        self.name = name
        self._webhook_secret = webhook_secret
        self._tolerance = webhook_tolerance_s
        self._scan_limit = status_scan_limit
        self._currencies = frozenset(c.upper() for c in currencies)
        if http_client is None:
            timeout = (min(timeout_s, CONNECT_TIMEOUT_S), timeout_s)
            http_client = stripe.RequestsClient(timeout=timeout)
        self._http = http_client
        self._types_param = _method_types_param(stripe_version)
        # With an older version only the refunds this adapter made (metadata.reference) are
        # refunds for sure; the others may be released amounts.
        self._own_refunds_only = (
            stripe_version is not None and stripe_version[:10] < NO_RELEASE_REFUNDS_SINCE
        )
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            stripe_version=stripe_version,
            max_network_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:  # the API key and webhook secret stay out of logs
        return f"StripeProvider(name={self.name!r})"

    def close(self) -> None:
        self._http.close()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def __enter__(self) -> StripeProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- catalogue ---------------------------------------------------------------------------

    def supports(self, method: str, currency: str) -> bool:
        return method in METHODS and currency.upper() in self._currencies

    def accepts_token(self, token: str) -> bool:
        """Stripe charges its own PaymentMethods (``pm_...``) and, through the same
        parameter, legacy saved cards (``card_...``) and sources (``src_...``)."""
        return token.startswith(TOKEN_PREFIXES) and not text_contains_pan(token)

    def fee(self, method: str, currency: str, amount: int) -> int:
        return estimated_fee(amount)

    # ---- payments ----------------------------------------------------------------------------

    def authorize(self, request: ChargeRequest) -> CallResult:
        started = time.perf_counter()
        if not self.supports(request.method, request.currency):
            detail = f"{request.method} in {request.currency} is not offered through Stripe"
            return _refused("unsupported", detail, started)
        if not self.accepts_token(request.token):
            # Never send what looks like a card number to a third party (it would be logged).
            return _refused("invalid_token", "the token is not a Stripe PaymentMethod id", started)
        params: PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.token,
            "capture_method": "automatic" if request.capture else "manual",
            "confirm": True,
            "metadata": {REFERENCE: request.reference},
            "expand": ["latest_charge"],
        }
        # Cards only (wallet tokens are card PaymentMethods): then Stripe needs no return_url.
        # The parameter's name depends on the API version (see _method_types_param).
        restricted = cast("PaymentIntentCreateParams", {**params, self._types_param: ["card"]})
        try:
            intent = self._client.v1.payment_intents.create(
                params=restricted, options={"idempotency_key": request.idempotency_key}
            )
        except stripe.StripeError as exc:
            return self._failure(exc, started)
        return self._intent_result(lambda: intent.to_dict(), None, started)

    def capture(self, operation: PaymentOperation) -> CallResult:
        started = time.perf_counter()
        intent_id, early = self._intent_id(operation, started)
        if intent_id is None:
            return early
        try:
            if operation.amount is None:
                intent = self._client.v1.payment_intents.capture(
                    intent_id,
                    params={"expand": ["latest_charge"]},
                    options={"idempotency_key": operation.idempotency_key},
                )
            else:
                intent = self._client.v1.payment_intents.capture(
                    intent_id,
                    params={"amount_to_capture": operation.amount, "expand": ["latest_charge"]},
                    options={"idempotency_key": operation.idempotency_key},
                )
        except stripe.StripeError as exc:
            return self._failure(exc, started)
        return self._intent_result(lambda: intent.to_dict(), operation.amount, started)

    def void(self, operation: PaymentOperation) -> CallResult:
        started = time.perf_counter()
        intent_id, early = self._intent_id(operation, started)
        if intent_id is None:
            return early
        try:
            intent = self._client.v1.payment_intents.cancel(
                intent_id, options={"idempotency_key": operation.idempotency_key}
            )
        except stripe.StripeError as exc:
            return self._failure(exc, started)
        return self._intent_result(lambda: intent.to_dict(), None, started)

    def refund(self, operation: PaymentOperation) -> CallResult:
        started = time.perf_counter()
        if not operation.reference:
            return _refused("missing_reference", "a refund needs our refund id", started)
        intent_id, early = self._intent_id(operation, started)
        if intent_id is None:
            return early
        metadata = {REFERENCE: operation.reference, PAYMENT_REFERENCE: operation.payment_reference}
        try:
            if operation.amount is None:
                refund = self._client.v1.refunds.create(
                    params={"payment_intent": intent_id, "metadata": metadata},
                    options={"idempotency_key": operation.idempotency_key},
                )
            else:
                refund = self._client.v1.refunds.create(
                    params={
                        "payment_intent": intent_id,
                        "amount": operation.amount,
                        "metadata": metadata,
                    },
                    options={"idempotency_key": operation.idempotency_key},
                )
        except stripe.StripeError as exc:
            return self._failure(exc, started)
        try:
            record = refund.to_dict()
            status = _str(record, "status")
            refund_id = _str(record, "id")
            if status not in _REFUND_COUNTS:
                reason = _opt_str(record, "failure_reason") or status
                return CallResult(
                    CallOutcome.DECLINED,
                    provider_ref=refund_id,
                    code=reason,
                    detail=f"refund {status}",
                    latency_ms=_since(started),
                )
            update = ProviderUpdate(
                PROVIDER_REFUNDED,
                provider=self.name,
                amount=_int(record, "amount"),
                refund_id=operation.reference,
                provider_ref=intent_id,
            )
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)
        return CallResult(
            CallOutcome.OK,
            update,
            provider_ref=refund_id,
            detail=status,
            latency_ms=_since(started),
        )

    def payment_status(self, reference: str) -> StatusResult:
        started = time.perf_counter()
        try:
            found, complete = self._scan(self._client.v1.payment_intents.list, reference)
            if not found:
                return _not_found(complete, "payment intents", self._scan_limit, started)
            best = min(
                found, key=lambda i: (_INTENT_RANK.get(str(i.get("status")), 9), -_created(i))
            )
            intent = self._client.v1.payment_intents.retrieve(
                _str(best, "id"), params={"expand": ["latest_charge"]}
            ).to_dict()
            updates = self._intent_history(intent)
        except stripe.StripeError as exc:
            return _status_failure(exc, started)
        except (_Malformed, LedgerError) as exc:
            return StatusResult(
                CallOutcome.UNKNOWN, detail=f"unreadable answer: {exc}", latency_ms=_since(started)
            )
        detail = str(intent.get("status", ""))
        if len(found) > 1:
            detail += f"; {len(found)} payment intents carry this reference"
        return StatusResult(
            CallOutcome.OK,
            found=True,
            updates=tuple(updates),
            provider_ref=_str(intent, "id"),
            detail=detail,
            latency_ms=_since(started),
        )

    # ---- pay-outs ----------------------------------------------------------------------------

    def payout(self, request: PayoutRequest) -> CallResult:
        started = time.perf_counter()
        if request.currency.upper() not in self._currencies:
            return _refused("unsupported", f"no Stripe pay-outs in {request.currency}", started)
        account = request.destination.get("account_number", "")
        if not account.startswith(("ba_", "card_")):
            detail = (
                "Stripe pays out only to an external account of the Stripe account "
                "(ba_... or card_...), not to bank details"
            )
            return _refused("unsupported", detail, started)
        try:
            payout = self._client.v1.payouts.create(
                params={
                    "amount": request.amount,
                    "currency": request.currency.lower(),
                    "destination": account,
                    "metadata": {REFERENCE: request.reference},
                },
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            return self._failure(exc, started, payout=True)
        try:
            update = _payout_update(payout.to_dict(), None)
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)
        outcome = {
            PAYOUT_PAID: CallOutcome.OK,
            PAYOUT_PENDING: CallOutcome.PENDING,
            PAYOUT_FAILED: CallOutcome.DECLINED,
        }[update.status]
        return CallResult(
            outcome,
            update,
            provider_ref=update.provider_payout_id,
            code=update.reason,
            detail=update.status,
            latency_ms=_since(started),
        )

    def payout_status(self, reference: str) -> StatusResult:
        started = time.perf_counter()
        try:
            found, complete = self._scan(self._client.v1.payouts.list, reference)
            if not found:
                return _not_found(complete, "pay-outs", self._scan_limit, started)
            best = min(
                found, key=lambda p: (_PAYOUT_RANK.get(str(p.get("status")), 9), -_created(p))
            )
            update = _payout_update(best, None)
        except stripe.StripeError as exc:
            return _status_failure(exc, started)
        except (_Malformed, LedgerError) as exc:
            return StatusResult(
                CallOutcome.UNKNOWN, detail=f"unreadable answer: {exc}", latency_ms=_since(started)
            )
        return StatusResult(
            CallOutcome.OK,
            found=True,
            updates=(update,),
            provider_ref=update.provider_payout_id,
            detail=str(best.get("status", "")),
            latency_ms=_since(started),
        )

    # ---- webhooks ----------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        if not self._webhook_secret:
            raise WebhookRejected("no Stripe webhook secret is configured: nothing is verified")
        signature = next((v for k, v in headers.items() if k.lower() == "stripe-signature"), "")
        if not signature:
            raise WebhookRejected("no Stripe-Signature header")
        try:
            event = self._client.construct_event(
                body, signature, self._webhook_secret, tolerance=self._tolerance
            ).to_dict()
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(f"signature rejected: {exc.user_message}") from None
        except ValueError as exc:  # not JSON, not UTF-8, or not a snapshot event
            raise WebhookRejected(f"not a Stripe event: {exc}") from None
        try:
            return self._events(event)
        except (_Malformed, LedgerError) as exc:
            raise WebhookRejected(f"unexpected {event.get('type')!r} event: {exc}") from None

    def _events(self, event: dict[str, Any]) -> list[WebhookEvent]:
        event_id = _str(event, "id")
        kind = _str(event, "type")
        data = _dict(_dict(event, "data"), "object")
        if kind in _INTENT_EVENTS:
            reference = _metadata(data).get(REFERENCE)
            if not reference:
                return []  # not created by this adapter
            update = self._intent_update(data, _INTENT_EVENTS[kind], event_id)
            if update is None:
                return []
            return [WebhookEvent(event_id, KIND_PAYMENT, reference, update, _str(data, "id"))]
        if kind == "charge.refunded":
            return self._refund_events(event_id, data)
        if kind in ("charge.dispute.created", "charge.dispute.closed"):
            return self._dispute_events(event_id, kind, data)
        if kind in _PAYOUT_EVENTS:
            reference = _metadata(data).get(REFERENCE)
            if not reference:
                return []
            payout = _payout_update(data, event_id, _PAYOUT_EVENTS[kind])
            return [
                WebhookEvent(event_id, KIND_PAYOUT, reference, payout, payout.provider_payout_id)
            ]
        return []

    def _refund_events(self, event_id: str, charge: dict[str, Any]) -> list[WebhookEvent]:
        reference, intent_id = self._charge_reference(charge)
        if reference is None:
            return []
        embedded = charge.get("refunds")
        if isinstance(embedded, dict) and isinstance(embedded.get("data"), list):
            refunds = embedded["data"] if not embedded.get("has_more") else None
        else:
            refunds = None
        if refunds is None:  # API versions since 2022-11-15 leave them out of the charge
            charge_id = _str(charge, "id")
            refunds = self._lookup(
                lambda: [
                    r.to_dict()
                    for r in self._client.v1.refunds.list(
                        params={"charge": charge_id, "limit": PAGE_SIZE}
                    ).auto_paging_iter()
                ],
                f"the refunds of charge {charge_id}",
            )
        return [
            WebhookEvent(event_id, KIND_PAYMENT, reference, update, intent_id)
            for update in self._refund_updates(refunds or [], intent_id, event_id)
        ]

    def _dispute_events(
        self, event_id: str, kind: str, dispute: dict[str, Any]
    ) -> list[WebhookEvent]:
        status = _str(dispute, "status")
        if status.startswith("warning_"):
            return []  # an inquiry: no funds are withdrawn unless it becomes a dispute
        if kind == "charge.dispute.created":
            update_status = PROVIDER_DISPUTE_OPENED
        elif status in ("won", "lost"):
            update_status = PROVIDER_DISPUTE_WON if status == "won" else PROVIDER_DISPUTE_LOST
        else:
            return []
        intent_id = _id_of(dispute.get("payment_intent"))
        reference: str | None = None
        if isinstance(dispute.get("charge"), dict):
            reference, intent_id = self._charge_reference(dispute["charge"])
        elif intent_id is not None:
            reference = self._intent_reference(intent_id)
        if reference is None:
            return []
        update = ProviderUpdate(
            update_status,
            provider_event_id=event_id,
            provider=self.name,
            amount=_opt_int(dispute, "amount") or None,
            reason=_opt_str(dispute, "reason") or "",
            dispute_id=_str(dispute, "id"),
            provider_ref=intent_id,
        )
        return [WebhookEvent(event_id, KIND_PAYMENT, reference, update, intent_id)]

    def _charge_reference(self, charge: dict[str, Any]) -> tuple[str | None, str | None]:
        """Our reference and the intent id of a charge: from its metadata when Stripe copied
        the intent's there, else from the intent itself."""
        intent_id = _id_of(charge.get("payment_intent"))
        reference = _metadata(charge).get(REFERENCE)
        if reference:
            return reference, intent_id
        if isinstance(charge.get("payment_intent"), dict):
            return _metadata(charge["payment_intent"]).get(REFERENCE), intent_id
        if intent_id is None:
            return None, None
        return self._intent_reference(intent_id), intent_id

    def _intent_reference(self, intent_id: str) -> str | None:
        def fetch() -> str | None:
            try:
                intent = self._client.v1.payment_intents.retrieve(intent_id).to_dict()
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    return None  # not an intent of this account: not ours
                raise
            return _metadata(intent).get(REFERENCE)

        return self._lookup(fetch, f"payment intent {intent_id}")

    @staticmethod
    def _lookup(fetch: Callable[[], _T], what: str) -> _T:
        try:
            return fetch()
        except stripe.StripeError as exc:
            raise WebhookRejected(
                f"could not look up {what} ({type(exc).__name__}): not processed, "
                "Stripe delivers it again"
            ) from None

    # ---- reading PaymentIntents --------------------------------------------------------------

    def _intent_id(
        self, operation: PaymentOperation, started: float
    ) -> tuple[str | None, CallResult]:
        """The intent an operation applies to: the engine's ``provider_ref``, else the intent
        found by the payment's reference (with the failed result when there is none)."""
        if operation.provider_ref:
            return operation.provider_ref, CallResult(CallOutcome.OK)
        status = self.payment_status(operation.payment_reference)
        if status.outcome is not CallOutcome.OK:  # the operation itself was not sent
            return None, CallResult(
                CallOutcome.ERROR,
                code="lookup_failed",
                detail=f"finding the payment intent: {status.detail}",
                latency_ms=_since(started),
            )
        if not status.found or status.provider_ref is None:
            return None, _refused("not_found", "no payment intent has this reference", started)
        return status.provider_ref, CallResult(CallOutcome.OK)

    def _intent_result(
        self, read: Callable[[], dict[str, Any]], asked: int | None, started: float
    ) -> CallResult:
        try:
            intent = read()
            status = _str(intent, "status")
            intent_id = _str(intent, "id")
            update = self._intent_update(intent, status, None, asked)
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)
        if update is None:
            return CallResult(
                CallOutcome.PENDING,
                provider_ref=intent_id,
                detail=status,
                latency_ms=_since(started),
            )
        outcome = CallOutcome.DECLINED if update.status == PROVIDER_FAILED else CallOutcome.OK
        return CallResult(
            outcome,
            update,
            provider_ref=intent_id,
            code=update.reason if outcome is CallOutcome.DECLINED else "",
            detail=status,
            latency_ms=_since(started),
        )

    def _intent_update(
        self,
        intent: dict[str, Any],
        status: str,
        event_id: str | None,
        asked: int | None = None,
    ) -> ProviderUpdate | None:
        """What an intent in ``status`` says (None while it is processing). ``asked`` is
        the amount a capture asked for, used when the answer has no ``amount_received``."""
        common: dict[str, Any] = {
            "provider_event_id": event_id,
            "provider": self.name,
            "provider_ref": _str(intent, "id"),
        }
        if status == "requires_capture":
            return ProviderUpdate(
                PROVIDER_AUTHORIZED,
                amount=_opt_int(intent, "amount_capturable") or _int(intent, "amount"),
                authorization_expires_at=_capture_before(intent),
                **common,
            )
        if status == "succeeded":
            amount = _captured_amount(intent) or asked
            return ProviderUpdate(
                PROVIDER_CAPTURED,
                amount=amount,
                fee=estimated_fee(amount or _int(intent, "amount")),
                **common,
            )
        if status == "canceled":
            reason = _opt_str(intent, "cancellation_reason") or "canceled"
            return ProviderUpdate(PROVIDER_CANCELED, reason=reason, **common)
        if status == "processing":
            return None
        if status in ("requires_payment_method", "requires_action", "requires_confirmation"):
            return ProviderUpdate(PROVIDER_FAILED, reason=_failure_reason(intent, status), **common)
        raise _Malformed(f"unexpected payment intent status {status!r}")

    def _intent_history(self, intent: dict[str, Any]) -> list[ProviderUpdate]:
        """The updates an intent's record stands for, in order (for a status query)."""
        status = _str(intent, "status")
        last = self._intent_update(intent, status, None)
        if last is None:
            return []
        if last.status != PROVIDER_CAPTURED:
            return [last]
        updates: list[ProviderUpdate] = []
        if intent.get("capture_method") == "manual":
            updates.append(
                ProviderUpdate(
                    PROVIDER_AUTHORIZED,
                    provider=self.name,
                    amount=_int(intent, "amount"),
                    provider_ref=last.provider_ref,
                )
            )
        updates.append(last)
        intent_id = _str(intent, "id")
        refunds = [
            r.to_dict()
            for r in self._client.v1.refunds.list(
                params={"payment_intent": intent_id, "limit": PAGE_SIZE}
            ).auto_paging_iter()
        ]
        updates.extend(self._refund_updates(refunds, intent_id, None))
        charge = intent.get("latest_charge")
        if isinstance(charge, dict) and charge.get("disputed"):
            updates.extend(self._dispute_history(intent_id))
        return updates

    def _dispute_history(self, intent_id: str) -> list[ProviderUpdate]:
        updates: list[ProviderUpdate] = []
        disputes = self._client.v1.disputes.list(
            params={"payment_intent": intent_id, "limit": PAGE_SIZE}
        ).auto_paging_iter()
        for item in disputes:
            dispute = item.to_dict()
            status = _str(dispute, "status")
            if status.startswith("warning_"):
                continue
            common: dict[str, Any] = {
                "provider": self.name,
                "amount": _opt_int(dispute, "amount") or None,
                "dispute_id": _str(dispute, "id"),
                "provider_ref": intent_id,
            }
            updates.append(ProviderUpdate(PROVIDER_DISPUTE_OPENED, **common))
            if status in ("won", "lost"):
                won = status == "won"
                updates.append(
                    ProviderUpdate(PROVIDER_DISPUTE_WON if won else PROVIDER_DISPUTE_LOST, **common)
                )
        return updates

    def _refund_updates(
        self, refunds: list[dict[str, Any]], intent_id: str | None, event_id: str | None
    ) -> list[ProviderUpdate]:
        updates = []
        for refund in sorted(refunds, key=_created):
            if str(refund.get("status")) not in _REFUND_COUNTS:
                continue
            ours = _metadata(refund).get(REFERENCE)
            if ours is None and self._own_refunds_only:
                continue
            refund_id = _str(refund, "id")
            updates.append(
                ProviderUpdate(
                    PROVIDER_REFUNDED,
                    # One event may report several refunds: each needs its own event key.
                    provider_event_id=f"{event_id}:{refund_id}" if event_id else None,
                    provider=self.name,
                    amount=_int(refund, "amount"),
                    refund_id=ours or refund_id,
                    provider_ref=intent_id,
                )
            )
        return updates

    def _scan(
        self, list_page: Callable[..., Any], reference: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """The listed objects whose ``metadata.reference`` is ``reference``, and whether the
        whole list was read (False: stopped at ``status_scan_limit``)."""
        found: list[dict[str, Any]] = []
        for seen, item in enumerate(list_page(params={"limit": PAGE_SIZE}).auto_paging_iter()):
            if seen >= self._scan_limit:
                return found, False
            record = item.to_dict()
            if _metadata(record).get(REFERENCE) == reference:
                found.append(record)
        return found, True

    # ---- failures ----------------------------------------------------------------------------

    def _failure(
        self, exc: stripe.StripeError, started: float, *, payout: bool = False
    ) -> CallResult:
        outcome, code, detail = _classify(exc)
        error = _error_body(exc)
        intent = error.get("payment_intent")
        provider_ref = _id_of(intent)
        update: ProviderUpdate | PayoutUpdate | None = None
        if outcome is CallOutcome.DECLINED:
            if payout:
                update = PayoutUpdate(PAYOUT_FAILED, reason=code)
            else:
                update = ProviderUpdate(
                    PROVIDER_FAILED, provider=self.name, reason=code, provider_ref=provider_ref
                )
        return CallResult(
            outcome,
            update,
            provider_ref=provider_ref,
            code=code,
            detail=detail,
            latency_ms=_since(started),
        )


# ---- classification ------------------------------------------------------------------------


def _classify(exc: stripe.StripeError) -> tuple[CallOutcome, str, str]:
    """(outcome, code, detail) of a failed call (the table in the module docstring)."""
    status = exc.http_status
    message = exc.user_message or type(exc).__name__
    error = _error_body(exc)
    code = str(error.get("code") or exc.code or "")
    detail = f"{status} {message}" if status else message
    if isinstance(exc, stripe.CardError):
        decline = str(error.get("decline_code") or "") or code or "card_declined"
        return CallOutcome.DECLINED, decline, detail
    if isinstance(exc, stripe.IdempotencyError):
        return CallOutcome.REJECTED, "idempotency_error", detail
    if isinstance(exc, stripe.InvalidRequestError):
        return CallOutcome.REJECTED, code or "invalid_request", detail
    if isinstance(exc, stripe.AuthenticationError):
        return CallOutcome.REJECTED, "authentication_failed", detail
    if isinstance(exc, stripe.PermissionError):
        return CallOutcome.REJECTED, "permission_denied", detail
    if isinstance(exc, stripe.RateLimitError):
        return CallOutcome.ERROR, code or "rate_limited", detail
    if isinstance(exc, stripe.APIConnectionError):
        chain = _causes(exc.__cause__)
        reason = type(chain[-1]).__name__ if chain else "network error"
        if any(isinstance(e, _NOT_SENT) for e in chain):
            return CallOutcome.ERROR, "connection_failed", f"{reason}: nothing was sent"
        timeout = any(isinstance(e, urllib3.exceptions.TimeoutError) for e in chain)
        return CallOutcome.UNKNOWN, "timeout" if timeout else "network_error", reason
    if isinstance(exc, stripe.APIError) and status == 409:
        return CallOutcome.ERROR, code or "conflict", detail
    if status is not None and 200 <= status < 300:
        return CallOutcome.UNKNOWN, "unreadable", detail
    return CallOutcome.UNKNOWN, code or "provider_error", detail


def _causes(exc: BaseException | None) -> list[BaseException]:
    """A network failure and what it wraps, outermost first: ``requests`` puts urllib3's
    ``MaxRetryError`` in its ``args``, which holds the real failure as its ``reason``."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        if isinstance(exc, urllib3.exceptions.MaxRetryError):
            exc = exc.reason
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            exc = exc.__cause__ or exc.__context__
    return chain


def _status_failure(exc: stripe.StripeError, started: float) -> StatusResult:
    outcome, code, detail = _classify(exc)
    definite = outcome in (CallOutcome.ERROR, CallOutcome.REJECTED)
    return StatusResult(
        CallOutcome.ERROR if definite else CallOutcome.UNKNOWN,
        detail=f"{code}: {detail}",
        latency_ms=_since(started),
    )


def _not_found(complete: bool, what: str, limit: int, started: float) -> StatusResult:
    if complete:
        return StatusResult(CallOutcome.OK, found=False, latency_ms=_since(started))
    return StatusResult(
        CallOutcome.UNKNOWN,
        detail=f"not among the {limit} most recent {what}; older ones were not read",
        latency_ms=_since(started),
    )


def _refused(code: str, detail: str, started: float) -> CallResult:
    return CallResult(CallOutcome.REJECTED, code=code, detail=detail, latency_ms=_since(started))


def _unreadable(exc: Exception, started: float) -> CallResult:
    return CallResult(
        CallOutcome.UNKNOWN,
        code="unreadable",
        detail=f"unreadable answer: {exc}",
        latency_ms=_since(started),
    )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# ---- reading Stripe objects (plain dicts from ``to_dict()``) ---------------------------------


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{key} is missing")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        raise _Malformed(f"{key} is not an integer")
    return value


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if type(value) is int else None


def _dict(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is not an object")
    return value


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("metadata")
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _id_of(value: object) -> str | None:
    """The id of an expandable field: the id itself, or the expanded object's."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        return _opt_str(value, "id")
    return None


def _created(obj: Mapping[str, Any]) -> int:
    return _opt_int(obj, "created") or 0


def _captured_amount(intent: Mapping[str, Any]) -> int | None:
    """What a succeeded intent captured: ``amount_received``, else its charge's
    ``amount_captured`` (None when neither is there: localstripe has neither)."""
    received = _opt_int(intent, "amount_received")
    if received:
        return received
    charge = intent.get("latest_charge")
    if isinstance(charge, dict):
        return _opt_int(charge, "amount_captured") or None
    return None


def _capture_before(intent: Mapping[str, Any]) -> datetime | None:
    """When an authorization lapses, as Stripe states it on the card charge (only when the
    charge is expanded; otherwise the domain's default applies)."""
    charge = intent.get("latest_charge")
    if not isinstance(charge, dict):
        return None
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, dict) else None
    when = card.get("capture_before") if isinstance(card, dict) else None
    return datetime.fromtimestamp(when, tz=UTC) if type(when) is int else None


def _failure_reason(intent: Mapping[str, Any], status: str) -> str:
    if status == "requires_action":
        return "authentication_required"
    if status == "requires_confirmation":
        return "not_confirmed"
    error = intent.get("last_payment_error")
    if isinstance(error, dict):
        return _opt_str(error, "decline_code") or _opt_str(error, "code") or "declined"
    return "declined"


def _payout_update(
    payout: Mapping[str, Any], event_id: str | None, status: str | None = None
) -> PayoutUpdate:
    status = status or _str(payout, "status")
    payout_id = _str(payout, "id")
    if status == "paid":
        return PayoutUpdate(PAYOUT_PAID, event_id, payout_id, fee=0)
    if status in ("failed", "canceled"):
        reason = _opt_str(payout, "failure_code") or status
        return PayoutUpdate(PAYOUT_FAILED, event_id, payout_id, reason=reason)
    if status in ("pending", "in_transit"):
        return PayoutUpdate(PAYOUT_PENDING, event_id, payout_id)
    raise _Malformed(f"unexpected payout status {status!r}")

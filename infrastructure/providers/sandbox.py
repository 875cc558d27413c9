"""The sandbox PSP (``python -m infrastructure.psp_sandbox``) behind the provider port.

One ``SandboxProvider`` per provider the sandbox plays (``zenith``, ``ramp``, ``monnify``),
all sharing one base URL. It speaks the sandbox's wire format (docs/psp-sandbox.md) over a
pooled, thread-safe ``httpx.Client`` and never raises for an answer or a network failure:
every call comes back as a ``CallResult`` classified like this (``_classify``, ``_failure``):

- a 2xx with the payment, refund or pay-out: OK with its update; PENDING when it is
  ``pending`` (async mode); a 2xx whose body cannot be read: UNKNOWN;
- 402 ``payment_declined`` / ``payout_failed``: DECLINED, with the ``failed`` update;
- problem+json marked ``retryable`` (``processing_error``, 503): ERROR;
- any other problem+json 4xx (``invalid_token``, ``invalid_state``, ...): REJECTED, with
  ``code`` the problem's; a 5xx problem not marked retryable: UNKNOWN;
- a 5xx without a problem document (a gateway's HTML 502): UNKNOWN; 408 or 429 without one:
  ERROR; any other 4xx without one: REJECTED (``http_4xx``);
- no answer: a timeout once connected, a dropped or broken connection: UNKNOWN; connection
  refused, a connect or pool timeout (nothing was sent): ERROR.

Fees and what each provider takes are read once from the sandbox's ``GET /_config``.

The provider API has no "refunds of a payment" query, so a status query of a refunded
payment reads the sandbox's own ledger (``GET /_ledger``) for the refunds' references and
amounts; a real PSP's adapter would list the payment's refunds instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

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
from domain.payment import (
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
from infrastructure.psp_sandbox import WebhookVerificationError, verify_webhook

__all__ = ["FeeRule", "ProviderCatalogue", "SandboxProvider"]

DEFAULT_TIMEOUT_S = 10.0
# After GET /_config failed, wait this long before asking again (routing asks often).
CONFIG_RETRY_S = 1.0

KIND_PAYMENT = "payment"
KIND_PAYOUT = "payout"

# Sandbox payment statuses, and which record of several with one reference tells the story:
# a live payment over one in flight, over one that ended, over a decline.
_LIVE = ("authorized", "captured", "partially_refunded", "refunded")
_CAPTURED = ("captured", "partially_refunded", "refunded")
_ENDED = ("voided", "expired")
_PAYMENT_RANK = {"declined": 0, "voided": 1, "expired": 1, "pending": 2} | dict.fromkeys(_LIVE, 3)
_PAYOUT_RANK = {PAYOUT_FAILED: 0, PAYOUT_PENDING: 1, PAYOUT_PAID: 2}

_DECLINE_CODES = ("payment_declined", "payout_failed")

# Webhook event types -> the sandbox payment status (or the update status) they announce.
_PAYMENT_EVENTS = {
    "payment.authorized": "authorized",
    "payment.declined": "declined",
    "payment.captured": "captured",
    "payment.voided": "voided",
    "payment.expired": "expired",
}
_DISPUTE_EVENTS = {
    "dispute.created": PROVIDER_DISPUTE_OPENED,
    "dispute.won": PROVIDER_DISPUTE_WON,
    "dispute.lost": PROVIDER_DISPUTE_LOST,
}
_PAYOUT_EVENTS = ("payout.paid", "payout.failed")
_DISPUTE_LEDGER = {
    "dispute": PROVIDER_DISPUTE_OPENED,
    "dispute_won": PROVIDER_DISPUTE_WON,
    "dispute_lost": PROVIDER_DISPUTE_LOST,
}
_NOTHING_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


class _Malformed(ValueError):
    """An answer or webhook that does not have the shape the sandbox documents."""


# ---- the catalogue (GET /_config) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeRule:
    """``basis_points`` of the amount (rounded half up) plus ``fixed``, at most ``cap``,
    never more than the amount: the sandbox's own rule, in minor units."""

    basis_points: int
    fixed: int = 0
    cap: int | None = None

    def fee(self, amount: int) -> int:
        fee = (amount * self.basis_points + 5_000) // 10_000 + self.fixed
        if self.cap is not None:
            fee = min(fee, self.cap)
        return max(0, min(fee, amount))


@dataclass(frozen=True, slots=True)
class ProviderCatalogue:
    """What one sandbox provider takes and charges, as ``GET /_config`` says."""

    currencies: frozenset[str]
    fees: Mapping[str, FeeRule]
    payout_fee: int

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self.fees)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProviderCatalogue:
        fees = config.get("fees")
        currencies = config.get("currencies")
        if not isinstance(fees, dict) or not isinstance(currencies, list):
            raise _Malformed("the provider's configuration has no fees or currencies")
        rules = {
            str(method): FeeRule(
                basis_points=_int(rule, "basis_points"),
                fixed=_int(rule, "fixed", default=0),
                cap=_opt_int(rule, "cap"),
            )
            for method, rule in fees.items()
        }
        return cls(
            currencies=frozenset(str(c) for c in currencies),
            fees=rules,
            payout_fee=_int(config, "payout_fee", default=0),
        )


# ---- reading answers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    """One HTTP exchange, classified; ``body`` is the parsed JSON object when there is one."""

    outcome: CallOutcome
    body: dict[str, Any] | None = None
    code: str = ""
    detail: str = ""


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _classify(response: httpx.Response) -> _Answer:
    """An HTTP answer's outcome (the table in the module docstring)."""
    status = response.status_code
    body = _json_object(response)
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    if 200 <= status < 300:
        if body is None:
            return _Answer(CallOutcome.UNKNOWN, code=f"http_{status}", detail="unreadable answer")
        return _Answer(CallOutcome.OK, body, detail="replayed" if replayed else "")
    code = body.get("code") if body is not None else None
    if body is not None and isinstance(code, str) and code:
        detail = str(body.get("detail") or "")
        if body.get("retryable") is True:
            return _Answer(CallOutcome.ERROR, body, code, detail)
        if status == 402 and code in _DECLINE_CODES:
            return _Answer(CallOutcome.DECLINED, body, code, detail)
        if 400 <= status < 500:
            return _Answer(CallOutcome.REJECTED, body, code, detail)
        # A provider error not marked retryable does not say whether it acted.
        return _Answer(CallOutcome.UNKNOWN, body, code, detail)
    reason = f"HTTP {status} without a problem document"
    if status in (408, 429):
        return _Answer(CallOutcome.ERROR, code=f"http_{status}", detail=reason)
    if 400 <= status < 500:
        return _Answer(CallOutcome.REJECTED, code=f"http_{status}", detail=reason)
    return _Answer(CallOutcome.UNKNOWN, code=f"http_{status}", detail=reason)


def _failure(exc: httpx.HTTPError) -> _Answer:
    """A call that got no HTTP answer: ERROR when nothing can have been sent."""
    detail = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, _NOTHING_SENT):
        return _Answer(CallOutcome.ERROR, code="connect_failed", detail=detail)
    if isinstance(exc, httpx.TimeoutException):
        return _Answer(CallOutcome.UNKNOWN, code="timeout", detail=detail)
    return _Answer(CallOutcome.UNKNOWN, code="connection_lost", detail=detail)


def _int(obj: Any, key: str, *, default: int | None = None) -> int:
    value = obj.get(key, default) if isinstance(obj, dict) else default
    if type(value) is not int:
        raise _Malformed(f"{key} is not an integer")
    return value


def _opt_int(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return None if value is None else _int(obj, key)


def _str(obj: Any, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{key} is not a string")
    return value


def _opt_str(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None


def _obj(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is not an object")
    return value


def _when(obj: Any, key: str) -> datetime | None:
    text = _opt_str(obj, key)
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise _Malformed(f"{key} is not a timestamp") from None
    if at.tzinfo is None:
        raise _Malformed(f"{key} has no time zone")
    return at


def _list(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    data = body.get("data") if body is not None else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise _Malformed("the answer has no data list")
    return data


def _pick(records: list[dict[str, Any]], rank: Mapping[str, int]) -> dict[str, Any]:
    """Of several records with one reference, the one that tells the story (the latest
    among those of the highest rank)."""
    return max(reversed(records), key=lambda r: rank.get(str(r.get("status")), -1))


class SandboxProvider:
    """The provider ``name`` of the sandbox PSP at ``base_url``, as a ``PaymentProvider``.

    ``webhook_secret`` (``whsec_...``) verifies the provider's webhooks; ``timeout_s``
    bounds every call (connect, write, read, pool). A ``client`` given is used as is and
    not closed here; by default the provider owns a pooled client (``close()``).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        webhook_secret: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._webhook_secret = webhook_secret
        self._owns_client = client is None
        # No proxies from the environment: the sandbox listens on loopback.
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            # Idle connections are dropped before uvicorn's 5 s keep-alive closes them, so a
            # request rarely meets a connection the server is closing (an UNKNOWN for nothing).
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=16, keepalive_expiry=2.0
            ),
            trust_env=False,
            headers={"Accept": "application/json"},
        )
        self._catalogue: ProviderCatalogue | None = None
        self._catalogue_failed_at = float("-inf")
        self._catalogue_lock = threading.Lock()

    def __repr__(self) -> str:  # the webhook secret stays out of logs
        return f"SandboxProvider(name={self.name!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> SandboxProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- catalogue ----------------------------------------------------------------------

    def catalogue(self) -> ProviderCatalogue | None:
        """Methods, currencies and fees from ``GET /_config``: read once and kept; None
        while the sandbox cannot be asked (asked again after ``CONFIG_RETRY_S``)."""
        if self._catalogue is not None:
            return self._catalogue
        with self._catalogue_lock:
            if self._catalogue is not None:
                return self._catalogue
            if time.monotonic() - self._catalogue_failed_at < CONFIG_RETRY_S:
                return None
            answer = self._send("GET", "/_config", scoped=False)
            try:
                if answer.outcome is not CallOutcome.OK or answer.body is None:
                    raise _Malformed(answer.detail or answer.code)
                self._catalogue = ProviderCatalogue.from_config(_obj(answer.body, self.name))
            except _Malformed:
                self._catalogue_failed_at = time.monotonic()
                return None
            return self._catalogue

    def supports(self, method: str, currency: str) -> bool:
        catalogue = self.catalogue()
        return (
            catalogue is not None and method in catalogue.fees and currency in catalogue.currencies
        )

    def accepts_token(self, token: str) -> bool:
        """The sandbox's tokens are ``tok_{provider}_...``, valid at that provider only."""
        return token.startswith(f"tok_{self.name}_")

    def fee(self, method: str, currency: str, amount: int) -> int:
        """The fee the sandbox takes on capturing ``amount``. Raises ``ValueError`` for a
        method or currency the provider does not take (ask ``supports`` first)."""
        catalogue = self.catalogue()
        if catalogue is None or not self.supports(method, currency):
            raise ValueError(f"{self.name} does not take {method} in {currency}")
        return catalogue.fees[method].fee(amount)

    # ---- payments -----------------------------------------------------------------------

    def authorize(self, request: ChargeRequest) -> CallResult:
        started = time.perf_counter()
        body = {
            "reference": request.reference,
            "amount": request.amount,
            "currency": request.currency,
            "method": request.method,
            "token": request.token,
            "capture": request.capture,
        }
        answer = self._send("POST", "/authorizations", json=body, key=request.idempotency_key)
        return self._payment_result(answer, started)

    def capture(self, operation: PaymentOperation) -> CallResult:
        body = None if operation.amount is None else {"amount": operation.amount}
        return self._operate(operation, "capture", body)

    def void(self, operation: PaymentOperation) -> CallResult:
        return self._operate(operation, "void", None)

    def refund(self, operation: PaymentOperation) -> CallResult:
        started = time.perf_counter()
        if not operation.reference:
            return CallResult(
                CallOutcome.REJECTED,
                code="reference_missing",
                detail="a refund needs our refund reference",
                latency_ms=_since(started),
            )
        payment_id, failed = self._payment_id(operation, started)
        if failed is not None:
            return failed
        body: dict[str, Any] = {"reference": operation.reference, "payment_id": payment_id}
        if operation.amount is not None:
            body["amount"] = operation.amount
        answer = self._send("POST", "/refunds", json=body, key=operation.idempotency_key)
        if answer.outcome is not CallOutcome.OK or answer.body is None:
            return _result(answer, started)
        try:
            refund = answer.body
            update = ProviderUpdate(
                PROVIDER_REFUNDED,
                provider=self.name,
                amount=_int(refund, "amount"),
                refund_id=operation.reference,
                provider_ref=_opt_str(refund, "payment_id") or payment_id,
            )
            return CallResult(
                CallOutcome.OK,
                update,
                provider_ref=_str(refund, "id"),
                detail=answer.detail,
                latency_ms=_since(started),
            )
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)

    def payment_status(self, reference: str) -> StatusResult:
        started = time.perf_counter()
        answer = self._send("GET", "/payments", params={"reference": reference})
        if answer.outcome is not CallOutcome.OK:
            return _status_failure(answer, started)
        try:
            records = _list(answer.body)
            if not records:
                return StatusResult(CallOutcome.OK, found=False, latency_ms=_since(started))
            payment = _pick(records, _PAYMENT_RANK)
            updates, failed = self._payment_history(payment)
            if failed is not None:
                return _status_failure(failed, started)
            provider_ref = _str(payment, "id")
        except (_Malformed, LedgerError) as exc:
            return StatusResult(
                CallOutcome.UNKNOWN, detail=f"unreadable answer: {exc}", latency_ms=_since(started)
            )
        detail = f"{len(records)} payments with this reference" if len(records) > 1 else ""
        return StatusResult(
            CallOutcome.OK,
            found=True,
            updates=updates,
            provider_ref=provider_ref,
            detail=detail or str(payment.get("status")),
            latency_ms=_since(started),
        )

    # ---- payouts ------------------------------------------------------------------------

    def payout(self, request: PayoutRequest) -> CallResult:
        started = time.perf_counter()
        body = {
            "reference": request.reference,
            "amount": request.amount,
            "currency": request.currency,
            "destination": dict(request.destination),
        }
        answer = self._send("POST", "/payouts", json=body, key=request.idempotency_key)
        if answer.outcome not in (CallOutcome.OK, CallOutcome.DECLINED) or answer.body is None:
            return _result(answer, started)
        try:
            if answer.outcome is CallOutcome.DECLINED:
                record = _obj(answer.body, "payout")
                reason = _opt_str(answer.body, "failure_code") or answer.code
                failed = PayoutUpdate(PAYOUT_FAILED, None, _str(record, "id"), reason=reason)
                return CallResult(
                    CallOutcome.DECLINED,
                    failed,
                    provider_ref=failed.provider_payout_id,
                    code=answer.code,
                    detail=answer.detail,
                    latency_ms=_since(started),
                )
            update = self._payout_update(answer.body)
            if update is None:
                raise _Malformed(f"unexpected payout status {answer.body.get('status')!r}")
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)
        outcome = CallOutcome.PENDING if update.status == PAYOUT_PENDING else CallOutcome.OK
        if update.status == PAYOUT_FAILED:  # not what the sandbox does, but still a refusal
            outcome = CallOutcome.DECLINED
        return CallResult(
            outcome,
            update,
            provider_ref=update.provider_payout_id,
            detail=answer.detail,
            latency_ms=_since(started),
        )

    def payout_status(self, reference: str) -> StatusResult:
        started = time.perf_counter()
        answer = self._send("GET", "/payouts", params={"reference": reference})
        if answer.outcome is not CallOutcome.OK:
            return _status_failure(answer, started)
        try:
            records = _list(answer.body)
            if not records:
                return StatusResult(CallOutcome.OK, found=False, latency_ms=_since(started))
            record = _pick(records, _PAYOUT_RANK)
            update = self._payout_update(record)
            if update is None:
                raise _Malformed(f"unexpected payout status {record.get('status')!r}")
        except (_Malformed, LedgerError) as exc:
            return StatusResult(
                CallOutcome.UNKNOWN, detail=f"unreadable answer: {exc}", latency_ms=_since(started)
            )
        return StatusResult(
            CallOutcome.OK,
            found=True,
            updates=(update,),
            provider_ref=update.provider_payout_id,
            detail=f"{len(records)} payouts with this reference" if len(records) > 1 else "",
            latency_ms=_since(started),
        )

    # ---- webhooks -----------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]:
        try:
            event = verify_webhook(self._webhook_secret, headers, body)
        except WebhookVerificationError as exc:
            raise WebhookRejected(f"webhook verification failed: {exc}") from None
        except ValueError:  # signed, but not JSON
            raise WebhookRejected("the webhook body is not JSON") from None
        if not isinstance(event, dict):
            raise WebhookRejected("the webhook body is not an event object")
        if event.get("provider") != self.name:
            raise WebhookRejected(f"the event is not from {self.name}")
        plain = {k.lower(): v for k, v in headers.items()}
        try:
            event_id = plain.get("webhook-id") or _str(event, "id")
            return self._webhook_events(event_id, str(event.get("type")), _obj(event, "data"))
        except (_Malformed, LedgerError) as exc:
            raise WebhookRejected(f"unreadable {event.get('type')} event: {exc}") from None

    def _webhook_events(self, event_id: str, kind: str, data: dict[str, Any]) -> list[WebhookEvent]:
        if kind in _PAYOUT_EVENTS:
            payout = self._payout_update(data, event_id, kind.removeprefix("payout."))
            if payout is None:
                raise _Malformed(f"unexpected payout status {data.get('status')!r}")
            return [
                WebhookEvent(
                    event_id,
                    KIND_PAYOUT,
                    _str(data, "reference"),
                    payout,
                    payout.provider_payout_id,
                )
            ]
        payment = data
        update: ProviderUpdate | None
        if kind in _PAYMENT_EVENTS:
            update = self._payment_update(data, event_id, _PAYMENT_EVENTS[kind])
        elif kind == "refund.succeeded":
            payment = _obj(data, "payment")
            update = ProviderUpdate(
                PROVIDER_REFUNDED,
                provider_event_id=event_id,
                provider=self.name,
                amount=_int(data, "amount"),
                refund_id=_str(data, "reference"),
                provider_ref=_str(data, "payment_id"),
            )
        elif kind in _DISPUTE_EVENTS:
            payment = _obj(data, "payment")
            update = ProviderUpdate(
                _DISPUTE_EVENTS[kind],
                provider_event_id=event_id,
                provider=self.name,
                amount=_int(data, "amount"),
                reason=_opt_str(data, "reason") or "",
                dispute_id=_str(data, "id"),
                provider_ref=_str(data, "payment_id"),
            )
        else:
            return []  # e.g. a type added later: nothing the engine needs
        if update is None:
            return []
        reference = _str(payment, "reference")
        return [WebhookEvent(event_id, KIND_PAYMENT, reference, update, update.provider_ref)]

    # ---- translating the sandbox's records ----------------------------------------------

    def _payment_update(
        self, payment: dict[str, Any], event_id: str | None = None, status: str | None = None
    ) -> ProviderUpdate | None:
        """What ``payment`` says now (or, for a webhook, what its event ``status`` says);
        None while it is pending."""
        status = status or _str(payment, "status")
        ref = _str(payment, "id")
        common: dict[str, Any] = {
            "provider_event_id": event_id,
            "provider": self.name,
            "provider_ref": ref,
        }
        if status == "authorized":
            return ProviderUpdate(
                PROVIDER_AUTHORIZED,
                amount=_int(payment, "authorized_amount"),
                authorization_expires_at=_when(payment, "expires_at"),
                **common,
            )
        if status in _CAPTURED:
            return ProviderUpdate(
                PROVIDER_CAPTURED,
                amount=_int(payment, "captured_amount"),
                fee=_int(payment, "fee"),
                **common,
            )
        if status in _ENDED:
            return ProviderUpdate(PROVIDER_CANCELED, reason=status, **common)
        if status == "declined":
            reason = _opt_str(payment, "decline_code") or "declined"
            return ProviderUpdate(PROVIDER_FAILED, reason=reason, **common)
        if status == "pending":
            return None
        raise _Malformed(f"unexpected payment status {status!r}")

    def _payment_history(
        self, payment: dict[str, Any]
    ) -> tuple[tuple[ProviderUpdate, ...], _Answer | None]:
        """The updates that led to ``payment``'s record, in order: authorized, then
        captured or canceled, then refunds and the dispute as they happened."""
        status = _str(payment, "status")
        if status in ("pending", "declined"):
            update = self._payment_update(payment)
            return ((update,) if update is not None else ()), None
        ref = _str(payment, "id")
        updates = [
            ProviderUpdate(
                PROVIDER_AUTHORIZED,
                provider=self.name,
                amount=_int(payment, "authorized_amount"),
                authorization_expires_at=_when(payment, "expires_at"),
                provider_ref=ref,
            )
        ]
        if status != "authorized":
            end = self._payment_update(payment)
            if end is None:
                raise _Malformed(f"unexpected payment status {status!r}")
            updates.append(end)
        if _int(payment, "refunded_amount", default=0) > 0:
            # Refund references are only in the sandbox's ledger (no refunds-by-payment query).
            after, failed = self._refunds_and_dispute(payment)
            if failed is not None:
                return (), failed
            updates.extend(after)
        else:
            updates.extend(self._dispute_updates(payment))
        return tuple(updates), None

    def _dispute_updates(self, payment: dict[str, Any]) -> list[ProviderUpdate]:
        dispute = payment.get("dispute")
        if not isinstance(dispute, dict):
            return []
        common: dict[str, Any] = {
            "provider": self.name,
            "amount": _int(dispute, "amount"),
            "dispute_id": _str(dispute, "id"),
            "provider_ref": _str(payment, "id"),
        }
        opened = ProviderUpdate(
            PROVIDER_DISPUTE_OPENED, reason=_opt_str(dispute, "reason") or "", **common
        )
        closed = {"won": PROVIDER_DISPUTE_WON, "lost": PROVIDER_DISPUTE_LOST}.get(
            str(dispute.get("status"))
        )
        return [opened] if closed is None else [opened, ProviderUpdate(closed, **common)]

    def _refunds_and_dispute(
        self, payment: dict[str, Any]
    ) -> tuple[list[ProviderUpdate], _Answer | None]:
        ref = _str(payment, "id")
        answer = self._send("GET", "/_ledger", params={"provider": self.name}, scoped=False)
        if answer.outcome is not CallOutcome.OK:
            return [], answer
        entries = sorted(
            (e for e in _list(answer.body) if e.get("payment_id") == ref),
            key=lambda e: _int(e, "seq"),
        )
        statuses = {"refund": PROVIDER_REFUNDED, **_DISPUTE_LEDGER}
        updates: list[ProviderUpdate] = []
        refunded = 0
        for entry in entries:
            status = statuses.get(str(entry.get("kind")))
            if status is None:
                continue
            amount = _int(entry, "amount")
            is_refund = status == PROVIDER_REFUNDED
            refunded += amount if is_refund else 0
            updates.append(
                ProviderUpdate(
                    status,
                    provider=self.name,
                    amount=amount,
                    refund_id=_str(entry, "reference") if is_refund else None,
                    dispute_id=None if is_refund else _str(entry, "object_id"),
                    provider_ref=ref,
                )
            )
        if refunded != _int(payment, "refunded_amount"):
            # A refund between the two queries: this answer is not one consistent picture.
            return [], _Answer(CallOutcome.UNKNOWN, detail="refunds changed while asked")
        return updates, None

    def _payout_update(
        self, payout: dict[str, Any], event_id: str | None = None, status: str | None = None
    ) -> PayoutUpdate | None:
        """What ``payout`` says now (or its webhook's ``status``); None for a status the
        sandbox does not document."""
        status = status or _str(payout, "status")
        ref = _str(payout, "id")
        if status == PAYOUT_PAID:
            return PayoutUpdate(PAYOUT_PAID, event_id, ref, fee=_int(payout, "fee", default=0))
        if status == PAYOUT_FAILED:
            return PayoutUpdate(
                PAYOUT_FAILED, event_id, ref, reason=_opt_str(payout, "failure_code") or "failed"
            )
        if status == PAYOUT_PENDING:
            return PayoutUpdate(PAYOUT_PENDING, event_id, ref)
        return None

    def _payment_result(self, answer: _Answer, started: float) -> CallResult:
        """A call answered with a payment (authorize, capture, void) as a ``CallResult``."""
        if answer.outcome not in (CallOutcome.OK, CallOutcome.DECLINED) or answer.body is None:
            return _result(answer, started)
        try:
            if answer.outcome is CallOutcome.DECLINED:
                payment = _obj(answer.body, "payment")
                update = ProviderUpdate(
                    PROVIDER_FAILED,
                    provider=self.name,
                    reason=_opt_str(answer.body, "decline_code") or answer.code,
                    provider_ref=_str(payment, "id"),
                )
                return CallResult(
                    CallOutcome.DECLINED,
                    update,
                    provider_ref=update.provider_ref,
                    code=answer.code,
                    detail=answer.detail,
                    latency_ms=_since(started),
                )
            payment = answer.body
            maybe = self._payment_update(payment)
        except (_Malformed, LedgerError) as exc:
            return _unreadable(exc, started)
        ref = str(payment.get("id"))
        if maybe is None:
            return CallResult(
                CallOutcome.PENDING, provider_ref=ref, detail="pending", latency_ms=_since(started)
            )
        outcome = CallOutcome.DECLINED if maybe.status == PROVIDER_FAILED else CallOutcome.OK
        return CallResult(
            outcome, maybe, provider_ref=ref, detail=answer.detail, latency_ms=_since(started)
        )

    def _operate(
        self, operation: PaymentOperation, action: str, body: dict[str, Any] | None
    ) -> CallResult:
        """Capture or void: ``POST /authorizations/{id}/{action}``."""
        started = time.perf_counter()
        payment_id, failed = self._payment_id(operation, started)
        if failed is not None:
            return failed
        path = f"/authorizations/{quote(payment_id, safe='')}/{action}"
        answer = self._send("POST", path, json=body, key=operation.idempotency_key)
        return self._payment_result(answer, started)

    def _payment_id(
        self, operation: PaymentOperation, started: float
    ) -> tuple[str, CallResult | None]:
        """The sandbox's payment id: ``provider_ref``, or found by our reference when the
        engine does not know it yet. Nothing has been sent when this fails: ERROR."""
        if operation.provider_ref:
            return operation.provider_ref, None
        status = self.payment_status(operation.payment_reference)
        if status.outcome is not CallOutcome.OK:
            return "", CallResult(
                CallOutcome.ERROR,
                code="status_query_failed",
                detail=f"looking up the payment's id: {status.detail}",
                latency_ms=_since(started),
            )
        if not status.found or status.provider_ref is None:
            return "", CallResult(
                CallOutcome.REJECTED,
                code="payment_not_found",
                detail=f"no payment with reference {operation.payment_reference!r}",
                latency_ms=_since(started),
            )
        return status.provider_ref, None

    # ---- HTTP ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        key: str | None = None,
        scoped: bool = True,
    ) -> _Answer:
        """One request to ``/{name}{path}`` (``scoped``) or ``{path}``; never raises for
        what the network or the sandbox did."""
        url = f"{self.base_url}/{self.name}{path}" if scoped else f"{self.base_url}{path}"
        headers = {"Idempotency-Key": key} if key is not None else None
        try:
            response = self._client.request(
                method, url, json=json, params=params, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            return _failure(exc)
        return _classify(response)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _result(answer: _Answer, started: float) -> CallResult:
    return CallResult(
        answer.outcome, code=answer.code, detail=answer.detail, latency_ms=_since(started)
    )


def _unreadable(exc: Exception, started: float) -> CallResult:
    # A 2xx we cannot read: the provider may well have acted.
    return CallResult(
        CallOutcome.UNKNOWN,
        code="unreadable_answer",
        detail=str(exc)[:500],
        latency_ms=_since(started),
    )


def _status_failure(answer: _Answer, started: float) -> StatusResult:
    # A status query changes nothing: a refusal of it is as retryable as an error.
    outcome = CallOutcome.UNKNOWN if answer.outcome is CallOutcome.UNKNOWN else CallOutcome.ERROR
    detail = ": ".join(part for part in (answer.code, answer.detail) if part)
    return StatusResult(outcome, detail=detail, latency_ms=_since(started))
